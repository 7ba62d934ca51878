package segmenter

import (
	"container/heap"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Journey timers. Every profile with a journey waiting on time has a
// deadline (journeyRun.deadline, durable with the profile). Each events
// partition has a heap of (deadline, profile key) in memory; it is filled
// as runs start waiting and, after a restart or a rebalance, from the
// changelog: a changelog record whose profile waits carries its earliest
// deadline in the header HeaderTimer, so a restore fills the heap without
// decoding profiles. While a partition's earliest deadline has passed, its
// owner writes a KindTick event to it (one at a time); processing the tick
// pops the due entries and moves those profiles' journeys on. A tick is an
// event like any: its effects are produced and committed with its batch,
// so a crash fires the timers again from the last committed state (late,
// not lost), and a timer whose effects were committed does not fire twice:
// the profile no longer waits.

// HeaderTimer is the changelog record header with the profile's earliest
// journey deadline, in Unix microseconds.
const HeaderTimer = "herald-timer"

// maxFiresPerTick bounds the profiles one tick moves on (the rest wait for
// the next tick, written at once).
const maxFiresPerTick = 20000

type timerEntry struct {
	at  int64 // Unix microseconds
	key string
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// partTimers is one partition's heap and whether a tick for it is on its
// way.
type partTimers struct {
	h       timerHeap
	pending bool
}

// timers are the heaps of every partition. Safe for concurrent use.
type timers struct {
	mu    sync.Mutex
	parts map[int32]*partTimers
}

func newTimers() *timers { return &timers{parts: map[int32]*partTimers{}} }

// add schedules key of partition at t.
func (ts *timers) add(partition int32, key []byte, t time.Time) {
	if t.IsZero() {
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	pt := ts.parts[partition]
	if pt == nil {
		pt = &partTimers{}
		ts.parts[partition] = pt
	}
	heap.Push(&pt.h, timerEntry{at: t.UnixMicro(), key: string(key)})
}

// due pops up to max keys of partition due at now (each once) and clears
// the partition's pending tick.
func (ts *timers) due(partition int32, now time.Time, max int) []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	pt := ts.parts[partition]
	if pt == nil {
		return nil
	}
	pt.pending = false
	var out []string
	seen := map[string]bool{}
	n := now.UnixMicro()
	for len(pt.h) > 0 && pt.h[0].at <= n && len(out) < max {
		e := heap.Pop(&pt.h).(timerEntry)
		if !seen[e.key] {
			seen[e.key] = true
			out = append(out, e.key)
		}
	}
	return out
}

// toTick returns the partitions among owned whose earliest timer is due at
// now and that have no tick on its way, and marks them pending.
func (ts *timers) toTick(owned []int32, now time.Time) []int32 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []int32
	n := now.UnixMicro()
	for _, p := range owned {
		if pt := ts.parts[p]; pt != nil && !pt.pending && len(pt.h) > 0 && pt.h[0].at <= n {
			pt.pending = true
			out = append(out, p)
		}
	}
	return out
}

// unpend clears the pending mark of partitions whose tick could not be
// written.
func (ts *timers) unpend(parts []int32) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, p := range parts {
		if pt := ts.parts[p]; pt != nil {
			pt.pending = false
		}
	}
}

// drop forgets partitions (revoked or lost: their next owner restores
// them).
func (ts *timers) drop(parts []int32) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, p := range parts {
		delete(ts.parts, p)
	}
}

// size is the number of timers of every partition.
func (ts *timers) size() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, pt := range ts.parts {
		n += len(pt.h)
	}
	return n
}

// appendTimerHeader appends the HeaderTimer of a changelog record for p
// to dst, none when p waits on no time.
func appendTimerHeader(dst []kgo.RecordHeader, p *Profile) []kgo.RecordHeader {
	t := p.nextDeadline()
	if t.IsZero() {
		return dst
	}
	return append(dst, kgo.RecordHeader{Key: HeaderTimer, Value: strconv.AppendInt(nil, t.UnixMicro(), 10)})
}

// restoreTimer schedules the timer a restored changelog record carries.
func (s *Segmenter) restoreTimer(r *kgo.Record) {
	for _, h := range r.Headers {
		if h.Key == HeaderTimer {
			if us, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				s.timers.add(r.Partition, r.Key, time.UnixMicro(us))
			}
		}
	}
}

// journeyNow is the journeys' clock: Config.Clock, else real time sped up
// by Config.ClockSpeed from the segmenter's start.
func (s *Segmenter) journeyNow() time.Time {
	if s.cfg.Clock != nil {
		return s.cfg.Clock().UTC()
	}
	now := s.now()
	if s.cfg.ClockSpeed <= 1 {
		return now.UTC()
	}
	return s.started.Add(time.Duration(float64(now.Sub(s.started)) * s.cfg.ClockSpeed)).UTC()
}

// runTicks writes, every Config.TickInterval until ctx is done, a tick to
// each owned partition whose earliest timer is due.
func (s *Segmenter) runTicks(ctx context.Context) {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.journeyNow()
		parts := s.timers.toTick(s.owned.list(), now)
		if len(parts) == 0 {
			continue
		}
		recs := make([]*kgo.Record, 0, len(parts))
		for _, p := range parts {
			e := &schemas.Event{
				ID: "tick-" + strconv.FormatInt(now.UnixMicro(), 10) + "-p" + strconv.Itoa(int(p)), App: schemas.TickApp,
				Kind: schemas.KindTick, Time: now, Received: now,
			}
			b, err := e.Marshal()
			if err != nil {
				continue
			}
			recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Partition: p, Key: e.Key(), Value: b})
		}
		if err := s.producePartitioned(ctx, recs); err != nil {
			s.timers.unpend(parts)
			s.log.Warn("writing journey ticks", "err", err)
		}
	}
}

// runTick fires the journey timers of rec's partition that are due.
func (s *Segmenter) runTick(out []*kgo.Record, rec *kgo.Record, e *schemas.Event) []*kgo.Record {
	s.m.events[e.Kind].Inc()
	now := s.journeyNow()
	keys := s.timers.due(rec.Partition, now, maxFiresPerTick)
	for _, k := range keys {
		key := []byte(k)
		p, known := s.lookup(key)
		if !known {
			var err error
			if p, known, err = s.loadCold(s.batchCtx, rec.Partition, key); err != nil {
				s.coldErr = err
				return out
			}
		}
		if !known {
			continue
		}
		before := len(out)
		var changed, tags bool
		out, changed, tags = s.fireTimers(out, key, p, e, now)
		if !changed {
			continue
		}
		if err := s.save(key, p); err != nil {
			s.revert(key, p)
			out = out[:before]
			continue
		}
		s.noteChanged(key, rec.Partition, identity(appOf(key), idOf(key)), p, tags)
		s.timers.add(rec.Partition, key, p.nextDeadline())
	}
	return out
}

// appOf and idOf split a profile key: the app, and the rest (the hwid, or
// "user:"/"anon:" and an id).
func appOf(key []byte) string {
	for i, c := range key {
		if c == '|' {
			return string(key[:i])
		}
	}
	return ""
}

func idOf(key []byte) []byte {
	for i, c := range key {
		if c == '|' {
			return key[i+1:]
		}
	}
	return nil
}
