package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestIsRetryable(t *testing.T) {
	ge := func(status, code int, transient bool) error {
		return &GraphError{Status: status, Code: code, Transient: transient, Message: "m"}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		// Retried whatever is_transient and the status say (PRODUCT.md).
		{"4 application rate limit", ge(400, 4, false), true},
		{"80007 waba rate limit", ge(400, 80007, false), true},
		{"130429 throughput", ge(400, 130429, false), true},
		{"131000 something went wrong", ge(500, 131000, false), true},
		{"131000 with 400", ge(400, 131000, false), true},
		{"2 api service", ge(503, 2, false), true},
		{"1 api unknown", ge(400, 1, false), true},
		{"131056 pair rate", ge(400, 131056, false), true},
		// Never retried, even when marked transient or answered with 5xx.
		{"131026 undeliverable", ge(400, 131026, false), false},
		{"131047 re-engagement", ge(400, 131047, false), false},
		{"131048 spam rate limit", ge(400, 131048, false), false},
		{"131049 ecosystem", ge(400, 131049, false), false},
		{"131050 marketing opt-out", ge(400, 131050, false), false},
		{"132000 param count", ge(400, 132000, false), false},
		{"132001 template missing", ge(404, 132001, false), false},
		{"368 blocked", ge(400, 368, false), false},
		{"100 invalid parameter", ge(400, 100, false), false},
		{"190 token", ge(401, 190, false), false},
		{"131047 marked transient", ge(400, 131047, true), false},
		{"190 with 500", ge(500, 190, true), false},
		{"100 with 503", ge(503, 100, false), false},
		// Codes not listed follow is_transient and the status.
		{"unlisted code transient", ge(400, 131053, true), true},
		{"unlisted code permanent", ge(400, 131053, false), false},
		{"unlisted code with 500", ge(500, 131053, false), true},
		{"http 500 without code", ge(500, 0, false), true},
		{"http 503 without code", ge(503, 0, false), true},
		{"http 429 without code", ge(429, 0, false), true},
		{"http 400 without code", ge(400, 0, false), false},
		{"http 302 without code", ge(302, 0, false), false},
		{"wrapped graph error", fmt.Errorf("sending: %w", ge(400, 130429, false)), true},
		// Transport.
		{"not written", fmt.Errorf("%w: dial: %w", ErrUnreachable, io.EOF), true},
		{"not written, timeout", fmt.Errorf("%w: %w", ErrUnreachable, context.DeadlineExceeded), true},
		{"written, timeout", fmt.Errorf("%w: %w", ErrInDoubt, context.DeadlineExceeded), false},
		{"in doubt wins", fmt.Errorf("%w: %w", ErrInDoubt, ErrUnreachable), false},
		{"bare timeout", context.DeadlineExceeded, false},
		{"cancelled", context.Canceled, false},
		// Herald refusals.
		{"foreign sender", ErrForeignSender, false},
		{"invalid request", fmt.Errorf("%w: bad to", ErrInvalidRequest), false},
		{"unknown app", ErrUnknownApp, false},
		{"unsupported channel", ErrUnsupportedChannel, false},
		{"unknown error", errors.New("boom"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsRetryable(tt.err); got != tt.want {
				t.Errorf("IsRetryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestBreakerClassification(t *testing.T) {
	ge := func(status, code int, transient bool) error {
		return &GraphError{Status: status, Code: code, Transient: transient}
	}
	const (
		success = "success"
		failure = "failure"
		exclude = "excluded"
	)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"ok", nil, success},
		{"130429 throughput", ge(400, 130429, true), exclude},
		{"80007 rate limit", ge(400, 80007, false), exclude},
		{"4 rate limit", ge(400, 4, true), exclude},
		{"131056 pair rate", ge(400, 131056, false), exclude},
		{"cancelled", context.Canceled, exclude},
		{"wrapped cancelled", fmt.Errorf("%w: %w", ErrUnreachable, context.Canceled), exclude},
		{"http 500", ge(500, 0, false), failure},
		{"http 503 graph 2", ge(503, 2, true), failure},
		{"131000", ge(400, 131000, false), failure},
		{"1 unknown", ge(400, 1, false), failure},
		{"unlisted transient", ge(400, 131053, true), failure},
		{"unreachable", fmt.Errorf("%w: refused", ErrUnreachable), failure},
		{"in doubt timeout", fmt.Errorf("%w: %w", ErrInDoubt, context.DeadlineExceeded), failure},
		{"bare timeout", context.DeadlineExceeded, failure},
		{"131047 proves the endpoint works", ge(400, 131047, false), success},
		{"100 invalid parameter", ge(400, 100, false), success},
		{"190 token", ge(401, 190, false), success},
		{"invalid request", ErrInvalidRequest, success},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := success
			switch {
			case breakerExcluded(tt.err):
				got = exclude
			case breakerFailure(tt.err):
				got = failure
			}
			if got != tt.want {
				t.Errorf("breaker counts %v as %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorCodeAndLabel(t *testing.T) {
	f := func(err error, code int, label string) {
		t.Helper()
		if got := errorCode(err); got != code {
			t.Errorf("errorCode(%v) = %d, want %d", err, got, code)
		}
		if got := errorLabel(err); got != label {
			t.Errorf("errorLabel(%v) = %q, want %q", err, got, label)
		}
	}
	f(&GraphError{Status: 400, Code: 131047}, 131047, "131047")
	f(fmt.Errorf("giving up: %w", &GraphError{Status: 400, Code: 130429}), 130429, "130429")
	f(&GraphError{Status: 502}, CodeHTTP, "http_502")
	f(fmt.Errorf("%w: x", ErrUnreachable), CodeUnreachable, "unreachable")
	f(fmt.Errorf("%w: x", ErrInDoubt), 0, "in_doubt")
	f(fmt.Errorf("x: %w", ErrForeignSender), CodeForeignSender, "invalid_request")
	f(fmt.Errorf("x: %w", ErrInvalidRequest), CodeInvalidRequest, "invalid_request")
	f(ErrUnknownApp, CodeUnknownApp, "other")
	f(ErrUnsupportedChannel, CodeUnsupportedChannel, "other")
}

func TestGraphErrorMessage(t *testing.T) {
	f := func(e *GraphError, want string) {
		t.Helper()
		if got := e.Error(); got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	}
	f(&GraphError{Status: 400, Code: 131047, Subcode: 2494010, Message: "Re-engagement message", FBTraceID: "Az8"},
		"graph api: code 131047 subcode 2494010 (http 400): Re-engagement message (fbtrace_id Az8)")
	f(&GraphError{Status: 400, Code: 100, Message: "Invalid parameter"}, "graph api: code 100 (http 400): Invalid parameter")
	f(&GraphError{Status: 502, Message: "empty body"}, "graph api: http 502: empty body")
}
