package schemas

import (
	"encoding/json"
	"time"
)

// Channel is a way to reach a user.
type Channel string

// Channels.
const (
	ChannelWhatsApp Channel = "whatsapp"
	ChannelEmail    Channel = "email"
	ChannelPush     Channel = "push"
)

// DispatchRequest is a record on TopicDispatch: one message to one recipient,
// as the segmenter (or the send API) decided it. A request with a SendAt in
// the future is a record on TopicScheduled instead; the scheduler moves it to
// TopicDispatch, unchanged, when SendAt comes.
type DispatchRequest struct {
	V int `json:"v"`
	// ID is deterministic: the same decision made again (a replay after a
	// crash) gets the same ID, so duplicates can be found. It is sent to Meta
	// as biz_opaque_callback_data and comes back in status webhooks.
	ID      string  `json:"id"`
	App     string  `json:"app"`
	Channel Channel `json:"channel"`
	// Sender is the sending address: the WhatsApp phone-number id.
	Sender string `json:"sender"`
	// To is the recipient: E.164 with the plus sign for WhatsApp.
	To   string `json:"to"`
	HWID string `json:"hwid,omitempty"`
	// Country of the recipient, ISO 3166-1 alpha-2, for cost accounting.
	Country string `json:"country,omitempty"`

	// Exactly one of Template and Text is set for WhatsApp.
	Template *Template `json:"template,omitempty"`
	Text     *Text     `json:"text,omitempty"`

	// Source says what produced the request.
	Source Source `json:"source"`
	// Created is when the request was made; Deadline is when it expires
	// (the dispatcher gives up and reports OutcomeExpired after it).
	Created  time.Time `json:"created"`
	Deadline time.Time `json:"deadline"`
	// SendAt, when set, is the earliest time the request may be sent.
	// Requests with a SendAt in the future belong on TopicScheduled; the
	// dispatcher forwards one it finds on TopicDispatch there rather than
	// send it early. Omitted (zero) means as soon as possible. Deadline
	// still bounds the send: a request released after its Deadline ends as
	// OutcomeExpired.
	SendAt time.Time `json:"send_at,omitzero"`
}

// Template is a WhatsApp template message.
type Template struct {
	Name string `json:"name"`
	// Language is the template's language code, e.g. en_US.
	Language string `json:"language"`
	// Category is MARKETING, UTILITY or AUTHENTICATION when known.
	Category string `json:"category,omitempty"`
	// Body are the body parameters {{1}}, {{2}}, ... in order.
	Body []string `json:"body,omitempty"`
	// Header are the header text parameters in order.
	Header []string `json:"header,omitempty"`
	// ButtonURL are URL-button suffix parameters, by button index.
	ButtonURL map[int]string `json:"button_url,omitempty"`
}

// Text is a free-form WhatsApp text message, allowed only inside the 24-hour
// customer-service window.
type Text struct {
	Body       string `json:"body"`
	PreviewURL bool   `json:"preview_url,omitempty"`
}

// Source is what produced a dispatch request.
type Source struct {
	// Kind is keyword, campaign, journey or api.
	Kind string `json:"kind"`
	// Name is the keyword rule, campaign or journey name.
	Name string `json:"name,omitempty"`
	// EventID is the event that caused it, when one did.
	EventID string `json:"event_id,omitempty"`
}

// Validate checks the fields the dispatcher relies on.
func (d *DispatchRequest) Validate() error {
	switch {
	case d.ID == "":
		return invalid("dispatch: id is required")
	case !ValidAppID(d.App):
		return invalid("dispatch: app %q is not a valid app id", d.App)
	case d.To == "":
		return invalid("dispatch: to is required")
	case d.Created.IsZero():
		return invalid("dispatch: created is required")
	}
	switch d.Channel {
	case ChannelWhatsApp:
		if d.Sender == "" {
			return invalid("dispatch: sender is required for whatsapp")
		}
		if (d.Template == nil) == (d.Text == nil) {
			return invalid("dispatch: exactly one of template and text is required for whatsapp")
		}
		if d.Template != nil && (d.Template.Name == "" || d.Template.Language == "") {
			return invalid("dispatch: template.name and template.language are required")
		}
		if d.Text != nil && d.Text.Body == "" {
			return invalid("dispatch: text.body is required")
		}
	case ChannelEmail, ChannelPush:
	default:
		return invalid("dispatch: unknown channel %q", d.Channel)
	}
	return nil
}

// ValidateScheduled is Validate plus what a record on TopicScheduled needs:
// a SendAt.
func (d *DispatchRequest) ValidateScheduled() error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.SendAt.IsZero() {
		return invalid("dispatch: send_at is required on %s", TopicScheduled)
	}
	return nil
}

// Key returns the record key, see RecipientKey.
func (d *DispatchRequest) Key() []byte { return RecipientKey(d.App, d.To) }

// DecodeDispatchRequest decodes and validates a TopicDispatch record value.
func DecodeDispatchRequest(b []byte) (*DispatchRequest, error) {
	d := new(DispatchRequest)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the request, setting V.
func (d *DispatchRequest) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}
