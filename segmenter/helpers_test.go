package segmenter

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// t0 is the time of the test events; the test clock reads t0+1m.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const testNow = time.Minute

type testSegmenter struct {
	*Segmenter
	reg       *prometheus.Registry
	tags      []*schemas.ProfileTags // of the last process call
	changelog []*Profile             // of the last process call
	tagDefs   []*schemas.TagDef      // of the last process call
}

// newTest builds a Segmenter without Kafka, on a fixed clock.
func newTest(t testing.TB, cfg Config) *testSegmenter {
	t.Helper()
	if _, bench := t.(*testing.B); !bench {
		// A test's segmenter leaves the cache lazy: a prefault of the
		// default 256 MiB per segmenter costs seconds under -race. The
		// benchmarks measure a segmenter as `herald segmenter` runs it
		// (TestPrefaultedSegmenter covers the prefault).
		cfg.CacheLazy = true
	}
	reg := prometheus.NewRegistry()
	s, err := newSegmenter(cfg, nil, reg)
	if err != nil {
		t.Fatalf("newSegmenter: %v", err)
	}
	s.now = func() time.Time { return t0.Add(testNow) }
	t.Cleanup(s.Close)
	if _, bench := t.(*testing.B); bench {
		// As `herald segmenter` runs: its GC target (gc_percent, 300 by
		// default) and memory limit. GOGC or GOMEMLIMIT in the environment
		// win, as they do there (GOGC=100 measures at the Go default).
		t.Cleanup(s.cfg.ApplyRuntime())
	}
	return &testSegmenter{Segmenter: s, reg: reg}
}

// process runs Process, fails the test on error, and returns the outputs
// but the changelog and TopicTags records, which it checks (they come last,
// changelog first, decode, are keyed by their profile, one per key and
// batch) and keeps in s.changelog and s.tags.
func (s *testSegmenter) process(t testing.TB, recs ...*kgo.Record) []*kgo.Record {
	t.Helper()
	out, err := s.Process(context.Background(), recs)
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	s.tags, s.changelog, s.tagDefs = nil, nil, nil
	for len(out) > 0 && out[len(out)-1].Topic == schemas.TopicTagDefs {
		d, err := schemas.DecodeTagDef(out[len(out)-1].Value)
		if err != nil || string(d.Key()) != string(out[len(out)-1].Key) {
			t.Fatalf("tag registry record %s does not decode or is keyed %q: %v", out[len(out)-1].Value, out[len(out)-1].Key, err)
		}
		s.tagDefs = append([]*schemas.TagDef{d}, s.tagDefs...)
		out = out[:len(out)-1]
	}
	keys := make(map[string]bool)
	first := len(out)
	for i, r := range out {
		if r.Topic == schemas.TopicProfiles {
			if first == len(out) {
				first = i
			}
			if i != first+len(s.changelog) {
				t.Fatalf("changelog record %d after other outputs", i)
			}
			p, err := decodeProfile(r.Value)
			if err != nil {
				t.Fatalf("changelog record does not decode: %v", err)
			}
			if keys["p"+string(r.Key)] {
				t.Fatalf("two changelog records for %q in one batch", r.Key)
			}
			keys["p"+string(r.Key)] = true
			s.changelog = append(s.changelog, p)
			continue
		}
		if r.Topic != schemas.TopicTags {
			if len(s.tags) > 0 || len(s.changelog) > 0 {
				t.Fatalf("output %d to %s after a changelog or tags record: they come last", i, r.Topic)
			}
			continue
		}
		pt, err := schemas.DecodeProfileTags(r.Value)
		if err != nil {
			t.Fatalf("tags record does not decode: %v: %s", err, r.Value)
		}
		if string(r.Key) != string(pt.Key()) {
			t.Fatalf("tags record key %q, want %q", r.Key, pt.Key())
		}
		if keys[string(r.Key)] {
			t.Fatalf("two tags records for %q in one batch", r.Key)
		}
		keys[string(r.Key)] = true
		s.tags = append(s.tags, pt)
	}
	return out[:len(out)-len(s.tags)-len(s.changelog)]
}

// metric returns the value of a counter or gauge with the given labels.
func (s *testSegmenter) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// record encodes e as a TopicEvents record.
func record(t testing.TB, e *schemas.Event) *kgo.Record {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: b, Offset: testOffset.Add(1)}
}

// testOffset numbers the records tests build, as a partition would: the
// segmenter recognises a record at or before a profile's last applied
// offset as redelivered.
var testOffset atomic.Int64

func records(t testing.TB, es ...*schemas.Event) []*kgo.Record {
	t.Helper()
	out := make([]*kgo.Record, len(es))
	for i, e := range es {
		out[i] = record(t, e)
	}
	return out
}

const (
	testApp   = "shop"
	testPhone = "+14155550100"
	testHWID  = "whatsapp:" + testPhone
	testPNID  = "1098765"
)

func register(id string, at time.Time, tags map[string]any) *schemas.Event {
	return &schemas.Event{
		ID: id, App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
		Time: at, HWID: testHWID, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", Tags: tags,
	}
}

func inbound(id, app, text, profileName string, at time.Time) *schemas.Event {
	return &schemas.Event{
		ID: id, App: app, Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived,
		Time: at, HWID: testHWID, Country: "US",
		Inbound: &schemas.Inbound{PhoneNumberID: testPNID, From: testPhone, WAMID: "wamid." + id, Type: "text", Text: text, ProfileName: profileName},
	}
}

func custom(id, name string, at time.Time) *schemas.Event {
	return &schemas.Event{ID: id, App: testApp, Kind: schemas.KindEvent, Name: name, Time: at, HWID: testHWID}
}

// decodeOutputs splits Process output into dispatch requests and dead
// letters, failing on anything else.
func decodeOutputs(t testing.TB, out []*kgo.Record) (ds []*schemas.DispatchRequest, dls []*schemas.DeadLetter) {
	t.Helper()
	for _, r := range out {
		switch r.Topic {
		case schemas.TopicDispatch:
			d, err := schemas.DecodeDispatchRequest(r.Value)
			if err != nil {
				t.Fatalf("output dispatch request does not decode: %v", err)
			}
			if string(r.Key) != string(d.Key()) {
				t.Fatalf("dispatch key %q, want %q", r.Key, d.Key())
			}
			ds = append(ds, d)
		case schemas.TopicProfiles:
			if _, err := decodeProfile(r.Value); err != nil {
				t.Fatalf("output changelog record does not decode: %v", err)
			}
		case schemas.TopicTags:
			if _, err := schemas.DecodeProfileTags(r.Value); err != nil {
				t.Fatalf("output tags record does not decode: %v", err)
			}
		case schemas.TopicTagDefs:
			if _, err := schemas.DecodeTagDef(r.Value); err != nil {
				t.Fatalf("output tag registry record does not decode: %v", err)
			}
		case schemas.TopicDeadLetter:
			dl, err := schemas.DecodeDeadLetter(r.Value)
			if err != nil {
				t.Fatalf("output dead letter does not decode: %v", err)
			}
			dls = append(dls, dl)
		case schemas.TopicSuppressions:
			sup, err := schemas.DecodeSuppression(r.Value)
			if err != nil {
				t.Fatalf("output suppression does not decode: %v", err)
			}
			if string(r.Key) != string(sup.Key()) {
				t.Fatalf("suppression key %q, want %q", r.Key, sup.Key())
			}
		default:
			t.Fatalf("output to unexpected topic %q", r.Topic)
		}
	}
	return ds, dls
}

// equalProfile compares profiles, ignoring the recent-id ring.
func equalProfile(got, want *Profile) error {
	if err := checkEvTags(got); err != nil {
		return err
	}
	g, w := *loaded(got), *loaded(want)
	g.recent, w.recent, g.nRecent, w.nRecent = [recentIDs]uint64{}, [recentIDs]uint64{}, 0, 0
	g.src, w.src = srcPos{}, srcPos{} // bookkeeping, checked by TestRedelivery
	if !reflect.DeepEqual(&g, &w) {
		return fmt.Errorf("profile\n got %+v\nwant %+v", g, w)
	}
	return nil
}

// checkEvTags reports an event-name tag of p that is neither unknown nor
// its entry's (Profile.evTags).
func checkEvTags(p *Profile) error {
	if p == nil {
		return nil
	}
	for i := range min(len(p.Events), evTagged) {
		if t := p.evTags[i]; t != 0 && t != nameTag(p.Events[i].Name) {
			return fmt.Errorf("evTags[%d] = %d, not the tag of %q (%d): %v", i, t, p.Events[i].Name, nameTag(p.Events[i].Name), p.evTags)
		}
	}
	return nil
}

// loaded decodes the tags and event attributes p keeps in their encoded
// form (Profile.rawTags, EventCount.raw), so that p compares with
// reflect.DeepEqual to a profile built in a test.
func loaded(p *Profile) *Profile {
	if p != nil {
		p.Tags()
		p.tagsPlain = false          // a cache of what the tags hold, not state
		p.evTags = [evTagged]uint8{} // a hint where the event names are, not state
		for i := range p.Events {
			c := &p.Events[i]
			c.setAttrs(c.Attrs())
		}
	}
	return p
}
