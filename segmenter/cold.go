package segmenter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Cold profiles. fastcache is a cache: when it is full, a Set overwrites
// the oldest chunk of a bucket, and the live profiles stored there are gone
// from memory. They are not gone: each profile's latest changelog record
// is durable in TopicProfiles, and the key index knows its offset (set when
// the record was acknowledged, or read at restore). A profile that misses
// in the cache but has an offset is read back from the changelog — one
// fetch for an event of a cold user, one sequential read of the partition
// for a campaign's or sweep's cold profiles — instead of starting empty.
// So the cache holds the hot profiles, CacheBytes bounds the memory, and no
// profile is lost or overwritten by an empty one when it is evicted.

// coldTimeout bounds one read of the changelog; a read that fails is
// retried until the batch's context ends.
const coldTimeout = 30 * time.Second

// coldReader is the client that reads evicted profiles back.
type coldReader struct {
	mu   sync.Mutex // one read at a time: the client consumes one partition
	once sync.Once
	cl   *kgo.Client
	err  error
}

// client returns the reader's Kafka client, a direct consumer of nothing
// until a read adds the partition it needs.
func (s *Segmenter) coldClient() (*kgo.Client, error) {
	s.cold.once.Do(func() {
		s.cold.cl, s.cold.err = kgo.NewClient(append(s.kcfg.Opts(s.log),
			kgo.FetchMaxWait(100*time.Millisecond), kgo.FetchMaxPartitionBytes(4<<20))...)
	})
	return s.cold.cl, s.cold.err
}

// readChangelog calls fn with each record of changelog partition whose
// offset is in [from, to], in order, and returns once it has passed to or
// reached the partition's end.
func (s *Segmenter) readChangelog(ctx context.Context, partition int32, from, to int64, fn func(*kgo.Record)) error {
	cl, err := s.coldClient()
	if err != nil {
		return fmt.Errorf("creating the changelog reader: %w", err)
	}
	s.cold.mu.Lock()
	defer s.cold.mu.Unlock()
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicProfiles: {partition: kgo.NewOffset().At(from)}})
	defer cl.RemoveConsumePartitions(map[string][]int32{schemas.TopicProfiles: {partition}})
	ctx, cancel := context.WithTimeout(ctx, coldTimeout)
	defer cancel()
	next := from
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading changelog partition %d from offset %d: %w", partition, next, err)
		}
		var ferr error
		done := false
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Topic != schemas.TopicProfiles || p.Partition != partition || done {
				return
			}
			for _, r := range p.Records {
				if r.Offset < next {
					continue
				}
				if r.Offset > to {
					done = true
					return
				}
				fn(r)
				next = r.Offset + 1
			}
			done = done || next > to || p.HighWatermark <= next
		})
		if ferr != nil {
			return fmt.Errorf("reading changelog partition %d: %w", partition, ferr)
		}
		if done {
			return nil
		}
	}
}

// retryCold runs read until it succeeds or ctx ends: a profile must not be
// replaced by an empty one because Kafka was briefly unreachable.
func (s *Segmenter) retryCold(ctx context.Context, read func() error) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := read()
		if err == nil || ctx.Err() != nil {
			return err
		}
		s.m.coldErrors.Inc()
		s.log.Warn("reading evicted profiles from the changelog, retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-s.closing:
			return errors.New("segmenter closing")
		case <-time.After(wait):
		}
	}
}

// loadCold reads back key, a profile of partition evicted from the cache,
// from its latest changelog record and puts it back in the cache. ok is
// false when the key has no acknowledged changelog record (a new profile)
// or the record is not the key's (a hash collision in the index); err is
// set only when the changelog cannot be read before ctx ends.
func (s *Segmenter) loadCold(ctx context.Context, partition int32, key []byte) (p *Profile, ok bool, err error) {
	off := int64(-1)
	val, unwritten := s.unwritten(key)
	if !unwritten {
		// A written record's offset is in the index: writePending sets
		// it before it forgets the profile's pending state.
		var known bool
		if off, known = s.keys.offset(partition, key); !known || s.cl == nil {
			return nil, false, nil
		}
		err = s.retryCold(ctx, func() error {
			return s.readChangelog(ctx, partition, off, off, func(r *kgo.Record) {
				if r.Offset == off && bytes.Equal(r.Key, key) {
					val = slices.Clone(r.Value)
				}
			})
		})
		if err != nil {
			return nil, false, err
		}
		if len(val) == 0 {
			s.log.Warn("an evicted profile's changelog record is not the profile's: starting it afresh", "partition", partition, "offset", off)
			return nil, false, nil
		}
	}
	if p, err = decodeProfile(val); err != nil {
		s.log.Error("decoding a changelog record, starting the profile afresh", "partition", partition, "offset", off, "err", err)
		return nil, false, nil
	}
	s.enc, s.cenc = appendProfiles(s.enc[:0], s.cenc[:0], p, true)
	s.cache.Set(key, s.cenc)
	if !unwritten {
		s.m.coldLoads.Inc()
	}
	return p, true, nil
}

// unwritten is the changelog value of key's latest change when no
// changelog record has it yet: its owner's list holds it, for the part in
// hand or, under Run, until writePending writes it (pending.go). A
// profile evicted from the cache before its record is written is read
// back from there, not from an older record. s is key's owner, or the only
// worker running (a partition-wide record).
func (s *Segmenter) unwritten(key []byte) ([]byte, bool) {
	o := s.owner(key)
	if i, ok := o.changedAt[string(key)]; ok {
		return o.changed[i].enc, true
	}
	return nil, false
}

// eachProfile calls visit with every profile of app in partition (but the
// forwarders of merged profiles): those in
// the cache first, then the evicted ones, read from the changelog in one
// pass. It returns how many profiles of the index it found neither in the
// cache nor in the changelog.
func (s *Segmenter) eachProfile(ctx context.Context, partition int32, app string, visitAll func(key []byte, p *Profile)) (missing int, err error) {
	visit := func(key []byte, p *Profile) {
		if p.mergedInto == "" { // a forwarder is no user of its own (merge.go)
			visitAll(key, p)
		}
	}
	prefix := []byte(app + "|")
	cold := make(map[int64][]byte) // changelog offset -> key
	lo, hi := int64(-1), int64(-1)
	for _, key := range s.keys.keys(partition) {
		if !bytes.HasPrefix(key, prefix) {
			continue
		}
		if p, ok := s.lookup(key); ok {
			visit(key, p)
			continue
		}
		if val, ok := s.unwritten(key); ok {
			if p, err := decodeProfile(val); err == nil {
				visit(key, p)
				continue
			}
		}
		off, ok := s.keys.offset(partition, key)
		if !ok || s.cl == nil {
			missing++
			continue
		}
		cold[off] = key
		if lo < 0 || off < lo {
			lo = off
		}
		hi = max(hi, off)
	}
	if len(cold) == 0 {
		return missing, nil
	}
	err = s.retryCold(ctx, func() error {
		return s.readChangelog(ctx, partition, lo, hi, func(r *kgo.Record) {
			key, ok := cold[r.Offset]
			if !ok || !bytes.Equal(key, r.Key) {
				return
			}
			p, err := decodeProfile(r.Value)
			if err != nil {
				return
			}
			delete(cold, r.Offset) // a retried read does not visit it again
			s.m.coldLoads.Inc()
			visit(key, p)
		})
	})
	return missing + len(cold), err
}
