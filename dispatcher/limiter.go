package dispatcher

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limiter bounds how fast each sender (a WhatsApp phone-number id) sends.
// The dispatcher takes one turn per provider call, with Take (a batch's
// queues, which wait without a worker) or Wait, and calls Observe with the
// call's answer. Three implementations, chosen by LimiterConfig.Mode: the
// global limiter (limiter_global.go: one rate per sender shared by every
// replica, adaptive), a per-replica pacer at the configured rate (local),
// and none.
type Limiter interface {
	// Wait blocks until sender may make one call. It returns ctx's error,
	// and takes no turn, when ctx is done first.
	Wait(ctx context.Context, sender string) error
	// Take is Wait without blocking, for a caller that must not hold a
	// worker while it waits (the batch's queues, queue.go): it reports
	// true when sender may make one call now. Else the caller is queued
	// like a Wait, and granted is called once, from another goroutine
	// (a timer's, or one that changes the rate), when the turn is handed
	// to it; granted must not block nor call the limiter. The caller
	// must call picked once when a worker takes the turn up (or the turn
	// is dropped): until then the turn counts as handed out but not
	// taken, and few are handed out at once per sender (see
	// pacer.maxOut), so that turns kept waiting for a worker cannot
	// bunch into a burst. cancel takes the caller out of the queue and
	// reports whether it was still in it (false: granted has run or
	// runs, and the turn is the caller's). cancel is nil when Take
	// returns true.
	Take(sender string, granted func(picked func())) (now bool, cancel func() bool)
	// Observe reports the answer of a call Wait allowed: nil or the
	// provider's error. The global limiter lowers the sender's rate on
	// Meta's rate-limit codes (4, 80007, 130429).
	Observe(sender string, err error)
}

var (
	_ Limiter = (*localLimiter)(nil)
	_ Limiter = noLimit{}
)

// pacerSlack is how much timer lateness a pacer makes up: its bucket holds
// this much time's worth of tokens on top of the burst, so that a timer
// firing a little late does not lose the slot (which would make a backlog
// run below the rate).
const pacerSlack = 5 * time.Millisecond

// tokenEps absorbs the rounding of timer durations: a token 1e-9 short is
// a whole one.
const tokenEps = 1e-9

// pacer paces one sender's calls on this replica: a token bucket filling at
// rate tokens a second, at most burst (plus pacerSlack's worth) saved up,
// that hands its tokens to the waiters in arrival order. A waiter holds no
// reservation, so a change of rate applies from the next token on (the
// global limiter lowers a replica's grant at once). Rate 0 lets nothing
// through until it is raised.
type pacer struct {
	// now and afterFunc are the clock, replaced in tests.
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) stopper

	mu      sync.Mutex
	rate    float64
	burst   float64
	tokens  float64
	last    time.Time
	queue   []*waiter
	timer   stopper
	granted int // turns given since the last take
	// out is how many turns granted to Take callers are not yet picked
	// up; at maxOut the head Take waits for one to be.
	out int
}

// maxOut is the most turns handed out to Take callers and not picked up:
// the burst plus outWindow of the rate. Call with p.mu held.
func (p *pacer) maxOut() int {
	return int(p.burst) + int(math.Ceil(p.rate*outWindow.Seconds()))
}

// stopper is a timer that can be stopped (*time.Timer).
type stopper interface{ Stop() bool }

// waiter is one Wait (ch) or Take (fn) in a pacer's queue.
type waiter struct {
	ch      chan struct{}
	fn      func(picked func())
	granted bool
}

// outWindow is how much of a sender's rate a pacer hands out to Take
// callers at once on top of its burst (pacer.maxOut): turns handed out
// and not yet taken up by a worker. A turn's call is late by as long as
// it waits for a worker, so more of them would let a busy moment end in
// a burst of late calls.
const outWindow = 10 * time.Millisecond

// newPacer returns a pacer of rate calls a second and bursts of burst
// (at least 1) that starts full.
func newPacer(rate float64, burst int) *pacer {
	p := &pacer{
		now:       time.Now,
		afterFunc: func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) },
		rate:      rate,
		burst:     float64(max(burst, 1)),
	}
	p.last = p.now()
	p.tokens = p.depth()
	return p
}

// depth is the most tokens the bucket holds at the current rate: none at
// rate 0 (a replica with no share sends nothing, not even a saved token).
func (p *pacer) depth() float64 {
	if p.rate <= 0 {
		return 0
	}
	return p.burst + p.rate*pacerSlack.Seconds()
}

// refill adds the tokens earned since p.last. Call with p.mu held.
func (p *pacer) refill(now time.Time) {
	if el := now.Sub(p.last); el > 0 {
		p.tokens = min(p.depth(), p.tokens+el.Seconds()*p.rate)
		p.last = now
	}
}

// wait blocks until a token is handed to the caller or ctx is done.
func (p *pacer) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	now := p.now()
	p.refill(now)
	if len(p.queue) == 0 && p.tokens >= 1-tokenEps {
		p.tokens--
		p.granted++
		p.mu.Unlock()
		return nil
	}
	w := &waiter{ch: make(chan struct{})}
	p.queue = append(p.queue, w)
	if len(p.queue) == 1 {
		p.arm(now)
	}
	p.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		if !p.leave(w) {
			return nil // handed a token as ctx ended: use it
		}
		return ctx.Err()
	}
}

// reserve is wait without blocking: true when a token is taken now, else
// granted is queued (called under p.mu when its token is handed over) and
// cancel leaves the queue (see Limiter.Take).
func (p *pacer) reserve(granted func(picked func())) (bool, func() bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.refill(now)
	if len(p.queue) == 0 && p.tokens >= 1-tokenEps {
		p.tokens--
		p.granted++
		return true, nil
	}
	w := &waiter{fn: granted}
	p.queue = append(p.queue, w)
	if len(p.queue) == 1 {
		p.arm(now)
	}
	return false, func() bool { return p.leave(w) }
}

// leave takes w out of the queue; false when it was handed its token.
func (p *pacer) leave(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.granted {
		return false
	}
	for i, q := range p.queue {
		if q == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			break
		}
	}
	if len(p.queue) == 0 && p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	return true
}

// arm sets the timer for the head waiter's token. Call with p.mu held.
func (p *pacer) arm(now time.Time) {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if len(p.queue) == 0 || p.rate <= 0 || p.blocked() {
		return
	}
	d := time.Duration(math.Ceil((1 - p.tokens) / p.rate * float64(time.Second)))
	p.timer = p.afterFunc(max(d, 0), p.fire)
}

// fire hands the tokens earned to the waiters at the head of the queue.
func (p *pacer) fire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	now := p.now()
	p.refill(now)
	p.release()
	p.arm(now)
}

// release hands whole tokens to waiters in order, to a Take caller only
// while fewer than maxOut turns are out. Call with p.mu held.
func (p *pacer) release() {
	for len(p.queue) > 0 && p.tokens >= 1-tokenEps {
		w := p.queue[0]
		if w.fn != nil && p.out >= p.maxOut() {
			return // picked calls release again
		}
		p.queue[0] = nil
		p.queue = p.queue[1:]
		w.granted = true
		if w.fn != nil {
			p.out++
			w.fn(p.picked)
		} else {
			close(w.ch)
		}
		p.tokens--
		p.granted++
	}
}

// picked counts a turn handed to a Take caller as taken up, and hands out
// the next ones it held back.
func (p *pacer) picked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.blocked()
	p.out--
	if !held {
		return
	}
	now := p.now()
	p.refill(now)
	p.release()
	p.arm(now)
}

// blocked reports whether the head waiter waits for a turn to be picked
// up rather than for a token. Call with p.mu held.
func (p *pacer) blocked() bool {
	return len(p.queue) > 0 && p.queue[0].fn != nil && p.out >= p.maxOut()
}

// setRate changes the rate from now on.
func (p *pacer) setRate(rate float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate == p.rate {
		return
	}
	now := p.now()
	p.refill(now)
	p.rate = rate
	p.tokens = min(p.tokens, p.depth())
	p.release()
	p.arm(now)
}

// take returns the turns given since the last take and the waiters now
// queued.
func (p *pacer) take() (granted, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	granted, p.granted = p.granted, 0
	return granted, len(p.queue)
}

// localLimiter gives every sender its configured rate on this replica
// alone (LimiterConfig.Mode "local"): N replicas send up to N times it.
type localLimiter struct {
	rateOf func(sender string) float64
	burst  int

	mu     sync.Mutex
	pacers map[string]*pacer
}

func newLocalLimiter(rateOf func(string) float64, burst int) *localLimiter {
	return &localLimiter{rateOf: rateOf, burst: burst, pacers: make(map[string]*pacer)}
}

// Wait implements Limiter.
func (l *localLimiter) Wait(ctx context.Context, sender string) error {
	return l.pacer(sender).wait(ctx)
}

// pacer is sender's pacer, made at its first use.
func (l *localLimiter) pacer(sender string) *pacer {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pacers[sender]
	if p == nil {
		p = newPacer(l.rateOf(sender), l.burst)
		l.pacers[sender] = p
	}
	return p
}

// Take implements Limiter.
func (l *localLimiter) Take(sender string, granted func(picked func())) (bool, func() bool) {
	return l.pacer(sender).reserve(granted)
}

// Observe implements Limiter: a local limiter does not adapt.
func (l *localLimiter) Observe(string, error) {}

// noLimit lets every call through (LimiterConfig.Mode "none": benchmarks
// against a simulator without limits).
type noLimit struct{}

// Wait implements Limiter.
func (noLimit) Wait(ctx context.Context, _ string) error { return ctx.Err() }

// Take implements Limiter.
func (noLimit) Take(string, func(func())) (bool, func() bool) { return true, nil }

// Observe implements Limiter.
func (noLimit) Observe(string, error) {}

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
