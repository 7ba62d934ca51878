package segmenter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// changelogPartitioner sends TopicProfiles (and TopicPreviews) records to
// the partition they name (the partition of the events they come from, so that a restore of
// events partition p reads changelog partition p whatever partitioner the
// events' producers used) and hashes the keys of every other topic as
// Kafka's default partitioner does (murmur2).
type changelogPartitioner struct{ other kgo.Partitioner }

func (c changelogPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == schemas.TopicProfiles || topic == schemas.TopicPreviews {
		return kgo.ManualPartitioner().ForTopic(topic)
	}
	return c.other.ForTopic(topic)
}

func newChangelogPartitioner() kgo.Partitioner {
	return changelogPartitioner{other: kgo.StickyKeyPartitioner(nil)}
}

// checkPartitions refuses to run when TopicProfiles has fewer partitions
// than TopicEvents: changelog partition p holds the profiles of events
// partition p.
func (s *Segmenter) checkPartitions(ctx context.Context) error {
	tds, err := kadm.NewClient(s.cl).ListTopics(ctx, schemas.TopicEvents, schemas.TopicProfiles)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	ev, pr := tds[schemas.TopicEvents], tds[schemas.TopicProfiles]
	for _, td := range []kadm.TopicDetail{ev, pr} {
		if td.Err != nil {
			return fmt.Errorf("describing topic %s: %w", td.Topic, td.Err)
		}
	}
	if len(pr.Partitions) < len(ev.Partitions) {
		return fmt.Errorf("topic %s has %d partitions, fewer than the %d of %s: the changelog needs one partition per events partition",
			schemas.TopicProfiles, len(pr.Partitions), len(ev.Partitions), schemas.TopicEvents)
	}
	return nil
}

// onAssigned restores the profiles of newly assigned events partitions
// before any of their records is fetched (franz-go calls it before fetches
// for those partitions begin). It retries until the restore succeeds or
// the client closes: processing a partition without its profiles would
// overwrite them in the changelog.
func (s *Segmenter) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	parts := assigned[schemas.TopicEvents]
	if len(parts) == 0 {
		return
	}
	s.owned.set(parts, true)
	// Decoded copies may predate what the changelog restores.
	s.mu.Lock()
	s.clearHot()
	s.mu.Unlock()
	for {
		start := time.Now()
		n, err := s.restore(ctx, cl, parts)
		if err == nil {
			took := time.Since(start)
			s.m.restoreDuration.Observe(took.Seconds())
			s.log.Info("restored profiles from the changelog", "partitions", parts, "profiles", n, "took", took)
			return
		}
		if errors.Is(err, errNoChangelogPartition) {
			// Processing these partitions would overwrite their profiles:
			// stop instead (handle returns the error).
			s.fatal.CompareAndSwap(nil, &err)
			s.log.Error("cannot restore profiles: stopping", "partitions", parts, "err", err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Error("restoring profiles from the changelog, retrying", "partitions", parts, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-time.After(time.Second):
		}
	}
}

// errNoChangelogPartition is returned by restore for an events partition
// the changelog lacks.
var errNoChangelogPartition = errors.New("the changelog has no such partition")

// restore reads changelog partitions parts from their start to the end
// offsets they have now into the cache, and returns how many records it
// loaded. Later records of a key overwrite earlier ones, as compaction
// would. admin lists the offsets (the group's client: the callback's, as s.cl may
// not be set yet when the first assignment arrives).
func (s *Segmenter) restore(ctx context.Context, admin *kgo.Client, parts []int32) (int, error) {
	ends, err := kadm.NewClient(admin).ListEndOffsets(ctx, schemas.TopicProfiles)
	if err != nil {
		return 0, fmt.Errorf("listing changelog end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return 0, fmt.Errorf("listing changelog end offsets: %w", err)
	}
	want := make(map[int32]int64) // partition -> end offset still to reach
	offsets := make(map[int32]kgo.Offset)
	for _, p := range parts {
		o, ok := ends.Lookup(schemas.TopicProfiles, p)
		if !ok {
			return 0, fmt.Errorf("restoring events partition %d from %s: %w (it needs as many partitions as %s)", p, schemas.TopicProfiles, errNoChangelogPartition, schemas.TopicEvents)
		}
		if o.Offset > 0 {
			want[p] = o.Offset
			offsets[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(want) == 0 {
		return 0, nil
	}
	cl, err := kgo.NewClient(append(s.kcfg.Opts(s.log),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicProfiles: offsets}),
		kgo.FetchMaxBytes(64<<20),
	)...)
	if err != nil {
		return 0, fmt.Errorf("creating changelog client: %w", err)
	}
	defer cl.Close()
	n := 0
	var logb, cacheb []byte // scratch of cacheEncoding
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			ferr = fmt.Errorf("reading changelog partition %d: %w", p, err)
		})
		if ferr != nil {
			return n, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok {
				return
			}
			if len(r.Value) == 0 {
				s.cache.Del(r.Key)
				s.keys.drop(r.Partition, r.Key)
			} else if len(r.Key) <= maxKeyBytes && len(r.Value) <= maxProfileBytes {
				logb, cacheb = cacheEncoding(logb[:0], cacheb[:0], r.Value)
				s.cache.Set(r.Key, cacheb)
				s.keys.setOffset(r.Partition, r.Key, r.Offset)
				s.restoreTimer(r)
				n++
			}
			if r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	s.m.restoredProfiles.Add(float64(n))
	return n, nil
}
