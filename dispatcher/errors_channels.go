package dispatcher

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Herald codes of the email and push channels (Outcome.ErrorCode).
const (
	// CodeSMTPConfig: the app's SMTP server cannot be used as configured
	// (no STARTTLS where it is required, no AUTH PLAIN or LOGIN, a CA file
	// without certificates).
	CodeSMTPConfig = -10
	// CodePushToken: no OAuth2 token for the app's FCM project.
	CodePushToken = -11
)

// ErrSMTPConfig is wrapped by the email provider when the app's SMTP server
// cannot be used as configured: it does not offer STARTTLS and the app
// requires it (the default: credentials and mail are never sent in clear
// text because a server, or someone in between, did not offer TLS), or it
// offers neither AUTH PLAIN nor LOGIN. Permanent for the request; counts
// against the breaker, since every send of the sender fails the same way.
var ErrSMTPConfig = errors.New("smtp server unusable as configured")

// ErrPushToken is wrapped by the push provider when its TokenSource gives
// no access token. Permanent for the request.
var ErrPushToken = errors.New("no fcm access token")

// providerError is implemented by the errors of the email and push
// providers; the dispatcher's classifiers (IsRetryable, isRateLimit,
// errorCode, errorLabel, breakerFailure) ask it instead of knowing each
// provider.
type providerError interface {
	error
	// outcomeCode is Outcome.ErrorCode.
	outcomeCode() int
	// metricLabel is the code label of provider_errors_total.
	metricLabel() string
	// retryable says a later attempt may succeed.
	retryable() bool
	// rateLimited says the provider asks to slow down: retried, never a
	// breaker failure.
	rateLimited() bool
	// endpointFailure says the provider (not the message) is in trouble:
	// it counts against the breaker.
	endpointFailure() bool
}

var (
	_ providerError = (*SMTPError)(nil)
	_ providerError = (*FCMError)(nil)
)

// SMTPError is an SMTP reply refusing a step of a send: 4xx is transient
// (retried with backoff), 5xx permanent (the outcome is failed with the
// code).
type SMTPError struct {
	// Stage is the step refused: greeting, ehlo, starttls, auth, mail,
	// rcpt, data, or message (the reply to the end of DATA).
	Stage string
	// Code is the reply code, Enhanced the RFC 3463 status code when the
	// server gave one ("5.1.1"), Message the rest of the reply text.
	Code     int
	Enhanced string
	Message  string
}

func (e *SMTPError) Error() string {
	s := "smtp " + e.Stage + ": " + strconv.Itoa(e.Code)
	if e.Enhanced != "" {
		s += " " + e.Enhanced
	}
	return s + " " + e.Message
}

func (e *SMTPError) outcomeCode() int    { return e.Code }
func (e *SMTPError) metricLabel() string { return "smtp_" + strconv.Itoa(e.Code) }
func (e *SMTPError) retryable() bool     { return e.Code >= 400 && e.Code < 500 }

// rateLimited: 4.7.x replies to MAIL and RCPT are policy throttles
// ("4.7.0 too many messages"), and 452 4.5.3 "too many recipients".
func (e *SMTPError) rateLimited() bool {
	return e.Code >= 400 && e.Code < 500 && (strings.HasPrefix(e.Enhanced, "4.7.") || e.Enhanced == "4.5.3")
}

// endpointFailure: 421 (service not available) and refusals of the
// session itself (greeting, EHLO, STARTTLS, AUTH with a 4xx) say the
// server is in trouble; a refused recipient or message says nothing
// about it.
func (e *SMTPError) endpointFailure() bool {
	if e.Code == 421 {
		return true
	}
	switch e.Stage {
	case stageGreeting, stageEHLO, stageSTARTTLS:
		return true
	case stageAuth:
		return e.Code < 500
	}
	return false
}

// InvalidRecipient reports whether the reply says the mailbox does not
// exist: 550, 551 or 553 to RCPT with no enhanced code or a 5.1.x one
// (bad destination mailbox, system or address syntax).
func (e *SMTPError) InvalidRecipient() bool {
	if e.Stage != stageRcpt {
		return false
	}
	switch e.Code {
	case 550, 551, 553:
		return e.Enhanced == "" || strings.HasPrefix(e.Enhanced, "5.1.")
	}
	return false
}

// FCMError is an error answer of FCM HTTP v1:
// {"error":{"code","message","status","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode"}]}}
// (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
type FCMError struct {
	// Status is the HTTP status.
	Status int
	// Code is FCM's errorCode (UNREGISTERED, QUOTA_EXCEEDED, UNAVAILABLE,
	// INTERNAL, INVALID_ARGUMENT, SENDER_ID_MISMATCH,
	// THIRD_PARTY_AUTH_ERROR) or, without one, the google.rpc status
	// (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, ...).
	Code    string
	Message string
	// RetryAfter is the answer's Retry-After, zero when absent.
	RetryAfter time.Duration
}

func (e *FCMError) Error() string {
	s := fmt.Sprintf("fcm: http %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// FCM error codes Herald acts on.
const (
	fcmUnregistered  = "UNREGISTERED"
	fcmQuotaExceeded = "QUOTA_EXCEEDED"
	fcmUnavailable   = "UNAVAILABLE"
	fcmInternal      = "INTERNAL"
)

// outcomeCode is the HTTP status: FCM's codes are names, and each maps to
// one status (UNREGISTERED 404, QUOTA_EXCEEDED 429, UNAVAILABLE 503,
// INTERNAL 500, INVALID_ARGUMENT 400, ...); the name is in the message.
func (e *FCMError) outcomeCode() int { return e.Status }

func (e *FCMError) metricLabel() string {
	if e.Code != "" {
		return "fcm_" + strings.ToLower(e.Code)
	}
	return "fcm_http_" + strconv.Itoa(e.Status)
}

// retryable: QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, and any 429 or 5xx.
func (e *FCMError) retryable() bool {
	switch e.Code {
	case fcmQuotaExceeded, fcmUnavailable, fcmInternal:
		return true
	}
	return e.Status == 429 || e.Status >= 500
}

func (e *FCMError) rateLimited() bool { return e.Code == fcmQuotaExceeded || e.Status == 429 }

func (e *FCMError) endpointFailure() bool {
	return !e.rateLimited() && (e.Status >= 500 || e.Code == fcmUnavailable || e.Code == fcmInternal)
}

// InvalidRecipient reports whether FCM said the token is no longer valid
// (UNREGISTERED: the app was uninstalled or the token expired).
func (e *FCMError) InvalidRecipient() bool { return e.Code == fcmUnregistered }

// invalidRecipient reports whether err says the recipient is gone for good.
func invalidRecipient(err error) bool {
	var ir interface{ InvalidRecipient() bool }
	return errors.As(err, &ir) && ir.InvalidRecipient()
}

// retryAfter is the wait the provider asked for before the next attempt,
// zero when it said nothing.
func retryAfter(err error) time.Duration {
	var fe *FCMError
	if errors.As(err, &fe) {
		return fe.RetryAfter
	}
	var we *WebhookError
	if errors.As(err, &we) {
		return we.RetryAfter
	}
	return 0
}

// asProviderError finds a providerError in err's chain.
func asProviderError(err error) (providerError, bool) {
	var pe providerError
	ok := errors.As(err, &pe)
	return pe, ok
}
