package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// stage names the stage in dead letters.
const stage = "analytics"

// pollRecords is the most records kafka.Run hands over from one poll.
const pollRecords = 10000

// Retry backoff of failed inserts and dead-letter produces.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// Sink consumes the events and outcomes topics into ClickHouse. Build it
// with New, run it with Run, stop it by cancelling Run's context, then Close.
type Sink struct {
	cfg  Config
	cl   *kgo.Client
	conn driver.Conn
	log  *slog.Logger
	m    *metrics
}

// New builds a sink with its own consumer-group client (kcfg's options plus
// kcfg.ConsumerOpts for cfg.Group on TopicEvents and TopicOutcomes). The
// client connects lazily; conn is used as is and not closed by the sink.
// Metrics are registered with prom when it is not nil.
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
	opts := append(kcfg.Opts(log), kcfg.ConsumerOpts(cfg.Group, schemas.TopicEvents, schemas.TopicOutcomes)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating analytics kafka client: %w", err)
	}
	return &Sink{cfg: cfg, cl: cl, conn: conn, log: log, m: m}, nil
}

// Run consumes until ctx is done (then it returns nil after committing what
// was inserted) or a batch cannot be stored for a reason other than ctx
// ending.
func (s *Sink) Run(ctx context.Context) error {
	s.log.Info("analytics sink running", "group", s.cfg.Group, "batch_rows", s.cfg.BatchRows, "flush_interval", s.cfg.FlushInterval)
	// A stop finishes the insert in hand and commits it.
	return kafka.RunDraining(ctx, kafka.DefaultDrainGrace, s.cl, s.log, s.handle)
}

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
	if len(recs) < min(s.cfg.BatchRows, pollRecords) {
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
// INSERT, one table after the other) and returns once ClickHouse
// acknowledged every insert. Failed inserts are retried with backoff until
// ctx is done; then the last error is returned and the batch must not be
// committed. Records that cannot be decoded or stored are returned as
// dead-letter records (for TopicDeadLetter, reason included) for the caller
// to produce; their rows are not inserted.
func (s *Sink) Write(ctx context.Context, recs []*kgo.Record) (deadLetters []*kgo.Record, err error) {
	var nEvents, nOutcomes int
	for _, rec := range recs {
		switch {
		case rec == nil:
		case rec.Topic == schemas.TopicEvents:
			nEvents++
		case rec.Topic == schemas.TopicOutcomes:
			nOutcomes++
		}
	}
	r := rows{events: make([]eventRow, 0, nEvents), messages: make([]messageRow, 0, nOutcomes)}
	for _, rec := range recs {
		if rec == nil {
			continue
		}
		if err := r.add(rec); err != nil {
			if len(deadLetters) == 0 {
				// One line per batch, not per record: a flood of poison
				// must not flood the log (the counter has the total).
				s.log.Warn("dead-lettering records", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "reason", err)
			}
			deadLetters = append(deadLetters, kafka.DeadLetter(stage, rec, err.Error()))
		}
	}
	if len(deadLetters) > 1 {
		s.log.Warn("dead-lettered records in one batch", "count", len(deadLetters))
	}
	s.m.batchRows.Observe(float64(r.len()))
	if err := insertAll(ctx, s, eventsTable, r.events); err != nil {
		return nil, err
	}
	if err := insertAll(ctx, s, statusesTable, r.statuses); err != nil {
		return nil, err
	}
	if err := insertAll(ctx, s, messagesTable, r.messages); err != nil {
		return nil, err
	}
	s.m.deadLetters.Add(float64(len(deadLetters)))
	return deadLetters, nil
}

// insertAll inserts rs in chunks of at most BatchRows rows, retrying each.
func insertAll[R any](ctx context.Context, s *Sink, t table[R], rs []R) error {
	for len(rs) > 0 {
		n := min(len(rs), s.cfg.BatchRows)
		if err := retry(ctx, s.log, "inserting into "+t.name, func() error {
			err := insert(ctx, s, t, rs[:n])
			if err != nil {
				s.m.insertErrors.WithLabelValues(t.name).Inc()
			}
			return err
		}); err != nil {
			return err
		}
		s.m.rowsInserted.WithLabelValues(t.name).Add(float64(n))
		rs = rs[n:]
	}
	return nil
}

// insert is one attempt at one INSERT.
func insert[R any](ctx context.Context, s *Sink, t table[R], rs []R) (err error) {
	start := time.Now()
	defer func() { s.m.insertDuration.WithLabelValues(t.name).Observe(time.Since(start).Seconds()) }()
	b, err := s.conn.PrepareBatch(ctx, t.insertQuery())
	if err != nil {
		return fmt.Errorf("preparing insert of %d rows into %s: %w", len(rs), t.name, err)
	}
	for i := range rs {
		// With typed, range-checked values an Append error means the table
		// does not match this build's columns: retried like a server error
		// (consumption pauses until someone migrates), not dead-lettered.
		if err := t.append(b, &rs[i]); err != nil {
			_ = b.Abort()
			return fmt.Errorf("appending row to %s: %w", t.name, err)
		}
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
