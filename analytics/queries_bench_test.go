package analytics

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// benchMessages is the number of messages BenchmarkQueries loads:
// HERALD_BENCH_MESSAGES, default 10,000,000.
func benchMessages(b *testing.B) int {
	if s := os.Getenv("HERALD_BENCH_MESSAGES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			b.Fatalf("HERALD_BENCH_MESSAGES=%q: want a number >= 1000", s)
		}
		return n
	}
	return 10_000_000
}

// loadSQL generates the data set of BenchmarkQueries server-side, N
// messages of app bench over the 30 days from 2025-03-01: 80% from 100
// campaigns (each a contiguous 1% of the time), 15% keyword replies (5
// rules), 5% from 10 journeys; 20 templates; 10 countries; 3,000,000
// recipients. Outcomes: 90% accepted, 5% failed, 3% expired, 2% in
// doubt. Of the accepted: a sent status each, delivered 88%, read 55%
// (read 1 min to 2 h after sent), billable when the template is not
// free-form. Inbound: N/10 messages (2% of sends get a reply with their
// context, the rest keywords), events: N/5 (journey and segment events).
// Each statement is one INSERT ... SELECT FROM numbers(N), message_facts
// holding the attributed facts the sink would write; the views fill the
// aggregates as they would from the sink.
func loadSQL(n int) []string {
	N := strconv.Itoa(n)
	msg := `
    toUInt64(number) AS n,
    lower(hex(MD5(toString(n)))) AS dispatch_id,
    toDateTime('2025-03-01 00:00:00') + intDiv(n * 2592000, ` + N + `) AS requested,
    multiIf(n % 20 < 16, 'campaign', n % 20 < 19, 'keyword', 'journey') AS source_kind,
    multiIf(source_kind = 'campaign', concat('c', toString(intDiv(n * 100, ` + N + `))),
            source_kind = 'keyword', ['HELP', 'PROMO', 'STOP', 'INFO', 'HI'][n % 5 + 1],
            concat('j', toString(n % 10))) AS source_name,
    if(source_kind = 'keyword', '', concat('t', toString(cityHash64(source_name) % 20))) AS template,
    if(template = '', '', ['MARKETING', 'UTILITY', 'AUTHENTICATION'][cityHash64(template) % 3 + 1]) AS category,
    ['BD', 'IN', 'BR', 'ID', 'NG', 'MX', 'US', 'GB', 'DE', 'EG'][n % 10 + 1] AS country,
    concat('+88017', toString(10000000 + n % 3000000)) AS recipient,
    intHash32(n) % 100 AS r,
    multiIf(r < 90, 'accepted', r < 95, 'failed', r < 98, 'expired', 'in_doubt') AS outcome,
    intHash32(n + 1) % 100 AS r2,
    concat('wamid.', dispatch_id) AS wamid,
    requested + 2 AS sent_time,
    requested + 5 AS delivered_time,
    requested + 62 + intHash32(n + 2) % 7200 AS read_time`
	from := ` FROM (SELECT ` + msg + ` FROM numbers(` + N + `))`
	accepted := from + ` WHERE outcome = 'accepted'`
	return []string{
		`INSERT INTO messages (dispatch_id, app, channel, sender, recipient, country, state, template, category,
    source_kind, source_name, requested, time, date)
SELECT dispatch_id, 'bench', 'whatsapp', '1001', recipient, country, 'requested', template, category,
    source_kind, source_name, requested, requested, toDate(requested)` + from,
		`INSERT INTO messages (dispatch_id, app, channel, sender, recipient, country, state, provider_id, template, category,
    source_kind, source_name, error_code, attempts, requested, time, date)
SELECT dispatch_id, 'bench', 'whatsapp', '1001', recipient, country, outcome, if(outcome = 'accepted', wamid, ''), template, category,
    source_kind, source_name, if(outcome = 'failed', [131026, 131050, 131047, 130472][n % 4 + 1], 0), 1,
    requested, requested + 1, toDate(requested)` + from,
		`INSERT INTO message_state (app, dispatch_id, state, rank, version, time, origin)
SELECT 'bench', dispatch_id, 'requested', 1, bitShiftLeft(toUInt64(1), 40) + toUInt64(requested), requested, 'dispatch'` + from,
		`INSERT INTO message_state (app, dispatch_id, state, rank, version, time, wamid, error_code, origin)
SELECT 'bench', dispatch_id, st, rk, bitShiftLeft(toUInt64(rk), 40) + toUInt64(requested + 1), requested + 1,
    if(outcome = 'accepted', wamid, ''), if(outcome = 'failed', 131026, 0), 'outcome'
FROM (SELECT *, multiIf(outcome = 'accepted', 'sent', outcome = 'failed', 'failed', outcome = 'expired', 'expired', 'in_doubt') AS st,
    toUInt8(multiIf(st = 'sent', 4, st = 'failed', 5, st = 'expired', 3, 2)) AS rk` + from + `)`,
		`INSERT INTO message_state (app, dispatch_id, state, rank, version, time, wamid, origin)
SELECT 'bench', dispatch_id, 'sent', 4, bitShiftLeft(toUInt64(4), 40) + toUInt64(sent_time), sent_time, wamid, 'status'` + accepted,
		`INSERT INTO message_state (app, dispatch_id, state, rank, version, time, wamid, origin)
SELECT 'bench', dispatch_id, 'delivered', 6, bitShiftLeft(toUInt64(6), 40) + toUInt64(delivered_time), delivered_time, wamid, 'status'` + accepted + ` AND r2 < 88`,
		`INSERT INTO message_state (app, dispatch_id, state, rank, version, time, wamid, origin)
SELECT 'bench', dispatch_id, 'read', 7, bitShiftLeft(toUInt64(7), 40) + toUInt64(read_time), read_time, wamid, 'status'` + accepted + ` AND r2 < 55`,
		`INSERT INTO statuses (app, wamid, status, recipient, dispatch_id, pricing_category, billable, time, date, country)
SELECT 'bench', wamid, arrayJoin(if(r2 < 55, ['sent', 'delivered', 'read'], if(r2 < 88, ['sent', 'delivered'], ['sent']))) AS status,
    recipient, dispatch_id, if(category = '', 'service', lower(category)), category != '',
    multiIf(status = 'sent', sent_time, status = 'delivered', delivered_time, read_time) AS t, toDate(t), country` + accepted,
		`INSERT INTO costs (app, wamid, dispatch_id, pricing_category, pricing_type, country, in_window, price_known, currency, price_micros, time, date, version)
SELECT 'bench', wamid, dispatch_id, lower(category), 'regular', country, 0, 1, 'USD',
    multiIf(category = 'MARKETING', 10000, category = 'UTILITY', 4000, 3000), delivered_time, toDate(delivered_time),
    bitShiftLeft(toUInt64(3), 40) + toUInt64(delivered_time)` + accepted + ` AND r2 < 88 AND category != ''`,
		`INSERT INTO inbound (app, wamid, from_number, phone_number_id, type, text, context_id, keyword, country, time, date, event_id)
SELECT 'bench', concat('wamid.in.', toString(n)), recipient, '1001', 'text', kw, if(n % 5 = 0, wamid, ''), lower(kw), country,
    read_time + 30 AS t, toDate(t), concat('in-', toString(n))
FROM (SELECT *, ['Thanks', 'HELP', 'PROMO', 'STOP', 'hi', 'price'][n % 6 + 1] AS kw` + from + ` WHERE n % 10 = 0)`,
		`INSERT INTO message_facts (app, day, source_kind, source_name, template, category, country, dispatch_id,
    state, detail, amount, currency, time)
SELECT 'bench', toDate(requested), source_kind, source_name, template, category, country, dispatch_id,
    tupleElement(f, 1), tupleElement(f, 2), tupleElement(f, 3), tupleElement(f, 4), tupleElement(f, 5)
FROM (SELECT *, arrayJoin(arrayFilter(x -> tupleElement(x, 1) != '', [
    ('requested', '', toInt64(0), '', requested),
    (if(outcome = 'accepted', 'sent', outcome), if(outcome = 'failed', '131026', ''), toInt64(0), '', requested + 1),
    (if(outcome = 'accepted' AND r2 < 88, 'delivered', ''), '', toInt64(0), '', delivered_time),
    (if(outcome = 'accepted' AND r2 < 55, 'read', ''),
        multiIf(read_time - requested < 60, '< 1 min', read_time - requested < 300, '1-5 min', read_time - requested < 3600, '5-60 min',
            read_time - requested < 21600, '1-6 h', read_time - requested < 86400, '6-24 h', '>= 24 h'), toInt64(0), '', read_time),
    (if(outcome = 'accepted' AND category != '', 'billed', ''), lower(category),
        toInt64(multiIf(category = 'MARKETING', 10000, category = 'UTILITY', 4000, 3000)), 'USD', sent_time),
    (if(outcome = 'accepted' AND n % 10 = 0, 'replied', ''), '', toInt64(0), '', read_time + 30)
])) AS f` + from + `)`,
		`INSERT INTO events (id, app, kind, name, time, date, user_id, attr_keys, attr_values, attributes, tags)
SELECT concat('ev-', toString(n)), 'bench', 'event',
    ['PW_JourneyEntered', 'PW_JourneyStep', 'PW_JourneyExited', 'PW_SegmentEntered', 'PW_SegmentExited'][n % 5 + 1] AS name,
    requested, toDate(requested), concat('u', toString(n % 3000000)),
    if(n % 5 < 3, ['from', 'journey', 'reason', 'step'], ['segment']),
    if(n % 5 < 3, [if(n % 5 = 1, ['event', 'timeout'][n % 2 + 1], ''), concat('j', toString(n % 10)),
        if(n % 5 = 2, ['goal', 'completed'][n % 2 + 1], ''), if(n % 5 = 1, 'offer', '')], [concat('s', toString(n % 20))]),
    '{}', '{}'` + from + ` WHERE n % 5 != 4 OR n % 3 = 0`,
	}
}

// BenchmarkQueries times each documented query over HERALD_BENCH_MESSAGES
// messages (default 10,000,000) in a private ClickHouse, loaded once
// server-side (a few minutes on 2 cores); params are those of `herald
// report -app bench` (all days, all sources) and, for the source
// queries, one campaign too.
//
//	go test -run '^$' -bench BenchmarkQueries -benchtime 3x -timeout 60m ./analytics/
func BenchmarkQueries(b *testing.B) {
	n := benchMessages(b)
	ctx := context.Background()
	var conn driver.Conn
	if dsn := os.Getenv("HERALD_BENCH_DSN"); dsn != "" {
		// A server of your own: loaded once, kept for the next run.
		c, err := Open(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		t0 := time.Now()
		applied, err := Migrate(ctx, c, nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(applied) > 0 {
			b.Logf("applied %v in %s", applied, time.Since(t0).Round(time.Millisecond))
		}
		conn = c
	} else {
		_, conn = migratedDB(b)
	}
	if have := count(b, conn, "SELECT count() FROM messages WHERE app = 'bench'"); have > 0 {
		n = 0 // loaded by an earlier run
		b.Logf("using the %d message rows loaded before", have)
	}
	start := time.Now()
	for i, stmt := range loadSQL(n) {
		if n == 0 {
			break
		}
		t0 := time.Now()
		if err := conn.Exec(ctx, stmt); err != nil {
			b.Fatalf("loading, statement %d: %v\n%s", i+1, err, stmt)
		}
		b.Logf("load %d: %s", i+1, time.Since(t0).Round(time.Millisecond))
	}
	if n > 0 {
		// The fact counts as the fact counter would have written them:
		// 0011's copies of the facts and outcomes just loaded (they run
		// while their targets are empty, as they are after the load).
		t0 := time.Now()
		if err := fillFactCounts(ctx, conn); err != nil {
			b.Fatal(err)
		}
		b.Logf("fact counts filled in %s", time.Since(t0).Round(time.Millisecond))
	}
	b.Logf("loaded %d messages in %s: %s", n, time.Since(start).Round(time.Second), tableSizes(b, conn))
	settleButLastDay(ctx, b, conn)
	if os.Getenv("HERALD_BENCH_OPTIMIZE") != "" {
		// Merged parts, as a table settles into after the background merges.
		for _, t := range append(tableNames, "message_times") {
			if err := conn.Exec(ctx, "OPTIMIZE TABLE "+t+" FINAL"); err != nil {
				b.Fatal(err)
			}
		}
	}
	params := []struct {
		name string
		p    Params
	}{
		{"all", Params{App: "bench"}},
		{"campaign", Params{App: "bench", SourceKind: "campaign", SourceName: "c42"}},
		{"day", Params{App: "bench", From: time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC), To: time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)}},
	}
	for _, q := range Queries {
		for _, pp := range params {
			if pp.name != "all" && !usesAny(q, "source_kind_from", "from") {
				continue
			}
			b.Run(q.Name+"/"+pp.name, func(b *testing.B) {
				var rows int
				for b.Loop() {
					res, err := q.Run(ctx, conn, pp.p)
					if err != nil {
						b.Fatal(err)
					}
					rows = len(res.Rows)
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
				b.ReportMetric(float64(rows), "rows")
			})
		}
	}
}

// settleButLastDay puts the data set in the state of a running system:
// every key settled but those of the last day, which the sink keeps
// touching. It settles every key (the first settle after 0014 or a load
// settles all 30 days), then inserts one event with a new id for each
// name and attribute set of the last day's events (the same ids on every
// run: after the first, they add rows but no event), so the last day's
// keys of event_days and journey_days are dirty and the queries merge
// their whole states, as they would today's.
func settleButLastDay(ctx context.Context, b *testing.B, conn driver.Conn) {
	b.Helper()
	st, err := NewSettler(Config{}, conn, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	keys, err := st.Settle(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("settled %d keys in %s", keys, time.Since(t0).Round(time.Millisecond))
	err = conn.Exec(ctx, `INSERT INTO events (id, app, kind, name, time, date, user_id, attr_keys, attr_values, attributes, tags)
SELECT concat('fresh-', name, '-', arrayStringConcat(attr_values, '-')), 'bench', 'event', name, max(time), date, any(user_id),
    attr_keys, attr_values, '{}', '{}'
FROM events
WHERE app = 'bench' AND kind = 'event' AND date = (SELECT max(date) FROM events WHERE app = 'bench')
GROUP BY name, date, attr_keys, attr_values`)
	if err != nil {
		b.Fatalf("touching the last day: %v", err)
	}
	for _, t := range settledTables {
		dirty := count(b, conn, "SELECT count() FROM ("+dirtyKeys(t, "")+")")
		b.Logf("%s: %d dirty keys (the last day's)", t.source, dirty)
	}
}

// fillFactCounts runs the INSERT statements of 0011_fact_counts, which
// fill fact_log (and through its views fact_days and fact_sources) and
// state_moves from the facts, outcomes and ranks loaded.
func fillFactCounts(ctx context.Context, conn driver.Conn) error {
	ms, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.name != "0011_fact_counts" {
			continue
		}
		for _, stmt := range m.statements {
			if !strings.HasPrefix(strings.TrimSpace(stmt), "INSERT") {
				continue
			}
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("filling the fact counts: %w", err)
			}
		}
		return nil
	}
	return fmt.Errorf("no migration 0011_fact_counts")
}

func usesAny(q Query, names ...string) bool {
	for _, a := range q.Args {
		for _, n := range names {
			if a == n {
				return true
			}
		}
	}
	return false
}

// tableSizes lists the row counts of the tables.
func tableSizes(b *testing.B, conn driver.Conn) string {
	var out []string
	for _, t := range append(tableNames, "message_times", "sends_daily", "event_days", "journey_days", "statuses_daily", "inbound_hourly",
		"event_days_settled", "journey_days_settled", "fact_log", "fact_days", "fact_sources", "state_moves") {
		out = append(out, fmt.Sprintf("%s %d", t, count(b, conn, "SELECT count() FROM "+t)))
	}
	return strings.Join(out, ", ")
}
