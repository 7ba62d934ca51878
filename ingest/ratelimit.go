package ingest

import (
	"hash/maphash"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// limiter is a token bucket per credential (API token, write key): rate
// requests per second with bursts of burst. Buckets idle long enough to be
// full again are dropped, so memory follows the active credentials only.
//
// It is per ingest replica: with N replicas behind a balancer a credential
// gets up to N times the rate. That is the usual trade (no shared state on
// the hot path); size the rate per replica.
type limiter struct {
	rate, burst float64
	now         func() time.Time
	seed        maphash.Seed
	shards      [64]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newLimiter returns nil (no limit) when rate is not positive.
func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	if rate <= 0 {
		return nil
	}
	l := &limiter{rate: rate, burst: math.Max(float64(burst), 1), now: now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// allow takes one token for key, or reports how long until one is there.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	sh := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweep(now, l)
	b, ok := sh.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		sh.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep drops buckets that refilled completely, at most once a minute.
func (sh *limiterShard) sweep(now time.Time, l *limiter) {
	if now.Sub(sh.swept) < time.Minute {
		return
	}
	sh.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range sh.buckets {
		if now.Sub(b.last) > full {
			delete(sh.buckets, k)
		}
	}
}

// throttled is the 429 answer for a credential over its rate; field names
// where the credential came from.
func throttled(field string, wait time.Duration) *apiError {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	return &apiError{
		Code: http.StatusTooManyRequests, Field: field, RetryAfter: secs,
		Msg: "rate limit of this credential exceeded, retry after " + strconv.Itoa(secs) + "s",
	}
}
