package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// ErrHandledPart is returned by a Handler that finished only part of its
// batch and took care of the rest itself: it marked the records that reached
// their end (a prefix of each partition) and rewound the client to the first
// unfinished record of each partition (kgo.Client.SetOffsets, safe there:
// Run blocks rebalances while a handler runs), so the rest is fetched again.
// Run marks nothing of the batch and goes on polling.
var ErrHandledPart = errors.New("batch handled in part: the rest is fetched again")

// ErrMarkLater is returned by a Handler that processed its whole batch but
// whose records reach their durable end later, with a later batch's (the
// segmenter writes its changelog once for several batches): the handler
// marks them for commit itself once they do (kgo.Client.MarkCommitOffsets).
// Run marks nothing of the batch and goes on polling.
var ErrMarkLater = errors.New("batch processed: the handler marks it for commit later")

// Handler processes one polled batch of records. It returns only after every
// record reached its durable end (produced downstream and acknowledged,
// inserted, or dead-lettered): the loop then marks them for commit (or, see
// ErrHandledPart and ErrMarkLater, after or before it marks them itself). A
// returned error means the batch did not reach its end; the loop stops
// without marking, so the records are delivered again (to this or another
// member) after a restart or rebalance. Handlers retry transient downstream
// failures themselves and return only when ctx is done or retrying is futile.
type Handler func(ctx context.Context, recs []*kgo.Record) error

// ConsumerOpts are the options a stage's consumer-group client needs on top
// of Config.Opts: the group, its topics, manual marking, and a commit of
// marked offsets every CommitInterval and when partitions are revoked or lost,
// and the group's SessionTimeout.
func (c *Config) ConsumerOpts(group string, topics ...string) []kgo.Opt {
	interval := c.CommitInterval
	if interval <= 0 {
		interval = time.Second
	}
	session := c.SessionTimeout
	if session <= 0 {
		session = DefaultSessionTimeout
	}
	return []kgo.Opt{
		kgo.SessionTimeout(session),
		kgo.HeartbeatInterval(min(3*time.Second, session/3)),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(interval),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.OnPartitionsRevoked(CommitOnRevoke),
	}
}

// CommitOnRevoke commits what was processed before partitions move away:
// the OnPartitionsRevoked of ConsumerOpts, for a stage that sets its own
// to call. With BlockRebalanceOnPoll the loop is not inside a batch when
// this runs, so every marked (fully processed) record is committed and
// nothing half-done is.
func CommitOnRevoke(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
	// An error here only means the next owner reprocesses a few records,
	// which every stage tolerates; the client logs it.
	_ = cl.CommitMarkedOffsets(ctx)
}

// DefaultDrainGrace is the grace RunDraining gives the batch in hand after
// its context ends: enough to produce and acknowledge a full poll's outputs.
const DefaultDrainGrace = 15 * time.Second

// RunDraining is Run for stages whose batches are short and whose outputs
// should not be repeated on a graceful stop: when ctx ends, polling stops
// but the batch in hand is finished (h's context ends only grace later),
// marked and committed, so a restart redelivers nothing it did. A handler
// that needs ctx's end at once (the dispatcher stops starting calls) uses
// Run instead.
func RunDraining(ctx context.Context, grace time.Duration, cl *kgo.Client, log *slog.Logger, h Handler) error {
	return RunDrainingN(ctx, grace, cl, log, func() int { return MaxPollRecords }, h)
}

// RunDrainingN is RunDraining handing at most maxRecords() records to h at
// once, for a handler that wants bigger batches than MaxPollRecords (the
// analytics sink: ClickHouse wants few, large inserts).
func RunDrainingN(ctx context.Context, grace time.Duration, cl *kgo.Client, log *slog.Logger, maxRecords func() int, h Handler) error {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	defer stop()
	return run(ctx, hctx, cl, log, fixed(maxRecords), h)
}

// Run polls cl until ctx is done, hands each batch to h, and marks the batch's
// records for commit after h returned nil (the client commits marked offsets
// every second, on revoke and when Run returns). cl must be built with
// Config.ConsumerOpts. Poll errors are logged; a handler
// error stops the loop and is returned (ctx.Err() is not an error).
func Run(ctx context.Context, cl *kgo.Client, log *slog.Logger, h Handler) error {
	return RunN(ctx, cl, log, func() int { return MaxPollRecords }, h)
}

// MaxPollRecords is the most records Run hands to a handler at once.
const MaxPollRecords = 10000

// RunN is Run handing at most maxRecords() records to h at once (asked
// before each poll, between handler calls), for a handler whose batches
// cost time per record: the dispatcher sizes its batches to what its rate
// limit lets it send before it cuts a batch short.
func RunN(ctx context.Context, cl *kgo.Client, log *slog.Logger, maxRecords func() int, h Handler) error {
	return run(ctx, ctx, cl, log, fixed(maxRecords), h)
}

// RunCarrying is RunN for a handler that may keep work of one batch for
// the next (the dispatcher carries the undecided requests of a batch it
// cut short): next gives the most records to poll and whether work is
// carried. While it is, the poll does not wait for new records (it takes
// what is buffered, maybe none) and h is called even with no records. h
// marks for commit what it finished when it returns ErrHandledPart.
func RunCarrying(ctx context.Context, cl *kgo.Client, log *slog.Logger, next func() (maxRecords int, carrying bool), h Handler) error {
	return run(ctx, ctx, cl, log, next, h)
}

// fixed is a next of RunCarrying that never carries.
func fixed(maxRecords func() int) func() (int, bool) {
	return func() (int, bool) { return maxRecords(), false }
}

// run is RunN with the handler's context apart: polling stops with ctx, h
// runs under hctx.
func run(ctx, hctx context.Context, cl *kgo.Client, log *slog.Logger, next func() (int, bool), h Handler) error {
	defer func() {
		// Commit what was processed; a fresh context because ctx is done.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.CommitMarkedOffsets(cctx); err != nil {
			log.Warn("committing offsets at shutdown", "err", err)
		}
	}()
	for {
		n, carrying := next()
		pctx := ctx
		if carrying {
			// PollRecords documents a nil context: it returns at
			// once with what is buffered.
			pctx = nil
		}
		fetches := cl.PollRecords(pctx, n)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			// Closed under us (a shutdown closing clients before it
			// cancels): polling again would return at once, forever.
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("fetching", "topic", topic, "partition", p, "err", err)
			}
		})
		recs := fetches.Records()
		if len(recs) == 0 && !carrying {
			cl.AllowRebalance()
			continue
		}
		if err := h(withBehind(hctx, fetches), recs); err != nil {
			cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrHandledPart) || errors.Is(err, ErrMarkLater) {
				continue
			}
			return fmt.Errorf("handling batch: %w", err)
		}
		// Marked offsets are committed asynchronously: a crash before the
		// commit lands redelivers the batch, which every stage tolerates
		// (deterministic ids downstream, deduplication in ClickHouse).
		cl.MarkCommitRecords(recs...)
		cl.AllowRebalance()
	}
}

// behindKey is the context key of Behind.
type behindKey struct{}

// withBehind is hctx carrying how far fetches left their partitions
// behind the brokers' ends, for Behind.
func withBehind(hctx context.Context, fetches kgo.Fetches) context.Context {
	var behind int64
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			behind += max(p.HighWatermark-(p.Records[n-1].Offset+1), 0)
		}
	})
	return context.WithValue(hctx, behindKey{}, behind)
}

// Behind is, in a Handler's context, how many records the brokers held
// past the batch's last record of each of its partitions when they were
// fetched (their high watermarks): 0 when the batch reached the end of
// every partition it has records of. With nothing buffered in the client
// (kgo.Client.BufferedFetchRecords) it means the member has caught up. ok
// is false outside a Handler.
func Behind(ctx context.Context) (n int64, ok bool) {
	n, ok = ctx.Value(behindKey{}).(int64)
	return n, ok
}

// DeadLetter builds the dead-letter record for rec.
func DeadLetter(stage string, rec *kgo.Record, reason string) *kgo.Record {
	dl := &schemas.DeadLetter{
		Stage:     stage,
		Topic:     rec.Topic,
		Partition: rec.Partition,
		Offset:    rec.Offset,
		Key:       rec.Key,
		Value:     rec.Value,
		Reason:    reason,
		Time:      time.Now().UTC(),
	}
	b, _ := dl.Marshal() // cannot fail: plain fields only
	return &kgo.Record{Topic: schemas.TopicDeadLetter, Key: rec.Key, Value: b}
}

// ProduceAll produces recs and waits until every one is acknowledged. It
// returns the first error; records that failed are not retried here (the
// client already retries retryable errors without limit).
func ProduceAll(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	return cl.ProduceSync(ctx, recs...).FirstErr()
}
