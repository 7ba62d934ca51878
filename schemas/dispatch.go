package schemas

import (
	"encoding/json"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/heraldhq/herald/internal/jsonenc"
)

// Channel is a way to reach a user.
type Channel string

// Channels.
const (
	ChannelWhatsApp Channel = "whatsapp"
	ChannelEmail    Channel = "email"
	ChannelPush     Channel = "push"
	// ChannelWebhook is an HTTPS call to the app's own endpoint (a
	// journey's webhook step): Webhook is set, To is the URL's host.
	ChannelWebhook Channel = "webhook"
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
	// Sender is the sending address: the WhatsApp phone-number id; for
	// email the From address (one of the app's, empty: its default); for
	// push the app's FCM project id (empty: its own).
	Sender string `json:"sender"`
	// To is the recipient: E.164 with the plus sign for WhatsApp, the
	// address for email, the FCM registration token for push.
	To string `json:"to"`
	// HWID and UserID are the recipient's profile (the event key of its
	// events): email open and click links carry them, so that the events
	// they produce reach the user's partition.
	HWID   string `json:"hwid,omitempty"`
	UserID string `json:"user_id,omitempty"`
	// Country of the recipient, ISO 3166-1 alpha-2, for cost accounting.
	Country string `json:"country,omitempty"`

	// Exactly one of Template and Text is set for WhatsApp.
	Template *Template `json:"template,omitempty"`
	Text     *Text     `json:"text,omitempty"`
	// Email is the message of an email request (required for it).
	Email *Email `json:"email,omitempty"`
	// Push is the notification of a push request (required for it).
	Push *Push `json:"push,omitempty"`
	// Webhook is the call of a webhook request (required for it).
	Webhook *Webhook `json:"webhook,omitempty"`

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
	// WindowUntil, when set, is the end of the recipient's 24-hour
	// customer-service window as the producer knew it (the user's last
	// inbound WhatsApp message plus 24 h). The dispatcher refuses free-form
	// text whose WindowUntil has passed before calling Meta (which would
	// answer 131047), and counts a template sent after it toward the
	// business's messaging tier. Omitted (zero) means unknown: text is left
	// to Meta, and a template counts toward the tier.
	WindowUntil time.Time `json:"window_until,omitzero"`
}

// InWindow reports whether the request is known to be inside its
// recipient's service window at now.
func (d *DispatchRequest) InWindow(now time.Time) bool {
	return !d.WindowUntil.IsZero() && now.Before(d.WindowUntil)
}

// WindowClosed reports whether the request is known to be outside its
// recipient's service window at now (WindowUntil set and passed).
func (d *DispatchRequest) WindowClosed(now time.Time) bool {
	return !d.WindowUntil.IsZero() && !now.Before(d.WindowUntil)
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

// Email is an email message. At least one of Text and HTML is set; with
// both the mail is multipart/alternative.
type Email struct {
	Subject string `json:"subject"`
	// Text is the plain-text body; HTML the HTML body, whose http(s) links
	// the dispatcher rewrites for click tracking (and to which it adds an
	// open pixel) when tracking is configured.
	Text string `json:"text,omitempty"`
	HTML string `json:"html,omitempty"`
	// FromName overrides the display name of the From address (which is
	// Sender, or the app's default address).
	FromName string `json:"from_name,omitempty"`
	// ReplyTo overrides the app's Reply-To address.
	ReplyTo string `json:"reply_to,omitempty"`
	// Template names the template the body was rendered from, for
	// analytics; the dispatcher sends Text and HTML as they are.
	Template string `json:"template,omitempty"`
}

// Push is a push notification (FCM HTTP v1 message to one token).
type Push struct {
	Title string `json:"title"`
	Body  string `json:"body"`
	// Data are the message's data pairs, delivered to the app. Keys
	// must not be FCM-reserved (from, notification, message_type, or
	// starting with google or gcm); the dispatcher adds
	// herald_dispatch_id, which the app sends back in the
	// PW_PushOpened event's attributes as dispatch_id.
	Data map[string]string `json:"data,omitempty"`
	// Template names the template the notification was rendered from,
	// for analytics.
	Template string `json:"template,omitempty"`
}

// Webhook is a JSON POST to URL: https, or http to a loopback address
// (a local receiver). The dispatcher sends Body with the request's
// identity, signed with the app's webhook secret.
type Webhook struct {
	URL  string         `json:"url"`
	Body map[string]any `json:"body,omitempty"`
}

// CheckWebhookURL reports what is wrong with a webhook URL, nil when it is
// absolute https, or http to a loopback host.
func CheckWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return invalid("webhook url %q: %v", raw, err)
	case u.Host == "" || u.User != nil:
		return invalid("webhook url %q: want https://host/path, without user info", raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return invalid("webhook url %q: http only to a loopback address; use https", raw)
	}
	return invalid("webhook url %q: want https", raw)
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
	case ChannelEmail:
		if d.Email == nil {
			return invalid("dispatch: email is required for channel email")
		}
		if d.Email.Subject == "" {
			return invalid("dispatch: email.subject is required")
		}
		if d.Email.Text == "" && d.Email.HTML == "" {
			return invalid("dispatch: email.text or email.html is required")
		}
	case ChannelPush:
		if d.Push == nil {
			return invalid("dispatch: push is required for channel push")
		}
		if d.Push.Title == "" && d.Push.Body == "" {
			return invalid("dispatch: push.title or push.body is required")
		}
	case ChannelWebhook:
		if d.Webhook == nil {
			return invalid("dispatch: webhook is required for channel webhook")
		}
		if err := CheckWebhookURL(d.Webhook.URL); err != nil {
			return err
		}
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
// The WhatsApp shapes are decoded without encoding/json's reflection
// (dispatch_decode.go), to the same request.
func DecodeDispatchRequest(b []byte) (*DispatchRequest, error) {
	d := new(DispatchRequest)
	if err := decodeWith(b, d, decodeDispatch, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the request, setting V.
func (d *DispatchRequest) Marshal() ([]byte, error) {
	d.V = V1
	if b, ok := d.appendJSON(make([]byte, 0, 512)); ok {
		return b, nil
	}
	c := *d // d stays on its caller's stack: only this rare path hands it to encoding/json
	return json.Marshal(&c)
}

// appendJSON appends d's JSON as encoding/json writes it, without
// reflection (Marshal is on the segmenter's per-event path: keyword
// replies, campaigns, journeys); ok is false for what it leaves to
// encoding/json: webhook bodies and times MarshalJSON writes otherwise
// or refuses (jsonenc.Time). TestDispatchAppendJSON compares the two.
func (d *DispatchRequest) appendJSON(b []byte) ([]byte, bool) {
	if d.Webhook != nil && d.Webhook.Body != nil {
		return b, false
	}
	str := func(key, v string) {
		b = append(b, key...)
		b = jsonenc.String(b, v)
	}
	opt := func(key, v string) {
		if v != "" {
			str(key, v)
		}
	}
	strs := func(key string, l []string) {
		if len(l) == 0 {
			return
		}
		b = append(b, key...)
		for i, s := range l {
			if i == 0 {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			b = jsonenc.String(b, s)
		}
		b = append(b, ']')
	}
	b = append(b, `{"v":`...)
	b = jsonenc.Int(b, int64(d.V))
	str(`,"id":`, d.ID)
	str(`,"app":`, d.App)
	str(`,"channel":`, string(d.Channel))
	str(`,"sender":`, d.Sender)
	str(`,"to":`, d.To)
	opt(`,"hwid":`, d.HWID)
	opt(`,"user_id":`, d.UserID)
	opt(`,"country":`, d.Country)
	if t := d.Template; t != nil {
		str(`,"template":{"name":`, t.Name)
		str(`,"language":`, t.Language)
		opt(`,"category":`, t.Category)
		strs(`,"body":`, t.Body)
		strs(`,"header":`, t.Header)
		if len(t.ButtonURL) > 0 {
			b = appendIntMap(append(b, `,"button_url":`...), t.ButtonURL)
		}
		b = append(b, '}')
	}
	if t := d.Text; t != nil {
		str(`,"text":{"body":`, t.Body)
		if t.PreviewURL {
			b = append(b, `,"preview_url":true`...)
		}
		b = append(b, '}')
	}
	if m := d.Email; m != nil {
		str(`,"email":{"subject":`, m.Subject)
		opt(`,"text":`, m.Text)
		opt(`,"html":`, m.HTML)
		opt(`,"from_name":`, m.FromName)
		opt(`,"reply_to":`, m.ReplyTo)
		opt(`,"template":`, m.Template)
		b = append(b, '}')
	}
	if p := d.Push; p != nil {
		str(`,"push":{"title":`, p.Title)
		str(`,"body":`, p.Body)
		if len(p.Data) > 0 {
			b = appendStringMap(append(b, `,"data":`...), p.Data)
		}
		opt(`,"template":`, p.Template)
		b = append(b, '}')
	}
	if w := d.Webhook; w != nil {
		str(`,"webhook":{"url":`, w.URL)
		b = append(b, '}')
	}
	b = d.Source.appendJSON(append(b, `,"source":`...))
	ok := true
	tm := func(key string, t time.Time, omitZero bool) {
		if !ok || (omitZero && t.IsZero()) {
			return
		}
		b = append(b, key...)
		b, ok = jsonenc.Time(b, t)
	}
	tm(`,"created":`, d.Created, false)
	tm(`,"deadline":`, d.Deadline, false)
	tm(`,"send_at":`, d.SendAt, true)
	tm(`,"window_until":`, d.WindowUntil, true)
	return append(b, '}'), ok
}

// appendJSON appends the source's JSON as encoding/json writes it.
func (s *Source) appendJSON(b []byte) []byte {
	w := jsonenc.Object{B: b}
	w.Str("kind", s.Kind)
	w.OptStr("name", s.Name)
	w.OptStr("event_id", s.EventID)
	b, _ = w.End()
	return b
}

// appendIntMap appends m as encoding/json does: keys as strings, sorted
// as strings.
func appendIntMap(b []byte, m map[int]string) []byte {
	byName := make(map[string]string, len(m))
	for k, v := range m {
		byName[strconv.Itoa(k)] = v
	}
	return appendStringMap(b, byName)
}

// appendStringMap appends m as encoding/json does, keys sorted.
func appendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.String(b, k)
		b = jsonenc.String(append(b, ':'), m[k])
	}
	return append(b, '}')
}
