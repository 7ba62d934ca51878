package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// The settler: final counts of the event aggregates, cached while fresh.
//
// event_days and journey_days (migrations/0014) hold uniqExact states of
// event ids per key and rows, a sum that grows with every insert touching
// the key. Merging the states of 30 days is what events_by_name and
// journey_steps spent their time on. The settler copies, for every key
// whose current sumMerge(rows) has no settled row, the key's
// uniqExactMerge(events) and sumMerge(rows) into event_days_settled or
// journey_days_settled, both read by one SELECT (one snapshot of parts: the
// count is that of exactly those rows). A settled count is fresh while its
// rows equals the key's current sumMerge(rows); the queries (dirtyKeys) read
// the settled count of fresh keys and merge the states of the others, so a
// stale count is never used. Settling is an optimisation only: a settler
// that never runs leaves the queries exact (and as slow as before), two
// settlers at once write the same counts.

// settledTable is an aggregate with rows and its table of settled counts.
type settledTable struct {
	// name is the settled table, source the aggregate it settles.
	name, source string
	// keys are the key columns of both (the sorting key of both, day
	// second).
	keys []string
}

// settledTables are the aggregates the settler settles.
var settledTables = []settledTable{
	{name: "event_days_settled", source: "event_days", keys: []string{"app", "day", "kind", "name"}},
	{name: "journey_days_settled", source: "journey_days", keys: []string{"app", "day", "journey", "name", "step", "from_step", "reason"}},
}

// settleChunkDays is the most dirty days one settle SELECT merges: it
// bounds the server memory of the first settle after the migration, when
// every day is dirty (the bench's 30 days of 8.7 M events merge in about
// 1 s; a year of a busy app would not fit in one query's memory).
const settleChunkDays = 7

// Settler writes the settled counts of event_days and journey_days. Build it
// with NewSettler (a Sink builds and runs its own), run it with Run or call
// Settle.
type Settler struct {
	conn     driver.Conn
	log      *slog.Logger
	m        *metrics
	interval time.Duration
}

// NewSettler builds a settler on its own; cfg is validated as for New
// (SettleInterval is its period). Metrics are registered with prom when it
// is not nil.
func NewSettler(cfg Config, conn driver.Conn, log *slog.Logger, prom prometheus.Registerer) (*Settler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("analytics: a clickhouse connection is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(prom)
	if err != nil {
		return nil, err
	}
	return newSettler(cfg, conn, log.With("stage", stage), m), nil
}

func newSettler(cfg Config, conn driver.Conn, log *slog.Logger, m *metrics) *Settler {
	return &Settler{conn: conn, log: log.With("component", "settler"), m: m, interval: cfg.SettleInterval}
}

// Run settles at once and then every Config.SettleInterval until ctx is
// done; it returns nil then. A failed settle (ClickHouse down) is logged
// and counted, and the next one is tried an interval later: the queries
// stay exact without it.
func (s *Settler) Run(ctx context.Context) error {
	s.log.Info("settler running", "interval", s.interval)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	failing := false
	for {
		n, err := s.Settle(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			s.log.Warn("settling event counts; retrying every interval", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("settling event counts again", "keys", n)
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Settle writes the settled count of every key of event_days and
// journey_days that has none for its current rows, and returns how many it
// wrote.
func (s *Settler) Settle(ctx context.Context) (int, error) {
	start := time.Now()
	s.m.settleRuns.Inc()
	defer func() { s.m.settleDuration.Observe(time.Since(start).Seconds()) }()
	total := 0
	for _, t := range settledTables {
		n, err := s.settleTable(ctx, t)
		total += n
		if err != nil {
			s.m.settleErrors.Inc()
			return total, err
		}
	}
	return total, nil
}

// settleTable settles t's dirty keys, settleChunkDays days at a time.
func (s *Settler) settleTable(ctx context.Context, t settledTable) (int, error) {
	days, err := s.dirtyDays(ctx, t)
	if err != nil {
		return 0, err
	}
	total := 0
	for len(days) > 0 {
		chunk := days[:min(len(days), settleChunkDays)]
		days = days[len(chunk):]
		n, err := s.settleDays(ctx, t, chunk[0], chunk[len(chunk)-1])
		total += n
		s.m.keysSettled.WithLabelValues(t.name).Add(float64(n))
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// dirtyDays returns the days, ascending, that have a key of t without a
// settled count for its current rows.
func (s *Settler) dirtyDays(ctx context.Context, t settledTable) ([]string, error) {
	q := `SELECT DISTINCT toString(day) AS d FROM (` + dirtyKeys(t, "") + `) ORDER BY d`
	rows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("finding the dirty days of %s: %w", t.source, err)
	}
	defer rows.Close()
	var days []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("reading the dirty days of %s: %w", t.source, err)
		}
		days = append(days, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the dirty days of %s: %w", t.source, err)
	}
	return days, nil
}

// settleDays reads the count and rows of t's dirty keys of the days from
// to (YYYY-MM-DD, both included), in one SELECT, and inserts them into
// t.name.
func (s *Settler) settleDays(ctx context.Context, t settledTable, from, to string) (int, error) {
	const days = `day BETWEEN toDate(?) AND toDate(?)`
	keys := strings.Join(t.keys, ", ")
	q := `SELECT ` + keys + `, uniqExactMerge(events) AS events, sumMerge(rows) AS rows
FROM ` + t.source + `
WHERE ` + days + ` AND (` + keys + `) IN (` + dirtyKeys(t, days) + `)
GROUP BY ` + keys
	// days comes three times: here and twice in dirtyKeys.
	rows, err := s.conn.Query(ctx, q, from, to, from, to, from, to)
	if err != nil {
		return 0, fmt.Errorf("reading the counts of %s from %s to %s: %w", t.source, from, to, err)
	}
	defer rows.Close()
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+t.name+" ("+keys+", events, rows)")
	if err != nil {
		return 0, fmt.Errorf("preparing the insert into %s: %w", t.name, err)
	}
	n := 0
	for rows.Next() {
		vals := make([]any, len(t.keys)+2)
		ptrs := make([]any, len(vals))
		for i, k := range t.keys {
			if k == "day" {
				ptrs[i] = new(time.Time)
			} else {
				ptrs[i] = new(string)
			}
		}
		ptrs[len(t.keys)], ptrs[len(t.keys)+1] = new(uint64), new(uint64)
		if err := rows.Scan(ptrs...); err != nil {
			_ = batch.Abort()
			return 0, fmt.Errorf("reading the counts of %s: %w", t.source, err)
		}
		for i, p := range ptrs {
			switch p := p.(type) {
			case *time.Time:
				vals[i] = *p
			case *string:
				vals[i] = *p
			case *uint64:
				vals[i] = *p
			}
		}
		if err := batch.Append(vals...); err != nil {
			_ = batch.Abort()
			return 0, fmt.Errorf("appending to the insert into %s: %w", t.name, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		_ = batch.Abort()
		return 0, fmt.Errorf("reading the counts of %s: %w", t.source, err)
	}
	if n == 0 {
		_ = batch.Abort()
		return 0, nil
	}
	if err := batch.Send(); err != nil {
		return 0, fmt.Errorf("inserting %d settled counts into %s: %w", n, t.name, err)
	}
	return n, nil
}

// dirtyKeys is a SELECT of the key columns of t's keys matching where (a
// condition on the key columns; "" for every key) whose current
// sumMerge(rows) has no settled count, one clause a line. It reads the key
// and rows columns only, never the states.
func dirtyKeys(t settledTable, where string) string {
	keys := strings.Join(t.keys, ", ")
	w := ""
	if where != "" {
		w = " WHERE " + where
	}
	return `SELECT ` + keys + `
FROM ` + t.source + strings.Replace(w, " ", "\n", 1) + `
GROUP BY ` + keys + `
HAVING (` + keys + `, sumMerge(rows)) NOT IN (SELECT ` + keys + `, rows FROM ` + t.name + w + `)`
}
