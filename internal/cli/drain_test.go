package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRunDrained: a run that returns after its context ends is waited
// for; one that does not is given up after the timeout, with an error
// naming -shutdown.timeout.
func TestRunDrained(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	errDrained := errors.New("drained")
	err := runDrained(ctx, time.Minute, func(ctx context.Context) error {
		<-ctx.Done()
		return errDrained
	})
	if !errors.Is(err, errDrained) {
		t.Fatalf("a run that drains: err = %v", err)
	}
	stuck := make(chan struct{})
	defer close(stuck)
	err = runDrained(ctx, 10*time.Millisecond, func(context.Context) error {
		<-stuck // ignores its context
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "-shutdown.timeout") {
		t.Fatalf("a stuck run: err = %v", err)
	}
	// Before the context ends, the run's own error comes back at once.
	errEarly := errors.New("failed")
	if err := runDrained(t.Context(), time.Minute, func(context.Context) error { return errEarly }); !errors.Is(err, errEarly) {
		t.Fatalf("a failing run: err = %v", err)
	}
}
