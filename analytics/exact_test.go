package analytics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// produce produces recs (their offsets reset) and waits for the acks.
func produce(t testing.TB, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	for _, r := range recs {
		r.Offset, r.Partition = 0, 0
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// lag is the group's committed offsets' distance from the end of the
// sink's topics, summed.
func lag(t testing.TB, adm *kadm.Client, group string) int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topics...)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(context.Background(), group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		at := int64(0)
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil {
			at = c.At
		}
		n += o.Offset - max(at, 0)
	})
	return n
}

// runSink runs a sink of group on cluster c until the test ends or it
// returns; the returned channel gets Run's result.
func runSink(t testing.TB, c *kafkatest.Cluster, conn driver.Conn, cfg Config) (*Sink, <-chan error) {
	t.Helper()
	s, err := New(cfg, c.Config, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		errc <- s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return s, errc
}

// exactCounts are the counts every exact read of the dataset must give.
func exactCounts(t testing.TB, conn driver.Conn) map[string]uint64 {
	t.Helper()
	return map[string]uint64{
		"events":        count(t, conn, "SELECT count() FROM events FINAL"),
		"statuses":      count(t, conn, "SELECT count() FROM statuses FINAL"),
		"messages":      count(t, conn, "SELECT count() FROM messages FINAL"),
		"inbound":       count(t, conn, "SELECT count() FROM inbound FINAL"),
		"message_state": count(t, conn, "SELECT count() FROM message_state FINAL"),
		"costs":         count(t, conn, "SELECT count() FROM costs FINAL"),
		"sends_daily":   count(t, conn, "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(dispatches) AS n FROM sends_daily GROUP BY app, day, state)"),
		"event_days":    count(t, conn, "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(events) AS n FROM event_days GROUP BY app, day, kind, name)"),
		"inbound_daily": count(t, conn, "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(messages) AS n FROM inbound_hourly GROUP BY app, day, hour, type, keyword)"),
		"status_daily":  count(t, conn, "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(messages) AS n FROM statuses_daily GROUP BY app, day, status, pricing_category, country, error_code)"),
		"facts":         count(t, conn, "SELECT count() FROM message_facts FINAL"),
	}
}

// wantCounts are the exact counts of dataset().
var wantCounts = map[string]uint64{
	"events": 15, "statuses": 6, "messages": 5, "inbound": 6, "message_state": 5, "costs": 3,
	"sends_daily": 5, "event_days": 15, "inbound_daily": 6, "status_daily": 6,
	// d1 requested, sent, delivered, read, billed; d2 the same but read; d3
	// requested, sent, billed; d4 requested, failed; o1 requested, sent.
	"facts": 16,
}

func checkCounts(t testing.TB, conn driver.Conn) {
	t.Helper()
	got := exactCounts(t, conn)
	for k, want := range wantCounts {
		if got[k] != want {
			t.Errorf("%s: exact count %d, want %d", k, got[k], want)
		}
	}
}

// TestCrashBetweenInsertAndCommit kills the sink after ClickHouse
// acknowledged a batch and before its offsets were marked, starts a new
// sink of the same group and shows that the redelivered rows are stored
// again yet every exact read counts them once.
// With batch_rows 3 a poll is written in chunks (the next decoded while
// the one before is stored), and the crash comes after the last chunk.
func TestCrashBetweenInsertAndCommit(t *testing.T) {
	for _, batchRows := range []int{0, 3} {
		t.Run(fmt.Sprintf("batch_rows=%d", batchRows), func(t *testing.T) { testCrashBetweenInsertAndCommit(t, batchRows) })
	}
}

func testCrashBetweenInsertAndCommit(t *testing.T, batchRows int) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 2)
	producer := c.Client(t)
	adm := kadm.NewClient(producer)
	cfg := Config{FlushInterval: 20 * time.Millisecond, BatchRows: batchRows}
	recs := dataset(t)
	first, second := recs[:8], recs[8:]

	s1, errc := runSink(t, c, conn, cfg)
	produce(t, producer, first)
	waitFor(t, 20*time.Second, "the first part committed", func() bool { return lag(t, adm, DefaultGroup) == 0 })
	rawBefore := count(t, conn, "SELECT count() FROM events") + count(t, conn, "SELECT count() FROM messages")

	crashed := make(chan struct{})
	crash := func() error { close(crashed); return errors.New("killed between insert and commit") }
	s1.crashAfterInsert.Store(&crash)
	produce(t, producer, second)
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("the second part was not inserted")
	}
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Run returned %v, want the crash", err)
	}
	s1.Close() // the dead process leaves the group
	if lag(t, adm, DefaultGroup) == 0 {
		t.Fatal("the crashed batch was committed")
	}
	inserted := count(t, conn, "SELECT count() FROM events") + count(t, conn, "SELECT count() FROM messages")
	if inserted == rawBefore {
		t.Fatal("the crashed batch was not inserted before the crash")
	}

	// A new process of the same group gets the batch again.
	runSink(t, c, conn, cfg)
	waitFor(t, 20*time.Second, "everything committed", func() bool { return lag(t, adm, DefaultGroup) == 0 })
	raw := count(t, conn, "SELECT count() FROM events") + count(t, conn, "SELECT count() FROM messages")
	if raw <= inserted {
		t.Fatalf("raw rows %d after the restart, %d before: the batch was not redelivered", raw, inserted)
	}
	checkCounts(t, conn)
	// The sink's fact counter: the facts of the redelivered batch were
	// produced again, and count once.
	waitFor(t, 20*time.Second, "every fact counted", func() bool { return topicLag(t, adm, DefaultFactsGroup, schemas.TopicFacts) == 0 })
	if n := count(t, conn, "SELECT toUInt64(sum(n)) FROM fact_days WHERE state != 'outcome'"); n != wantCounts["facts"] {
		t.Errorf("fact_days: %d facts, want %d", n, wantCounts["facts"])
	}
	if n := count(t, conn, "SELECT toUInt64(sum(n)) FROM fact_days WHERE state = 'outcome'"); n != 5 {
		t.Errorf("fact_days: %d outcomes, want 5", n)
	}
	if n := count(t, conn, "SELECT toUInt64(sum(n)) FROM state_moves"); n != 5 {
		t.Errorf("state_moves: %d dispatches, want 5", n)
	}
	sum, err := Summarize(t.Context(), conn, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 15 || sum.Sends != 5 || sum.Statuses != 6 || sum.Inbound != 6 {
		t.Fatalf("summary after the crash: events %d sends %d statuses %d inbound %d, want 15 5 6 6", sum.Events, sum.Sends, sum.Statuses, sum.Inbound)
	}
}

// TestClickHouseOutage stops ClickHouse under a running sink: fetching
// pauses (nothing buffered beyond the batch in hand), nothing is committed
// or lost, and when the server is back the sink resumes by itself.
func TestClickHouseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("stops and starts a private ClickHouse")
	}
	p := chtest.NewPrivate(t)
	conn, err := Open(t.Context(), p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := Migrate(t.Context(), conn, nil); err != nil {
		t.Fatal(err)
	}
	c := kafkatest.New(t, 2)
	producer := c.Client(t)
	adm := kadm.NewClient(producer)
	s, _ := runSink(t, c, conn, Config{FlushInterval: 20 * time.Millisecond})

	recs := dataset(t)
	produce(t, producer, recs[:8])
	waitFor(t, 20*time.Second, "the first part committed", func() bool { return lag(t, adm, DefaultGroup) == 0 })

	p.Stop()
	produce(t, producer, recs[8:])
	waitFor(t, 30*time.Second, "fetching paused", func() bool { return testutil.ToFloat64(s.m.paused) == 1 })
	// More records while the server is down. A fetch already in flight
	// when fetching paused may still buffer one round of them; after that
	// nothing more is fetched, however much is produced.
	var more []*kgo.Record
	o := offsets{}
	round := func(from, n int) {
		var rs []*kgo.Record
		for i := from; i < from+n; i++ {
			e := inbound(fmt.Sprintf("down-%d", i), "demo", fmt.Sprintf("+88017110%05d", i), "hi", base)
			rs = append(rs, o.rec(t, schemas.TopicEvents, e.Key(), e))
		}
		produce(t, producer, rs)
		more = append(more, rs...)
	}
	round(0, 500)
	round(500, 2000)
	// The broker serves them (another consumer reads all 2,000) ...
	if got := c.ReadAll(t, schemas.TopicEvents, 15+len(more)); len(got) != 15+len(more) {
		t.Fatalf("read %d events back, want %d", len(got), 15+len(more))
	}
	// ... and for a second the paused sink's buffer stays within the one
	// round a fetch in flight could have caught.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n := s.cl.BufferedFetchRecords(); n > 500 {
			t.Fatalf("%d records buffered while paused, want at most one fetch (500)", n)
		}
	}
	if n := lag(t, adm, DefaultGroup); n < int64(len(recs)-8+len(more)) {
		t.Fatalf("lag %d while ClickHouse is down, want at least %d: records were committed unstored", n, len(recs)-8+len(more))
	}

	p.Start()
	waitFor(t, 60*time.Second, "everything committed after the restart", func() bool { return lag(t, adm, DefaultGroup) == 0 })
	if testutil.ToFloat64(s.m.paused) != 0 {
		t.Fatal("fetching still paused")
	}
	if n := count(t, conn, "SELECT count() FROM events FINAL"); n != uint64(15+len(more)) {
		t.Fatalf("events %d, want %d", n, 15+len(more))
	}
	if n := count(t, conn, "SELECT count() FROM messages FINAL"); n != 5 {
		t.Fatalf("messages %d, want 5", n)
	}
}

// TestWriteSplitsOutRefusedRows makes ClickHouse refuse some rows (a
// MATERIALIZED throwIf column, the 18.16 stand-in for a CHECK constraint):
// exactly their records are dead-lettered with ClickHouse's reason, every
// other row of the batch is stored.
func TestWriteSplitsOutRefusedRows(t *testing.T) {
	_, conn := migratedDB(t)
	if err := conn.Exec(t.Context(), "ALTER TABLE events ADD COLUMN guard UInt8 MATERIALIZED throwIf(name = 'Poison')"); err != nil {
		t.Fatal(err)
	}
	s, _, _ := newSink(t, Config{}, conn)
	recs := dataset(t)
	o := offsets{schemas.TopicEvents: 100}
	poison := func(id string) *kgo.Record {
		e := &schemas.Event{ID: id, App: "demo", Kind: schemas.KindEvent, Name: "Poison", Time: base, UserID: "u9"}
		return o.rec(t, schemas.TopicEvents, e.Key(), e)
	}
	batch := append([]*kgo.Record{poison("p-1")}, recs[:5]...)
	batch = append(batch, poison("p-2"))
	batch = append(batch, recs[5:]...)
	dls, err := s.Write(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want the 2 poison records", len(dls))
	}
	for i, want := range []int64{100, 101} {
		dl, err := schemas.DecodeDeadLetter(dls[i].Value)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Offset != want || !strings.Contains(dl.Reason, "clickhouse refused the record's row of events") || !strings.Contains(dl.Reason, "throwIf") {
			t.Errorf("dead letter %d: offset %d reason %q", i, dl.Offset, dl.Reason)
		}
	}
	checkCounts(t, conn)
	if n := testutil.ToFloat64(s.m.rowsRejected.WithLabelValues("events")); n != 2 {
		t.Fatalf("rows_rejected_total{events} = %v, want 2", n)
	}
}

// TestBadInput: odd attribute types and invalid UTF-8 are stored safely;
// strings over their limit and times outside DateTime are dead-lettered
// with a reason naming the field.
func TestBadInput(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	ev := func(e *schemas.Event) *kgo.Record { return o.rec(t, schemas.TopicEvents, e.Key(), e) }
	big := strings.Repeat("x", maxTextBytes+1)
	odd := &schemas.Event{
		ID: "odd", App: "demo", Kind: schemas.KindEvent, Name: "Odd", Time: base, UserID: "u1",
		Attributes: map[string]any{"nested": map[string]any{"a": []any{1.0, "b", nil}}, "huge": 1e300, "neg": -0.5, "yes": false, "nil": nil},
	}
	bigText := inbound("big-text", "demo", "+8801711000001", big, base)
	bigAttr := &schemas.Event{ID: "big-attr", App: "demo", Kind: schemas.KindEvent, Name: "Big", Time: base, UserID: "u1", Attributes: map[string]any{"blob": big}}
	bigName := &schemas.Event{ID: "big-name", App: "demo", Kind: schemas.KindEvent, Name: strings.Repeat("n", maxIDBytes+1), Time: base, UserID: "u1"}
	epoch := &schemas.Event{ID: "epoch", App: "demo", Kind: schemas.KindEvent, Name: "Old", Time: time.Unix(1, 0), UserID: "u1"}
	future := &schemas.Event{ID: "future", App: "demo", Kind: schemas.KindEvent, Name: "Late", Time: time.Date(2105, 12, 31, 23, 0, 0, 0, time.UTC), UserID: "u1"}
	farFuture := &schemas.Event{ID: "far-future", App: "demo", Kind: schemas.KindEvent, Name: "Later", Time: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), UserID: "u1"}
	// Invalid UTF-8 written raw into the JSON: \xff inside the text.
	utf := inbound("bad-utf8", "demo", "+8801711000002", "hiXthere", base)
	rawUTF := must(utf.Marshal())
	rawUTF = []byte(strings.Replace(string(rawUTF), "hiXthere", "hi\xffthere", 1))
	longDispatch := &schemas.DispatchRequest{
		ID: "dq", App: "demo", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+8801711000001",
		Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api", Name: strings.Repeat("s", maxIDBytes+1)}, Created: base,
	}
	recs := []*kgo.Record{
		ev(odd), ev(bigText), ev(bigAttr), ev(bigName), ev(epoch), ev(future), ev(farFuture),
		o.raw(schemas.TopicEvents, utf.Key(), rawUTF),
		o.rec(t, schemas.TopicDispatch, longDispatch.Key(), longDispatch),
	}
	dls, err := s.Write(t.Context(), recs)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[int64]string{}
	for _, r := range dls {
		dl, err := schemas.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		reasons[dl.Offset] = dl.Reason
	}
	wantDL := map[int64]string{ // offsets on TopicEvents, then TopicDispatch
		1: "inbound.text is 65537 bytes, over the limit of 65536",
		2: "attributes.blob is 65537 bytes, over the limit of 65536",
		3: "name is 1025 bytes, over the limit of 1024",
		6: "time 2200-01-01T00:00:00Z is outside",
		0: "source.name is 1025 bytes, over the limit of 1024",
	}
	if len(dls) != len(wantDL) {
		t.Fatalf("%d dead letters %v, want %d", len(dls), reasons, len(wantDL))
	}
	for off, want := range wantDL {
		if !strings.Contains(reasons[off], want) {
			t.Errorf("offset %d: reason %q, want it to contain %q", off, reasons[off], want)
		}
	}
	for _, id := range []string{"odd", "epoch", "future", "bad-utf8"} {
		if n := count(t, conn, "SELECT count() FROM events WHERE id = ?", id); n != 1 {
			t.Errorf("event %s stored %d times, want once", id, n)
		}
	}
	var nested, huge string
	if err := conn.QueryRow(t.Context(), "SELECT arrayElement(attr_values, indexOf(attr_keys, 'nested')), arrayElement(attr_values, indexOf(attr_keys, 'huge')) FROM events WHERE id = 'odd'").Scan(&nested, &huge); err != nil {
		t.Fatal(err)
	}
	if nested != `{"a":[1,"b",null]}` || huge != strconv.FormatFloat(1e300, 'f', -1, 64) {
		t.Errorf("nested %q, huge %q", nested, huge)
	}
	for _, q := range []string{"SELECT inbound_text FROM events WHERE id = 'bad-utf8'", "SELECT text FROM inbound WHERE event_id = 'bad-utf8'"} {
		var text string
		if err := conn.QueryRow(t.Context(), q).Scan(&text); err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(text) || text != "hi\uFFFDthere" {
			t.Errorf("%s: %q, want valid UTF-8 with U+FFFD", q, text)
		}
	}
}

// TestMessageStateFollowsStatuses writes each dispatch's rows in a
// scrambled order, one insert each (so nothing is merged yet): the current
// state is the highest-ranked one, and message_times has when each state
// was first reached.
func TestMessageStateFollowsStatuses(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	req := func(id string, at time.Time) *kgo.Record {
		d := &schemas.DispatchRequest{
			ID: id, App: "demo", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+8801711000001",
			Template: &schemas.Template{Name: "welcome", Language: "en_US", Category: "MARKETING"},
			Source:   schemas.Source{Kind: "campaign", Name: "spring"}, Created: at,
		}
		return o.rec(t, schemas.TopicDispatch, d.Key(), d)
	}
	out := func(id string, st schemas.OutcomeState, at time.Time) *kgo.Record {
		x := outcome(id, "demo", st, "welcome", at)
		x.Requested = base
		return o.rec(t, schemas.TopicOutcomes, x.Key(), x)
	}
	stat := func(id, st string, at time.Time) *kgo.Record {
		e := status("st-"+id+"-"+st, "demo", "wamid."+id, st, id, at)
		return o.rec(t, schemas.TopicEvents, e.Key(), e)
	}
	sec := func(n int) time.Time { return base.Add(time.Duration(n) * time.Second) }
	steps := []*kgo.Record{
		stat("d1", "read", sec(30)), stat("d1", "delivered", sec(20)), req("d1", base), out("d1", schemas.OutcomeAccepted, sec(5)),
		stat("d1", "sent", sec(10)), stat("d1", "read", sec(30)), // late sent, redelivered read
		out("d2", schemas.OutcomeInDoubt, sec(5)), stat("d2", "sent", sec(8)), req("d2", base), out("d2", schemas.OutcomeInDoubt, sec(5)),
		req("d3", base),
		out("d4", schemas.OutcomeFailed, sec(3)), req("d4", base),
		out("d5", schemas.OutcomeExpired, sec(60)), req("d5", base),
		stat("d6", "delivered", sec(9)), stat("d6", "failed", sec(7)), req("d6", base),
	}
	for _, r := range steps {
		if _, err := s.Write(t.Context(), []*kgo.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{"d1": "read", "d2": "sent", "d3": "requested", "d4": "failed", "d5": "expired", "d6": "delivered"}
	rows, err := conn.Query(t.Context(), "SELECT dispatch_id, state FROM message_state FINAL WHERE app = 'demo' ORDER BY dispatch_id")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		got[id] = st
	}
	rows.Close()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	var sent, delivered, read, requested uint32
	if err := conn.QueryRow(t.Context(), `SELECT minIfMerge(requested_at), minIfMerge(sent_at), minIfMerge(delivered_at), minIfMerge(read_at)
		FROM message_times WHERE app = 'demo' AND dispatch_id = 'd1'`).Scan(&requested, &sent, &delivered, &read); err != nil {
		t.Fatal(err)
	}
	// sent: the outcome (5 s) before the status (10 s).
	if int64(requested) != base.Unix() || int64(sent) != sec(5).Unix() || int64(delivered) != sec(20).Unix() || int64(read) != sec(30).Unix() {
		t.Fatalf("d1 times %d %d %d %d", requested, sent, delivered, read)
	}
	// The request of d3 (no outcome yet) is known to dispatch_meta with its
	// metadata; messages holds outcomes only.
	var template, category, kind, name string
	if err := conn.QueryRow(t.Context(), "SELECT template, category, source_kind, source_name FROM dispatch_meta FINAL WHERE dispatch_id = 'd3'").
		Scan(&template, &category, &kind, &name); err != nil {
		t.Fatal(err)
	}
	if template != "welcome" || category != "MARKETING" || kind != "campaign" || name != "spring" {
		t.Fatalf("d3 dispatch_meta row: %s %s %s %s", template, category, kind, name)
	}
	if n := count(t, conn, "SELECT count() FROM messages WHERE dispatch_id = 'd3'"); n != 0 {
		t.Fatalf("messages holds %d rows of a dispatch without an outcome", n)
	}
}
