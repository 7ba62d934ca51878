package dispatcher

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Limiter bounds how fast each sender (a WhatsApp phone-number id) sends.
// The dispatcher calls Wait once per provider call. This replica's token
// bucket implements it today; a global, adaptive one (shared across
// replicas, following 130429) can replace it behind the same interface.
type Limiter interface {
	// Wait blocks until sender may make one call. It returns an error, and
	// takes no token, when ctx is done first or when ctx's deadline comes
	// before the sender's turn.
	Wait(ctx context.Context, sender string) error
}

var _ Limiter = (*tokenBucket)(nil)

// tokenBucket is a per-sender token bucket: rate tokens a second, at most
// burst saved up. Waiters reserve their token first (the count goes
// negative), so turns are handed out in call order and never faster than
// rate.
type tokenBucket struct {
	rate  float64
	burst float64
	// now and sleep are the clock, replaced in tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// newTokenBucket returns a limiter of rate calls a second per sender with
// bursts of burst. rate and burst must be positive (Config.Validate).
func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{
		rate:    rate,
		burst:   float64(burst),
		now:     time.Now,
		sleep:   sleepCtx,
		buckets: make(map[string]*bucket),
	}
}

// refill adds the tokens earned since b.last, at most burst in the bucket.
func (l *tokenBucket) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
}

// Wait implements Limiter.
func (l *tokenBucket) Wait(ctx context.Context, sender string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	now := l.now()
	b := l.buckets[sender]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[sender] = b
	}
	l.refill(b, now)
	b.tokens--
	var wait time.Duration
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / l.rate * float64(time.Second))
	}
	if dl, ok := ctx.Deadline(); ok && wait > 0 && now.Add(wait).After(dl) {
		b.tokens++
		l.mu.Unlock()
		return fmt.Errorf("waiting %v for a send slot of sender %s: %w", wait, sender, context.DeadlineExceeded)
	}
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	if err := l.sleep(ctx, wait); err != nil {
		// Give the reserved token back: this call will not be made.
		l.mu.Lock()
		l.refill(b, l.now())
		b.tokens = min(l.burst, b.tokens+1)
		l.mu.Unlock()
		return err
	}
	return nil
}

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
