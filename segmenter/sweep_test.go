package segmenter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// sweepEvents returns "name:segment@hwid" for the segment events among out.
func sweepEvents(t *testing.T, out []*kgo.Record) []string {
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
		if string(r.Key) != string(e.Key()) {
			t.Fatalf("segment event keyed %q, want %q", r.Key, e.Key())
		}
		got = append(got, e.Name+":"+e.Attributes["segment"].(string)+"@"+e.HWID)
	}
	slices.Sort(got)
	return got
}

// TestSweep: a sweep evaluates a new segment over profiles that have no
// later event, once; drops a deleted segment's membership; and moves
// profiles in and out of time-relative segments as the clock moves.
func TestSweep(t *testing.T) {
	s := newTest(t, Config{})
	now := t0.Add(testNow)
	s.now = func() time.Time { return now }
	for i, city := range []string{"Oslo", "Bergen", "Oslo"} {
		e := register(fmt.Sprint("r", i), t0, map[string]any{"City": city})
		e.HWID = fmt.Sprintf("whatsapp:+4790000%03d", i)
		s.process(t, record(t, e))
	}
	sweep := func(id string, sw *schemas.Sweep) []string {
		t.Helper()
		return sweepEvents(t, s.process(t, record(t, &schemas.Event{ID: id, App: testApp, Kind: schemas.KindSweep, Time: now, Sweep: sw})))
	}
	// A segment saved after the profiles: the sweep enters the members.
	oslo := &schemas.Sweep{Segment: "oslo", Filter: `T("City", EQ, "Oslo")`}
	want := []string{"PW_SegmentEntered:oslo@whatsapp:+4790000000", "PW_SegmentEntered:oslo@whatsapp:+4790000002"}
	if got := sweep("s1", oslo); !slices.Equal(got, want) {
		t.Fatalf("backfill %v, want %v", got, want)
	}
	if len(s.changelog) != 2 {
		t.Fatalf("%d changelog records, want the 2 new members", len(s.changelog))
	}
	// Redelivered, or swept again: members are members already.
	if got := sweep("s1", oslo); len(got) != 0 {
		t.Fatalf("second sweep %v", got)
	}
	// Deleted: membership dropped, no exit events.
	if got := sweep("s2", &schemas.Sweep{Segment: "oslo"}); len(got) != 0 || len(s.changelog) != 2 {
		t.Fatalf("deletion sweep: events %v, %d changelog records", got, len(s.changelog))
	}
	p, _ := s.Profile(testApp, "whatsapp:+4790000000")
	if p.in(segmentID("oslo")) {
		t.Fatal("membership of a deleted segment kept")
	}

	// Time-relative: "seen in the last 7 days"; nobody comes back.
	s.segs.put(mustSegment(t, testApp, "active", `T("Last Seen", GTE, "-7d")`))
	if got := sweep("s3", &schemas.Sweep{}); len(got) != 3 {
		t.Fatalf("timer sweep at first: %v", got)
	}
	now = t0.Add(8 * 24 * time.Hour)
	want = []string{"PW_SegmentExited:active@whatsapp:+4790000000", "PW_SegmentExited:active@whatsapp:+4790000001", "PW_SegmentExited:active@whatsapp:+4790000002"}
	if got := sweep("s4", &schemas.Sweep{}); !slices.Equal(got, want) {
		t.Fatalf("timer sweep a week later %v, want %v", got, want)
	}
	// A sweep of a bad definition is dead-lettered.
	if _, dls := decodeOutputs(t, s.process(t, record(t, &schemas.Event{
		ID: "s5", App: testApp, Kind: schemas.KindSweep, Time: now,
		Sweep: &schemas.Sweep{Segment: "bad", Filter: `T("City" EQ)`},
	}))); len(dls) != 1 {
		t.Fatalf("%d dead letters for a bad sweep, want 1", len(dls))
	}
}

// TestSweepEndToEnd on kfake: createFilter enters the existing profiles
// that match, with no event of theirs; a time-relative segment's members
// leave on the sweep timer as the clock passes, with no event either.
func TestSweepEndToEnd(t *testing.T) {
	c := kafkatest.New(t, 3)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Second)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	var recs []*kgo.Record
	for i := range 12 {
		e := &schemas.Event{
			ID: fmt.Sprint("r", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: start,
			HWID: fmt.Sprintf("whatsapp:+4790001%03d", i), DeviceType: schemas.DeviceWhatsApp, Tags: map[string]any{"City": []string{"Oslo", "Bergen", "Tromsø"}[i%3]},
		}
		recs = append(recs, record(t, e))
	}
	produce(t, c, recs...)
	s, err := New(Config{SweepInterval: 50 * time.Millisecond}, c.Config, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	adm := kadm.NewClient(c.Client(t))
	waitCommitted(t, adm)

	h := s.APIHandler(reg)
	for _, f := range []struct{ name, expr string }{{"oslo", `T("City", EQ, "Oslo")`}, {"active", `T("Last Seen", GTE, "-1d")`}} {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/createFilter",
			strings.NewReader(fmt.Sprintf(`{"request":{"application":"shop","name":%q,"filter_expression":%q}}`, f.name, f.expr)))
		req.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("createFilter %s: %d %s", f.name, rec.Code, rec.Body)
		}
	}
	// Segment events are read back from the events topic.
	count := func(name, segment string) int {
		n := 0
		for _, r := range c.ReadAll(t, schemas.TopicEvents, int(sum(endOffsets(t, adm, schemas.TopicEvents)))) {
			e, err := schemas.DecodeEvent(r.Value)
			if err == nil && e.Name == name && e.Attributes["segment"] == segment {
				n++
			}
		}
		return n
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("the 4 Oslo users and 12 active users to enter", func() bool {
		return count(schemas.EventSegmentEntered, "oslo") == 4 && count(schemas.EventSegmentEntered, "active") == 12
	})
	clock.Store(start.Add(25 * time.Hour).UnixNano())
	wait("the 12 users to leave the active segment on the timer", func() bool { return count(schemas.EventSegmentExited, "active") == 12 })
	if n := count(schemas.EventSegmentEntered, "oslo"); n != 4 {
		t.Fatalf("%d Oslo entries after the sweeps, want 4 (each once)", n)
	}
}
