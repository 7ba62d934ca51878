package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// stage names the stage in dead letters.
const stage = "analytics"

// Retry backoff of failed inserts and dead-letter produces.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Sink consumes the events, dispatch and outcomes topics into ClickHouse.
// Build it with New, run it with Run, stop it by cancelling Run's context,
// then Close.
type Sink struct {
	cfg  Config
	cl   *kgo.Client
	conn driver.Conn
	log  *slog.Logger
	m    *metrics

	// metas remembers recent dispatches for attribution (attribute.go).
	metas metaCache
	// scratch holds the row slices of the last chunks for the next ones to
	// reuse (writeChunks: one being stored, one decoded ahead), and facts
	// the slice of attributed facts (only the goroutine of Write uses it:
	// Write is not called concurrently).
	scratch chan rows
	facts   []factRow
	// paused is set while fetching is paused because ClickHouse refuses
	// inserts (the concurrent inserts of one Write may set it).
	paused atomic.Bool
	// crashAfterInsert, in tests, ends a batch after ClickHouse
	// acknowledged its rows and before its offsets are marked: a crash
	// between insert and commit.
	crashAfterInsert atomic.Pointer[func() error]
	// counter counts the facts the sink produces (counter.go); Run runs it.
	counter *Counter
	// settler settles the event counts (settle.go); Run runs it.
	settler *Settler
	// beforePark, in tests, runs after a batch's first lookup of its open
	// facts and before the unresolved ones are parked.
	beforePark atomic.Pointer[func()]
}

// topics are the topics the sink consumes.
var topics = []string{schemas.TopicEvents, schemas.TopicDispatch, schemas.TopicOutcomes}

// New builds a sink with its own consumer-group client (kcfg's options plus
// kcfg.ConsumerOpts for cfg.Group on TopicEvents, TopicDispatch and
// TopicOutcomes). The client connects lazily; conn is used as is and not
// closed by the sink. Metrics are registered with prom when it is not nil.
func New(cfg Config, kcfg kafka.Config, conn driver.Conn, log *slog.Logger, prom prometheus.Registerer) (*Sink, error) {
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
	log = log.With("stage", stage)
	m, err := newMetrics(prom)
	if err != nil {
		return nil, err
	}
	opts := append(kcfg.Opts(log), kcfg.ConsumerOpts(cfg.Group, topics...)...)
	opts = append(opts, kgo.RecordPartitioner(factsPartitioner{}))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating analytics kafka client: %w", err)
	}
	scratch := make(chan rows, 2)
	scratch <- rows{}
	scratch <- rows{}
	return &Sink{
		cfg: cfg, cl: cl, conn: conn, log: log, m: m, scratch: scratch,
		counter: newCounter(cfg, kcfg, conn, log, m), settler: newSettler(cfg, conn, log, m),
	}, nil
}

// Run consumes until ctx is done (then it returns nil after committing what
// was inserted) or a batch cannot be stored for a reason other than ctx
// ending. It runs the sink's fact counter alongside (Config.FactsGroup,
// see counter.go); either ending with an error stops both. It runs the
// settler too (settle.go), every Config.SettleInterval, whose failures
// stop nothing.
func (s *Sink) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		err := s.counter.Run(ctx)
		if err != nil {
			cancel()
		}
		errc <- err
	}()
	settled := make(chan error, 1)
	go func() { settled <- s.settler.Run(ctx) }()
	err := s.runSink(ctx)
	cancel()
	return errors.Join(err, <-errc, <-settled)
}

// runSink is the sink's own consume loop.
func (s *Sink) runSink(ctx context.Context) error {
	s.log.Info("analytics sink running", "group", s.cfg.Group, "batch_rows", s.cfg.BatchRows, "flush_interval", s.cfg.FlushInterval)
	// A stop finishes the insert in hand and commits it. A poll hands over
	// at most BatchRows records, so that each table's insert carries up to
	// about BatchRows rows (a record makes at most one row of most tables).
	return kafka.RunDrainingN(ctx, kafka.DefaultDrainGrace, s.cl, s.log, s.pollRecords, s.handle)
}

// writeChunks is how many chunks of Config.BatchRows records a poll hands
// to Write at most: Write decodes the next chunk while it stores the one
// before, so ClickHouse's work and the Go side's overlap on a small host.
const writeChunks = 4

// pollRecords is the most records a poll hands to handle.
func (s *Sink) pollRecords() int { return s.cfg.BatchRows * writeChunks }

// Close closes the Kafka client. Call it after Run returned.
func (s *Sink) Close() { s.cl.Close() }

// handle is the kafka.Handler: store the batch, dead-letter its poison, then
// pace small batches.
func (s *Sink) handle(ctx context.Context, recs []*kgo.Record) error {
	start := time.Now()
	dls, err := s.Write(ctx, recs)
	if err != nil {
		return err
	}
	if err := s.produceDeadLetters(ctx, dls); err != nil {
		return err
	}
	if f := s.crashAfterInsert.Load(); f != nil {
		return (*f)()
	}
	if len(recs) < s.cfg.BatchRows {
		// A small batch: let records gather in the client's buffer for the
		// rest of the flush interval, so that the next poll returns them in
		// one batch instead of a trickle of tiny inserts.
		if wait := s.cfg.FlushInterval - time.Since(start); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	return nil
}

// Write decodes recs, inserts their rows (at most Config.BatchRows rows per
// INSERT, tables concurrently) and returns once ClickHouse
// acknowledged every insert. Failed inserts are retried with backoff until
// ctx is done; then the last error is returned and the batch must not be
// committed. While inserts fail, fetching is paused, so the client buffers
// nothing beyond the batch in hand. Records that cannot be decoded or
// stored are returned as dead-letter records (for TopicDeadLetter, reason
// included) for the caller to produce: those that fail to decode or break a
// limit before any insert, and those with a row ClickHouse itself refuses
// (found by splitting the refused insert in halves down to single rows;
// see isRowError); the other rows of the batch are inserted.
//
// A batch of more than BatchRows records is written in chunks of
// BatchRows, in order: the next chunk is decoded (on another goroutine)
// while the one before is stored, so at most two chunks' rows are held.
func (s *Sink) Write(ctx context.Context, recs []*kgo.Record) (deadLetters []*kgo.Record, err error) {
	n := s.cfg.BatchRows
	if len(recs) <= n {
		return s.writeChunk(ctx, recs, s.decode(recs, <-s.scratch))
	}
	chunks := make(chan decoded) // the decoder waits for scratch, not here
	done := make(chan struct{})
	go func() {
		defer close(chunks)
		for i := 0; i < len(recs); i += n {
			var r rows
			select {
			case r = <-s.scratch:
			case <-done:
				return
			}
			d := s.decode(recs[i:min(i+n, len(recs))], r)
			select {
			case chunks <- d:
			case <-done:
				s.scratch <- d.rows
				return
			}
		}
	}()
	defer func() {
		close(done)
		for d := range chunks { // what the decoder had ready, until it ends
			s.scratch <- d.rows
		}
	}()
	i := 0
	for d := range chunks {
		dls, err := s.writeChunk(ctx, recs[i:min(i+n, len(recs))], d)
		if err != nil {
			return nil, err
		}
		deadLetters = append(deadLetters, dls...)
		i += n
	}
	return deadLetters, nil
}

// writeChunk stores the rows r decoded from recs and returns the
// dead-letter records of recs (see Write); r's slices go back to
// Sink.scratch.
func (s *Sink) writeChunk(ctx context.Context, recs []*kgo.Record, r decoded) (deadLetters []*kgo.Record, err error) {
	reasons := make(map[int]string, len(r.failed))
	for _, f := range r.failed {
		reasons[f.src] = f.reason
	}
	s.m.batchRows.Observe(float64(r.len()))
	rejected, err := s.store(ctx, &r.rows)
	// ClickHouse has copies of the rows now (or they will be decoded
	// again): their slices serve a later chunk.
	s.scratch <- r.rows
	if err != nil {
		return nil, err
	}
	s.resume()
	for src, reason := range rejected {
		if src < 0 {
			// A parked fact of an earlier batch: its record is committed.
			s.log.Warn("clickhouse refused a pending fact", "reason", reason)
			continue
		}
		reasons[src] = reason
	}
	if len(reasons) == 0 {
		return nil, nil
	}
	// In batch order, one log line per batch, not per record: a flood of
	// poison must not flood the log (the counter has the total).
	srcs := make([]int, 0, len(reasons))
	for src := range reasons {
		srcs = append(srcs, src)
	}
	slices.Sort(srcs)
	first := recs[srcs[0]]
	s.log.Warn("dead-lettering records", "count", len(srcs), "topic", first.Topic, "partition", first.Partition,
		"offset", first.Offset, "reason", reasons[srcs[0]])
	for _, src := range srcs {
		deadLetters = append(deadLetters, kafka.DeadLetter(stage, recs[src], reasons[src]))
	}
	s.m.deadLetters.Add(float64(len(deadLetters)))
	return deadLetters, nil
}

// decoded is a batch's rows and the records that could not be decoded.
type decoded struct {
	rows
	failed []failure
}

// failure is a record that is dead-lettered and why.
type failure struct {
	src    int
	reason string
}

// decode decodes recs into r, the slices of an earlier chunk (see
// Sink.scratch): a chunk allocates only what the slices must grow by. It
// reads nothing the goroutine of Write changes.
func (s *Sink) decode(recs []*kgo.Record, r rows) decoded {
	d := decoded{rows: r}
	d.reset()
	d.pricer = s.cfg.Pricer
	for i, rec := range recs {
		if rec == nil {
			continue
		}
		if err := d.add(rec, i); err != nil {
			d.failed = append(d.failed, failure{src: i, reason: err.Error()})
		}
	}
	return d
}

// without returns rs less the rows of rejected records: a record ClickHouse
// refused in one table of attribution's chain is not stored in the next
// ones.
func without[R any](rs []R, rejected map[int]string, src func(*R) int) []R {
	if len(rejected) == 0 {
		return rs
	}
	out := make([]R, 0, len(rs))
	for i := range rs {
		if _, ok := rejected[src(&rs[i])]; !ok {
			out = append(out, rs[i])
		}
	}
	return out
}

// store inserts the rows of a batch into every table, concurrently (see
// insertConcurrently), and returns the records of rows ClickHouse refused.
func (s *Sink) store(ctx context.Context, r *rows) (rejected map[int]string, err error) {
	return s.insertConcurrently([]func(rejected map[int]string) error{
		// The longest chain first: attribution inserts dispatch_meta and
		// wamids, looks up, then inserts the facts.
		func(rej map[int]string) error { return s.attribute(ctx, r, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, eventsTable, r.events, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, statusesTable, r.statuses, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, stateTable, r.states, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, inboundTable, r.inbound, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, messagesTable, r.messages, rej) },
		func(rej map[int]string) error { return insertAll(ctx, s, costsTable, r.costs, rej) },
	})
}

// insertConcurrency is the most INSERTs one Write has in flight: the
// tables of a batch are independent (attribution orders its own inserts),
// and ClickHouse runs each INSERT, its materialized views included, on one
// thread, so two or three at once use both cores of a small server.
const insertConcurrency = 3

// insertConcurrently runs jobs, at most insertConcurrency at once, each
// with its own map of rejected records, and returns the union of those
// maps (an earlier job's reason first) or, once every job has returned,
// the errors of those that failed, joined. Because the tables are written
// concurrently, a record whose row one table refuses may have rows in the
// others (it is dead-lettered all the same; the rows it left carry its
// deterministic ids, so a replay collapses with them).
func (s *Sink) insertConcurrently(jobs []func(rejected map[int]string) error) (map[int]string, error) {
	rejected := make([]map[int]string, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, insertConcurrency)
	var wg sync.WaitGroup
	for i, job := range jobs {
		rejected[i] = map[int]string{}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = job(rejected[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := rejected[0]
	for _, m := range rejected[1:] {
		for src, reason := range m {
			if _, ok := out[src]; !ok {
				out[src] = reason
			}
		}
	}
	return out, nil
}

// insertAll inserts rs in chunks of at most BatchRows rows, retrying each;
// the records of rows ClickHouse refuses are added to rejected.
func insertAll[R any](ctx context.Context, s *Sink, t table[R], rs []R, rejected map[int]string) error {
	for len(rs) > 0 {
		n := min(len(rs), s.cfg.BatchRows)
		if err := insertOrSplit(ctx, s, t, rs[:n], rejected); err != nil {
			return err
		}
		rs = rs[n:]
	}
	return nil
}

// insertOrSplit inserts rs, retrying until ctx is done. When ClickHouse
// refuses the data itself (isRowError), rs is split in halves, each
// inserted the same way, down to the single rows it refuses, whose records
// go to rejected with ClickHouse's reason.
func insertOrSplit[R any](ctx context.Context, s *Sink, t table[R], rs []R, rejected map[int]string) error {
	return retry(ctx, s.log, "inserting into "+t.name, func() error {
		err := insert(ctx, s, t, rs)
		if err == nil {
			s.m.rowsInserted.WithLabelValues(t.name).Add(float64(len(rs)))
			return nil
		}
		s.m.insertErrors.WithLabelValues(t.name).Inc()
		if !isRowError(err) {
			s.pause()
			return err
		}
		if len(rs) == 1 {
			src := t.src(&rs[0])
			rejected[src] = fmt.Sprintf("clickhouse refused the record's row of %s: %v", t.name, err)
			s.m.rowsRejected.WithLabelValues(t.name).Inc()
			return nil
		}
		mid := len(rs) / 2
		if err := insertOrSplit(ctx, s, t, rs[:mid], rejected); err != nil {
			return err
		}
		return insertOrSplit(ctx, s, t, rs[mid:], rejected)
	})
}

// rowErrorCodes are the ClickHouse exception codes an insert fails with
// because of the values of some rows (rather than the server's state):
// a CHECK constraint (469, LTS only), throwIf in a MATERIALIZED or DEFAULT
// column (395), values the server cannot parse or convert (6, 27, 38, 41,
// 53, 69, 70, 72, 117, 131, 349). Other errors (unknown table, memory,
// too many parts, network) are retried as they are: splitting would only
// dead-letter good rows.
var rowErrorCodes = map[int32]bool{
	6: true, 27: true, 38: true, 41: true, 53: true, 69: true, 70: true, 72: true,
	117: true, 131: true, 349: true, 395: true, 469: true,
}

// isRowError reports whether err is ClickHouse refusing an insert because
// of the data in it.
func isRowError(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && rowErrorCodes[ex.Code]
}

// pause stops fetching while ClickHouse refuses inserts, so that the client
// buffers no records beyond the batch being written; resume undoes it.
func (s *Sink) pause() {
	if s.paused.CompareAndSwap(false, true) {
		s.cl.PauseFetchTopics(topics...)
		s.m.paused.Set(1)
		s.log.Warn("clickhouse refuses inserts: fetching paused until it accepts them")
	}
}

func (s *Sink) resume() {
	if s.paused.CompareAndSwap(true, false) {
		s.cl.ResumeFetchTopics(topics...)
		s.m.paused.Set(0)
		s.log.Info("clickhouse accepts inserts again: fetching resumed")
	}
}

// insert is one attempt at one INSERT.
func insert[R any](ctx context.Context, s *Sink, t table[R], rs []R) (err error) {
	start := time.Now()
	defer func() { s.m.insertDuration.WithLabelValues(t.name).Observe(time.Since(start).Seconds()) }()
	b, err := s.conn.PrepareBatch(ctx, t.insertQuery())
	if err != nil {
		return fmt.Errorf("preparing insert of %d rows into %s: %w", len(rs), t.name, err)
	}
	// With typed, range-checked values an append error means the table
	// does not match this build's columns: retried like a server error
	// (consumption pauses until someone migrates), not dead-lettered.
	if err := t.fill(b, rs); err != nil {
		_ = b.Abort()
		return fmt.Errorf("appending %d rows to %s: %w", len(rs), t.name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", len(rs), t.name, err)
	}
	return nil
}

// produceDeadLetters produces dls and waits for their acks, retrying until
// ctx is done. A dead letter too large for the topic is produced again
// without the original value.
func (s *Sink) produceDeadLetters(ctx context.Context, dls []*kgo.Record) error {
	if len(dls) == 0 {
		return nil
	}
	return retry(ctx, s.log, "producing dead letters", func() error {
		var failed []*kgo.Record
		var first error
		for _, r := range s.cl.ProduceSync(ctx, dls...) {
			if r.Err == nil {
				continue
			}
			rec := r.Record
			if errors.Is(r.Err, kerr.MessageTooLarge) || errors.Is(r.Err, kerr.RecordListTooLarge) {
				rec = withoutValue(rec)
			}
			failed = append(failed, rec)
			if first == nil {
				first = r.Err
			}
		}
		dls = failed
		if first != nil {
			return fmt.Errorf("producing %d dead letters: %w", len(failed), first)
		}
		return nil
	})
}

// withoutValue rebuilds a dead-letter record without the original value.
func withoutValue(rec *kgo.Record) *kgo.Record {
	dl, err := schemas.DecodeDeadLetter(rec.Value)
	if err != nil {
		return rec // cannot happen: built by kafka.DeadLetter
	}
	dl.Reason += fmt.Sprintf(" (original value of %d bytes dropped: too large for the dead-letter topic)", len(dl.Value))
	dl.Value = nil
	b, _ := dl.Marshal() // plain fields only
	return &kgo.Record{Topic: rec.Topic, Key: rec.Key, Value: b}
}

// retry calls f until it succeeds or ctx is done, with jittered exponential
// backoff; it logs the first failure and then every doubling of attempts.
// When ctx ends it returns f's last error.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	delay := backoffMin
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			if attempt > 1 {
				log.Info("recovered", "what", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: giving up after %d attempts (%w): %w", what, attempt, context.Cause(ctx), err)
		}
		if attempt&(attempt-1) == 0 {
			log.Warn("retrying", "what", what, "attempt", attempt, "backoff", delay, "err", err)
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: giving up after %d attempts (%w): %w", what, attempt, context.Cause(ctx), err)
		case <-t.C:
		}
		delay = min(2*delay, backoffMax)
	}
}
