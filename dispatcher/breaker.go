package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breakers holds one circuit breaker per (provider, sender): a broken or
// throttled phone number pauses its own sends only.
type breakers struct {
	cfg BreakerConfig
	m   *metrics

	mu    sync.Mutex
	byKey map[string]*breaker
	// fast holds the same breakers by breakerKey, read without a lock:
	// every send looks its breaker up twice.
	fast sync.Map
}

// breakerKey is the lookup key of a breaker.
type breakerKey struct{ provider, sender string }

func newBreakers(cfg BreakerConfig, m *metrics) *breakers {
	return &breakers{cfg: cfg, m: m, byKey: make(map[string]*breaker)}
}

// get returns the breaker of provider and sender, creating it closed.
// Senders are checked against the app registry before, so the map is
// bounded by the registered phone numbers.
func (bs *breakers) get(provider, sender string) *breaker {
	if b, ok := bs.fast.Load(breakerKey{provider, sender}); ok {
		return b.(*breaker)
	}
	key := provider + "|" + sender
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b, ok := bs.byKey[key]; ok {
		return b
	}
	b := &breaker{timeout: bs.cfg.OpenTimeout, changed: make(chan struct{})}
	failures := uint32(bs.cfg.ConsecutiveFailures)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        key,
		MaxRequests: uint32(bs.cfg.HalfOpenRequests),
		Timeout:     bs.cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// Called with the breaker's lock held: touch only b.mu and metrics.
		OnStateChange: func(_ string, _, to gobreaker.State) {
			bs.m.breakerState.WithLabelValues(sender).Set(float64(to))
			bs.m.breakerTransitions.WithLabelValues(to.String()).Inc()
			b.stateChanged(to)
		},
		IsSuccessful: func(err error) bool { return !breakerFailure(err) },
		IsExcluded:   breakerExcluded,
	})
	bs.m.breakerState.WithLabelValues(sender).Set(float64(gobreaker.StateClosed))
	bs.byKey[key] = b
	bs.fast.Store(breakerKey{provider, sender}, b)
	return b
}

// allOpen returns how many breakers there are when every one is open, else
// 0: every sender this replica sent for is paused (Dispatcher.Ready).
func (bs *breakers) allOpen() int {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, b := range bs.byKey {
		if b.cb.State() != gobreaker.StateOpen {
			return 0
		}
	}
	return len(bs.byKey)
}

// pausedUntil returns when b, open, lets its next probe through, or zero
// when it is not open: a request to its sender waits until then without a
// worker (batchRun.run parks its queue).
func (b *breaker) pausedUntil() time.Time {
	if b.cb.State() != gobreaker.StateOpen { // State turns it half-open once the timeout passed
		return time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// gobreaker turns half-open strictly after the timeout.
	return b.openUntil.Add(time.Millisecond)
}

// breaker is one gobreaker with a way to sleep until it may let a request
// through again.
type breaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout time.Duration

	mu        sync.Mutex
	openUntil time.Time
	// changed is closed (and replaced) when the state changes or a
	// half-open probe ends, waking requests waiting for a probe slot.
	changed chan struct{}
}

func (b *breaker) stateChanged(to gobreaker.State) {
	b.mu.Lock()
	if to == gobreaker.StateOpen {
		b.openUntil = time.Now().Add(b.timeout)
	}
	b.mu.Unlock()
	b.signal()
}

func (b *breaker) signal() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// tryAllow is allow without a wait: ok false when the breaker would make
// the caller wait (open, or half-open with its probes out).
func (b *breaker) tryAllow() (func(error), bool) {
	done, err := b.cb.Allow()
	if err != nil {
		return nil, false
	}
	probe := b.cb.State() == gobreaker.StateHalfOpen
	return func(err error) {
		done(err)
		if probe {
			b.signal()
		}
	}, true
}

// allow waits until the breaker lets one request through and returns the
// function that reports its result. While the breaker is open it sleeps until
// the open timeout ends; while a half-open probe is out it sleeps until the
// probe ends. It returns an error wrapping context.DeadlineExceeded at once
// when the breaker stays open past ctx's deadline, and ctx.Err() when ctx
// ends first.
func (b *breaker) allow(ctx context.Context) (func(error), error) {
	for {
		done, err := b.cb.Allow()
		if err == nil {
			probe := b.cb.State() == gobreaker.StateHalfOpen
			return func(err error) {
				done(err)
				if probe {
					b.signal()
				}
			}, nil
		}
		b.mu.Lock()
		changed, until := b.changed, b.openUntil
		b.mu.Unlock()
		wait := b.timeout
		if errors.Is(err, gobreaker.ErrOpenState) {
			// gobreaker turns half-open strictly after the timeout.
			wait = time.Until(until) + time.Millisecond
			if dl, ok := ctx.Deadline(); ok && time.Now().Add(wait).After(dl) {
				return nil, fmt.Errorf("breaker %s open until %s: %w", b.cb.Name(), until.Format(time.RFC3339Nano), context.DeadlineExceeded)
			}
		}
		wait = max(wait, time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// breakerExcluded says which results count neither as success nor as
// failure: Meta asking to slow down (the limiter's business, not a broken
// endpoint) and cancelled calls.
func breakerExcluded(err error) bool {
	return isRateLimit(err) || errors.Is(err, context.Canceled)
}

// breakerFailure says which results count against the endpoint: 5xx, Meta's
// service errors (1, 2, 131000) and other transient errors, network errors
// and timeouts. A permanent answer about the message (131047, 100, ...)
// proves the endpoint works and counts as a success.
func breakerFailure(err error) bool {
	if err == nil {
		return false
	}
	if pe, ok := asProviderError(err); ok { // email and push: errors_channels.go
		return pe.endpointFailure()
	}
	var ge *GraphError
	if errors.As(err, &ge) {
		switch ge.Code {
		case codeAPIUnknown, codeAPIService, codeInternal:
			return true
		}
		return ge.Status >= 500 || ge.Transient
	}
	if errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrForeignSender) {
		return false
	}
	return true
}
