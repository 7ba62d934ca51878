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

// keepSeconds is how many seconds of per-number accepted counts are kept
// (see Sim.AcceptedPerSecond).
const keepSeconds = 3600

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
	// perSecond counts the admitted messages of each number by Unix
	// second of the simulator's clock, for the last keepSeconds.
	perSecond map[string]map[int64]int
}

func newLimits(throughput int, pairInterval time.Duration) *limits {
	return &limits{
		rate:         float64(throughput),
		pairInterval: pairInterval,
		buckets:      make(map[string]*bucket),
		lastSend:     make(map[pairKey]time.Time),
		windows:      make(map[pairKey]time.Time),
		perSecond:    make(map[string]map[int64]int),
	}
}

// setRate changes the throughput at run time; buckets keep their tokens up
// to one second of the new rate.
func (l *limits) setRate(throughput int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = float64(throughput)
	for _, b := range l.buckets {
		b.tokens = min(b.tokens, max(l.rate, 0))
	}
}

// count adds one admitted message of phone at now to its per-second counts.
func (l *limits) count(phone string, now time.Time) {
	m := l.perSecond[phone]
	if m == nil {
		m = make(map[int64]int)
		l.perSecond[phone] = m
	}
	sec := now.Unix()
	if _, ok := m[sec]; !ok && len(m) >= keepSeconds {
		for s := range m {
			if s <= sec-keepSeconds {
				delete(m, s)
			}
		}
	}
	m[sec]++
}

// acceptedPerSecond copies the per-second counts of phone.
func (l *limits) acceptedPerSecond(phone string) map[int64]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int64]int, len(l.perSecond[phone]))
	for s, n := range l.perSecond[phone] {
		out[s] = n
	}
	return out
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
	l.count(phone, now)
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
