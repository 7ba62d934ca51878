package dispatcher

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeTime drives a pacer: a clock the test moves and timers that fire when
// it passes them.
type fakeTime struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	ft      *fakeTime
	due     time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.ft.mu.Lock()
	defer t.ft.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (ft *fakeTime) now() time.Time {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.t
}

func (ft *fakeTime) afterFunc(d time.Duration, f func()) stopper {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	tm := &fakeTimer{ft: ft, due: ft.t.Add(d), f: f}
	ft.timers = append(ft.timers, tm)
	return tm
}

// advance moves the clock by d, firing every timer due on the way at its
// due time.
func (ft *fakeTime) advance(d time.Duration) {
	ft.mu.Lock()
	end := ft.t.Add(d)
	ft.mu.Unlock()
	for {
		ft.mu.Lock()
		sort.SliceStable(ft.timers, func(i, j int) bool { return ft.timers[i].due.Before(ft.timers[j].due) })
		var next *fakeTimer
		for len(ft.timers) > 0 {
			tm := ft.timers[0]
			ft.timers = ft.timers[1:]
			if !tm.stopped {
				next = tm
				break
			}
		}
		if next == nil || next.due.After(end) {
			if next != nil {
				ft.timers = append(ft.timers, next)
			}
			ft.t = end
			ft.mu.Unlock()
			return
		}
		if next.due.After(ft.t) {
			ft.t = next.due
		}
		next.stopped = true
		ft.mu.Unlock()
		next.f()
	}
}

func fakePacer(rate float64, burst int) (*pacer, *fakeTime) {
	ft := &fakeTime{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	p := newPacer(0, burst)
	p.now, p.afterFunc = ft.now, ft.afterFunc
	p.last = ft.now()
	p.setRate(rate)
	p.tokens = p.depth()
	return p, ft
}

// waiters starts n waits on p and returns the channel their results
// arrive on, in the order they are granted (each sends its index).
func waiters(t *testing.T, ctx context.Context, p *pacer, n int) <-chan int {
	t.Helper()
	out := make(chan int, n)
	for i := range n {
		ready := make(chan struct{})
		go func() {
			close(ready)
			if err := p.wait(ctx); err == nil {
				out <- i
			}
		}()
		<-ready
		waitFor(t, "waiter queued", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.queue) == i+1 || (i == 0 && p.granted > 0)
		})
	}
	return out
}

func drain(ch <-chan int) []int {
	var got []int
	for {
		select {
		case i := <-ch:
			got = append(got, i)
		default:
			return got
		}
	}
}

// TestPacerSpacesTurnsInOrder: at rate 10 with burst 1 the first call goes
// at once and each next one 100 ms after the previous (the first queued
// one 5 ms early: the bucket's slack), in arrival order.
func TestPacerSpacesTurnsInOrder(t *testing.T) {
	p, ft := fakePacer(10, 1)
	if err := p.wait(t.Context()); err != nil { // the saved token
		t.Fatal(err)
	}
	p.take()
	got := waiters(t, t.Context(), p, 5)
	granted := func() int { g, _ := p.take(); return g }
	ft.advance(94 * time.Millisecond)
	if g := granted(); g != 0 {
		t.Fatalf("%d granted within 94ms", g)
	}
	for step := range 5 {
		ft.advance(time.Millisecond)
		if g := granted(); g != 1 {
			t.Fatalf("turn %d: %d granted, want 1", step, g)
		}
		waitFor(t, "the granted waiter returned", func() bool { return len(got) == 1 })
		if w := <-got; w != step {
			t.Fatalf("turn %d went to waiter %d, want arrival order", step, w)
		}
		ft.advance(99 * time.Millisecond)
		if g := granted(); g != 0 {
			t.Fatalf("turn %d: %d more granted within the next 99ms", step, g)
		}
	}
}

// TestPacerRateChange: a lower rate applies from the next token (waiters
// hold no reservation), rate 0 stops everything, a raise resumes.
func TestPacerRateChange(t *testing.T) {
	p, ft := fakePacer(100, 1) // depth 1.5: half a token is left after a call
	_ = p.wait(t.Context())
	got := waiters(t, t.Context(), p, 3)
	p.setRate(1) // from 10ms a turn to 1s: the half token takes 500ms
	ft.advance(499 * time.Millisecond)
	if g := drain(got); len(g) != 0 {
		t.Fatalf("granted %v within 499ms at rate 1", g)
	}
	ft.advance(time.Millisecond)
	waitFor(t, "a turn at 500ms", func() bool { return len(got) == 1 })
	drain(got)
	ft.advance(999 * time.Millisecond)
	if g := drain(got); len(g) != 0 {
		t.Fatalf("granted %v within 999ms of the last turn at rate 1", g)
	}
	p.setRate(0)
	ft.advance(time.Hour)
	if g := drain(got); len(g) != 0 {
		t.Fatalf("granted %v at rate 0", g)
	}
	p.setRate(1000)
	ft.advance(2 * time.Millisecond)
	waitFor(t, "both after the raise", func() bool { return len(got) == 2 })
}

// TestPacerIdleRefillCapsAtBurst: after an idle hour only burst (plus the
// slack) calls go at once.
func TestPacerIdleRefillCapsAtBurst(t *testing.T) {
	p, ft := fakePacer(10, 3)
	ft.advance(time.Hour)
	for i := range 3 {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		// A done context is refused before the bucket is touched...
		if err := p.wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("done ctx: %v", err)
		}
		// ...and a live one takes a saved token at once.
		if err := p.wait(t.Context()); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	got := waiters(t, t.Context(), p, 1)
	if g := drain(got); len(g) != 0 {
		t.Fatalf("a fourth call went at once after an idle hour (burst 3)")
	}
	ft.advance(100 * time.Millisecond)
	waitFor(t, "the fourth after 100ms", func() bool { return len(got) == 1 })
}

// TestPacerCancelLeavesQueue: a cancelled waiter leaves the queue and takes
// no token; the one behind it gets the next turn.
func TestPacerCancelLeavesQueue(t *testing.T) {
	p, ft := fakePacer(10, 1)
	_ = p.wait(t.Context())
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- p.wait(ctx) }()
	waitFor(t, "first queued", func() bool { _, w := p.take(); return w == 1 })
	second := make(chan error, 1)
	go func() { second <- p.wait(t.Context()) }()
	waitFor(t, "second queued", func() bool { _, w := p.take(); return w == 2 })
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v", err)
	}
	ft.advance(100 * time.Millisecond)
	select {
	case err := <-second:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second waiter did not get the turn the cancelled one left")
	}
}

// TestPacerNeverExceedsRate queues a backlog of 1,000 calls at rate 80 and
// moves the fake clock in 1 ms steps (timers fire inside the step, so each
// step's grants are counted at its time): no window of one second lets
// more than 80 calls through plus the bucket's depth (the burst of 1 and
// 5 ms of slack), and the backlog is not served slower than the rate.
func TestPacerNeverExceedsRate(t *testing.T) {
	const rate, n = 80.0, 1000
	p, ft := fakePacer(rate, 1)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := p.wait(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "the backlog queued", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue)+p.granted == n
	})
	g0, _ := p.take() // the saved token, at step 0
	perStep := []int{g0}
	for total := g0; total < n; {
		ft.advance(time.Millisecond)
		g, _ := p.take()
		perStep = append(perStep, g)
		total += g
		if len(perStep) > 20000 {
			t.Fatalf("%d of %d calls after 20 s of fake time", total, n)
		}
	}
	wg.Wait()
	depth := 1 + rate*pacerSlack.Seconds()
	window := 0
	for i, g := range perStep {
		window += g
		if i >= 1000 {
			window -= perStep[i-1000]
		}
		if float64(window) > rate+depth {
			t.Fatalf("%d calls in the second ending at %d ms, want at most %.1f", window, i, rate+depth)
		}
	}
	// 999 turns after the first at 80 a second, the 0.4 token of slack
	// left by the first call included: 12,483 ms, give or take the
	// rounding of each timer to the next millisecond step.
	if ms, want := len(perStep)-1, 12483; ms < want-1 || ms > want+20 {
		t.Fatalf("the backlog took %d ms of fake time, want about %d", ms, want)
	}
}

func TestLocalLimiterAndNoLimit(t *testing.T) {
	l := newLocalLimiter(func(s string) float64 { return map[string]float64{"1001": 1e-3, "1002": 1000}[s] }, 1)
	if err := l.Wait(t.Context(), "1001"); err != nil { // the saved token
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, "1001"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call at 0.001/s: %v, want the deadline", err)
	}
	// Another sender has its own pacer.
	for range 3 {
		if err := l.Wait(t.Context(), "1002"); err != nil {
			t.Fatal(err)
		}
	}
	l.Observe("1001", &GraphError{Code: codeThroughput}) // no effect, no panic
	if err := (noLimit{}).Wait(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
}

// TestPacerTakeHoldsTurnsUntilPicked: Take never blocks; queued Take
// callers are handed their turns at the rate, in order, but at most
// maxOut of them (burst 1 plus 10 ms of rate 100: 2) while none is picked
// up, so that turns waiting for a worker cannot add up to a burst; picking
// one up hands the next one at once if its token is due, and cancel takes
// a caller out of the queue.
func TestPacerTakeHoldsTurnsUntilPicked(t *testing.T) {
	p, ft := fakePacer(100, 1)
	if now, _ := p.reserve(func(func()) { t.Error("an immediate turn is not handed over later") }); !now {
		t.Fatal("the saved token: want a turn now")
	}
	var (
		got    []int
		picked []func()
	)
	cancels := make([]func() bool, 6)
	for i := range 6 {
		now, cancel := p.reserve(func(pick func()) { got = append(got, i); picked = append(picked, pick) })
		if now {
			t.Fatalf("caller %d got a turn at once with an empty bucket", i)
		}
		cancels[i] = cancel
	}
	if p.maxOut() != 2 {
		t.Fatalf("maxOut = %d, want 2 (burst 1 plus 10 ms of 100 a second)", p.maxOut())
	}
	ft.advance(time.Second) // 100 tokens' worth, but none is picked up
	if len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("handed %v after 1 s with nothing picked up, want [0 1]", got)
	}
	picked[0]() // a token is due: the next caller gets it at once
	if len(got) != 3 || got[2] != 2 {
		t.Fatalf("handed %v after one pick-up, want [0 1 2]", got)
	}
	if cancels[3]() != true {
		t.Fatal("cancel of a queued caller: want true")
	}
	if cancels[0]() {
		t.Fatal("cancel of a caller handed its turn: want false")
	}
	picked[1]()
	picked[2]()
	ft.advance(50 * time.Millisecond)
	if want := []int{0, 1, 2, 4, 5}; len(got) != len(want) || got[3] != 4 || got[4] != 5 {
		t.Fatalf("handed %v, want %v (3 cancelled)", got, want)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != 2 || len(p.queue) != 0 {
		t.Fatalf("out %d, queued %d; want 2 out (4 and 5 not picked up), none queued", p.out, len(p.queue))
	}
}
