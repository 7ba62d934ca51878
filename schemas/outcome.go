package schemas

import (
	"encoding/json"
	"time"

	"github.com/heraldhq/herald/internal/jsonenc"
)

// OutcomeState is what became of a dispatch request.
type OutcomeState string

// Outcome states.
const (
	// OutcomeAccepted: the provider accepted the message and gave it an id
	// (Meta's wamid). Later statuses arrive as KindStatus events.
	OutcomeAccepted OutcomeState = "accepted"
	// OutcomeFailed: the provider refused it permanently (ErrorCode says why)
	// or Herald refused it before calling.
	OutcomeFailed OutcomeState = "failed"
	// OutcomeExpired: the request's deadline passed before it could be sent.
	OutcomeExpired OutcomeState = "expired"
	// OutcomeInDoubt: the call may or may not have reached the provider (a
	// timeout after the request was written). Status webhooks reconcile it.
	OutcomeInDoubt OutcomeState = "in_doubt"
)

// Outcome is a record on TopicOutcomes: the result of one dispatch request.
type Outcome struct {
	V          int          `json:"v"`
	DispatchID string       `json:"dispatch_id"`
	App        string       `json:"app"`
	Channel    Channel      `json:"channel"`
	Sender     string       `json:"sender"`
	To         string       `json:"to"`
	Country    string       `json:"country,omitempty"`
	State      OutcomeState `json:"state"`
	// ProviderID is the provider's message id when accepted: Meta's wamid,
	// the email's Message-ID, FCM's message name.
	ProviderID string `json:"provider_id,omitempty"`
	// Template name and category, or empty for free-form text.
	Template string `json:"template,omitempty"`
	Category string `json:"category,omitempty"`
	Source   Source `json:"source"`
	// ErrorCode is the provider's error code (Meta's Graph error code) or a
	// Herald code below 0 for refusals before the call.
	ErrorCode    int    `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// InvalidRecipient is set when the provider said the recipient is gone
	// for good: an unregistered push token (FCM UNREGISTERED), a mailbox
	// that does not exist (SMTP 550 5.1.1). Producers of dispatch requests
	// should stop sending to it.
	InvalidRecipient bool `json:"invalid_recipient,omitempty"`
	Attempts         int  `json:"attempts"`
	// Reconciled is set on an accepted outcome that supersedes an earlier
	// in_doubt outcome of the same dispatch id: a status webhook echoing
	// the id (ProviderID is its wamid) proved that Meta got the message.
	// ErrorMessage says which status. Its Time is at least a second after
	// the in_doubt outcome's, so that readers keeping the latest outcome
	// by time (ClickHouse's messages, seconds) keep this one.
	Reconciled bool `json:"reconciled,omitempty"`
	// Requested is the request's Created time; Time is when this outcome was
	// decided.
	Requested time.Time `json:"requested"`
	Time      time.Time `json:"time"`
}

// Validate checks the fields consumers rely on.
func (o *Outcome) Validate() error {
	switch {
	case o.DispatchID == "":
		return invalid("outcome: dispatch_id is required")
	case !ValidAppID(o.App):
		return invalid("outcome: app %q is not a valid app id", o.App)
	case o.Time.IsZero():
		return invalid("outcome: time is required")
	}
	switch o.State {
	case OutcomeAccepted, OutcomeFailed, OutcomeExpired, OutcomeInDoubt:
	default:
		return invalid("outcome: unknown state %q", o.State)
	}
	return nil
}

// Key returns the record key, see RecipientKey.
func (o *Outcome) Key() []byte { return RecipientKey(o.App, o.To) }

// DecodeOutcome decodes and validates a TopicOutcomes record value.
func DecodeOutcome(b []byte) (*Outcome, error) {
	o := new(Outcome)
	if err := decodeWith(b, o, decodeOutcome, func() int { return o.V }); err != nil {
		return nil, err
	}
	return o, nil
}

// Marshal encodes the outcome, setting V.
func (o *Outcome) Marshal() ([]byte, error) {
	o.V = V1
	if b, ok := o.appendJSON(make([]byte, 0, 384)); ok {
		return b, nil
	}
	return json.Marshal(o)
}

// appendJSON appends o's JSON as encoding/json writes it, without
// reflection (one outcome per send); ok is false for times MarshalJSON
// writes otherwise or refuses. TestOutcomeAppendJSON compares the two.
func (o *Outcome) appendJSON(b []byte) ([]byte, bool) {
	w := jsonenc.Object{B: b}
	w.Int("v", int64(o.V))
	w.Str("dispatch_id", o.DispatchID)
	w.Str("app", o.App)
	w.Str("channel", string(o.Channel))
	w.Str("sender", o.Sender)
	w.Str("to", o.To)
	w.OptStr("country", o.Country)
	w.Str("state", string(o.State))
	w.OptStr("provider_id", o.ProviderID)
	w.OptStr("template", o.Template)
	w.OptStr("category", o.Category)
	w.Key("source")
	w.B = o.Source.appendJSON(w.B)
	w.OptInt("error_code", int64(o.ErrorCode))
	w.OptStr("error_message", o.ErrorMessage)
	w.OptBool("invalid_recipient", o.InvalidRecipient)
	w.Int("attempts", int64(o.Attempts))
	w.OptBool("reconciled", o.Reconciled)
	w.Time("requested", o.Requested)
	w.Time("time", o.Time)
	return w.End()
}
