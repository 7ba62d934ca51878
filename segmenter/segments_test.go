package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

func mustSegment(t testing.TB, app, name, filter string) *savedSegment {
	t.Helper()
	sg, err := compileSegment(&schemas.SegmentDef{App: app, Name: name, Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

// segmentEvents decodes the segment events among out: "name:segment" each.
func segmentEvents(t *testing.T, out []*kgo.Record, key []byte) []string {
	t.Helper()
	var got []string
	for _, r := range out {
		if r.Topic != schemas.TopicEvents {
			continue
		}
		e, err := schemas.DecodeEvent(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != string(key) {
			t.Fatalf("segment event keyed %q, want the user's key %q", r.Key, key)
		}
		got = append(got, e.Name+":"+e.Attributes["segment"].(string))
	}
	return got
}

func TestSegmentMembership(t *testing.T) {
	s := newTest(t, Config{})
	s.segs.put(mustSegment(t, testApp, "asian_food", `Event("OrderPlaced", "cuisine", EQ, "asian") * T("Registered", EQ, true)`))
	s.segs.put(mustSegment(t, testApp, "oslo", `T("City", EQ, "Oslo")`))
	s.segs.put(mustSegment(t, "other", "everyone", `A("other")`))
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	order := func(id, cuisine string, m int) *schemas.Event {
		return &schemas.Event{
			ID: id, App: testApp, Kind: schemas.KindEvent, Name: "OrderPlaced", Time: at(m), HWID: testHWID,
			Attributes: map[string]any{"cuisine": cuisine},
		}
	}
	key := schemas.EventKey(testApp, testHWID, "")
	step := func(name string, e *schemas.Event, want ...string) {
		t.Helper()
		rec := record(t, e)
		got := segmentEvents(t, s.process(t, rec), key)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: segment events %v, want %v", name, got, want)
		}
	}
	step("register: no order yet", register("r1", at(0), nil))
	step("an asian order enters", order("o1", "asian", 1), "PW_SegmentEntered:asian_food")
	step("another one changes nothing", order("o2", "asian", 2))
	evals := testutil.ToFloat64(s.m.segmentEvals)
	step("a City tag enters oslo", &schemas.Event{
		ID: "t1", App: testApp, Kind: schemas.KindTags, Time: at(3), HWID: testHWID,
		Tags: map[string]any{"City": "Oslo"},
	}, "PW_SegmentEntered:oslo")
	if got := testutil.ToFloat64(s.m.segmentEvals) - evals; got != 1 {
		t.Fatalf("a City change evaluated %v segments, want only oslo", got)
	}
	step("an italian order is the latest: exits", order("o3", "italian", 4), "PW_SegmentExited:asian_food")
	step("an asian one again, then unregister", order("o4", "asian", 5), "PW_SegmentEntered:asian_food")
	step("unregister exits", &schemas.Event{
		ID: "u1", App: testApp, Kind: schemas.KindUnregister, Name: schemas.EventDeviceUnregistered,
		Time: at(6), HWID: testHWID,
	}, "PW_SegmentExited:asian_food")
	p, _ := s.Profile(testApp, testHWID)
	if p.in(segmentID("asian_food")) || !p.in(segmentID("oslo")) || p.in(segmentID("everyone")) {
		t.Fatalf("membership %v", p.segments)
	}

	// A replayed event (a redelivery) produces no segment event again; the
	// ids of the events are derived from the cause.
	s2 := newTest(t, Config{})
	s2.segs.put(mustSegment(t, testApp, "oslo", `T("City", EQ, "Oslo")`))
	rec := record(t, &schemas.Event{ID: "t9", App: testApp, Kind: schemas.KindTags, Time: at(1), HWID: testHWID, Tags: map[string]any{"City": "Oslo"}})
	first := s2.process(t, rec)
	if got := segmentEvents(t, s2.process(t, rec), key); len(got) != 0 {
		t.Fatalf("replay produced %v", got)
	}
	s3 := newTest(t, Config{})
	s3.segs.put(mustSegment(t, testApp, "oslo", `T("City", EQ, "Oslo")`))
	again := s3.process(t, rec)
	if len(first) != 1 || len(again) != 1 || string(first[0].Value) == "" {
		t.Fatalf("outputs %d and %d", len(first), len(again))
	}
	e1, _ := schemas.DecodeEvent(first[0].Value)
	e2, _ := schemas.DecodeEvent(again[0].Value)
	if e1.ID != e2.ID || !randomHex32(e1.ID) {
		t.Fatalf("segment event ids %q and %q: want one deterministic 128-bit id", e1.ID, e2.ID)
	}
}

func randomHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func TestSegmentDefinitionErrors(t *testing.T) {
	for _, tt := range []struct{ name, filter, want string }{
		{"feeds on itself", `Event("PW_SegmentEntered")`, "cannot depend on PW_SegmentEntered"},
		{"bad filter", `T("City", EQ`, "column"},
		{"another app", `A("news")`, "another app"},
		{"no filter", ``, "filter is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileSegment(&schemas.SegmentDef{App: testApp, Name: "s", Filter: tt.filter})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// TestSegmentsFromTopic: saved segments are read from TopicSegments before
// any event is processed; a tombstone deletes one; entries reach the events
// topic.
func TestSegmentsFromTopic(t *testing.T) {
	c := kafkatest.New(t, 2)
	def := func(name, filter string) *kgo.Record {
		d := &schemas.SegmentDef{App: testApp, Name: name, Filter: filter, Updated: time.Now().UTC()}
		b, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: schemas.TopicSegments, Key: d.Key(), Value: b}
	}
	produce(t, c,
		def("vip", `T("VIP", EQ, true)`),
		def("gone", `T("VIP", EQ, true)`),
		&kgo.Record{Topic: schemas.TopicSegments, Key: schemas.SegmentKey(testApp, "gone")}, // tombstone
		&kgo.Record{Topic: schemas.TopicSegments, Key: schemas.SegmentKey(testApp, "bad"), Value: []byte(`{"v":1,"app":"shop","name":"bad","filter":"T(","updated":"2026-01-01T00:00:00Z"}`)},
	)
	// The events are there before the segmenter starts: it must still
	// have read the segments first.
	now := time.Now().UTC().Truncate(time.Microsecond)
	produce(t, c, record(t, &schemas.Event{ID: "t1", App: testApp, Kind: schemas.KindTags, Time: now, HWID: testHWID, Tags: map[string]any{"VIP": true}}))
	s, _, _ := runSegmenter(t, c, now)
	recs := c.ReadAll(t, schemas.TopicEvents, 2)
	if len(recs) != 2 {
		t.Fatalf("%d records on the events topic, want the tags event and one entry", len(recs))
	}
	got := segmentEvents(t, recs[1:], schemas.EventKey(testApp, testHWID, ""))
	if len(got) != 1 || got[0] != "PW_SegmentEntered:vip" {
		t.Fatalf("segment events %v", got)
	}
	if l := s.List(testApp); len(l) != 1 || l[0].Name != "vip" {
		t.Fatalf("saved segments %+v, want vip only", l)
	}
}

// TestSegmentsAfterKeywordActions: a keyword's opt-out and set_tags are
// profile changes like any other: the segments reading them are evaluated.
func TestSegmentsAfterKeywordActions(t *testing.T) {
	s := newTest(t, Config{Keywords: []KeywordRule{{App: AnyApp, Keyword: "VIP", SetTags: map[string]any{"vip": true}, Text: "Welcome!"}}})
	s.segs.put(mustSegment(t, testApp, "opted_out", `T("Opted Out", EQ, true)`))
	s.segs.put(mustSegment(t, testApp, "vips", `T("vip", EQ, true)`))
	key := schemas.EventKey(testApp, testHWID, "")
	step := func(text string, at time.Duration, want ...string) {
		t.Helper()
		got := segmentEvents(t, s.process(t, record(t, inbound("in-"+text, testApp, text, "Ana", t0.Add(at)))), key)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: segment events %v, want %v", text, got, want)
		}
	}
	step("VIP", 0, "PW_SegmentEntered:vips")
	step("STOP", time.Second, "PW_SegmentEntered:opted_out")
	step("START", 2*time.Second, "PW_SegmentExited:opted_out")
}

// TestSegIndexMatchesAffects checks that the index picks, for any change,
// exactly the segments that savedSegment.affects picks one by one, over
// more segments than one bit-set word holds.
func TestSegIndexMatchesAffects(t *testing.T) {
	filters := []string{
		`T("tier", EQ, "gold")`,
		`T("vip", EQ, true) * T("points", GTE, 1000)`,
		`Event("Purchase", "count", GTE, 2)`,
		`Event("AddToCart", "sku", EQ, "A-1") \ Event("Purchase", "count", GTE, 1)`,
		`T("Country", IN, ["US", "CA"])`,
		`T("Last Seen", GTE, "-7d")`,
		`A("shop")`,
		`T("points", BETWEEN, [1, 10]) + Event("Search", "count", GTE, 1)`,
	}
	var list []*savedSegment
	for i := range 70 {
		list = append(list, mustSegment(t, testApp, fmt.Sprintf("s%02d", i), filters[i%len(filters)]))
	}
	ix := newSegIndex(list)
	tags := []string{"tier", "vip", "points", "other", "Country"}
	events := []string{"Purchase", "AddToCart", "Search", "PW_ApplicationOpen", ""}
	rng := rand.New(rand.NewPCG(3, 4))
	mask := make([]uint64, len(ix.always))
	for range 2000 {
		c := change{tags: map[string]any{}, event: events[rng.IntN(len(events))], defaults: rng.IntN(2) == 0, seen: rng.IntN(2) == 0}
		for _, name := range tags {
			if rng.IntN(3) == 0 {
				c.tags[name] = 1
			}
		}
		ix.candidates(mask, c)
		for i, sg := range list {
			if got, want := mask[i/64]&(1<<(i%64)) != 0, sg.affects(c); got != want {
				t.Fatalf("change %+v, segment %s (%s): index says %v, affects %v", c, sg.name, sg.src, got, want)
			}
		}
	}
}

// affects reports whether c can change sg's result, one segment at a
// time: the oracle of TestSegIndexMatchesAffects.
func (sg *savedSegment) affects(c change) bool {
	if sg.always || (c.defaults && sg.defaults) || (c.seen && sg.f.ReadsSeen()) || sg.events[c.event] {
		return true
	}
	for name := range c.tags {
		if sg.tags[name] {
			return true
		}
	}
	return false
}

// TestSegmentOnSeenTimes: a segment on Last Seen is re-evaluated when an
// event moves the last seen time, though no default tag changed (a custom
// event), and not on a status, which moves no seen time.
func TestSegmentOnSeenTimes(t *testing.T) {
	s := newTest(t, Config{})
	for _, w := range s.workers {
		w.hotp.off = true // profiles from the cache: a status may go in place
	}
	s.segs.put(mustSegment(t, testApp, "active", `T("Last Seen", GTE, "-7d")`))
	month := t0.Add(-30 * 24 * time.Hour)
	entered := func(out []*kgo.Record) int {
		n := 0
		for _, r := range out {
			if r.Topic != schemas.TopicEvents {
				continue
			}
			if e, err := schemas.DecodeEvent(r.Value); err == nil && e.Name == schemas.EventSegmentEntered {
				n++
			}
		}
		return n
	}
	// Two users, last seen a month ago: not active.
	other := "whatsapp:+14155550199"
	r2 := register("r2", month, nil)
	r2.HWID = other
	if n := entered(s.process(t, record(t, register("r1", month, nil)), record(t, r2))); n != 0 {
		t.Fatalf("%d entries for users last seen a month ago", n)
	}
	// A status of the second: no seen time moves, nothing to evaluate.
	evals := testutil.ToFloat64(s.m.segmentEvals)
	st := &schemas.Event{
		ID: "st1", App: testApp, Kind: schemas.KindStatus, Name: schemas.EventWhatsAppStatus, Time: t0, HWID: other,
		Status: &schemas.Status{PhoneNumberID: testPNID, WAMID: "wamid.x", Status: "delivered", Recipient: "+14155550199"},
	}
	if n := entered(s.process(t, record(t, st))); n != 0 || testutil.ToFloat64(s.m.segmentEvals) != evals {
		t.Fatalf("a status: %d entries, %v evaluations", n, testutil.ToFloat64(s.m.segmentEvals)-evals)
	}
	// A custom event of the first, now: active.
	ev := &schemas.Event{ID: "e1", App: testApp, Kind: schemas.KindEvent, Name: "ViewItem", Time: t0, HWID: testHWID}
	if n := entered(s.process(t, record(t, ev))); n != 1 {
		t.Fatalf("%d entries after an event moved last seen to now, want 1", n)
	}
	if testutil.ToFloat64(s.m.inPlace) != 1 {
		t.Fatalf("%v events in place, want the status alone (the segment reads what the custom event moves)", testutil.ToFloat64(s.m.inPlace))
	}
}

// TestSegmentEventID pins the id of a segment event to its derivation
// (the dispatcher and analytics dedupe replays by it, across versions),
// with a seed past the stack buffer the id is hashed from.
func TestSegmentEventID(t *testing.T) {
	who := &schemas.Event{App: testApp, HWID: "whatsapp:+15550001", UserID: "u1"}
	for _, seed := range []string{"ev-1", strings.Repeat("s", 300)} {
		for _, member := range []bool{true, false} {
			r, err := segmentEvent(seed, who, "vip", member, t0)
			if err != nil {
				t.Fatal(err)
			}
			e, err := schemas.DecodeEvent(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			name := schemas.EventSegmentExited
			if member {
				name = schemas.EventSegmentEntered
			}
			sum := sha256.Sum256([]byte("seg|" + seed + "|vip|" + name))
			if want := hex.EncodeToString(sum[:16]); e.ID != want || e.Name != name {
				t.Errorf("segment event %s %s, want %s %s", e.ID, e.Name, want, name)
			}
		}
	}
}
