package segmenter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// The changelog, coalesced. Run does not write a profile's changelog
// record (and its TopicTags record) after every part of a batch that
// changes it: the workers' lists of changed profiles (changedProfile) are
// kept from batch to batch, a later change of a profile replacing its
// earlier one in place, and written together, each profile's latest state
// once, when the segmenter has caught up with its partitions (what is
// left of them fits in one poll), when the oldest change is
// Config.ChangelogInterval old, when they hold Config.ChangelogBytes,
// before partitions are revoked and when Run stops. Kafka Streams' record
// cache does the same between commits. A user's statuses (sent,
// delivered, read) and a session's events come seconds apart: while the
// segmenter works through a backlog, they cost one changelog record, not
// one each.
//
// What makes it safe:
//   - The offsets of the events behind the pending records are marked for
//     commit only once those records are acknowledged (writePending), so a
//     crash before that replays the events, which the changelog does not
//     have yet: applied once, not lost. A crash after it replays only what
//     the changelog has, which the profiles' applied offsets skip.
//   - Pending records are written only after every output of their events
//     is acknowledged, as before: a replay sends again with the same ids
//     rather than skip a send the changelog says was made.
//   - A pending profile evicted from fastcache is read back from its
//     pending encoding, not from an older changelog record (unwritten).
//   - A pending profile keeps no decoded Profile or event: at the end of
//     each part (seal, sealChange) its tags record value and timer header
//     are built and those are let go, so the memory is its encodings.
//   - Lost partitions' pending profiles are dropped, not written: their
//     new owner replays the events and writes its own.
//   - Once an output failed, or Run failed, nothing pending is written.

// pendingLog is what the pending changelog covers: the next offsets of
// the events behind it, and since when it is pending. Its own lock: handle
// marks parts, the revoke and lost callbacks flush and drop.
type pendingLog struct {
	mu sync.Mutex
	// marks are the next offsets of TopicEvents the pending records
	// cover, by partition: committed once they are written.
	marks map[int32]kgo.EpochOffset
	// since is when the first part after the last write was marked.
	since time.Time
	// poisoned is set when an output of a pending change failed, or Run
	// failed: nothing pending is written from then on.
	poisoned bool
}

// mark notes that recs (TopicEvents records, in order per partition) are
// processed, their changes in the workers' lists: their offsets are
// committed with the next write.
func (pl *pendingLog) mark(recs []*kgo.Record, now time.Time) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.marks) == 0 {
		pl.since = now
	}
	if pl.marks == nil {
		pl.marks = make(map[int32]kgo.EpochOffset)
	}
	// A poll's records come a partition at a time: the last of each run
	// is the one to mark.
	for i, r := range recs {
		if i+1 < len(recs) && recs[i+1].Partition == r.Partition {
			continue
		}
		next := kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
		if cur, ok := pl.marks[r.Partition]; !ok || cur.Less(next) {
			pl.marks[r.Partition] = next
		}
	}
}

// Why the pending records are written (writePending): the reason label
// of herald_segmenter_changelog_writes_total.
const (
	writeCaughtUp = "caught_up" // what is left fits in one poll (or ChangelogInterval < 0)
	writeInterval = "interval"  // ChangelogInterval since the first pending part
	writeBytes    = "bytes"     // ChangelogBytes held
	writeRevoke   = "revoke"    // partitions are revoked
	writeStop     = "stop"      // Run stops
)

// due reports why the pending records are to be written after a poll's
// records were handled, "" when they wait: caughtUp (the segmenter has
// caught up with its partitions), pending since the interval, or holding
// bytes.
func (pl *pendingLog) due(now time.Time, caughtUp bool, bytes int, cfg *Config) string {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	switch {
	case len(pl.marks) == 0:
		return ""
	case caughtUp || cfg.ChangelogInterval < 0:
		return writeCaughtUp
	case now.Sub(pl.since) >= cfg.ChangelogInterval:
		return writeInterval
	case bytes >= cfg.ChangelogBytes:
		return writeBytes
	}
	return ""
}

// take returns the marks and forgets them; ok is false when the log is
// poisoned.
func (pl *pendingLog) take() (marks map[int32]kgo.EpochOffset, ok bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	marks, pl.marks = pl.marks, nil
	return marks, !pl.poisoned
}

// poison stops anything pending from being written.
func (pl *pendingLog) poison() {
	pl.mu.Lock()
	pl.poisoned = true
	pl.mu.Unlock()
}

// drop forgets the marks of lost events partitions.
func (pl *pendingLog) drop(lost []int32) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, p := range lost {
		delete(pl.marks, p)
	}
}

// seal ends a part for s's changed profiles (Run only): each one the part
// changed is sealed (sealChange), and s.pendBytes counts what they hold.
func (s *Segmenter) seal() {
	coalesced := 0
	for _, i := range s.touched {
		c := &s.changed[i]
		if c.size > 0 {
			coalesced++ // pending from an earlier part: one record for both
		}
		s.sealChange(c)
		c.touched = false
		size := len(c.key) + len(c.enc) + len(c.tagsVal) + pendingOverhead
		s.pendBytes += size - c.size
		c.size = size
	}
	s.touched = s.touched[:0]
	if coalesced > 0 {
		s.m.coalesced.Add(float64(coalesced))
	}
}

// pendingOverhead is what a pending profile holds besides its key and
// values, for Config.ChangelogBytes: its changedProfile (about 170 bytes),
// its index entry (the key again, and the map's slot).
const pendingOverhead = 256

// sealAll seals every worker's part, on every worker at once.
func (s *Segmenter) sealAll() {
	if len(s.workers) == 1 {
		s.workers[0].seal()
		return
	}
	var wg sync.WaitGroup
	for _, w := range s.workers {
		if len(w.touched) > 0 {
			wg.Go(w.seal)
		}
	}
	wg.Wait()
}

// pendingBytes is what the workers' pending profiles hold (sealed parts).
func (s *Segmenter) pendingBytes() int {
	n := 0
	for _, w := range s.ws {
		n += w.pendBytes
	}
	return n
}

// errFlushPoisoned is why writePending wrote nothing.
var errFlushPoisoned = errors.New("not writing the pending changelog: an output of its events failed, or the segmenter stopped on an error")

// flushPending is writePending for a caller outside Process.
func (s *Segmenter) flushPending(ctx context.Context, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writePending(ctx, reason)
}

// writePending writes the pending changelog and tags records (the
// workers' sealed lists), waits until Kafka acknowledged them all (the key
// index then has their offsets), forgets them, and only then marks the
// events they cover for commit. Every output of those events must have
// been acknowledged before, and no worker may be running: s.mu is held,
// by Process (a part's flush) or flushPending.
func (s *Segmenter) writePending(ctx context.Context, reason string) error {
	marks, ok := s.pending.take()
	if !ok {
		return errFlushPoisoned
	}
	n, ntags := 0, 0
	for _, w := range s.ws {
		n += len(w.changed)
		for i := range w.changed {
			if w.changed[i].tagsVal != nil {
				ntags++
			}
		}
	}
	if n == 0 && len(marks) == 0 {
		return nil
	}
	// The records of the last write are acknowledged: their slice is
	// reused (a write's records are about 200 bytes each, 100,000 of
	// them and more).
	recs := slices.Grow(s.writeRecs[:0], n+ntags)
	defer func() {
		clear(recs) // no key or value kept alive
		s.writeRecs = recs[:0]
	}()
	for _, w := range s.ws {
		for i := range w.changed {
			c := &w.changed[i]
			recs = append(recs, kgo.Record{Topic: schemas.TopicProfiles, Partition: c.partition, Key: c.key, Value: c.enc, Headers: c.hdr})
		}
	}
	// The tags records after the changelog's: a reader of TopicTags sees
	// no profile the changelog has not.
	for _, w := range s.ws {
		for i := range w.changed {
			if c := &w.changed[i]; c.tagsVal != nil {
				recs = append(recs, kgo.Record{Topic: schemas.TopicTags, Key: c.key, Value: c.tagsVal})
			}
		}
	}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
	)
	wg.Add(len(recs))
	done := func(r *kgo.Record, err error) {
		defer wg.Done()
		if err != nil {
			failed.Store(true)
			errOnce.Do(func() { firstErr = err })
			return
		}
		if r.Topic == schemas.TopicProfiles {
			// A key has one record in a write.
			s.keys.setOffset(r.Partition, r.Key, r.Offset)
		}
	}
	for i := range recs {
		s.cl.Produce(ctx, &recs[i], done)
	}
	wg.Wait()
	if failed.Load() {
		s.pending.poison()
		return fmt.Errorf("writing %d pending changelog and tags records: %w", len(recs), firstErr)
	}
	for _, w := range s.ws {
		w.forgetChanged()
	}
	s.m.changelogRecords.Add(float64(n))
	s.m.tagRecords.Add(float64(ntags))
	s.m.changelogFlushes.WithLabelValues(reason).Inc()
	s.log.Debug("changelog written", "reason", reason, "profiles", n, "tags", ntags, "events_partitions", len(marks))
	if f := s.crashAfterProduce.Load(); f != nil {
		return (*f)()
	}
	if len(marks) > 0 {
		s.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{schemas.TopicEvents: marks})
	}
	return nil
}

// forgetChanged empties s's list of changed profiles.
func (s *Segmenter) forgetChanged() {
	clear(s.changed)
	s.changed = s.changed[:0]
	clear(s.changedAt)
	s.touched = s.touched[:0]
	s.pendBytes = 0
}

// dropPending forgets the pending profiles of lost events partitions
// (their new owner replays the events) and the marks of their events.
func (s *Segmenter) dropPending(lost []int32) {
	if len(lost) == 0 {
		return
	}
	s.pending.drop(lost)
	gone := make(map[int32]bool, len(lost))
	for _, p := range lost {
		gone[p] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.ws {
		kept := w.changed[:0]
		for _, c := range w.changed {
			if gone[c.partition] {
				w.pendBytes -= c.size
				continue
			}
			kept = append(kept, c)
		}
		clear(w.changed[len(kept):])
		w.changed = kept
		clear(w.changedAt)
		for i := range kept {
			w.changedAt[string(kept[i].key)] = i
		}
	}
}
