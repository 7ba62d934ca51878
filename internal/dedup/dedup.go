// Package dedup remembers keys seen within a time window in bounded memory,
// for dropping redeliveries at the edge (Segment messageId, Meta's webhook
// retries of wamid+status).
//
// It is a first line only: it is per process and forgets on restart, so the
// records a caller produces must also carry deterministic ids that
// consumers deduplicate on (the analytics tables are ReplacingMergeTree by
// id). A key is added only after what it stands for was durably accepted,
// so a request that failed and is retried is not mistaken for a duplicate.
package dedup

import (
	"sync"
	"time"

	"github.com/VictoriaMetrics/fastcache"
)

// Window remembers keys for at least Period and at most 2*Period: keys go
// into the current generation, which becomes the previous one every Period,
// when the previous one is dropped. Memory is bounded by 2*maxBytes; past
// it fastcache evicts the oldest keys, so under memory pressure the window
// shrinks rather than memory growing.
type Window struct {
	period time.Duration
	now    func() time.Time

	mu        sync.RWMutex
	cur, prev *fastcache.Cache
	rotated   time.Time
	maxBytes  int
}

// New returns a window of period keeping at most maxBytes per generation
// (fastcache's minimum is 32 MiB; smaller values are raised to it).
func New(period time.Duration, maxBytes int) *Window {
	return newWindow(period, maxBytes, time.Now)
}

func newWindow(period time.Duration, maxBytes int, now func() time.Time) *Window {
	maxBytes = max(maxBytes, minBytes)
	return &Window{
		period: period, now: now, maxBytes: maxBytes,
		cur: fastcache.New(maxBytes), prev: fastcache.New(maxBytes), rotated: now(),
	}
}

// minBytes is fastcache's smallest useful size: 512 buckets of one 64 KiB
// chunk. Chunks are allocated as keys arrive, so an idle window is small.
const minBytes = 32 << 20

// value marks presence; fastcache stores it next to the key.
var value = []byte{1}

// Contains reports whether key was added within the window.
func (w *Window) Contains(key []byte) bool {
	w.rotate()
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.cur.Has(key) || w.prev.Has(key)
}

// Add records key as seen now.
func (w *Window) Add(key []byte) {
	w.rotate()
	w.mu.RLock()
	defer w.mu.RUnlock()
	w.cur.Set(key, value)
}

// Len is the number of keys held, both generations (a key in both counts
// twice).
func (w *Window) Len() uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var a, b fastcache.Stats
	w.cur.UpdateStats(&a)
	w.prev.UpdateStats(&b)
	return a.EntriesCount + b.EntriesCount
}

// rotate drops the previous generation once per period.
func (w *Window) rotate() {
	now := w.now()
	w.mu.RLock()
	due := now.Sub(w.rotated) >= w.period
	w.mu.RUnlock()
	if !due {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if el := now.Sub(w.rotated); el >= w.period {
		old := w.prev
		if el >= 2*w.period {
			// Nothing in cur is within the window either.
			w.cur.Reset()
		}
		w.prev, w.cur = w.cur, old
		w.cur.Reset()
		w.rotated = now
	}
}
