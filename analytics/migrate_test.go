package analytics

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/schemas"
)

func TestMigrateIsIdempotent(t *testing.T) {
	_, conn := chtest.DB(t)
	applied, err := Migrate(t.Context(), conn, nil)
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if want := []string{
		"0001_init", "0002_state_inbound_aggregates", "0003_message_facts", "0004_day_first_funnel",
		"0005_failure_aggregates", "0006_marketing_recipients", "0007_journey_daily",
		"0008_segment_daily", "0009_day_first_sends", "0010_dispatch_ranks", "0011_fact_counts", "0012_events_anonymous_id",
		"0013_drop_unread_aggregates", "0014_settled_counts",
	}; !slices.Equal(applied, want) {
		t.Fatalf("first Migrate applied %v, want %v", applied, want)
	}
	applied, err = Migrate(t.Context(), conn, nil)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", applied)
	}
	for _, table := range []string{
		"events", "statuses", "messages", "herald_migrations", "inbound", "message_state", "message_times",
		"costs", "sends_daily", "event_days", "statuses_daily", "inbound_hourly",
		"message_times_mv", "sends_daily_mv", "event_days_mv", "statuses_daily_mv", "inbound_hourly_mv",
		"wamids", "dispatch_meta", "message_facts", "pending_facts",
		"send_failures_daily", "send_failures_daily_mv", "status_failures_daily", "status_failures_daily_mv",
		"marketing_recipients_daily", "marketing_recipients_daily_mv", "journey_days", "journey_days_mv",
		"event_days_settled", "journey_days_settled",
		"segment_daily", "segment_daily_mv",
		"fact_log", "fact_days", "fact_days_mv", "fact_sources", "fact_sources_mv",
		"state_moves", "state_moves_mv",
	} {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 1 {
			t.Errorf("table %s: %d in system.tables, want 1", table, n)
		}
	}
	for _, table := range droppedBy0013 {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 0 {
			t.Errorf("table %s: %d in system.tables, want 0 (0013 drops it)", table, n)
		}
	}
	for _, table := range droppedBy0014 {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 0 {
			t.Errorf("table %s: %d in system.tables, want 0 (0014 drops it)", table, n)
		}
	}
	for _, table := range []string{"events", "statuses", "messages", "inbound", "message_state", "costs"} {
		var engine string
		if err := conn.QueryRow(t.Context(), "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&engine); err != nil {
			t.Fatal(err)
		}
		if engine != "ReplacingMergeTree" {
			t.Errorf("table %s engine %s, want ReplacingMergeTree", table, engine)
		}
	}
	if n := count(t, conn, "SELECT count() FROM herald_migrations WHERE version = 1 AND name = '0001_init'"); n != 1 {
		t.Fatalf("herald_migrations holds %d rows for 0001_init, want 1", n)
	}
}

// TestMigrateRerunsInterruptedMigration runs 0002 again as if it had been
// interrupted before it was recorded: its ALTER TABLE ... ADD COLUMN
// statements (no IF NOT EXISTS on 18.16) must be skipped, the rest re-run.
func TestMigrateRerunsInterruptedMigration(t *testing.T) {
	_, conn := chtest.DB(t)
	if _, err := Migrate(t.Context(), conn, nil); err != nil {
		t.Fatal(err)
	}
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	var m0002 migration
	for _, m := range ms {
		if m.version == 2 {
			m0002 = m
		}
	}
	m0002.version = 99 // unrecorded: applied again from its first statement
	applied, err := migrate(t.Context(), conn, nil, []migration{m0002})
	if err != nil {
		t.Fatalf("re-running 0002: %v", err)
	}
	if len(applied) != 1 {
		t.Fatalf("applied %v, want the re-run", applied)
	}
	if n := count(t, conn, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'statuses' AND name = 'country'"); n != 1 {
		t.Fatalf("statuses.country appears %d times", n)
	}
}

func TestAddColumnPattern(t *testing.T) {
	f := func(stmt, table, column string) {
		t.Helper()
		m := addColumn.FindStringSubmatch(stmt)
		if table == "" {
			if m != nil {
				t.Fatalf("%q matched %v", stmt, m)
			}
			return
		}
		if m == nil || m[1] != table || m[2] != column {
			t.Fatalf("%q: got %v, want %s.%s", stmt, m, table, column)
		}
	}
	f("ALTER TABLE statuses ADD COLUMN country String", "statuses", "country")
	f("-- why\n-- more\nalter table s add column c UInt8 DEFAULT 0", "s", "c")
	f("ALTER TABLE s DROP COLUMN c", "", "")
	f("CREATE TABLE IF NOT EXISTS x (n UInt8) ENGINE = Memory", "", "")
}

func TestMigrateRecordsOnlyCompleteMigrations(t *testing.T) {
	_, conn := chtest.DB(t)
	fsys := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS a (n UInt8) ENGINE = MergeTree() ORDER BY n\n;\n")},
		"m/0002_b.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS b (n UInt8) ENGINE = MergeTree() ORDER BY n\n;\nALTER TABLE nope ADD COLUMN x UInt8\n")},
	}
	ms, err := loadMigrations(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	applied, err := migrate(t.Context(), conn, nil, ms)
	if err == nil || !strings.Contains(err.Error(), "0002_b, statement 2 of 2") {
		t.Fatalf("migrate error = %v, want one naming 0002_b statement 2", err)
	}
	if !slices.Equal(applied, []string{"0001_a"}) {
		t.Fatalf("applied %v, want [0001_a]", applied)
	}
	if n := count(t, conn, "SELECT count() FROM herald_migrations"); n != 1 {
		t.Fatalf("%d migrations recorded, want 1 (the failed one must not be)", n)
	}

	// Fixed: the failed migration runs again from its first statement.
	fsys["m/0002_b.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE IF NOT EXISTS b (n UInt8) ENGINE = MergeTree() ORDER BY n\n;\nALTER TABLE b ADD COLUMN x UInt8\n")}
	if ms, err = loadMigrations(fsys, "m"); err != nil {
		t.Fatal(err)
	}
	applied, err = migrate(t.Context(), conn, nil, ms)
	if err != nil || !slices.Equal(applied, []string{"0002_b"}) {
		t.Fatalf("second migrate = %v, %v; want [0002_b], nil", applied, err)
	}
	if n := count(t, conn, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'b' AND name = 'x'"); n != 1 {
		t.Fatal("column b.x missing after the second run")
	}
}

func TestLoadMigrations(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    []string // name: statement count, in order
		wantErr string
	}{
		{
			name: "sorted by version, statements split",
			files: map[string]string{
				"0010_later.sql": "SELECT 1",
				"0002_two.sql":   "-- two statements\nCREATE TABLE x (n UInt8) ENGINE = Memory\n;\nDROP TABLE x;\n",
			},
			want: []string{"0002_two:2", "0010_later:1"},
		},
		{name: "bad name", files: map[string]string{"1_init.sql": "SELECT 1"}, wantErr: "not named NNNN_name.sql"},
		{name: "not sql", files: map[string]string{"0001_init.txt": "SELECT 1"}, wantErr: "not named"},
		{name: "upper case name", files: map[string]string{"0001_Init.sql": "SELECT 1"}, wantErr: "not named"},
		{name: "version zero", files: map[string]string{"0000_init.sql": "SELECT 1"}, wantErr: "versions start at 0001"},
		{name: "duplicate version", files: map[string]string{"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 2"}, wantErr: "same version"},
		{name: "only comments", files: map[string]string{"0001_a.sql": "-- nothing\n;\n\n"}, wantErr: "no statements"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, body := range tt.files {
				fsys["m/"+name] = &fstest.MapFile{Data: []byte(body)}
			}
			ms, err := loadMigrations(fsys, "m")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, fmt.Sprintf("%s:%d", m.name, len(m.statements)))
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSplitStatements(t *testing.T) {
	f := func(src string, want ...string) {
		t.Helper()
		if got := splitStatements(src); !slices.Equal(got, want) {
			t.Fatalf("splitStatements(%q) = %q, want %q", src, got, want)
		}
	}
	f("SELECT 1", "SELECT 1")
	f("SELECT 1;\n", "SELECT 1")
	f("SELECT 1\n;\nSELECT 2\n  ;  \n", "SELECT 1", "SELECT 2")
	f("SELECT 1\r\n;\r\nSELECT 2\r\n", "SELECT 1", "SELECT 2")
	f("-- a comment\nSELECT 1\n;\n-- trailing comment only\n", "-- a comment\nSELECT 1")
	f("SELECT ';' AS x, 1; \n", "SELECT ';' AS x, 1")
	f("")
	f("\n;\n;\n")
}

func TestEmbeddedMigrations(t *testing.T) {
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].name != "0001_init" || len(ms[0].statements) != 3 {
		t.Fatalf("embedded migrations = %+v, want 0001_init with 3 statements first", ms)
	}
	for _, m := range ms {
		for _, s := range m.statements {
			// ClickHouse has no transactions: a statement must be safe to
			// run again after an interrupted migration.
			if strings.Contains(s, "CREATE TABLE") && !strings.Contains(s, "IF NOT EXISTS") {
				t.Errorf("%s: CREATE TABLE without IF NOT EXISTS", m.name)
			}
			// Current releases only: would break 18.16.
			for _, bad := range []string{"DateTime64", "Map(", "LowCardinality", " TTL "} {
				if strings.Contains(stripComments(s), bad) {
					t.Errorf("%s uses %s, which ClickHouse 18.16 lacks", m.name, bad)
				}
			}
		}
	}
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMigrationsCopyExistingAggregates applies 0004 to 0010 to a database
// that holds data: funnel_days and the failure aggregates start with the
// counts of the aggregates they copy, their views add what comes after, and
// running their statements again (an interrupted migration) changes no
// count.
func TestMigrationsCopyExistingAggregates(t *testing.T) {
	_, conn := chtest.DB(t)
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"0004_day_first_funnel", "0005_failure_aggregates", "0006_marketing_recipients", "0007_journey_daily", "0008_segment_daily",
		"0009_day_first_sends", "0010_dispatch_ranks", "0011_fact_counts",
	}
	if len(ms) < 3+len(want) {
		t.Fatalf("migrations %v: want %v after the first three", ms, want)
	}
	for i, name := range want {
		if ms[3+i].name != name {
			t.Fatalf("migration %d is %s, want %s", 4+i, ms[3+i].name, name)
		}
	}
	// The first three, and the columns today's sink writes (0012 adds one
	// to events).
	first := slices.Clone(ms[:3])
	for _, m := range ms {
		if m.name == "0012_events_anonymous_id" {
			first = append(first, m)
		}
	}
	if _, err := migrate(t.Context(), conn, nil, first); err != nil {
		t.Fatal(err)
	}
	s, c, _ := newSink(t, Config{}, conn)
	o := offsets{schemas.TopicEvents: 500, schemas.TopicOutcomes: 500}
	failedStatus := func(id, wamid string, code int, at time.Time) *kgo.Record {
		e := status(id, "demo", wamid, "failed", "", at)
		e.Status.ErrorCode, e.Status.Billable = code, false
		return o.rec(t, schemas.TopicEvents, e.Key(), e)
	}
	segment := func(id, name string) *kgo.Record {
		e := &schemas.Event{
			ID: id, App: "demo", Kind: schemas.KindEvent, Name: name, Time: base,
			UserID: "u1", Attributes: map[string]any{"segment": "s1"},
		}
		return o.rec(t, schemas.TopicEvents, e.Key(), e)
	}
	entered := func(id, user string) *kgo.Record {
		e := &schemas.Event{
			ID: id, App: "demo", Kind: schemas.KindEvent, Name: schemas.EventJourneyEntered, Time: base,
			UserID: user, Attributes: map[string]any{"journey": "j1"},
		}
		return o.rec(t, schemas.TopicEvents, e.Key(), e)
	}
	write := func(recs []*kgo.Record) {
		t.Helper()
		if dls, err := s.Write(t.Context(), recs); err != nil || len(dls) > 0 {
			t.Fatalf("Write: %d dead letters, %v", len(dls), err)
		}
	}
	// Before the migrations: dataset's failed send d4 and a failed status.
	write(append(dataset(t), failedStatus("st-f1", "wamid.x1", 131049, base), entered("je-1", "u1"),
		segment("se-1", schemas.EventSegmentEntered)))
	// Up to 0012: 0013 drops the aggregates the checks below compare the
	// fact counts with.
	upTo := slices.IndexFunc(ms, func(m migration) bool { return m.name == "0013_drop_unread_aggregates" })
	if upTo < 0 {
		t.Fatal("no migration 0013_drop_unread_aggregates")
	}
	if _, err := migrate(t.Context(), conn, nil, ms[:upTo]); err != nil {
		t.Fatal(err)
	}
	// After them: one more failed send and failed status, through the views.
	x := outcome("d5", "demo", schemas.OutcomeFailed, "promo", base.Add(time.Hour))
	write([]*kgo.Record{
		o.rec(t, schemas.TopicOutcomes, x.Key(), x), failedStatus("st-f2", "wamid.x2", 131049, base.Add(time.Hour)),
		entered("je-2", "u2"), entered("je-3", "u1"), segment("se-2", schemas.EventSegmentEntered), segment("se-3", schemas.EventSegmentExited),
	})
	// The sink produced the facts of both writes: those of the first were
	// copied by 0011 (kpartition -1) and must not count again. A horizon
	// of a century keeps them in the seen-sets loaded at assignment.
	countFacts(t, c, conn, Config{FactsHorizon: 100 * 365 * 24 * time.Hour})

	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			name, query string
			want        uint64
		}{
			{"send_failures_daily", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(dispatches) AS n FROM send_failures_daily WHERE error_code = 131026 GROUP BY app, day)", 2},
			{"status_failures_daily", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(messages) AS n FROM status_failures_daily WHERE error_code = 131049 GROUP BY app, day)", 2},
			// d1-d5 and o1 requested; d4 and d5 failed.
			{"funnel_days requested", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(dispatches) AS n FROM funnel_days WHERE state = 'requested' GROUP BY app, day)", 6},
			{"funnel_days failed", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(dispatches) AS n FROM funnel_days WHERE state = 'failed' GROUP BY app, day)", 2},
			// Every MARKETING send of demo goes to one number; other's o1
			// (before the migrations only) to another.
			{"marketing_recipients_daily", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(recipients) AS n FROM marketing_recipients_daily GROUP BY app)", 2},
			// je-1 (before), je-2 and je-3 (after): three events of two users.
			{"journey_daily events", "SELECT uniqExactMerge(events) FROM journey_daily WHERE journey = 'j1'", 3},
			{"journey_daily users", "SELECT uniqExactMerge(users) FROM journey_daily WHERE journey = 'j1'", 2},
			// d1-d4 and o1 (before) and d5 (after) had outcomes.
			{"sends_days", "SELECT toUInt64(sum(n)) FROM (SELECT uniqExactMerge(dispatches) AS n FROM sends_days GROUP BY app, day)", 6},
			{"sends_days = sends_daily", `SELECT count() FROM
				(SELECT app, day, source_kind, source_name, state, error_code, uniqExactMerge(dispatches) AS n FROM sends_days GROUP BY app, day, source_kind, source_name, state, error_code) AS a
				FULL OUTER JOIN
				(SELECT app, day, source_kind, source_name, state, error_code, uniqExactMerge(dispatches) AS n FROM sends_daily GROUP BY app, day, source_kind, source_name, state, error_code) AS b
				USING (app, day, source_kind, source_name, state, error_code)
				WHERE a.n != b.n`, 0},
			// Current states: d1 read (rank 7), d2 delivered (6), d3 sent (4),
			// d4 and d5 failed (5), o1 sent (4).
			{"dispatch_ranks", `SELECT toUInt64(sum(r)) FROM (SELECT dispatch, maxMerge(rank) AS r FROM dispatch_ranks GROUP BY dispatch)`, 31},
			// se-1 (before), se-2 (after) entered s1; se-3 (after) exited.
			{"segment_daily entered", "SELECT uniqExactMerge(events) FROM segment_daily WHERE segment = 's1' AND name = 'PW_SegmentEntered'", 2},
			{"segment_daily exited", "SELECT uniqExactMerge(events) FROM segment_daily WHERE segment = 's1' AND name = 'PW_SegmentExited'", 1},
			// The fact counts: the same dispatches, each state once.
			{"fact_days requested", "SELECT toUInt64(sum(n)) FROM fact_days WHERE state = 'requested'", 6},
			{"fact_days failed", "SELECT toUInt64(sum(n)) FROM fact_days WHERE state = 'failed'", 2},
			{"fact_days outcomes", "SELECT toUInt64(sum(n)) FROM fact_days WHERE state = 'outcome'", 6},
			{"fact_sources = fact_days", "SELECT toUInt64(abs((SELECT sum(n) FROM fact_sources) - (SELECT sum(n) FROM fact_days)))", 0},
			{"fact_days = funnel_days", `SELECT count() FROM
				(SELECT app, day, source_kind, source_name, state, detail, toUInt64(sum(n)) AS n FROM fact_days WHERE state != 'outcome' GROUP BY app, day, source_kind, source_name, state, detail) AS a
				FULL OUTER JOIN
				(SELECT app, day, source_kind, source_name, state, detail, uniqExactMerge(dispatches) AS n FROM funnel_days GROUP BY app, day, source_kind, source_name, state, detail) AS b
				USING (app, day, source_kind, source_name, state, detail)
				WHERE a.n != b.n`, 0},
			{"state_moves dispatches", "SELECT toUInt64(sum(n)) FROM state_moves", 6},
			{"state_moves ranks", "SELECT toUInt64(sum(n * rank)) FROM state_moves", 31},
			{"funnel_days = funnel_daily", `SELECT count() FROM
				(SELECT app, day, source_kind, source_name, state, detail, uniqExactMerge(dispatches) AS n FROM funnel_days GROUP BY app, day, source_kind, source_name, state, detail) AS a
				FULL OUTER JOIN
				(SELECT app, day, source_kind, source_name, state, detail, uniqExactMerge(dispatches) AS n FROM funnel_daily GROUP BY app, day, source_kind, source_name, state, detail) AS b
				USING (app, day, source_kind, source_name, state, detail)
				WHERE a.n != b.n`, 0},
		} {
			if got := count(t, conn, c.query); got != c.want {
				t.Errorf("%s: %s = %d, want %d", when, c.name, got, c.want)
			}
		}
	}
	check("after the migrations")
	for _, m := range ms[3 : 3+len(want)] {
		for _, stmt := range m.statements {
			if err := conn.Exec(t.Context(), stmt); err != nil {
				t.Fatalf("running %s again: %v", m.name, err)
			}
		}
	}
	check("after running 0004 to 0011 again")

	// 0013 drops the four aggregates and their views, and leaves the fact
	// counts as they were.
	before := count(t, conn, "SELECT toUInt64(sum(n)) FROM fact_days")
	if _, err := migrate(t.Context(), conn, nil, ms); err != nil {
		t.Fatal(err)
	}
	for _, table := range droppedBy0013 {
		if n := count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 0 {
			t.Errorf("after 0013: table %s still there", table)
		}
	}
	if after := count(t, conn, "SELECT toUInt64(sum(n)) FROM fact_days"); after != before || before == 0 {
		t.Errorf("fact_days sums %d after 0013, %d before", after, before)
	}
}

// droppedBy0013 are the aggregates no query reads since 0011.
var droppedBy0013 = []string{
	"funnel_daily", "funnel_daily_mv", "funnel_days", "funnel_days_mv",
	"sends_days", "sends_days_mv", "dispatch_ranks", "dispatch_ranks_mv",
}

// droppedBy0014 are the aggregates event_days and journey_days replace.
var droppedBy0014 = []string{"events_daily", "events_daily_mv", "journey_daily", "journey_daily_mv"}
