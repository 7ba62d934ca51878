package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// The fact counter: exact counts at write time, one writer per dispatch.
//
// The sink produces every attributed fact to herald.facts.v1, keyed and
// partitioned by its dispatch (schemas.FactsPartition), once per time it
// handles the record that implies it: a redelivered record, or two records
// implying one state (an accepted outcome and a sent status; a delivered
// and a read status), produce the same fact again. The counter is a
// consumer group of its own (Config.FactsGroup) on that topic. Per partition
// it owns, it keeps a seen-set: dispatch hash -> bits of the states counted
// and the highest rank reached. Of each batch it keeps the facts not seen
// yet, appends them to fact_log (whose views add them to fact_days,
// fact_sources and state_moves) and only then lets the batch's offsets be
// committed.
//
// When it is assigned a partition, before it handles a record of it, the
// counter loads the partition's seen-set from fact_log (the rows written
// from that partition, and the backfilled rows of its dispatches, within
// the horizon), so the records redelivered after a crash between insert
// and commit find their facts seen. Rebalances are blocked while a batch is
// handled (kgo.BlockRebalanceOnPoll): when a partition is revoked, its last
// insert is acknowledged, so the next owner's load sees it. On revoke or
// loss the partition's seen-set is dropped.
//
// Memory is bounded by Config.FactsHorizon: dispatches requested before it
// are evicted, and a fact of such a dispatch (rare: Meta stops sending
// statuses 30 days after a send) is checked against fact_log by its day and
// hash before it is counted (herald_analytics_facts_late_total).
//
// Not protected (docs/ANALYTICS.md, "Exactly-once counts"): a zombie
// counter that lost its partition without knowing it (a session timeout
// during a long insert) and still inserts while the new owner loads and
// counts; and a change of herald.facts.v1's partition count while facts are
// in flight (a dispatch's old facts in one partition, its new ones in
// another, two owners).

// factBits are the bit of each state in a seen-set entry; outcome facts
// take one bit per outcome state (outcomeBits).
var factBits = func() map[string]uint16 {
	m := make(map[string]uint16, len(schemas.FactStates))
	for i, s := range schemas.FactStates {
		if s != schemas.FactOutcome {
			m[s] = 1 << i
		}
	}
	return m
}()

// outcomeBits are the bits of outcome facts, by outcome state.
var outcomeBits = map[string]uint16{
	string(schemas.OutcomeAccepted): 1 << 10,
	string(schemas.OutcomeFailed):   1 << 11,
	string(schemas.OutcomeExpired):  1 << 12,
	string(schemas.OutcomeInDoubt):  1 << 13,
}

// factBit is the seen-set bit of a fact; 0 for a fact no bit stands for
// (an outcome state this build does not know), which is always counted.
func factBit(state, detail string) uint16 {
	if state == schemas.FactOutcome {
		return outcomeBits[detail]
	}
	return factBits[state]
}

// seen is what the counter remembers of a dispatch: the bits of the
// states counted, the highest rank reached (stateRanks) and the request
// day (days since 1970-01-01), for the horizon.
type seen struct {
	bits uint16
	rank uint8
	day  uint16
}

// seenSet is one partition's seen-set, by dispatch hash.
type seenSet map[uint64]seen

// factLogRow is a fact_log row.
type factLogRow struct {
	src                              int
	app                              string
	day                              time.Time
	hash                             uint64
	dispatchID                       string
	partition                        int32
	offset                           int64
	state, detail                    string
	bit                              uint16
	rank, rankFrom, rankTo           uint8
	sourceKind, sourceName, template string
	category, country                string
	amount                           int64
	currency                         string
	time                             time.Time
}

var factLogTable = table[factLogRow]{name: "fact_log", src: func(r *factLogRow) int { return r.src }, cols: []column[factLogRow]{
	col("app", func(r *factLogRow) string { return r.app }),
	col("day", func(r *factLogRow) time.Time { return r.day }),
	col("dispatch_hash", func(r *factLogRow) uint64 { return r.hash }),
	col("dispatch_id", func(r *factLogRow) string { return r.dispatchID }),
	col("kpartition", func(r *factLogRow) int32 { return r.partition }),
	col("koffset", func(r *factLogRow) int64 { return r.offset }),
	col("state", func(r *factLogRow) string { return r.state }),
	col("detail", func(r *factLogRow) string { return r.detail }),
	col("bit", func(r *factLogRow) uint16 { return r.bit }),
	col("rank", func(r *factLogRow) uint8 { return r.rank }),
	col("rank_from", func(r *factLogRow) uint8 { return r.rankFrom }),
	col("rank_to", func(r *factLogRow) uint8 { return r.rankTo }),
	col("source_kind", func(r *factLogRow) string { return r.sourceKind }),
	col("source_name", func(r *factLogRow) string { return r.sourceName }),
	col("template", func(r *factLogRow) string { return r.template }),
	col("category", func(r *factLogRow) string { return r.category }),
	col("country", func(r *factLogRow) string { return r.country }),
	col("amount", func(r *factLogRow) int64 { return r.amount }),
	col("currency", func(r *factLogRow) string { return r.currency }),
	col("time", func(r *factLogRow) time.Time { return r.time }),
}}

// Counter is the fact counter: it consumes herald.facts.v1 (group
// Config.FactsGroup) into fact_log, each (dispatch, state) once (see the
// comment at the top of counter.go). A Sink runs one in its Run; build
// one alone with NewCounter and run it with Run (which builds its Kafka
// client and closes it when it returns).
type Counter struct {
	cfg  Config
	opts []kgo.Opt
	conn driver.Conn
	log  *slog.Logger
	m    *metrics

	// cl is built by Run (a client of the group joins it when built).
	cl  atomic.Pointer[kgo.Client]
	adm *kadm.Client

	// mu guards parts: the handler and the rebalance callbacks use it
	// (with BlockRebalanceOnPoll they do not overlap, except for a lost
	// partition).
	mu    sync.Mutex
	parts map[int32]seenSet
	// partitions is herald.facts.v1's partition count, read on each load.
	partitions int
	lastEvict  time.Time

	// now is the clock of the horizon (tests move it).
	now func() time.Time
	// crashAfterInsert, in tests, ends a batch after ClickHouse
	// acknowledged its facts and before its offsets are marked.
	crashAfterInsert atomic.Pointer[func() error]
}

// NewCounter builds a fact counter on its own (a Sink builds its own);
// cfg is validated as for New. Metrics are registered with prom when it is
// not nil.
func NewCounter(cfg Config, kcfg kafka.Config, conn driver.Conn, log *slog.Logger, prom prometheus.Registerer) (*Counter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("analytics: %w", err)
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
	return newCounter(cfg, kcfg, conn, log.With("stage", stage), m), nil
}

func newCounter(cfg Config, kcfg kafka.Config, conn driver.Conn, log *slog.Logger, m *metrics) *Counter {
	c := &Counter{cfg: cfg, conn: conn, log: log.With("component", "fact-counter"), m: m, parts: map[int32]seenSet{}, now: time.Now}
	c.opts = append(kcfg.Opts(c.log), kcfg.ConsumerOpts(cfg.FactsGroup, schemas.TopicFacts)...)
	c.opts = append(c.opts,
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.RecordPartitioner(factsPartitioner{}), // its dead letters
	)
	return c
}

// Run consumes herald.facts.v1 until ctx is done (then it returns nil after
// committing what was inserted) or a batch cannot be stored.
func (c *Counter) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(c.opts...)
	if err != nil {
		return fmt.Errorf("creating fact counter kafka client: %w", err)
	}
	c.cl.Store(cl)
	c.adm = kadm.NewClient(cl)
	defer cl.Close()
	c.log.Info("fact counter running", "group", c.cfg.FactsGroup, "horizon", c.cfg.FactsHorizon)
	return kafka.RunDrainingN(ctx, kafka.DefaultDrainGrace, cl, c.log, func() int { return c.cfg.BatchRows }, c.handle)
}

// revoked commits what was counted and forgets the partitions' seen-sets.
// With BlockRebalanceOnPoll no batch is in hand: its insert was
// acknowledged before the rebalance could start.
func (c *Counter) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	kafka.CommitOnRevoke(ctx, cl, revoked)
	c.drop(revoked[schemas.TopicFacts])
}

// lost forgets the seen-sets of partitions lost without a revoke.
func (c *Counter) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.drop(lost[schemas.TopicFacts])
}

func (c *Counter) drop(parts []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range parts {
		delete(c.parts, p)
	}
	c.updateSeenGauge()
}

// updateSeenGauge sets the seen-dispatches gauge; c.mu is held.
func (c *Counter) updateSeenGauge() {
	n := 0
	for _, s := range c.parts {
		n += len(s)
	}
	c.m.seenDispatch.Set(float64(n))
}

// decodedFacts is a record of the batch decoded, with its dispatch's hash
// and day.
type decodedFacts struct {
	rec  *kgo.Record
	src  int
	f    *schemas.DispatchFacts
	hash uint64
	day  time.Time
	days uint16
}

// handle counts one polled batch: load the seen-sets of partitions it has
// none of, look up late dispatches, keep the facts not seen, insert them.
func (c *Counter) handle(ctx context.Context, recs []*kgo.Record) error {
	batch, dls := decodeAll(recs)
	if err := c.loadMissing(ctx, batch); err != nil {
		return err
	}
	if err := c.lookupLate(ctx, batch); err != nil {
		return err
	}
	rows, repeated := c.keepUnseen(batch)
	if err := c.insert(ctx, rows); err != nil {
		// The seen-sets hold facts that were not stored: forget them, the
		// next owner (or this one, after a rebalance) loads what is.
		c.drop(partitionsOf(batch))
		return err
	}
	c.m.factsCounted.Add(float64(len(rows)))
	c.m.factsRepeated.Add(float64(repeated))
	if len(dls) > 0 {
		c.log.Warn("dead-lettering fact records", "count", len(dls))
		c.m.deadLetters.Add(float64(len(dls)))
		if err := retry(ctx, c.log, "producing dead letters", func() error {
			return kafka.ProduceAll(ctx, c.cl.Load(), dls)
		}); err != nil {
			return err
		}
	}
	if f := c.crashAfterInsert.Load(); f != nil {
		return (*f)()
	}
	c.evict()
	return nil
}

// decodeWorkers is how many goroutines decode a batch: JSON decoding is
// most of the counter's CPU.
const decodeWorkers = 2

// decodeAll decodes recs, in order, on decodeWorkers goroutines; records
// that do not decode become dead letters.
func decodeAll(recs []*kgo.Record) ([]decodedFacts, []*kgo.Record) {
	out := make([]decodedFacts, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	per := (len(recs) + decodeWorkers - 1) / decodeWorkers
	for w := 0; w < len(recs); w += per {
		wg.Add(1)
		go func(from, to int) {
			defer wg.Done()
			for i := from; i < to; i++ {
				out[i], errs[i] = decodeFacts(recs[i], i)
			}
		}(w, min(w+per, len(recs)))
	}
	wg.Wait()
	var dls []*kgo.Record
	batch := out[:0]
	for i := range out {
		if errs[i] != nil {
			dls = append(dls, kafka.DeadLetter(stage, recs[i], errs[i].Error()))
			continue
		}
		batch = append(batch, out[i])
	}
	return batch, dls
}

// decodeFacts decodes a TopicFacts record.
func decodeFacts(rec *kgo.Record, src int) (decodedFacts, error) {
	f, err := schemas.DecodeDispatchFacts(rec.Value)
	if err != nil {
		return decodedFacts{}, fmt.Errorf("decoding facts: %w", err)
	}
	day, _ := time.Parse(time.DateOnly, f.Day) // Validate parsed it
	if day.Before(minTime) || day.After(maxTime) {
		return decodedFacts{}, fmt.Errorf("facts of dispatch %s: day %s is outside ClickHouse's Date range", clip(f.DispatchID, 64), f.Day)
	}
	for i := range f.Facts {
		if t := f.Facts[i].Time; t.Before(minTime) || t.After(maxTime) {
			return decodedFacts{}, fmt.Errorf("facts of dispatch %s: facts[%d].time %s is outside ClickHouse's DateTime range",
				clip(f.DispatchID, 64), i, t.Format(time.RFC3339))
		}
	}
	return decodedFacts{rec: rec, src: src, f: f, hash: schemas.FactsHash(f.Key()), day: day, days: daysOf(day)}, nil
}

// daysOf is t's day as days since 1970-01-01 (ClickHouse's Date).
func daysOf(t time.Time) uint16 { return uint16(t.Unix() / 86400) }

func partitionsOf(batch []decodedFacts) []int32 {
	var out []int32
	for i := range batch {
		if !slices.Contains(out, batch[i].rec.Partition) {
			out = append(out, batch[i].rec.Partition)
		}
	}
	return out
}

// horizonDay is the first request day whose dispatches the seen-sets hold.
func (c *Counter) horizonDay() uint16 {
	t := c.now().UTC().Add(-c.cfg.FactsHorizon)
	if t.Before(minTime) {
		return 0
	}
	return daysOf(t)
}

// loadMissing loads the seen-set of every partition of batch that has
// none (it was just assigned).
func (c *Counter) loadMissing(ctx context.Context, batch []decodedFacts) error {
	for _, p := range partitionsOf(batch) {
		c.mu.Lock()
		_, ok := c.parts[p]
		c.mu.Unlock()
		if ok {
			continue
		}
		set, err := c.load(ctx, p)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.parts[p] = set
		c.updateSeenGauge()
		c.mu.Unlock()
	}
	return nil
}

// load reads partition p's seen-set from fact_log: the facts written from
// p, and the backfilled facts (kpartition -1) of the dispatches p owns by
// their hash, of dispatches requested within the horizon.
func (c *Counter) load(ctx context.Context, p int32) (seenSet, error) {
	start := time.Now()
	if err := retry(ctx, c.log, "reading the partition count of "+schemas.TopicFacts, func() error { return c.readPartitions(ctx) }); err != nil {
		return nil, err
	}
	set := seenSet{}
	from := time.Unix(int64(c.horizonDay())*86400, 0).UTC().Format(time.DateOnly)
	err := retry(ctx, c.log, "loading counted facts", func() error {
		clear(set)
		return queryEach(ctx, c.conn, "loading counted facts",
			`SELECT dispatch_hash, toUInt16(groupBitOr(bit)), max(rank), toUInt16(min(day)) FROM fact_log
			WHERE (kpartition = ? OR (kpartition = -1 AND dispatch_hash % ? = ?)) AND day >= toDate(?)
			GROUP BY dispatch_hash`, []any{p, uint64(c.partitions), uint64(p), from},
			func(scan func(...any) error) error {
				var h uint64
				var e seen
				if err := scan(&h, &e.bits, &e.rank, &e.day); err != nil {
					return err
				}
				set[h] = e
				return nil
			})
	})
	if err != nil {
		return nil, fmt.Errorf("loading the counted facts of partition %d: %w", p, err)
	}
	c.m.seenLoad.Observe(time.Since(start).Seconds())
	c.log.Info("loaded counted facts", "partition", p, "dispatches", len(set), "took", time.Since(start).Round(time.Millisecond))
	return set, nil
}

// readPartitions reads herald.facts.v1's partition count.
func (c *Counter) readPartitions(ctx context.Context) error {
	td, err := c.adm.ListTopics(ctx, schemas.TopicFacts)
	if err != nil {
		return fmt.Errorf("listing %s: %w", schemas.TopicFacts, err)
	}
	t, ok := td[schemas.TopicFacts]
	if !ok || t.Err != nil || len(t.Partitions) == 0 {
		return fmt.Errorf("listing %s: no partitions (%v)", schemas.TopicFacts, t.Err)
	}
	c.partitions = len(t.Partitions)
	return nil
}

// lookupLate merges into the seen-sets what fact_log holds of the batch's
// dispatches requested before the horizon (the seen-sets do not keep
// them): one query per day.
func (c *Counter) lookupLate(ctx context.Context, batch []decodedFacts) error {
	horizon := c.horizonDay()
	byDay := map[uint16][]uint64{}
	owner := map[uint64]int32{}
	c.mu.Lock()
	for i := range batch {
		d := &batch[i]
		if d.days >= horizon {
			continue
		}
		if _, ok := c.parts[d.rec.Partition][d.hash]; ok {
			continue // looked up by an earlier batch, or counted since
		}
		if _, ok := owner[d.hash]; !ok {
			byDay[d.days] = append(byDay[d.days], d.hash)
			owner[d.hash] = d.rec.Partition
		}
	}
	c.mu.Unlock()
	for days, hashes := range byDay {
		c.m.factsLate.Add(float64(len(hashes)))
		day := time.Unix(int64(days)*86400, 0).UTC().Format(time.DateOnly)
		found := map[uint64]seen{}
		for start := 0; start < len(hashes); start += lookupChunk {
			part := hashes[start:min(start+lookupChunk, len(hashes))]
			set := make([]any, len(part))
			for i, h := range part {
				set[i] = h
			}
			err := retry(ctx, c.log, "looking up late facts", func() error {
				return queryEach(ctx, c.conn, "looking up late facts",
					`SELECT dispatch_hash, toUInt16(groupBitOr(bit)), max(rank) FROM fact_log
					WHERE day = toDate(?) AND dispatch_hash IN ? GROUP BY dispatch_hash`,
					[]any{day, inSetOf(set)},
					func(scan func(...any) error) error {
						var h uint64
						e := seen{day: days}
						if err := scan(&h, &e.bits, &e.rank); err != nil {
							return err
						}
						found[h] = e
						return nil
					})
			})
			if err != nil {
				return err
			}
		}
		c.mu.Lock()
		for _, h := range hashes {
			if set := c.parts[owner[h]]; set != nil {
				e, ok := found[h]
				if !ok {
					e = seen{day: days}
				}
				set[h] = e
			}
		}
		c.mu.Unlock()
	}
	return nil
}

// keepUnseen returns the fact_log rows of the batch's facts not counted
// yet, marking them counted in the seen-sets, and how many were skipped.
func (c *Counter) keepUnseen(batch []decodedFacts) (rows []factLogRow, repeated int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows = make([]factLogRow, 0, 3*len(batch))
	for i := range batch {
		d := &batch[i]
		set := c.parts[d.rec.Partition]
		e, ok := set[d.hash]
		if !ok {
			e.day = d.days
		}
		f := d.f
		for j := range f.Facts {
			x := &f.Facts[j]
			bit := factBit(x.State, x.Detail)
			if bit != 0 && e.bits&bit != 0 {
				repeated++
				continue
			}
			e.bits |= bit
			row := factLogRow{
				src: d.src, app: f.App, day: d.day, hash: d.hash, dispatchID: f.DispatchID,
				partition: d.rec.Partition, offset: d.rec.Offset, state: x.State, detail: x.Detail, bit: bit,
				sourceKind: f.SourceKind, sourceName: f.SourceName, template: f.Template, category: f.Category, country: f.Country,
				amount: x.Amount, currency: x.Currency, time: x.Time.UTC(),
			}
			if x.State != schemas.FactOutcome {
				row.rank = stateRanks[x.State]
			}
			if row.rank > e.rank {
				row.rankFrom, row.rankTo = e.rank, row.rank
				e.rank = row.rank
			}
			rows = append(rows, row)
		}
		set[d.hash] = e
	}
	c.updateSeenGauge()
	return rows, repeated
}

// insert appends rows to fact_log in chunks of at most BatchRows,
// retrying until ctx is done. The rows are the counter's own, built from
// validated records: an insert ClickHouse refuses is retried as it is (a
// schema that does not match), never split.
func (c *Counter) insert(ctx context.Context, rows []factLogRow) error {
	for len(rows) > 0 {
		n := min(len(rows), c.cfg.BatchRows)
		part := rows[:n]
		err := retry(ctx, c.log, "inserting into fact_log", func() error {
			start := time.Now()
			err := insertTable(ctx, c.conn, factLogTable, part)
			c.m.insertDuration.WithLabelValues(factLogTable.name).Observe(time.Since(start).Seconds())
			if err != nil {
				c.m.insertErrors.WithLabelValues(factLogTable.name).Inc()
				return err
			}
			c.m.rowsInserted.WithLabelValues(factLogTable.name).Add(float64(len(part)))
			return nil
		})
		if err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertTable is one INSERT of rs into t.
func insertTable[R any](ctx context.Context, conn driver.Conn, t table[R], rs []R) error {
	b, err := conn.PrepareBatch(ctx, t.insertQuery())
	if err != nil {
		return fmt.Errorf("preparing insert of %d rows into %s: %w", len(rs), t.name, err)
	}
	if err := t.fill(b, rs); err != nil {
		_ = b.Abort()
		return fmt.Errorf("appending %d rows to %s: %w", len(rs), t.name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", len(rs), t.name, err)
	}
	return nil
}

// evictEvery is how often the seen-sets drop the dispatches that fell
// behind the horizon.
const evictEvery = time.Hour

// evict drops, at most once per evictEvery, the seen-set entries of
// dispatches requested before the horizon.
func (c *Counter) evict() {
	now := c.now()
	if now.Sub(c.lastEvict) < evictEvery {
		return
	}
	c.lastEvict = now
	horizon := c.horizonDay()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, set := range c.parts {
		for h, e := range set {
			if e.day < horizon {
				delete(set, h)
			}
		}
	}
	c.updateSeenGauge()
}

// factsPartitioner partitions herald.facts.v1 by schemas.FactsPartition and
// every other topic as franz-go does by default (sticky by key).
type factsPartitioner struct{}

var _ kgo.Partitioner = factsPartitioner{}

func (factsPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == schemas.TopicFacts {
		return kgo.BasicConsistentPartitioner(func(string) func(r *kgo.Record, n int) int {
			return func(r *kgo.Record, n int) int { return schemas.FactsPartition(r.Key, n) }
		}).ForTopic(topic)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}
