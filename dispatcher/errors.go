package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// Herald error codes, written to Outcome.ErrorCode when Herald refused a
// request before calling the provider, or when no provider code exists
// (schemas.Outcome: "a Herald code below 0").
const (
	// CodeUnknownApp: the request's app is not in the registry.
	CodeUnknownApp = -1
	// CodeForeignSender: the sender is not one of the app's phone-number ids.
	CodeForeignSender = -2
	// CodeUnsupportedChannel: no provider for the request's channel yet.
	CodeUnsupportedChannel = -3
	// CodeInvalidRequest: the request cannot be turned into a provider call
	// (bad recipient, button index, dispatch id too long...).
	CodeInvalidRequest = -4
	// CodeUnreachable: the provider could not be reached in MaxAttempts
	// tries (no request was written).
	CodeUnreachable = -5
	// CodeHTTP: the provider answered an HTTP error without a Graph error
	// code (a proxy's 502 page, say).
	CodeHTTP = -6
	// CodeTemplateUnknown: the app's WhatsApp Business account has no
	// template of that name in that language (Meta would answer 132001).
	CodeTemplateUnknown = -7
	// CodeTemplateNotApproved: the template is not APPROVED (PENDING,
	// REJECTED, PAUSED, DISABLED, ...; the message says which).
	CodeTemplateNotApproved = -8
	// CodeTemplateParams: the request's parameters do not fit the
	// template's components (Meta would answer 132000 or 132012); the
	// message names each field that is wrong.
	CodeTemplateParams = -9
	// -10 and -11 are reserved for the email and push codes.

	// CodeTierExceeded: a template to a recipient outside the service
	// window would have taken the business past its messaging tier (unique
	// recipients per moving 24 h, see reach.go).
	CodeTierExceeded = -12
	// CodeWindowClosed: free-form text to a recipient whose 24-hour
	// service window is known to be closed (the request's window_until
	// passed, or Meta answered 131047 since); Meta would answer 131047.
	CodeWindowClosed = -13
	// CodeOptedOut: a MARKETING template to a recipient Meta said stopped
	// marketing messages (131050, remembered on herald.suppressions.v1).
	CodeOptedOut = -14
)

// Sentinel errors.
var (
	// ErrUnknownApp is returned by the dispatcher (never by a provider) when
	// the request's app is not in the registry. Permanent.
	ErrUnknownApp = errors.New("unknown app")
	// ErrForeignSender is returned by WhatsApp.Send (and checked by the
	// dispatcher before any wait) when the sender is not one of the app's
	// phone-number ids: one app can never send from another's number.
	// Permanent.
	ErrForeignSender = errors.New("sender is not a phone number id of the app")
	// ErrUnsupportedChannel is returned by the dispatcher for a channel
	// without a provider, and by the email and push providers for an app
	// without email or push settings. Permanent.
	ErrUnsupportedChannel = errors.New("no provider for channel")
	// ErrInvalidRequest is wrapped by WhatsApp.Send when the request cannot
	// be encoded into a valid Graph call. Permanent.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrTemplateUnknown is wrapped by the dispatcher's template check
	// (before any wait or call) when the app's synced templates have none of
	// the request's name in its language. Permanent.
	ErrTemplateUnknown = errors.New("unknown template")
	// ErrTemplateNotApproved is wrapped by the template check when the
	// template's status is not APPROVED. Permanent for the request.
	ErrTemplateNotApproved = errors.New("template not approved")
	// ErrTemplateParams is wrapped by the template check when the request's
	// header, body or button URL parameters do not fit the template.
	// Permanent.
	ErrTemplateParams = errors.New("template parameters do not fit the template")
	// ErrTierExceeded is wrapped by the dispatcher's tier check (before any
	// call) when the business's messaging tier has no room for another
	// recipient outside the service window. Permanent for the request.
	ErrTierExceeded = errors.New("messaging tier reached")
	// ErrWindowClosed is wrapped by the dispatcher's window check (before
	// any call) for free-form text outside the recipient's service window.
	// Permanent.
	ErrWindowClosed = errors.New("customer-service window closed")
	// ErrOptedOut is wrapped by the dispatcher's suppression check (before
	// any call) for a MARKETING template to a recipient who stopped
	// marketing messages. Permanent.
	ErrOptedOut = errors.New("recipient stopped marketing messages")
	// ErrUnreachable is wrapped by WhatsApp.Send when the HTTP call failed
	// before the request was written (dial, DNS, TLS, connection refused):
	// nothing reached Meta, so it is safe to retry.
	ErrUnreachable = errors.New("provider unreachable, request not sent")
	// ErrInDoubt is wrapped by WhatsApp.Send when the request was written but
	// no usable answer came back (timeout, connection reset, a 2xx without a
	// message id). Meta has no idempotency key, so the message may have been
	// sent: it is never retried blindly; the outcome is OutcomeInDoubt and the
	// status webhooks (which echo the dispatch id in biz_opaque_callback_data)
	// reconcile it.
	ErrInDoubt = errors.New("request written, result unknown")
)

// GraphError is an error answer of the Graph API:
// {"error":{"message","type","code","error_subcode","is_transient","fbtrace_id","error_data"}}.
// Code is 0 when the answer carried no Graph error (a non-JSON 5xx page).
type GraphError struct {
	// Status is the HTTP status of the answer.
	Status int
	// Code and Subcode are Meta's code and error_subcode.
	Code, Subcode int
	// Message is Meta's message, with error_data.details appended when set;
	// Type is Meta's type (OAuthException, ...).
	Message, Type string
	// Transient is Meta's is_transient.
	Transient bool
	// FBTraceID identifies the call for Meta support.
	FBTraceID string
}

func (e *GraphError) Error() string {
	if e.Code == 0 {
		return fmt.Sprintf("graph api: http %d: %s", e.Status, e.Message)
	}
	s := fmt.Sprintf("graph api: code %d", e.Code)
	if e.Subcode != 0 {
		s += fmt.Sprintf(" subcode %d", e.Subcode)
	}
	s += fmt.Sprintf(" (http %d): %s", e.Status, e.Message)
	if e.FBTraceID != "" {
		s += " (fbtrace_id " + e.FBTraceID + ")"
	}
	return s
}

// Graph error codes Herald treats specially. See
// https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
// and PRODUCT.md "Error handling".
const (
	codeAPIUnknown       = 1      // API Unknown: temporary, retry
	codeAPIService       = 2      // API Service: temporary downtime, retry
	codeTooManyCalls     = 4      // application request limit reached
	codeInvalidParameter = 100    // invalid parameter: the request is wrong
	codeAccessToken      = 190    // access token expired or invalid: needs a new token
	codeBlocked          = 368    // temporarily blocked for policy violations
	codeRateLimitHit     = 80007  // WABA rate limit
	codeThroughput       = 130429 // cloud API throughput (per number) reached
	codeInternal         = 131000 // something went wrong
	codeUndeliverable    = 131026 // message undeliverable
	codeReengagement     = 131047 // more than 24 h since the user's last message
	codeSpam             = 131048 // spam rate limit: number restricted
	codeEcosystem        = 131049 // not delivered to keep ecosystem engagement healthy
	codeMarketingOptOut  = 131050 // user stopped marketing messages
	codePairRate         = 131056 // pair rate: too many messages to this recipient
	codeTemplateParams   = 132000 // template param count mismatch
	codeTemplateMissing  = 132001 // template does not exist in that language
)

// retryCodes are retried with backoff whatever is_transient says.
var retryCodes = map[int]bool{
	codeAPIUnknown: true, codeAPIService: true, codeTooManyCalls: true,
	codeRateLimitHit: true, codeThroughput: true, codeInternal: true, codePairRate: true,
}

// neverRetryCodes are permanent for the request whatever is_transient or the
// HTTP status says.
var neverRetryCodes = map[int]bool{
	codeInvalidParameter: true, codeAccessToken: true, codeBlocked: true,
	codeUndeliverable: true, codeReengagement: true, codeSpam: true, codeEcosystem: true,
	codeMarketingOptOut: true, codeTemplateParams: true, codeTemplateMissing: true,
}

// rateLimitCodes mean "slow down", not "the provider is broken": they are
// retried but never count as circuit-breaker failures.
var rateLimitCodes = map[int]bool{
	codeTooManyCalls: true, codeRateLimitHit: true, codeThroughput: true, codePairRate: true,
}

// IsRetryable reports whether the send that returned err may be tried again:
// Graph codes 1, 2, 4, 80007, 130429, 131000, 131056; any other Graph error
// marked is_transient or answered with HTTP 5xx or 429 (unless its code is
// one of the never-retry codes 100, 190, 368, 131026, 131047, 131048,
// 131049, 131050, 132000, 132001); and ErrUnreachable (nothing was written).
// ErrInDoubt, context errors and Herald refusals are not retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInDoubt) {
		return false
	}
	if pe, ok := asProviderError(err); ok { // email and push: errors_channels.go
		return pe.retryable()
	}
	var ge *GraphError
	if errors.As(err, &ge) {
		switch {
		case retryCodes[ge.Code]:
			return true
		case neverRetryCodes[ge.Code]:
			return false
		}
		return ge.Transient || ge.Status >= 500 || ge.Status == 429
	}
	return errors.Is(err, ErrUnreachable)
}

// isRateLimit reports whether err is Meta asking to slow down (4, 80007,
// 130429, 131056).
func isRateLimit(err error) bool {
	if err == nil {
		// Every successful call asks (breakerExcluded); the targets of
		// errors.As below would cost two allocations each time.
		return false
	}
	if pe, ok := asProviderError(err); ok {
		return pe.rateLimited()
	}
	var ge *GraphError
	return errors.As(err, &ge) && rateLimitCodes[ge.Code]
}

// errorCode is the Outcome.ErrorCode for err.
func errorCode(err error) int {
	var ge *GraphError
	switch {
	case err == nil, errors.Is(err, ErrInDoubt):
		return 0
	case errors.As(err, new(providerError)):
		pe, _ := asProviderError(err)
		return pe.outcomeCode()
	case errors.Is(err, ErrSMTPConfig):
		return CodeSMTPConfig
	case errors.Is(err, ErrPushToken):
		return CodePushToken
	case errors.As(err, &ge):
		if ge.Code == 0 {
			return CodeHTTP
		}
		return ge.Code
	case errors.Is(err, ErrUnknownApp):
		return CodeUnknownApp
	case errors.Is(err, ErrForeignSender):
		return CodeForeignSender
	case errors.Is(err, ErrUnsupportedChannel):
		return CodeUnsupportedChannel
	case errors.Is(err, ErrInvalidRequest):
		return CodeInvalidRequest
	case errors.Is(err, ErrTemplateUnknown):
		return CodeTemplateUnknown
	case errors.Is(err, ErrTemplateNotApproved):
		return CodeTemplateNotApproved
	case errors.Is(err, ErrTemplateParams):
		return CodeTemplateParams
	case errors.Is(err, ErrTierExceeded):
		return CodeTierExceeded
	case errors.Is(err, ErrWindowClosed):
		return CodeWindowClosed
	case errors.Is(err, ErrOptedOut):
		return CodeOptedOut
	case errors.Is(err, ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return CodeUnreachable
	}
	return CodeUnreachable
}

// errorLabel is the code label of herald_dispatcher_provider_errors_total:
// the Graph code, http_<status> without one, in_doubt or unreachable.
func errorLabel(err error) string {
	var ge *GraphError
	switch {
	case errors.Is(err, ErrInDoubt):
		return "in_doubt"
	case errors.As(err, new(providerError)):
		pe, _ := asProviderError(err)
		return pe.metricLabel()
	case errors.Is(err, ErrSMTPConfig):
		return "smtp_config"
	case errors.Is(err, ErrPushToken):
		return "fcm_token"
	case errors.As(err, &ge):
		if ge.Code == 0 {
			return "http_" + strconv.Itoa(ge.Status)
		}
		return strconv.Itoa(ge.Code)
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrForeignSender):
		return "invalid_request"
	}
	return "other"
}
