package wasim

import (
	"sync"
	"time"
)

// serviceWindow is how long a user's inbound message lets a business send
// free-form messages to them (Meta's customer-service window).
const serviceWindow = 24 * time.Hour

// sweepEvery is how many admitted messages pass between two sweeps of
// expired pair and window entries.
const sweepEvery = 4096

type pairKey struct{ phone, waID string }

// bucket is a token bucket holding one second of a number's throughput.
type bucket struct {
	tokens float64
	last   time.Time
}

// limits holds the per-number throughput buckets, the per-pair last send
// times and the customer-service windows.
type limits struct {
	mu           sync.Mutex
	rate         float64 // messages per second; <= 0 disables
	pairInterval time.Duration
	buckets      map[string]*bucket
	lastSend     map[pairKey]time.Time
	windows      map[pairKey]time.Time // window end
	admitted     int
}

func newLimits(throughput int, pairInterval time.Duration) *limits {
	return &limits{
		rate:         float64(throughput),
		pairInterval: pairInterval,
		buckets:      make(map[string]*bucket),
		lastSend:     make(map[pairKey]time.Time),
		windows:      make(map[pairKey]time.Time),
	}
}

// admit applies the throughput limit (130429) and then the pair rate
// (131056) to a message from phone to waID at now. A message that passes
// both is recorded as sent for the pair rate. A message refused for the
// pair rate has used a throughput token: it reached the API.
func (l *limits) admit(phone, waID string, now time.Time) *graphError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate > 0 {
		b := l.buckets[phone]
		if b == nil {
			b = &bucket{tokens: l.rate, last: now}
			l.buckets[phone] = b
		}
		if el := now.Sub(b.last); el > 0 {
			b.tokens = min(l.rate, b.tokens+el.Seconds()*l.rate)
			b.last = now
		}
		if b.tokens < 1 {
			return errThroughput()
		}
		b.tokens--
	}
	if l.pairInterval > 0 {
		k := pairKey{phone, waID}
		if last, ok := l.lastSend[k]; ok && now.Sub(last) < l.pairInterval {
			return errPairRate()
		}
		l.lastSend[k] = now
	}
	l.admitted++
	if l.admitted%sweepEvery == 0 {
		l.sweep(now)
	}
	return nil
}

// sweep forgets pair send times older than the pair interval and closed
// windows, so memory follows the active recipients only.
func (l *limits) sweep(now time.Time) {
	for k, t := range l.lastSend {
		if now.Sub(t) >= l.pairInterval {
			delete(l.lastSend, k)
		}
	}
	for k, end := range l.windows {
		if !now.Before(end) {
			delete(l.windows, k)
		}
	}
}

// openWindow opens (or extends) the customer-service window of waID on phone.
func (l *limits) openWindow(phone, waID string, now time.Time) {
	l.mu.Lock()
	l.windows[pairKey{phone, waID}] = now.Add(serviceWindow)
	l.mu.Unlock()
}

// inWindow reports whether phone may send free-form messages to waID.
func (l *limits) inWindow(phone, waID string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	end, ok := l.windows[pairKey{phone, waID}]
	return ok && now.Before(end)
}
