package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// testClock is a clock the test moves, or the real one.
type testClock struct {
	mu   sync.Mutex
	t    time.Time
	real bool
}

func newTestClock(t time.Time) *testClock { return &testClock{t: t} }

func newTestClockReal() *testClock { return &testClock{real: true} }

func (c *testClock) Now() time.Time {
	if c.real {
		return time.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// startScheduler builds a scheduler on c reading clock and runs it until the
// returned stop is called; stop returns Run's error and closes the
// scheduler (it leaves the group, committing what it settled).
func startScheduler(t *testing.T, c *kafkatest.Cluster, clock *testClock, cfg SchedulerConfig) (*Scheduler, func() error) {
	t.Helper()
	cfg.Now = clock.Now
	s, err := NewScheduler(cfg, c.Config, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	return s, func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-res:
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
			s.Close()
		})
		return runErr
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endOffsets is the end offset of each partition of topic.
func endOffsets(t *testing.T, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	offs, err := adm.ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]int64)
	offs.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// total is the number of records ever written to topic.
func total(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	var n int64
	for _, o := range endOffsets(t, adm, topic) {
		n += o
	}
	return n
}

// groupOffsets is group's committed offset per partition of topic.
func groupOffsets(t *testing.T, adm *kadm.Client, group, topic string) map[int32]int64 {
	t.Helper()
	offs, err := adm.FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]int64)
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

func scheduledReq(id, to string, sendAt time.Time) *schemas.DispatchRequest {
	created := sendAt.Add(-time.Hour)
	return &schemas.DispatchRequest{
		ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to, Country: "US",
		Template: &schemas.Template{Name: "promo", Language: "en_US"},
		Source:   schemas.Source{Kind: "api", Name: "later"},
		Created:  created, Deadline: sendAt.Add(24 * time.Hour), SendAt: sendAt,
	}
}

func scheduledRecord(t *testing.T, r *schemas.DispatchRequest) *kgo.Record {
	t.Helper()
	rec := dispatchRecord(t, r)
	rec.Topic = schemas.TopicScheduled
	return rec
}

// released reads the n records of the dispatch topic (checking there are
// exactly n) and returns them by dispatch id.
func released(t *testing.T, c *kafkatest.Cluster, adm *kadm.Client, n int) map[string]*kgo.Record {
	t.Helper()
	if got := total(t, adm, schemas.TopicDispatch); got != int64(n) {
		t.Fatalf("%d records on %s, want %d", got, schemas.TopicDispatch, n)
	}
	out := make(map[string]*kgo.Record)
	for _, rec := range c.ReadAll(t, schemas.TopicDispatch, n) {
		d, err := schemas.DecodeDispatchRequest(rec.Value)
		if err != nil {
			t.Fatalf("released record does not decode: %v", err)
		}
		if out[d.ID] != nil {
			t.Fatalf("%s released twice", d.ID)
		}
		out[d.ID] = rec
	}
	if len(out) != n {
		t.Fatalf("read %d released requests, want %d", len(out), n)
	}
	return out
}

// markers reads the release markers on the scheduled topic, by id, with
// the partition each is on; want is how many there must be.
func markers(t *testing.T, c *kafkatest.Cluster, adm *kadm.Client, want int) map[string]*kgo.Record {
	t.Helper()
	all := c.ReadAll(t, schemas.TopicScheduled, int(total(t, adm, schemas.TopicScheduled)))
	out := make(map[string]*kgo.Record)
	for _, rec := range all {
		if !isReleaseMarker(rec) {
			continue
		}
		m, err := schemas.DecodeScheduleRelease(rec.Value)
		if err != nil {
			t.Fatalf("marker does not decode: %v", err)
		}
		if out[m.ID] != nil {
			t.Fatalf("two markers for %s", m.ID)
		}
		out[m.ID] = rec
	}
	if len(out) != want {
		t.Fatalf("%d release markers, want %d", len(out), want)
	}
	return out
}

func TestSchedulerReleasesWhenDue(t *testing.T) {
	c := kafkatest.New(t, 4)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := newTestClock(t0)

	reqs := map[string]*schemas.DispatchRequest{
		"a":    scheduledReq("a", "+15550000001", t0.Add(time.Hour)),
		"b":    scheduledReq("b", "+15550000002", t0.Add(2*time.Hour)),
		"c":    scheduledReq("c", "+15550000003", t0.Add(time.Hour)),
		"past": scheduledReq("past", "+15550000004", t0.Add(-time.Minute)),
	}
	// A request whose deadline passed is released all the same: the
	// dispatcher records it as expired.
	expired := scheduledReq("expired", "+15550000005", t0.Add(-48*time.Hour))
	reqs["expired"] = expired
	recs := map[string]*kgo.Record{}
	prod := c.Client(t)
	for id, r := range reqs {
		recs[id] = scheduledRecord(t, r)
		produce(t, prod, recs[id])
	}

	s, stop := startScheduler(t, c, clock, SchedulerConfig{})
	defer stop()
	waitFor(t, "past and expired released", func() bool { return testutil.ToFloat64(s.m.released) == 2 })
	waitFor(t, "three pending", func() bool { return testutil.ToFloat64(s.m.pending) == 3 })
	got := released(t, c, adm, 2)
	if got["past"] == nil || got["expired"] == nil {
		t.Fatalf("released %v, want past and expired", got)
	}

	// Not before: a minute short of a and c.
	clock.set(t0.Add(time.Hour - time.Minute))
	s.wake()
	time.Sleep(50 * time.Millisecond)
	if n := total(t, adm, schemas.TopicDispatch); n != 2 {
		t.Fatalf("%d released before send_at, want 2", n)
	}

	clock.set(t0.Add(time.Hour))
	s.wake()
	waitFor(t, "a and c released", func() bool { return testutil.ToFloat64(s.m.released) == 4 })
	got = released(t, c, adm, 4)
	for _, id := range []string{"a", "c", "past", "expired"} {
		rec := got[id]
		if rec == nil {
			t.Fatalf("%s not released", id)
		}
		if !bytes.Equal(rec.Value, recs[id].Value) {
			t.Errorf("%s released changed:\n got %s\nwant %s", id, rec.Value, recs[id].Value)
		}
		if string(rec.Key) != string(reqs[id].Key()) {
			t.Errorf("%s key %q, want %q", id, rec.Key, reqs[id].Key())
		}
	}
	if got["b"] != nil {
		t.Fatal("b released an hour early")
	}
	// b holds its partition's commit point.
	waitFor(t, "commit up to b", func() bool {
		return groupOffsets(t, adm, "herald-scheduler", schemas.TopicScheduled)[recs["b"].Partition] == recs["b"].Offset
	})

	clock.set(t0.Add(3 * time.Hour))
	s.wake()
	waitFor(t, "b released", func() bool { return testutil.ToFloat64(s.m.released) == 5 })
	released(t, c, adm, 5)
	ms := markers(t, c, adm, 5)
	for id, m := range ms {
		if m.Partition != recs[id].Partition || string(m.Key) != string(recs[id].Key) {
			t.Errorf("marker of %s on partition %d key %q, want %d %q", id, m.Partition, m.Key, recs[id].Partition, recs[id].Key)
		}
		r, _ := schemas.DecodeScheduleRelease(m.Value)
		if r.Offset != recs[id].Offset || !r.Released.Equal(clockAtRelease(id, t0)) {
			t.Errorf("marker of %s: offset %d released %s", id, r.Offset, r.Released)
		}
	}
	if v := testutil.ToFloat64(s.m.pending); v != 0 {
		t.Fatalf("pending %v, want 0", v)
	}
	// Everything settled, the markers included: the commit reaches the end.
	end := endOffsets(t, adm, schemas.TopicScheduled)
	waitFor(t, "commit at the end", func() bool {
		got := groupOffsets(t, adm, "herald-scheduler", schemas.TopicScheduled)
		for p, o := range end {
			if o > 0 && got[p] != o {
				return false
			}
		}
		return true
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// clockAtRelease is the test clock when TestSchedulerReleasesWhenDue
// released id.
func clockAtRelease(id string, t0 time.Time) time.Time {
	switch id {
	case "a", "c":
		return t0.Add(time.Hour)
	case "b":
		return t0.Add(3 * time.Hour)
	}
	return t0
}

// TestSchedulerRestart: a scheduler stopped before a release and one
// started after it on the same group release each request exactly once,
// also when a request released later in a partition than a pending one is
// re-read (its marker says it was released).
func TestSchedulerRestart(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := newTestClock(t0)

	// Same recipient, so one partition: early is after late in the log.
	late := scheduledReq("late", "+15550000001", t0.Add(2*time.Hour))
	early := scheduledReq("early", "+15550000001", t0.Add(time.Hour))
	other := scheduledReq("other", "+15550000002", t0.Add(time.Hour))
	recs := []*kgo.Record{scheduledRecord(t, late), scheduledRecord(t, early), scheduledRecord(t, other)}
	produce(t, c.Client(t), recs...)

	// 1: reads all three, releases nothing, stops.
	s1, stop1 := startScheduler(t, c, clock, SchedulerConfig{})
	waitFor(t, "three pending", func() bool { return testutil.ToFloat64(s1.m.pending) == 3 })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if n := total(t, adm, schemas.TopicDispatch); n != 0 {
		t.Fatalf("%d released, want none", n)
	}

	// 2: early and other are due: released once; late is pending.
	clock.set(t0.Add(time.Hour))
	s2, stop2 := startScheduler(t, c, clock, SchedulerConfig{})
	waitFor(t, "early and other released", func() bool { return testutil.ToFloat64(s2.m.released) == 2 })
	waitFor(t, "late pending", func() bool { return testutil.ToFloat64(s2.m.pending) == 1 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	released(t, c, adm, 2)

	// 3: re-reads late, early and early's marker (the commit point is
	// late's offset): early is due but was released, so it is skipped.
	clock.set(t0.Add(90 * time.Minute))
	// other is re-read too when it shares late's partition.
	wantSkipped := 1.0
	if recs[2].Partition == recs[0].Partition {
		wantSkipped = 2
	}
	if got := groupOffsets(t, adm, "herald-scheduler", schemas.TopicScheduled)[recs[0].Partition]; got != recs[0].Offset {
		t.Fatalf("committed offset %d, want late's %d", got, recs[0].Offset)
	}
	s3, stop3 := startScheduler(t, c, clock, SchedulerConfig{})
	waitFor(t, "early found released", func() bool {
		return testutil.ToFloat64(s3.m.skipped.WithLabelValues("released")) == wantSkipped
	})
	waitFor(t, "late pending", func() bool { return testutil.ToFloat64(s3.m.pending) == 1 })
	if v := testutil.ToFloat64(s3.m.released); v != 0 {
		t.Fatalf("restarted scheduler released %v, want 0", v)
	}
	clock.set(t0.Add(2 * time.Hour))
	s3.wake()
	waitFor(t, "late released", func() bool { return testutil.ToFloat64(s3.m.released) == 1 })
	if err := stop3(); err != nil {
		t.Fatal(err)
	}
	got := released(t, c, adm, 3)
	for _, id := range []string{"late", "early", "other"} {
		if got[id] == nil {
			t.Fatalf("%s not released", id)
		}
	}
	markers(t, c, adm, 3)
}

// TestSchedulerHoldsUntilCaughtUp feeds polls by hand: a due request read
// before the partition's high watermark is held until the re-read reaches
// it, and a marker read meanwhile settles it.
func TestSchedulerHoldsUntilCaughtUp(t *testing.T) {
	c := kafkatest.New(t, 1)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	s, err := NewScheduler(SchedulerConfig{Now: newTestClock(t0).Now}, c.Config, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	rec := func(off int64, r *schemas.DispatchRequest) *kgo.Record {
		out := scheduledRecord(t, r)
		out.Offset, out.Timestamp = off, t0
		return out
	}
	marker := func(off int64, id string) *kgo.Record {
		b, _ := (&schemas.ScheduleRelease{ID: id, Released: t0}).Marshal()
		return &kgo.Record{
			Topic: schemas.TopicScheduled, Offset: off, Value: b, Timestamp: t0,
			Headers: []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordScheduleRelease)}},
		}
	}
	poll := func(hwm int64, recs ...*kgo.Record) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: schemas.TopicScheduled, Partitions: []kgo.FetchPartition{
			{Partition: 0, HighWatermark: hwm, Records: recs},
		}}}}}
	}
	step := func(f kgo.Fetches) {
		t.Helper()
		if err := s.read(t.Context(), f); err != nil {
			t.Fatal(err)
		}
		if err := s.release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	due := t0.Add(-time.Minute)
	// The log at assignment: x (offsets 0), y (1), x's marker (2), z (3).
	step(poll(4, rec(0, scheduledReq("x", "+15550000001", due)), rec(1, scheduledReq("y", "+15550000002", due))))
	if v := testutil.ToFloat64(s.m.released); v != 0 {
		t.Fatalf("released %v before catching up, want 0", v)
	}
	step(poll(4, marker(2, "x")))
	if v := testutil.ToFloat64(s.m.skipped.WithLabelValues("released")); v != 1 {
		t.Fatalf("skipped %v, want x", v)
	}
	if v := testutil.ToFloat64(s.m.released); v != 0 {
		t.Fatalf("released %v before catching up, want 0", v)
	}
	// Reading offset 3 reaches the high watermark: y and z are released.
	step(poll(4, rec(3, scheduledReq("z", "+15550000003", due))))
	if v := testutil.ToFloat64(s.m.released); v != 2 {
		t.Fatalf("released %v, want y and z", v)
	}
	got := released(t, c, adm, 2)
	if got["y"] == nil || got["z"] == nil {
		t.Fatalf("released %v, want y and z", got)
	}
	if v := testutil.ToFloat64(s.m.pending); v != 0 {
		t.Fatalf("pending %v, want 0", v)
	}
	// A duplicate of a released id read later is released again (its
	// marker cannot be ahead of it), but two pending copies are released
	// once.
	step(poll(4, rec(4, scheduledReq("w", "+15550000004", due)), rec(5, scheduledReq("w", "+15550000004", due))))
	if v := testutil.ToFloat64(s.m.released); v != 3 {
		t.Fatalf("released %v, want one more (w)", v)
	}
	if v := testutil.ToFloat64(s.m.skipped.WithLabelValues("duplicate")); v != 1 {
		t.Fatalf("duplicates %v, want 1", v)
	}
	released(t, c, adm, 3)
}

func TestSchedulerDeadLetters(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Now().UTC()
	clock := newTestClock(t0)

	noSendAt := scheduledReq("nosend", "+15550000001", t0)
	noSendAt.SendAt = time.Time{}
	noID := scheduledReq("", "+15550000001", t0)
	tooFar := scheduledReq("far", "+15550000001", t0.Add(schemas.MaxScheduleAhead+48*time.Hour))
	good := scheduledReq("good", "+15550000001", t0.Add(-time.Second))
	badMarker := &kgo.Record{
		Topic: schemas.TopicScheduled, Key: []byte("shop|+15550000001"), Value: []byte(`{"v":1}`),
		Headers: []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordScheduleRelease)}},
	}
	bad := []struct {
		rec    *kgo.Record
		reason string
	}{
		{&kgo.Record{Topic: schemas.TopicScheduled, Key: []byte("shop|+15550000001"), Value: []byte("{not json")}, "decoding json"},
		{scheduledRecord(t, noSendAt), "send_at is required"},
		{scheduledRecord(t, noID), "id is required"},
		{scheduledRecord(t, tooFar), "more than 90 days"},
		{badMarker, "decoding release marker"},
	}
	prod := c.Client(t)
	for _, b := range bad {
		produce(t, prod, b.rec)
	}
	produce(t, prod, scheduledRecord(t, good))

	s, stop := startScheduler(t, c, clock, SchedulerConfig{})
	waitFor(t, "good released", func() bool { return testutil.ToFloat64(s.m.released) == 1 })
	dls := c.ReadAll(t, schemas.TopicDeadLetter, len(bad))
	if len(dls) != len(bad) || total(t, adm, schemas.TopicDeadLetter) != int64(len(bad)) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(bad))
	}
	byOffset := map[int64]*schemas.DeadLetter{}
	for _, rec := range dls {
		dl, err := schemas.DecodeDeadLetter(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Stage != "scheduler" || dl.Topic != schemas.TopicScheduled {
			t.Errorf("dead letter stage %q topic %q", dl.Stage, dl.Topic)
		}
		byOffset[dl.Offset] = dl
	}
	for _, b := range bad {
		dl := byOffset[b.rec.Offset]
		if dl == nil || !bytes.Equal(dl.Value, b.rec.Value) || !strings.Contains(dl.Reason, b.reason) {
			t.Errorf("record at %d: dead letter %+v, want reason with %q", b.rec.Offset, dl, b.reason)
		}
	}
	if v := testutil.ToFloat64(s.m.deadLetters); v != float64(len(bad)) {
		t.Errorf("herald_scheduler_dead_letters_total %v, want %d", v, len(bad))
	}
	released(t, c, adm, 1)
	// Dead letters are settled: the commit passes them.
	p := bad[0].rec.Partition
	waitFor(t, "commit past the dead letters", func() bool {
		return groupOffsets(t, adm, "herald-scheduler", schemas.TopicScheduled)[p] == endOffsets(t, adm, schemas.TopicScheduled)[p]
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSchedulerMaxPending: at max_pending the scheduler stops fetching and
// resumes once releases bring it under.
func TestSchedulerMaxPending(t *testing.T) {
	c := kafkatest.New(t, 1)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := newTestClock(t0)
	prod := c.Client(t)
	req := func(i int) *kgo.Record {
		return scheduledRecord(t, scheduledReq(fmt.Sprint("r", i), fmt.Sprintf("+1555000000%d", i), t0.Add(time.Duration(i+1)*time.Hour)))
	}
	produce(t, prod, req(0), req(1))
	s, stop := startScheduler(t, c, clock, SchedulerConfig{MaxPending: 2})
	defer stop()
	waitFor(t, "paused at two pending", func() bool {
		return testutil.ToFloat64(s.m.paused) == 1 && testutil.ToFloat64(s.m.pending) == 2
	})
	produce(t, prod, req(2), req(3), req(4), req(5))
	time.Sleep(300 * time.Millisecond) // several fetch rounds (FetchMaxWait is 250 ms)
	if v := testutil.ToFloat64(s.m.pending); v != 2 {
		t.Fatalf("pending %v while paused, want 2", v)
	}
	clock.set(t0.Add(2 * time.Hour))
	s.wake()
	waitFor(t, "resumed and paused again", func() bool {
		return testutil.ToFloat64(s.m.released) == 2 && testutil.ToFloat64(s.m.pending) == 4 && testutil.ToFloat64(s.m.paused) == 1
	})
	clock.set(t0.Add(6 * time.Hour))
	s.wake()
	waitFor(t, "all released", func() bool { return testutil.ToFloat64(s.m.released) == 6 })
	released(t, c, adm, 6)
	waitFor(t, "resumed", func() bool { return testutil.ToFloat64(s.m.paused) == 0 })
}

// TestDispatcherForwardsFutureSendAt: a request on the dispatch topic whose
// send_at is ahead is not sent but forwarded, unchanged, to the scheduled
// topic; the others are sent as before.
func TestDispatcherForwardsFutureSendAt(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	later := scheduledReq("later", "+15550000001", now.Add(time.Hour))
	due := scheduledReq("due", "+15550000002", now.Add(-time.Minute))
	plain := scheduledReq("plain", "+15550000003", now)
	plain.SendAt = time.Time{}
	recs := []*kgo.Record{dispatchRecord(t, later), dispatchRecord(t, due), dispatchRecord(t, plain)}
	produce(t, c.Client(t), recs...)

	d, stop := startDispatcher(t, c, meta, Config{})
	outs := readOutcomes(t, c, 2)
	fwd := c.ReadAll(t, schemas.TopicScheduled, 1)
	waitFor(t, "commit at the end", func() bool {
		got, end := committed(t, c, "herald-dispatcher")
		for p, o := range end {
			if got[p] != o {
				return false
			}
		}
		return true
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		if o.DispatchID == "later" || o.State != schemas.OutcomeAccepted {
			t.Errorf("outcome %s %s, want due and plain accepted", o.DispatchID, o.State)
		}
	}
	if len(fwd) != 1 || !bytes.Equal(fwd[0].Value, recs[0].Value) || string(fwd[0].Key) != string(later.Key()) || len(fwd[0].Headers) != 0 {
		t.Fatalf("forwarded %v, want later's record unchanged", fwd)
	}
	if n := total(t, adm, schemas.TopicScheduled); n != 1 {
		t.Fatalf("%d records on %s, want 1", n, schemas.TopicScheduled)
	}
	if n := total(t, adm, schemas.TopicOutcomes); n != 2 {
		t.Fatalf("%d outcomes, want 2", n)
	}
	if n := len(meta.callsTo("+15550000001")); n != 0 {
		t.Fatalf("later sent %d times, want 0", n)
	}
	if v := testutil.ToFloat64(d.m.scheduled); v != 1 {
		t.Fatalf("herald_dispatcher_scheduled_total %v, want 1", v)
	}
}

// TestScheduledEndToEnd: a request written to the dispatch topic seconds
// ahead of its send_at goes through the scheduler and is sent once, not
// before send_at. (The dispatcher sends a request due within sendAtSkew
// itself: send_at is 3 s ahead so that a dispatcher slow to start on a
// loaded machine still finds it more than sendAtSkew ahead.)
func TestScheduledEndToEnd(t *testing.T) {
	c := kafkatest.New(t, 2)
	meta := newFakeMeta(t)
	sendAt := time.Now().UTC().Add(3 * time.Second)
	r := scheduledReq("e2e", "+15550000001", sendAt)
	_, stopD := startDispatcher(t, c, meta, Config{})
	_, stopS := startScheduler(t, c, newTestClockReal(), SchedulerConfig{})
	produce(t, c.Client(t), dispatchRecord(t, r))
	outs := readOutcomes(t, c, 1)
	if err := stopS(); err != nil {
		t.Fatal(err)
	}
	if err := stopD(); err != nil {
		t.Fatal(err)
	}
	if o := outs[0]; o.DispatchID != "e2e" || o.State != schemas.OutcomeAccepted || o.Time.Before(sendAt) {
		t.Fatalf("outcome %s %s at %s, want accepted after %s", o.DispatchID, o.State, o.Time, sendAt)
	}
	if n := len(meta.callsTo("+15550000001")); n != 1 {
		t.Fatalf("%d sends, want 1", n)
	}
}

// TestSchedulerRebalance: a second scheduler joining the group takes over
// partitions; the first drops their pending requests, the second re-reads
// them, and every request is released exactly once.
func TestSchedulerRebalance(t *testing.T) {
	c := kafkatest.New(t, 4)
	adm := kadm.NewClient(c.Client(t))
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := newTestClock(t0)
	const n = 40
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, scheduledRecord(t, scheduledReq(fmt.Sprint("r", i), fmt.Sprintf("+155500000%02d", i), t0.Add(time.Hour))))
	}
	produce(t, c.Client(t), recs...)
	parts := map[int32]bool{}
	for _, r := range recs {
		parts[r.Partition] = true
	}
	if len(parts) < 2 {
		t.Fatalf("all %d requests on one partition", n)
	}

	s1, stop1 := startScheduler(t, c, clock, SchedulerConfig{})
	defer stop1()
	waitFor(t, "s1 holds all", func() bool { return testutil.ToFloat64(s1.m.pending) == n })
	s2, stop2 := startScheduler(t, c, clock, SchedulerConfig{})
	defer stop2()
	waitFor(t, "the pending requests split between the two", func() bool {
		p1, p2 := testutil.ToFloat64(s1.m.pending), testutil.ToFloat64(s2.m.pending)
		return p1 > 0 && p2 > 0 && p1+p2 == n
	})
	clock.set(t0.Add(time.Hour))
	s1.wake()
	s2.wake()
	waitFor(t, "all released", func() bool {
		return testutil.ToFloat64(s1.m.released)+testutil.ToFloat64(s2.m.released) == n
	})
	released(t, c, adm, n)
	markers(t, c, adm, n)
}
