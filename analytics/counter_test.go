package analytics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// factsProducer is a client producing to herald.facts.v1 as the sink does
// (schemas.FactsPartition).
func factsProducer(t testing.TB, c *kafkatest.Cluster) *kgo.Client {
	t.Helper()
	return c.Client(t, kgo.RecordPartitioner(factsPartitioner{}))
}

// factsRec is a herald.facts.v1 record of dispatch id (app t, campaign
// spring) requested on day, with states (each "state" or "state:detail").
func factsRec(t testing.TB, id string, day time.Time, states ...string) *kgo.Record {
	t.Helper()
	f := &schemas.DispatchFacts{
		App: "t", DispatchID: id, Day: day.Format(time.DateOnly), SourceKind: "campaign", SourceName: "spring",
		Template: "promo", Category: "MARKETING", Country: "BD",
	}
	for i, s := range states {
		state, detail, _ := strings.Cut(s, ":")
		f.Facts = append(f.Facts, schemas.DispatchFact{State: state, Detail: detail, Time: day.Add(time.Duration(i) * time.Second)})
	}
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicFacts, Key: f.Key(), Value: b}
}

func produceFacts(t testing.TB, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// factCounts are the counts of app t: fact_days and fact_sources by state
// (they must agree), current states by rank name, and fact_log's rows.
func factCounts(t testing.TB, conn driver.Conn) string {
	t.Helper()
	var out []string
	for _, tbl := range []string{"fact_days", "fact_sources"} {
		rows, err := conn.Query(context.Background(), "SELECT if(state = 'outcome', concat('outcome:', detail), state) AS s, toUInt64(sum(n)) FROM "+tbl+
			" WHERE app = 't' GROUP BY s ORDER BY s")
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for rows.Next() {
			var s string
			var n uint64
			if err := rows.Scan(&s, &n); err != nil {
				t.Fatal(err)
			}
			parts = append(parts, fmt.Sprintf("%s=%d", s, n))
		}
		rows.Close()
		out = append(out, tbl+" "+strings.Join(parts, " "))
	}
	q, _ := QueryByName("current_states")
	res, err := q.Run(context.Background(), conn, Params{App: "t"})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, "current "+strings.Join(format(res), ", "))
	out = append(out, fmt.Sprintf("fact_log %d", count(t, conn, "SELECT count() FROM fact_log WHERE app = 't'")))
	return strings.Join(out, "\n")
}

// wantFactCounts builds what factCounts returns for the given sums.
func wantFactCounts(states, current string, logRows int) string {
	return "fact_days " + states + "\nfact_sources " + states + "\ncurrent " + current + fmt.Sprintf("\nfact_log %d", logRows)
}

// TestCounterCrashBetweenInsertAndCommit: the counter inserts a batch's
// facts and dies before its offsets are committed; a new counter of the
// group gets the records again, loads the partitions' counted facts from
// fact_log at assignment and counts nothing twice.
func TestCounterCrashBetweenInsertAndCommit(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 2)
	cl := factsProducer(t, c)
	adm := kadm.NewClient(cl)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var recs []*kgo.Record
	for i := range 40 {
		id := fmt.Sprintf("d%02d", i)
		recs = append(recs, factsRec(t, id, today, "requested", "outcome:accepted", "sent"))
		if i%2 == 0 {
			recs = append(recs, factsRec(t, id, today, "sent", "delivered"))
		}
	}
	produceFacts(t, cl, recs)

	// The first counter crashes after its first insert: Run ends by itself
	// with the crash (not cancelled: a cancel racing the crash would make
	// Run return nil, as for a shutdown).
	first, err := NewCounter(Config{}, c.Config, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	crash := func() error { return errors.New("killed between insert and commit") }
	first.crashAfterInsert.Store(&crash)
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	ran := make(chan error, 1)
	go func() { ran <- first.Run(runCtx) }()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("Run returned %v, want the crash", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first counter inserted nothing")
	}
	inserted := count(t, conn, "SELECT count() FROM fact_log")
	if inserted == 0 {
		t.Fatal("nothing inserted before the crash")
	}
	if topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) != int64(len(recs)) {
		t.Fatal("the crashed batch was committed")
	}

	cn2, stop2 := runCounter(t, c, conn, Config{})
	waitFor(t, 30*time.Second, "every fact counted", func() bool { return topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(cn2.m.factsRepeated); n < float64(inserted) {
		t.Fatalf("the second counter skipped %v facts, want at least the %d inserted before the crash", n, inserted)
	}
	// 40 dispatches: requested, accepted, sent; 20 of them delivered
	// (and their sent again, skipped).
	want := wantFactCounts("delivered=20 outcome:accepted=40 requested=40 sent=40", "sent 20, delivered 20", 140)
	if got := factCounts(t, conn); got != want {
		t.Fatalf("counts after the crash:\n%s\nwant\n%s", got, want)
	}
}

// TestCounterSameStateFromTwoTopics: the facts an accepted outcome and a
// sent status both imply (sent), and those a delivered and a read status
// both imply (sent, delivered), arriving in separate records, even in one
// batch, count once each; a failed status after read leaves read the
// current state (read ranks higher) but counts the failure.
func TestCounterSameStateFromTwoTopics(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 2)
	cl := factsProducer(t, c)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	produceFacts(t, cl, []*kgo.Record{
		factsRec(t, "a", today, "requested"),
		factsRec(t, "a", today, "requested", "outcome:accepted", "sent"), // the outcome
		factsRec(t, "a", today, "sent"),                                  // the sent status
		factsRec(t, "a", today, "sent", "delivered"),                     // delivered
		factsRec(t, "a", today, "sent", "delivered", "read:< 1 min"),     // read
		factsRec(t, "a", today, "failed:131026"),
		factsRec(t, "b", today, "sent", "delivered", "read:1-5 min"), // read before the request
		factsRec(t, "b", today, "requested", "outcome:accepted", "sent"),
		factsRec(t, "b", today, "sent", "delivered"),
	})
	countFacts(t, c, conn, Config{})
	want := wantFactCounts("delivered=2 failed=1 outcome:accepted=2 read=2 requested=2 sent=2", "read 2", 11)
	if got := factCounts(t, conn); got != want {
		t.Fatalf("counts:\n%s\nwant\n%s", got, want)
	}
}

// TestCounterRebalance: a second counter joins the group while facts are
// produced, partitions move from the first to it mid-stream, and the
// first leaves; every fact counts once.
func TestCounterRebalance(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 4)
	cl := factsProducer(t, c)
	adm := kadm.NewClient(cl)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	const n = 200
	wave := func(states ...string) {
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, factsRec(t, fmt.Sprintf("d%03d", i), today, states...))
		}
		produceFacts(t, cl, recs)
	}
	done := func() bool { return topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 }

	a, stopA := runCounter(t, c, conn, Config{})
	wave("requested", "outcome:accepted", "sent")
	waitFor(t, 30*time.Second, "the first wave counted", done)
	b, stopB := runCounter(t, c, conn, Config{})
	// While b joins: the first wave again (a redelivery).
	wave("requested", "outcome:accepted", "sent")
	waitFor(t, 30*time.Second, "both counters owning partitions", func() bool {
		gs, err := adm.DescribeGroups(context.Background(), DefaultFactsGroup)
		if err != nil {
			return false
		}
		g := gs[DefaultFactsGroup]
		if g.State != "Stable" || len(g.Members) != 2 {
			return false
		}
		for _, m := range g.Members {
			ca, ok := m.Assigned.AsConsumer()
			if !ok || len(ca.Topics) == 0 || len(ca.Topics[0].Partitions) == 0 {
				return false
			}
		}
		return true
	})
	wave("sent", "delivered")
	waitFor(t, 30*time.Second, "b counting", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.parts) > 0
	})
	waitFor(t, 30*time.Second, "the second waves counted", done)
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	// a left: b owns every partition now and gets a third wave.
	wave("sent", "delivered", "read:< 1 min")
	waitFor(t, 30*time.Second, "the third wave counted", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.parts) == 4 && done()
	})
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(b.m.factsRepeated) == 0 || testutil.ToFloat64(a.m.factsCounted) == 0 {
		t.Fatalf("a counted %v, b skipped %v: the partitions did not move", testutil.ToFloat64(a.m.factsCounted), testutil.ToFloat64(b.m.factsRepeated))
	}
	want := wantFactCounts(fmt.Sprintf("delivered=%d outcome:accepted=%d read=%d requested=%d sent=%d", n, n, n, n, n), fmt.Sprintf("read %d", n), 5*n)
	if got := factCounts(t, conn); got != want {
		t.Fatalf("counts:\n%s\nwant\n%s", got, want)
	}
}

// TestCounterHorizon: a dispatch requested before the horizon is not in
// the seen-set loaded at assignment; its late facts are checked against
// fact_log one by one, so a redelivered fact still counts once and a new
// one counts.
func TestCounterHorizon(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 2)
	cl := factsProducer(t, c)
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{FactsHorizon: 48 * time.Hour}
	at := func(now time.Time) func(*Counter) {
		return func(cn *Counter) { cn.now = func() time.Time { return now } }
	}

	produceFacts(t, cl, []*kgo.Record{factsRec(t, "old", day, "requested", "outcome:accepted", "sent")})
	a, stopA := runCounterWith(t, c, conn, cfg, at(day.Add(time.Hour)))
	adm := kadm.NewClient(cl)
	waitFor(t, 30*time.Second, "the first facts counted", func() bool { return topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 })
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(a.m.factsLate) != 0 {
		t.Fatal("a fact within the horizon was looked up")
	}

	// Ten days later: the seen-sets hold nothing of day.
	produceFacts(t, cl, []*kgo.Record{
		factsRec(t, "old", day, "sent", "delivered"),
		factsRec(t, "old", day, "requested", "outcome:accepted", "sent"),
	})
	b, stopB := runCounterWith(t, c, conn, cfg, at(day.Add(10*24*time.Hour)))
	waitFor(t, 30*time.Second, "the late facts counted", func() bool { return topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 })
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(b.m.factsLate) != 1 {
		t.Fatalf("late lookups %v, want 1 (one dispatch)", testutil.ToFloat64(b.m.factsLate))
	}
	want := wantFactCounts("delivered=1 outcome:accepted=1 requested=1 sent=1", "delivered 1", 4)
	if got := factCounts(t, conn); got != want {
		t.Fatalf("counts:\n%s\nwant\n%s", got, want)
	}
}

// TestCounterDeadLettersBadRecords: a record that does not decode, or
// names a state the counter does not know, goes to the dead-letter topic
// with the field named; the others of its batch count.
func TestCounterDeadLettersBadRecords(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 1)
	cl := factsProducer(t, c)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	produceFacts(t, cl, []*kgo.Record{
		{Topic: schemas.TopicFacts, Key: []byte("t|x"), Value: []byte("{not json")},
		factsRec(t, "a", today, "requested"),
		factsRec(t, "b", today, "opened"),
	})
	countFacts(t, c, conn, Config{})
	dls := c.ReadAll(t, schemas.TopicDeadLetter, 2)
	var reasons []string
	for _, r := range dls {
		dl, err := schemas.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, dl.Reason)
	}
	if len(reasons) != 2 || !strings.Contains(reasons[0], "decoding json") || !strings.Contains(reasons[1], `facts[0].state "opened"`) {
		t.Fatalf("dead letters %q", reasons)
	}
	if got, want := factCounts(t, conn), wantFactCounts("requested=1", "requested 1", 1); got != want {
		t.Fatalf("counts:\n%s\nwant\n%s", got, want)
	}
}

// BenchmarkCounter measures the fact counter end to end: HERALD_BENCH_FACTS
// dispatches (default 100,000), each a record of requested, outcome and
// sent and a record of sent, delivered, read and billed (the second's sent
// is skipped), produced to kfake first; the timer covers the counter
// consuming them until every offset is committed (fact_log and its views
// included). Reports facts/s counted.
//
//	go test -run '^$' -bench BenchmarkCounter -benchtime 3x ./analytics/
func BenchmarkCounter(b *testing.B) {
	n := 100_000
	if v := os.Getenv("HERALD_BENCH_FACTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("HERALD_BENCH_FACTS=%q: want a number >= 100", v)
		}
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var recs []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("%032x", i)
		recs = append(recs, factsRec(b, id, today, "requested", "outcome:accepted", "sent"),
			factsRec(b, id, today, "sent", "delivered", "read:1-5 min", "billed:marketing"))
	}
	var counted float64
	for b.Loop() {
		b.StopTimer()
		_, conn := migratedDB(b)
		c := kafkatest.New(b, 2)
		cl := factsProducer(b, c)
		for i := 0; i < len(recs); i += 10_000 {
			produceFacts(b, cl, recs[i:min(i+10_000, len(recs))])
		}
		adm := kadm.NewClient(cl)
		b.StartTimer()
		cn, stop := runCounter(b, c, conn, Config{})
		waitFor(b, 10*time.Minute, "every fact counted", func() bool { return topicLag(b, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 })
		b.StopTimer()
		if err := stop(); err != nil {
			b.Fatal(err)
		}
		counted += testutil.ToFloat64(cn.m.factsCounted)
		b.StartTimer()
	}
	b.ReportMetric(counted/b.Elapsed().Seconds(), "facts/s")
}
