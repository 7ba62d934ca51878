package dispatcher

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// fakeClock drives a tokenBucket: sleeps are recorded and, when advance is
// set, move the clock.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	advance bool
	slept   []time.Duration
	// sleepErr, when set, is returned by sleep instead of sleeping.
	sleepErr error
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	if c.sleepErr != nil {
		return c.sleepErr
	}
	if c.advance {
		c.t = c.t.Add(d)
	}
	return ctx.Err()
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) takeSlept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

func fakeBucket(rate float64, burst int, advance bool) (*tokenBucket, *fakeClock) {
	c := &fakeClock{t: time.Now(), advance: advance}
	l := newTokenBucket(rate, burst)
	l.now, l.sleep = c.now, c.sleep
	return l, c
}

func near(a, b time.Duration) bool { return math.Abs(float64(a-b)) < float64(time.Microsecond) }

func TestTokenBucketReservesInOrder(t *testing.T) {
	l, c := fakeBucket(10, 3, false) // frozen clock: waits pile up
	ctx := t.Context()
	for i := range 6 {
		if err := l.Wait(ctx, "1001"); err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	got := c.takeSlept()
	if len(got) != len(want) {
		t.Fatalf("slept %v, want %v (burst of 3 free)", got, want)
	}
	for i := range want {
		if !near(got[i], want[i]) {
			t.Fatalf("slept %v, want %v", got, want)
		}
	}
	// Another sender has its own bucket.
	if err := l.Wait(ctx, "1002"); err != nil {
		t.Fatal(err)
	}
	if s := c.takeSlept(); len(s) != 0 {
		t.Fatalf("sender 1002 slept %v, want no wait", s)
	}
}

func TestTokenBucketNeverExceedsRate(t *testing.T) {
	const rate, burst = 80.0, 80
	l, c := fakeBucket(rate, burst, true)
	start := c.now()
	for i := 1; i <= 1000; i++ {
		if err := l.Wait(t.Context(), "1001"); err != nil {
			t.Fatal(err)
		}
		// Calls allowed by time T: burst + rate·T.
		elapsed := c.now().Sub(start).Seconds()
		if allowed := burst + rate*elapsed + 1e-6; float64(i) > allowed {
			t.Fatalf("call %d at %.4fs: only %.1f allowed", i, elapsed, allowed)
		}
	}
	// And it is not slower than the rate either: 920 calls past the burst
	// take 920/80 s of (fake) time.
	if got, want := c.now().Sub(start), time.Duration(float64(1000-burst)/rate*float64(time.Second)); !near(got, want) {
		t.Fatalf("1000 calls took %v, want %v", got, want)
	}
}

func TestTokenBucketRefillCapsAtBurst(t *testing.T) {
	l, c := fakeBucket(10, 2, false)
	for range 2 {
		_ = l.Wait(t.Context(), "1001")
	}
	c.add(time.Hour) // idle: the bucket fills up to burst, not 36000
	for range 3 {
		_ = l.Wait(t.Context(), "1001")
	}
	if s := c.takeSlept(); len(s) != 1 || !near(s[0], 100*time.Millisecond) {
		t.Fatalf("slept %v, want one 100ms wait after the burst of 2", s)
	}
}

func TestTokenBucketDeadlineAndCancel(t *testing.T) {
	l, c := fakeBucket(10, 1, false)
	_ = l.Wait(t.Context(), "1001") // the burst

	// The turn (100ms away) comes after the deadline: refused at once, no
	// token taken.
	ctx, cancel := context.WithDeadline(t.Context(), c.now().Add(50*time.Millisecond))
	err := l.Wait(ctx, "1001")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past deadline = %v, want DeadlineExceeded", err)
	}
	if s := c.takeSlept(); len(s) != 0 {
		t.Fatalf("slept %v, want no sleep", s)
	}

	// A wait that is interrupted gives its token back.
	c.sleepErr = context.Canceled
	if err := l.Wait(t.Context(), "1001"); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Wait = %v, want Canceled", err)
	}
	c.sleepErr = nil
	c.takeSlept()

	// Neither refused call kept a token: the next waits 100ms, not 200 or 300.
	if err := l.Wait(t.Context(), "1001"); err != nil {
		t.Fatal(err)
	}
	if s := c.takeSlept(); len(s) != 1 || !near(s[0], 100*time.Millisecond) {
		t.Fatalf("slept %v, want [100ms]", s)
	}

	// A done context is refused before touching the bucket.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Wait(done, "1001"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with done ctx = %v", err)
	}
}

func TestTokenBucketRealClockConcurrent(t *testing.T) {
	// Real clock, high rate: checks the locking under -race and that
	// every waiter gets through; no timing is asserted.
	l := newTokenBucket(1e5, 10)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if err := l.Wait(t.Context(), []string{"1001", "1002"}[i%2]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
