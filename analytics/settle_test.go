package analytics

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// settleData builds the records of the settle tests, app shop, with
// offsets from o: day1 (2025-03-10) and day2 (2025-03-11) Purchase events,
// a registration, and journey onboarding's events.
type settleData struct {
	t testing.TB
	o offsets
}

func (d settleData) event(id, user, name string, day time.Time, attrs map[string]any) *kgo.Record {
	e := &schemas.Event{ID: id, App: "shop", Kind: schemas.KindEvent, Name: name, Time: day.Add(10 * time.Hour), UserID: user, Attributes: attrs}
	return d.o.rec(d.t, schemas.TopicEvents, e.Key(), e)
}

func (d settleData) journey(id, user, name string, day time.Time, more ...string) *kgo.Record {
	attrs := map[string]any{"journey": "onboarding"}
	for i := 0; i+1 < len(more); i += 2 {
		attrs[more[i]] = more[i+1]
	}
	return d.event(id, user, name, day, attrs)
}

// day1Records: Purchase e1 (u1), e2 (u2); a registration; u1 and u2 entered
// onboarding, u1 stepped to offer.
func (d settleData) day1Records() []*kgo.Record {
	reg := &schemas.Event{ID: "r1", App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: day1, HWID: "whatsapp:+8801711000001"}
	return []*kgo.Record{
		d.event("e1", "u1", "Purchase", day1, nil),
		d.event("e2", "u2", "Purchase", day1, nil),
		d.o.rec(d.t, schemas.TopicEvents, reg.Key(), reg),
		d.journey("je1", "u1", schemas.EventJourneyEntered, day1),
		d.journey("je2", "u2", schemas.EventJourneyEntered, day1),
		d.journey("js1", "u1", schemas.EventJourneyStep, day1, "step", "offer", "from", "event"),
	}
}

// day2Records: Purchase e3 (u1); u3 entered, u2 stepped to offer, u1 exited
// at the goal.
func (d settleData) day2Records() []*kgo.Record {
	return []*kgo.Record{
		d.event("e3", "u1", "Purchase", day2, nil),
		d.journey("je3", "u3", schemas.EventJourneyEntered, day2),
		d.journey("js2", "u2", schemas.EventJourneyStep, day2, "step", "offer", "from", "event"),
		d.journey("jx1", "u1", schemas.EventJourneyExited, day2, "reason", "goal"),
	}
}

// liveSQL are the settled queries as they were before 0014: the merge of
// every state, the reference every settled read must equal.
var liveSQL = map[string]string{
	"events_by_name": `SELECT day, kind, name, uniqExactMerge(events) AS events
FROM event_days
WHERE ` + dayWhere + `
GROUP BY day, kind, name
ORDER BY day, kind, name`,
	"journey_steps": `SELECT journey, name, step, from_step, reason, uniqExactMerge(events) AS events, uniqExactMerge(users) AS users
FROM journey_days
WHERE ` + journeyWhere + `
GROUP BY journey, name, step, from_step, reason
ORDER BY journey, name, step, from_step, reason`,
}

// settleCase is a query, its parameters and the rows it must return.
type settleCase struct {
	query string
	p     Params
	want  []string
}

// checkSettled runs each case's query and the live merge it replaces: both
// must return want.
func checkSettled(t *testing.T, conn driver.Conn, when string, cases []settleCase) {
	t.Helper()
	for _, c := range cases {
		q, ok := QueryByName(c.query)
		if !ok {
			t.Fatalf("no query %s", c.query)
		}
		res, err := q.Run(t.Context(), conn, c.p)
		if err != nil {
			t.Fatalf("%s: %s: %v", when, c.query, err)
		}
		if got := format(res); !slices.Equal(got, c.want) {
			t.Errorf("%s: %s %+v\n got %q\nwant %q", when, c.query, c.p, got, c.want)
		}
		live := Query{Name: c.query, SQL: liveSQL[c.query], Args: dayArgs}
		if c.query == "journey_steps" {
			live.Args = journeyWhereArgs
		}
		res, err = live.Run(t.Context(), conn, c.p)
		if err != nil {
			t.Fatalf("%s: live %s: %v", when, c.query, err)
		}
		if got := format(res); !slices.Equal(got, c.want) {
			t.Errorf("%s: live merge of %s %+v\n got %q\nwant %q", when, c.query, c.p, got, c.want)
		}
	}
}

// settle runs one settle and checks how many keys it wrote.
func settle(t *testing.T, st *Settler, want int) {
	t.Helper()
	n, err := st.Settle(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("settled %d keys, want %d", n, want)
	}
}

// TestSettledCountsEqualTheLiveMerge takes the data through every state a
// key can be in (never settled, settled, partly settled, settled then
// redelivered, settled then a new event) and checks the settled queries
// against exact numbers and the live merge in each.
func TestSettledCountsEqualTheLiveMerge(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	st, err := NewSettler(Config{}, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := settleData{t: t, o: offsets{}}
	write := func(recs []*kgo.Record) {
		t.Helper()
		if dls, err := s.Write(t.Context(), recs); err != nil || len(dls) > 0 {
			t.Fatalf("Write: %d dead letters, %v", len(dls), err)
		}
	}
	all := Params{App: "shop"}
	onDay1 := Params{App: "shop", From: day1, To: day1}
	onDay2 := Params{App: "shop", From: day2, To: day2}
	day1Events := []string{
		"2025-03-10 event PW_JourneyEntered 2",
		"2025-03-10 event PW_JourneyStep 1",
		"2025-03-10 event Purchase 2",
		"2025-03-10 register PW_DeviceRegistered 1",
	}
	day1Journeys := []string{
		`onboarding PW_JourneyEntered "" "" "" 2 2`,
		`onboarding PW_JourneyStep offer event "" 1 1`,
	}
	day2Events := []string{
		"2025-03-11 event PW_JourneyEntered 1",
		"2025-03-11 event PW_JourneyExited 1",
		"2025-03-11 event PW_JourneyStep 1",
		"2025-03-11 event Purchase 1",
	}
	bothJourneys := []string{
		`onboarding PW_JourneyEntered "" "" "" 3 3`,
		`onboarding PW_JourneyExited "" "" goal 1 1`,
		`onboarding PW_JourneyStep offer event "" 2 2`,
	}
	oneDay := []settleCase{
		{"events_by_name", all, day1Events},
		{"journey_steps", all, day1Journeys},
		{"journey_steps", Params{App: "shop", Journey: "winback"}, []string{}},
		{"events_by_name", Params{App: "other"}, []string{}},
	}

	// Day 1 written twice (a redelivery), never settled.
	recs1 := d.day1Records()
	write(recs1)
	write(recs1)
	checkSettled(t, conn, "never settled", oneDay)

	// Settled: day 1's 4 event keys and 2 journey keys.
	settle(t, st, 6)
	checkSettled(t, conn, "settled", oneDay)
	settle(t, st, 0) // nothing changed: nothing to settle
	if n := count(t, conn, "SELECT count() FROM event_days_settled"); n != 4 {
		t.Fatalf("event_days_settled holds %d rows, want 4", n)
	}

	// Partly settled: day 2's keys are new.
	write(d.day2Records())
	both := []settleCase{
		{"events_by_name", all, slices.Concat(day1Events, day2Events)},
		{"events_by_name", onDay1, day1Events},
		{"events_by_name", onDay2, day2Events},
		{"journey_steps", all, bothJourneys},
		{"journey_steps", onDay1, day1Journeys},
		{"journey_steps", Params{App: "shop", Journey: "onboarding"}, bothJourneys},
	}
	checkSettled(t, conn, "partly settled", both)
	settle(t, st, 4+3) // day 2's keys only
	checkSettled(t, conn, "settled again", both)

	// Settled, then copies of settled ids (redelivered e1 and js1, and e3
	// of day 2): the keys are dirty, the counts stay.
	write([]*kgo.Record{recs1[0], recs1[5], d.day2Records()[0]})
	if n := count(t, conn, "SELECT count() FROM ("+dirtyKeys(settledTables[0], "")+")"); n != 3 {
		t.Fatalf("%d dirty event keys after the copies, want 3 (Purchase of both days, PW_JourneyStep of day 1)", n)
	}
	checkSettled(t, conn, "settled, then redelivered", both)
	settle(t, st, 3+1)
	checkSettled(t, conn, "redelivered, settled", both)

	// Settled, then a new id on a settled day: e4 (u3) and je4 (u3, who
	// entered on day 2 too: 4 events of 3 users).
	write([]*kgo.Record{
		d.event("e4", "u3", "Purchase", day1, nil),
		d.journey("je4", "u3", schemas.EventJourneyEntered, day1),
	})
	more := []settleCase{
		{"events_by_name", all, slices.Concat([]string{
			"2025-03-10 event PW_JourneyEntered 3",
			"2025-03-10 event PW_JourneyStep 1",
			"2025-03-10 event Purchase 3",
			"2025-03-10 register PW_DeviceRegistered 1",
		}, day2Events)},
		{"events_by_name", onDay2, day2Events},
		{"journey_steps", all, []string{
			`onboarding PW_JourneyEntered "" "" "" 4 3`,
			`onboarding PW_JourneyExited "" "" goal 1 1`,
			`onboarding PW_JourneyStep offer event "" 2 2`,
		}},
		{"journey_steps", onDay1, []string{
			`onboarding PW_JourneyEntered "" "" "" 3 3`,
			`onboarding PW_JourneyStep offer event "" 1 1`,
		}},
	}
	checkSettled(t, conn, "settled, then a new event", more)
	settle(t, st, 2+1)
	checkSettled(t, conn, "new event settled", more)
}

// TestSettledCountUsedOnlyWhileFresh plants settled counts by hand: one
// whose rows equal the key's current rows is what the query returns (so the
// query does read the settled counts), one with other rows is ignored.
func TestSettledCountUsedOnlyWhileFresh(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	d := settleData{t: t, o: offsets{}}
	if _, err := s.Write(t.Context(), d.day1Records()); err != nil {
		t.Fatal(err)
	}
	q, _ := QueryByName("events_by_name")
	purchases := func() string {
		t.Helper()
		res, err := q.Run(t.Context(), conn, Params{App: "shop"})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range format(res) {
			if strings.Contains(l, "Purchase") {
				return l
			}
		}
		return "none"
	}
	plant := func(events, rows uint64) {
		t.Helper()
		b, err := conn.PrepareBatch(t.Context(), "INSERT INTO event_days_settled (app, day, kind, name, events, rows)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append("shop", day1, "event", "Purchase", events, rows); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	// Purchase of day 1: 2 events, rows 2 (one insert of 2 rows).
	if rows := count(t, conn, "SELECT sumMerge(rows) FROM event_days WHERE name = 'Purchase'"); rows != 2 {
		t.Fatalf("Purchase rows = %d, want 2", rows)
	}
	plant(99, 1)
	if got := purchases(); got != "2025-03-10 event Purchase 2" {
		t.Fatalf("with a stale settled count: %s, want the live 2", got)
	}
	plant(77, 2)
	if got := purchases(); got != "2025-03-10 event Purchase 77" {
		t.Fatalf("with a fresh (planted) settled count: %s, want 77: the query does not read settled counts", got)
	}
	// Any insert touching the key makes the planted count stale.
	if _, err := s.Write(t.Context(), d.day1Records()[:1]); err != nil {
		t.Fatal(err)
	}
	if got := purchases(); got != "2025-03-10 event Purchase 2" {
		t.Fatalf("after a redelivered copy: %s, want the live 2", got)
	}
}

// TestRunSettles: the sink's Run settles every Config.SettleInterval, and
// counts it.
func TestRunSettles(t *testing.T) {
	_, conn := migratedDB(t)
	c := kafkatest.New(t, 2)
	d := settleData{t: t, o: offsets{}}
	s, _ := runSink(t, c, conn, Config{SettleInterval: 20 * time.Millisecond, FlushInterval: 50 * time.Millisecond})
	produce(t, c.Client(t), d.day1Records())
	waitFor(t, 60*time.Second, "day 1 settled", func() bool {
		return count(t, conn, "SELECT count() FROM (SELECT DISTINCT app, day, kind, name FROM event_days_settled)") == 4 &&
			count(t, conn, "SELECT count() FROM (SELECT DISTINCT app, day, journey, name, step, from_step, reason FROM journey_days_settled)") == 2
	})
	if n := testutil.ToFloat64(s.m.keysSettled.WithLabelValues("event_days_settled")); n < 4 {
		t.Fatalf("herald_analytics_keys_settled_total{table=event_days_settled} = %v, want at least 4", n)
	}
	if testutil.ToFloat64(s.m.settleRuns) < 1 || testutil.ToFloat64(s.m.settleErrors) != 0 {
		t.Fatalf("settle runs %v, errors %v", testutil.ToFloat64(s.m.settleRuns), testutil.ToFloat64(s.m.settleErrors))
	}
}

// TestSettleErrorIsCounted: a settle against a database without the tables
// fails with an error naming the table, and counts it.
func TestSettleErrorIsCounted(t *testing.T) {
	_, conn := migratedDB(t)
	if err := conn.Exec(context.Background(), "DROP TABLE event_days_settled"); err != nil {
		t.Fatal(err)
	}
	st, err := NewSettler(Config{}, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Settle(t.Context()); err == nil || !strings.Contains(err.Error(), "event_days") {
		t.Fatalf("Settle error = %v, want one naming event_days", err)
	}
	if testutil.ToFloat64(st.m.settleErrors) != 1 {
		t.Fatalf("settle errors = %v, want 1", testutil.ToFloat64(st.m.settleErrors))
	}
}

// TestMigration0014CopiesTheOldAggregates migrates a database holding
// events in events_daily and journey_daily: 0014, interrupted after its
// copies and then run whole (two copies), leaves event_days and
// journey_days with exact counts, the old tables dropped; later events and
// redelivered copies go through the new views, and 0014 run once more
// changes nothing.
func TestMigration0014CopiesTheOldAggregates(t *testing.T) {
	_, conn := chtest.DB(t)
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	at := slices.IndexFunc(ms, func(m migration) bool { return m.name == "0014_settled_counts" })
	if at < 0 {
		t.Fatal("no migration 0014_settled_counts")
	}
	if _, err := migrate(t.Context(), conn, nil, ms[:at]); err != nil {
		t.Fatal(err)
	}
	s, _, _ := newSink(t, Config{}, conn)
	d := settleData{t: t, o: offsets{}}
	write := func(recs []*kgo.Record) {
		t.Helper()
		if dls, err := s.Write(t.Context(), recs); err != nil || len(dls) > 0 {
			t.Fatalf("Write: %d dead letters, %v", len(dls), err)
		}
	}
	recs1 := d.day1Records()
	write(recs1)
	write(recs1)
	if n := count(t, conn, "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(events) AS n FROM journey_daily GROUP BY name)"); n != 3 {
		t.Fatalf("journey_daily counts %d events before 0014, want 3", n)
	}

	// Interrupted before its drops, then applied whole: copied twice.
	for _, stmt := range ms[at].statements {
		if strings.HasPrefix(stmt, "DROP") {
			break
		}
		if err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("0014 until its drops: %v", err)
		}
	}
	if applied, err := migrate(t.Context(), conn, nil, ms); err != nil || !slices.Equal(applied, []string{"0014_settled_counts"}) {
		t.Fatalf("migrate = %v, %v; want 0014 applied", applied, err)
	}
	for _, table := range droppedBy0014 {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 0 {
			t.Errorf("after 0014: table %s still there", table)
		}
	}
	// Every copied key has rows (1 per copied row), so none passes for
	// settled before the settler saw it.
	if n := count(t, conn, "SELECT count() FROM (SELECT sumMerge(rows) AS r FROM event_days GROUP BY app, day, kind, name) WHERE r = 0"); n != 0 {
		t.Fatalf("%d copied keys of event_days without rows", n)
	}
	all := Params{App: "shop"}
	day1Only := []settleCase{
		{"events_by_name", all, []string{
			"2025-03-10 event PW_JourneyEntered 2",
			"2025-03-10 event PW_JourneyStep 1",
			"2025-03-10 event Purchase 2",
			"2025-03-10 register PW_DeviceRegistered 1",
		}},
		{"journey_steps", all, []string{
			`onboarding PW_JourneyEntered "" "" "" 2 2`,
			`onboarding PW_JourneyStep offer event "" 1 1`,
		}},
		{"journey_conversion", all, []string{"onboarding 2 0 0"}},
	}
	checkSettledArgs := func(when string, cases []settleCase) {
		t.Helper()
		var settledOnly []settleCase
		for _, c := range cases {
			if c.query == "journey_conversion" {
				// Not a settled query: its result alone.
				q, _ := QueryByName(c.query)
				res, err := q.Run(t.Context(), conn, c.p)
				if err != nil {
					t.Fatal(err)
				}
				if got := format(res); !slices.Equal(got, c.want) {
					t.Errorf("%s: %s got %q, want %q", when, c.query, got, c.want)
				}
				continue
			}
			settledOnly = append(settledOnly, c)
		}
		checkSettled(t, conn, when, settledOnly)
	}
	checkSettledArgs("copied", day1Only)
	st, err := NewSettler(Config{}, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	settle(t, st, 6)
	checkSettledArgs("copied, settled", day1Only)

	// Through the new views: day 2, and a copy of e1 the copy holds.
	write(append(d.day2Records(), recs1[0]))
	after := []settleCase{
		{"events_by_name", all, []string{
			"2025-03-10 event PW_JourneyEntered 2",
			"2025-03-10 event PW_JourneyStep 1",
			"2025-03-10 event Purchase 2",
			"2025-03-10 register PW_DeviceRegistered 1",
			"2025-03-11 event PW_JourneyEntered 1",
			"2025-03-11 event PW_JourneyExited 1",
			"2025-03-11 event PW_JourneyStep 1",
			"2025-03-11 event Purchase 1",
		}},
		{"journey_steps", all, []string{
			`onboarding PW_JourneyEntered "" "" "" 3 3`,
			`onboarding PW_JourneyExited "" "" goal 1 1`,
			`onboarding PW_JourneyStep offer event "" 2 2`,
		}},
		{"journey_conversion", all, []string{"onboarding 3 1 0.3333"}},
	}
	checkSettledArgs("after the migration", after)
	settle(t, st, 5+3) // day 2's 4 + 3 keys, Purchase of day 1

	// 0014 again (as if it had not been recorded): nothing copied, nothing
	// dirty, the same counts.
	for _, stmt := range ms[at].statements {
		if err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatalf("running 0014 again: %v", err)
		}
	}
	settle(t, st, 0)
	checkSettledArgs("after 0014 ran again", after)
	for _, table := range droppedBy0014 {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 0 {
			t.Errorf("after 0014 ran again: table %s still there", table)
		}
	}
}

// TestSettledCountsWhileInsertingAndSettling queries while one goroutine
// writes new events of a day (and copies of earlier ones) and another
// settles without pause: every answer must lie between the events written
// before the query began and those begun before it ended (a key counted
// from both its settled row and its states would be about twice that, a
// key counted from neither 0), and the last must be exact.
func TestSettledCountsWhileInsertingAndSettling(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	st, err := NewSettler(Config{}, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := settleData{t: t, o: offsets{}}
	const n = 40
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = d.event("p-"+strconv.Itoa(i), "u1", "Purchase", day1, nil)
	}
	var begun, written atomic.Int64
	done := make(chan error, 2)
	stop := make(chan struct{})
	go func() {
		for i, r := range recs {
			begun.Add(1)
			batch := []*kgo.Record{r}
			if i > 0 {
				batch = append(batch, recs[i-1]) // a copy: no new event
			}
			if _, err := s.Write(context.Background(), batch); err != nil {
				done <- err
				close(stop)
				return
			}
			written.Add(1)
		}
		close(stop)
		done <- nil
	}()
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := st.Settle(context.Background()); err != nil {
				done <- err
				return
			}
		}
	}()
	q, _ := QueryByName("events_by_name")
	purchases := func() int64 {
		t.Helper()
		res, err := q.Run(t.Context(), conn, Params{App: "shop", From: day1, To: day1})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rows) == 0 {
			return 0
		}
		v, ok := res.Rows[0][3].(uint64)
		if !ok || len(res.Rows) != 1 {
			t.Fatalf("rows %v, want one Purchase count", res.Rows)
		}
		return int64(v)
	}
	queries := 0
	for running := true; running; queries++ {
		select {
		case <-stop:
			running = false
		default:
		}
		low := written.Load()
		got := purchases()
		if high := begun.Load(); got < low || got > high {
			t.Fatalf("query %d: %d purchases, want %d to %d", queries, got, low, high)
		}
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := purchases(); got != n {
		t.Fatalf("after the writes: %d purchases, want %d", got, n)
	}
	t.Logf("%d queries during the writes", queries)
}
