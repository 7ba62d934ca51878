package dispatcher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sony/gobreaker/v2"
)

func testBreakers(t *testing.T, openTimeout time.Duration) (*breakers, *metrics) {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := BreakerConfig{OpenTimeout: openTimeout}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return newBreakers(cfg, m), m
}

// call runs one request through b with result err.
func call(t *testing.T, b *breaker, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done, aerr := b.allow(ctx)
	if aerr != nil {
		t.Fatalf("allow: %v", aerr)
	}
	done(err)
}

var (
	err5xx       = &GraphError{Status: 500, Message: "internal"}
	errThrottled = &GraphError{Status: 400, Code: 130429, Transient: true}
	errReengage  = &GraphError{Status: 400, Code: 131047}
)

func TestBreakerOpensOnConsecutive5xxAndProbeClosesIt(t *testing.T) {
	bs, m := testBreakers(t, 50*time.Millisecond)
	b := bs.get("whatsapp", "1001")
	state := func() float64 { return value(m.breakerState.WithLabelValues("1001")) }

	for range 4 {
		call(t, b, err5xx)
	}
	if s := b.cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("after 4 failures state = %v, want closed", s)
	}
	call(t, b, err5xx)
	if s := b.cb.State(); s != gobreaker.StateOpen {
		t.Fatalf("after 5 failures state = %v, want open", s)
	}
	if got := state(); got != 2 {
		t.Errorf("breaker_state = %v, want 2", got)
	}

	// A deadline before the breaker half-opens fails at once, without
	// waiting it out.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
	_, err := b.allow(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("allow before half-open with a short deadline = %v, want deadline exceeded", err)
	}

	// A request waits (instead of being dropped) until the breaker
	// half-opens and lets it through as the probe.
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	probeDone, err := b.allow(ctx)
	if err != nil {
		t.Fatalf("allow while open: %v", err)
	}
	if s := b.cb.State(); s != gobreaker.StateHalfOpen {
		t.Fatalf("state with probe out = %v, want half-open", s)
	}
	if got := state(); got != 1 {
		t.Errorf("breaker_state = %v, want 1", got)
	}

	// A second request waits for the probe's result.
	second := make(chan error, 1)
	go func() {
		done, err := b.allow(ctx)
		if err == nil {
			done(nil)
		}
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("second request passed while the probe was out: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	probeDone(nil)
	if s := b.cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("after successful probe state = %v, want closed", s)
	}
	if err := <-second; err != nil {
		t.Fatalf("second request after the probe: %v", err)
	}
	if got := state(); got != 0 {
		t.Errorf("breaker_state = %v, want 0", got)
	}
	for _, to := range []string{"open", "half-open", "closed"} {
		if got := value(m.breakerTransitions.WithLabelValues(to)); got != 1 {
			t.Errorf("transitions to %s = %v, want 1", to, got)
		}
	}
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	bs, _ := testBreakers(t, 20*time.Millisecond)
	b := bs.get("whatsapp", "1001")
	for range 5 {
		call(t, b, err5xx)
	}
	call(t, b, err5xx) // the probe, after waiting out the open state
	if s := b.cb.State(); s != gobreaker.StateOpen {
		t.Fatalf("after a failed probe state = %v, want open", s)
	}
	call(t, b, nil)
	if s := b.cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("after a good probe state = %v, want closed", s)
	}
}

func TestBreakerIgnoresRateLimits(t *testing.T) {
	bs, _ := testBreakers(t, time.Minute)

	b := bs.get("whatsapp", "1001")
	for range 50 {
		call(t, b, errThrottled)
		call(t, b, context.Canceled)
	}
	if s := b.cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("after 100 rate-limited or cancelled calls state = %v, want closed", s)
	}

	// Rate limits neither heal nor hurt: 4 failures, a 130429 and a
	// failure are 5 consecutive failures.
	b = bs.get("whatsapp", "1002")
	for range 4 {
		call(t, b, err5xx)
	}
	call(t, b, errThrottled)
	call(t, b, err5xx)
	if s := b.cb.State(); s != gobreaker.StateOpen {
		t.Fatalf("state = %v, want open", s)
	}

	// A permanent answer about the message proves the endpoint works.
	b = bs.get("whatsapp", "1003")
	for range 4 {
		call(t, b, err5xx)
	}
	call(t, b, errReengage)
	for range 4 {
		call(t, b, err5xx)
	}
	if s := b.cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("state = %v, want closed", s)
	}

	// Breakers are per sender.
	if s := bs.get("whatsapp", "1001").cb.State(); s != gobreaker.StateClosed {
		t.Fatalf("sender 1001 state = %v, want closed", s)
	}
	first, again, email := bs.get("whatsapp", "1002"), bs.get("whatsapp", "1002"), bs.get("email", "1002")
	if first != again || first == email {
		t.Fatal("breakers are not one per (provider, sender)")
	}
}

func TestBreakerWaitEndsWithContext(t *testing.T) {
	bs, _ := testBreakers(t, time.Minute)
	b := bs.get("whatsapp", "1001")
	for range 5 {
		call(t, b, err5xx)
	}
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() {
		_, err := b.allow(ctx)
		res <- err
	}()
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("allow after cancel = %v, want context.Canceled", err)
	}
}

// value reads a counter or gauge (prometheus/testutil needs a module this
// repository does not carry).
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if g := d.GetGauge(); g != nil {
		return g.GetValue()
	}
	return d.GetCounter().GetValue()
}

// TestBreakersAllOpen: allOpen counts the breakers only when every one is
// open (Dispatcher.Ready).
func TestBreakersAllOpen(t *testing.T) {
	bs, _ := testBreakers(t, time.Hour)
	if n := bs.allOpen(); n != 0 {
		t.Fatalf("no breakers: allOpen %d", n)
	}
	a, b := bs.get("whatsapp", "1001"), bs.get("whatsapp", "1002")
	for range bs.cfg.ConsecutiveFailures {
		call(t, a, err5xx)
	}
	if n := bs.allOpen(); n != 0 {
		t.Fatalf("one of two open: allOpen %d", n)
	}
	for range bs.cfg.ConsecutiveFailures {
		call(t, b, err5xx)
	}
	if n := bs.allOpen(); n != 2 {
		t.Fatalf("both open: allOpen %d, want 2", n)
	}
}
