package wasim

import (
	"errors"
	"fmt"
	"net/http"
)

var (
	// ErrRunning is returned by Run when another Run is still running.
	ErrRunning = errors.New("wasim: Run is already running")
	// ErrUnknownNumber is returned by SendInbound and SendInboundButton for
	// a phone-number id that is not configured.
	ErrUnknownNumber = errors.New("unknown phone number id")
	// ErrNoWebhook is returned by SendInbound and SendInboundButton for a
	// number without a WebhookURL.
	ErrNoWebhook = errors.New("number has no webhook url")
	// ErrWebhookRejected is wrapped by SendInbound and SendInboundButton
	// when the webhook answered something else than 200.
	ErrWebhookRejected = errors.New("webhook did not answer 200")
)

// Graph error codes the simulator answers with, and the HTTP status each
// uses (Meta's error-code table; build error handling on the code, not on
// the HTTP status, as Meta recommends).
const (
	// CodeServiceUnavailable (2, HTTP 503, is_transient) is one of the two
	// Error5xxRatio faults, and the answer when the webhook queue is full.
	CodeServiceUnavailable = 2
	// CodeInvalidParameter (100, HTTP 400): malformed JSON, a missing or
	// invalid field, an unknown key, an invalid "to"; with error_subcode 33
	// and type GraphMethodException: an unknown phone-number or WABA id, or
	// one the token may not use.
	CodeInvalidParameter = 100
	// CodeMissingToken (104, HTTP 401): no access token in the request.
	CodeMissingToken = 104
	// CodeInvalidToken (190, HTTP 401): an access token no number has.
	CodeInvalidToken = 190
	// CodeUnknownPath (2500, HTTP 400): a path that is not an endpoint.
	CodeUnknownPath = 2500
	// CodeThroughput (130429, HTTP 429): the phone number's throughput
	// (Config.Throughput messages per second) is used up.
	CodeThroughput = 130429
	// CodeUnknownError (131000, HTTP 500, is_transient) is one of the two
	// Error5xxRatio faults and the LostResponseRatio answer.
	CodeUnknownError = 131000
	// CodeUndeliverable (131026): the recipient cannot get the message. A
	// failed status webhook (recipients ending in "0000", FailRatio), or
	// HTTP 400 with Config.SyncDeliveryErrors.
	CodeUndeliverable = 131026
	// CodeReEngagement (131047): a free-form message outside the 24-hour
	// customer-service window. A failed status webhook, or HTTP 400 with
	// Config.SyncDeliveryErrors.
	CodeReEngagement = 131047
	// CodeMarketingOptOut (131050): a MARKETING template to a user who
	// stopped marketing messages from the business (Sim.SetMarketingOptOut).
	// A failed status webhook, or HTTP 400 with Config.SyncDeliveryErrors.
	CodeMarketingOptOut = 131050
	// CodeSpamRateLimit (131048): the WhatsApp Business account reached
	// its messaging tier (Config.MessagingTier unique users outside the
	// service window in a moving 24 h) and the template is to one more
	// such user. Meta publishes no code of its own for the messaging
	// limit and reports it after the send, in a failed status: the
	// simulator uses 131048 ("restrictions on how many messages can be
	// sent from this phone number"), as a failed status webhook, or HTTP
	// 400 with Config.SyncDeliveryErrors.
	CodeSpamRateLimit = 131048
	// CodePairRate (131056, HTTP 429): a message to the same recipient from
	// the same number sooner than Config.PairInterval after the last one.
	CodePairRate = 131056
	// CodeParamMissing (131008, HTTP 400): a button of the template that
	// takes a parameter (a URL button with a variable suffix, an OTP
	// button) got none.
	CodeParamMissing = 131008
	// CodeTemplateParams (132000, HTTP 400): the body, header or button
	// parameter count differs from the template's.
	CodeTemplateParams = 132000
	// CodeParamFormat (132012, HTTP 400): a parameter's type does not fit
	// the template (text for an IMAGE header, an image for a TEXT header, a
	// button parameter that is not a url text).
	CodeParamFormat = 132012
	// CodeTemplateMissing (132001, HTTP 404): no template of that name in
	// that language, or the template is not approved (PENDING, REJECTED).
	CodeTemplateMissing = 132001
	// CodeTemplatePaused (132015, HTTP 400): the template is PAUSED.
	CodeTemplatePaused = 132015
	// CodeTemplateDisabled (132016, HTTP 400): the template is DISABLED.
	CodeTemplateDisabled = 132016
)

// UndeliverableSuffix: messages to a recipient whose digits end with it are
// undeliverable (131026), e.g. 15550000000 or +44 7700 900000.
const UndeliverableSuffix = "0000"

// errorCodesURL is the href of webhook errors.
const errorCodesURL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

// graphError is the "error" object of a Graph API error response.
type graphError struct {
	status int

	Message     string     `json:"message"`
	Type        string     `json:"type"`
	Code        int        `json:"code"`
	Subcode     int        `json:"error_subcode,omitempty"`
	Data        *errorData `json:"error_data,omitempty"`
	IsTransient bool       `json:"is_transient,omitempty"`
	FBTraceID   string     `json:"fbtrace_id"`
}

type errorData struct {
	MessagingProduct string `json:"messaging_product,omitempty"`
	Details          string `json:"details"`
}

// waError is a WhatsApp error: "(#code) title" with error_data.details.
func waError(status, code int, title, details string) *graphError {
	return &graphError{
		status:  status,
		Message: fmt.Sprintf("(#%d) %s", code, title),
		Type:    "OAuthException",
		Code:    code,
		Data:    &errorData{MessagingProduct: "whatsapp", Details: details},
	}
}

func errParam(format string, args ...any) *graphError {
	return waError(http.StatusBadRequest, CodeInvalidParameter, "Invalid parameter", fmt.Sprintf(format, args...))
}

// errRequired is Graph's answer to a missing required parameter.
func errRequired(param string) *graphError {
	e := errParam("Parameter %s is required.", param)
	e.Message = fmt.Sprintf("(#100) The parameter %s is required.", param)
	return e
}

func errMissingToken() *graphError {
	return &graphError{
		status: http.StatusUnauthorized, Message: "An access token is required to request this resource.",
		Type: "OAuthException", Code: CodeMissingToken,
	}
}

func errInvalidToken() *graphError {
	return &graphError{
		status: http.StatusUnauthorized, Message: "Invalid OAuth access token - Cannot parse access token",
		Type: "OAuthException", Code: CodeInvalidToken,
	}
}

// errNoObject is Graph's answer for an id that does not exist or that the
// token may not use.
func errNoObject(method, id string) *graphError {
	return &graphError{
		status: http.StatusBadRequest,
		Message: fmt.Sprintf("Unsupported %s request. Object with ID '%s' does not exist, cannot be loaded due to missing permissions, "+
			"or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api", method, id),
		Type: "GraphMethodException", Code: CodeInvalidParameter, Subcode: 33,
	}
}

func errUnknownPath(path string) *graphError {
	return &graphError{
		status: http.StatusBadRequest, Message: "Unknown path components: " + path,
		Type: "OAuthException", Code: CodeUnknownPath,
	}
}

func errThroughput() *graphError {
	return waError(http.StatusTooManyRequests, CodeThroughput, "Rate limit hit",
		"Message failed to send because there were too many messages sent from this phone number in a short period of time")
}

func errPairRate() *graphError {
	return waError(http.StatusTooManyRequests, CodePairRate, "(Business Account, Consumer Account) pair rate limit hit",
		"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time")
}

func errTemplateParams(component string, got, want int) *graphError {
	return waError(http.StatusBadRequest, CodeTemplateParams, "Number of parameters does not match the expected number of params",
		fmt.Sprintf("%s: number of localizable_params (%d) does not match the expected number of params (%d)", component, got, want))
}

func errParamMissing(details string) *graphError {
	return waError(http.StatusBadRequest, CodeParamMissing, "Required parameter is missing", details)
}

func errParamFormat(details string) *graphError {
	return waError(http.StatusBadRequest, CodeParamFormat, "Parameter format does not match format in the created template", details)
}

func errTemplateMissing(name, lang, why string) *graphError {
	d := fmt.Sprintf("template name (%s) does not exist in %s", name, lang)
	if why != "" {
		d += " (" + why + ")"
	}
	return waError(http.StatusNotFound, CodeTemplateMissing, "Template name does not exist in the translation", d)
}

func errTemplatePaused(name string) *graphError {
	return waError(http.StatusBadRequest, CodeTemplatePaused, "Template is Paused",
		fmt.Sprintf("Template %s is paused due to low quality so it cannot be sent in a template message", name))
}

func errTemplateDisabled(name string) *graphError {
	return waError(http.StatusBadRequest, CodeTemplateDisabled, "Template is disabled",
		fmt.Sprintf("Template %s has been paused too many times due to low quality and is now permanently disabled", name))
}

func errServiceUnavailable(details string) *graphError {
	e := &graphError{
		status: http.StatusServiceUnavailable, Message: "(#2) Service temporarily unavailable",
		Type: "OAuthException", Code: CodeServiceUnavailable, IsTransient: true,
		Data: &errorData{MessagingProduct: "whatsapp", Details: details},
	}
	return e
}

func errUnknown() *graphError {
	e := waError(http.StatusInternalServerError, CodeUnknownError, "Something went wrong",
		"Message failed to send due to an unknown error. Please try again later.")
	e.IsTransient = true
	return e
}

// deliveryErrors are the errors that reach the sender as failed statuses.
var deliveryErrors = map[int]struct{ title, details string }{
	CodeUndeliverable: {"Message undeliverable", "Message Undeliverable."},
	CodeReEngagement: {
		"Re-engagement message",
		"Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
	},
	CodeSpamRateLimit: {
		"Spam rate limit hit",
		"Message failed to send because there are restrictions on how many messages can be sent from this phone number. " +
			"This may be because too many previous messages were blocked or flagged as spam, or the business reached its messaging limit.",
	},
	CodeMarketingOptOut: {
		"Unable to deliver marketing message",
		"This message was not delivered because the user has chosen to stop receiving marketing messages from this business.",
	},
}

// errDelivery is the synchronous form of a delivery error
// (Config.SyncDeliveryErrors).
func errDelivery(code int) *graphError {
	d := deliveryErrors[code]
	return waError(http.StatusBadRequest, code, d.title, d.details)
}

// statusError is an element of statuses[].errors in a failed status webhook.
type statusError struct {
	Code      int             `json:"code"`
	Title     string          `json:"title"`
	Message   string          `json:"message"`
	ErrorData statusErrorData `json:"error_data"`
	Href      string          `json:"href"`
}

type statusErrorData struct {
	Details string `json:"details"`
}

func newStatusError(code int) *statusError {
	d := deliveryErrors[code]
	return &statusError{Code: code, Title: d.title, Message: d.title, ErrorData: statusErrorData{Details: d.details}, Href: errorCodesURL}
}
