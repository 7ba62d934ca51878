package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FollowOpts are the options of a client for Follow: topic from its start,
// no group.
func FollowOpts(topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}
}

// Follow reads topic, a state topic every reader wants whole (a compacted
// view), with cl (built with FollowOpts) until ctx is done, handing each
// record to apply. caughtUp is called once, when every partition has been
// read up to the end offset it had when Follow started (at once for an
// empty topic, and for partitions whose records were all deleted), so a
// reader knows its state is as complete as the topic was. Listing errors
// are logged and retried; fetch errors are logged. It returns when ctx is
// done or cl is closed.
func Follow(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger, apply func(*kgo.Record), caughtUp func()) {
	pending, err := endOffsets(ctx, cl, topic, log)
	if err != nil {
		return // ctx is done
	}
	done := len(pending) == 0
	if done {
		caughtUp()
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return // (a closed client answers every poll at once)
		}
		fs.EachError(func(t string, p int32, err error) {
			log.Warn("reading a state topic", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			apply(r)
			if end, ok := pending[r.Partition]; ok && r.Offset >= end-1 {
				delete(pending, r.Partition)
				if len(pending) == 0 && !done {
					done = true
					caughtUp()
				}
			}
		})
	}
}

// endOffsets returns, per partition of topic that holds records, its end
// offset. It retries until ctx is done.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger) (map[int32]int64, error) {
	adm := kadm.NewClient(cl)
	for {
		starts, err := adm.ListStartOffsets(ctx, topic)
		if err == nil {
			err = starts.Error()
		}
		var ends kadm.ListedOffsets
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topic)
		}
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			pending := make(map[int32]int64)
			ends.Each(func(o kadm.ListedOffset) {
				if s, ok := starts.Lookup(o.Topic, o.Partition); !ok || s.Offset < o.Offset {
					pending[o.Partition] = o.Offset
				}
			})
			return pending, nil
		}
		log.Warn("listing a state topic's offsets, retrying", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// FollowTopic is Follow with a client of its own, built from c with
// FollowOpts and closed when ctx is done. It returns only the error of
// building the client.
func FollowTopic(ctx context.Context, c Config, log *slog.Logger, topic string, apply func(*kgo.Record), caughtUp func()) error {
	cl, err := kgo.NewClient(append(c.Opts(log), FollowOpts(topic)...)...)
	if err != nil {
		return fmt.Errorf("creating the %s client: %w", topic, err)
	}
	defer cl.Close()
	Follow(ctx, cl, topic, log, apply, caughtUp)
	return nil
}
