package wasim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the send request, from Meta's message reference.
const (
	maxBodyBytes      = 1 << 20
	maxTextBody       = 4096
	maxParamText      = 32768
	maxCaption        = 1024
	maxBizOpaque      = 512
	minWAIDDigits     = 7
	maxWAIDDigits     = 15
	maxButtonIndex    = 9
	maxComponentCount = 64
)

// sendRequest is the body of POST /{version}/{phone-number-id}/messages.
// Unknown keys are refused, as Graph refuses them.
type sendRequest struct {
	MessagingProduct string          `json:"messaging_product"`
	RecipientType    string          `json:"recipient_type"`
	To               string          `json:"to"`
	Type             string          `json:"type"`
	Template         *templateMsg    `json:"template"`
	Text             *textMsg        `json:"text"`
	Image            *mediaObject    `json:"image"`
	Interactive      json.RawMessage `json:"interactive"`
	Context          *msgContext     `json:"context"`
	BizOpaque        string          `json:"biz_opaque_callback_data"`

	// Status and MessageID mark an inbound message as read.
	Status          string          `json:"status"`
	MessageID       string          `json:"message_id"`
	TypingIndicator json.RawMessage `json:"typing_indicator"`

	// Message types Meta has that the simulator refuses.
	Audio    json.RawMessage `json:"audio"`
	Video    json.RawMessage `json:"video"`
	Document json.RawMessage `json:"document"`
	Sticker  json.RawMessage `json:"sticker"`
	Location json.RawMessage `json:"location"`
	Contacts json.RawMessage `json:"contacts"`
	Reaction json.RawMessage `json:"reaction"`

	// waID is To reduced to its digits, set by decodeSend.
	waID string
	// markRead is set for a mark-as-read request.
	markRead bool
}

type templateMsg struct {
	Name       string      `json:"name"`
	Language   *language   `json:"language"`
	Components []component `json:"components"`
	// Namespace is a legacy On-Premises key Graph still accepts.
	Namespace string `json:"namespace"`
}

type language struct {
	Code   string `json:"code"`
	Policy string `json:"policy"`
}

type component struct {
	Type       string      `json:"type"`
	SubType    string      `json:"sub_type"`
	Index      *flexIndex  `json:"index"`
	Parameters []parameter `json:"parameters"`
}

// flexIndex is a button index, sent as a string ("0") or a number (0).
type flexIndex int

func (f *flexIndex) UnmarshalJSON(b []byte) error {
	s := string(b)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("index %s is not a number", b)
	}
	*f = flexIndex(n)
	return nil
}

type parameter struct {
	Type          string          `json:"type"`
	ParameterName string          `json:"parameter_name"`
	Text          *string         `json:"text"`
	Currency      *currency       `json:"currency"`
	DateTime      *dateTime       `json:"date_time"`
	Image         *mediaObject    `json:"image"`
	Video         *mediaObject    `json:"video"`
	Document      *mediaObject    `json:"document"`
	Location      json.RawMessage `json:"location"`
	Payload       *string         `json:"payload"`
	Action        json.RawMessage `json:"action"`
	CouponCode    *string         `json:"coupon_code"`
}

type currency struct {
	FallbackValue string `json:"fallback_value"`
	Code          string `json:"code"`
	Amount1000    *int64 `json:"amount_1000"`
}

type dateTime struct {
	FallbackValue string `json:"fallback_value"`
	// Legacy components Graph still accepts; the fallback value is used.
	DayOfWeek  json.RawMessage `json:"day_of_week"`
	Year       json.RawMessage `json:"year"`
	Month      json.RawMessage `json:"month"`
	DayOfMonth json.RawMessage `json:"day_of_month"`
	Hour       json.RawMessage `json:"hour"`
	Minute     json.RawMessage `json:"minute"`
	Calendar   json.RawMessage `json:"calendar"`
}

type mediaObject struct {
	ID       string `json:"id"`
	Link     string `json:"link"`
	Caption  string `json:"caption"`
	Filename string `json:"filename"`
}

type textMsg struct {
	Body       string `json:"body"`
	PreviewURL bool   `json:"preview_url"`
}

type msgContext struct {
	MessageID string `json:"message_id"`
}

// interactiveMsg is the part of an interactive message the simulator checks.
type interactiveMsg struct {
	Type   string          `json:"type"`
	Action json.RawMessage `json:"action"`
}

// decodeSend decodes and checks the shape of a send request: through
// decodeSendFast, and encoding/json for what it leaves. It never panics;
// any input it refuses gets a Graph error (code 100).
func decodeSend(body []byte) (*sendRequest, *graphError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errRequired("messaging_product")
	}
	var r sendRequest
	if !decodeSendFast(body, &r) {
		r = sendRequest{}
		if gerr := decodeSendJSON(body, &r); gerr != nil {
			return nil, gerr
		}
	}
	if r.MessagingProduct == "" {
		return nil, errRequired("messaging_product")
	}
	if r.MessagingProduct != "whatsapp" {
		return nil, errParam("Param messaging_product must be one of {WHATSAPP} - got %q.", r.MessagingProduct)
	}
	if r.Status != "" || r.MessageID != "" {
		if r.Status != "read" {
			return nil, errParam("Param status must be one of {READ} - got %q.", r.Status)
		}
		if r.MessageID == "" {
			return nil, errRequired("message_id")
		}
		r.markRead = true
		return &r, nil
	}
	switch r.RecipientType {
	case "", "individual":
	case "group":
		return nil, errParam("recipient_type group is not supported by the simulator")
	default:
		return nil, errParam("Param recipient_type must be one of {INDIVIDUAL, GROUP} - got %q.", r.RecipientType)
	}
	if r.To == "" {
		return nil, errRequired("to")
	}
	waID, ok := normalizeWAID(r.To)
	if !ok {
		return nil, errParam("Param to is not a valid phone number: %q", truncate(r.To, 64))
	}
	r.waID = waID
	if utf8.RuneCountInString(r.BizOpaque) > maxBizOpaque {
		return nil, errParam("Param biz_opaque_callback_data must be at most %d characters long.", maxBizOpaque)
	}
	if r.Context != nil && r.Context.MessageID == "" {
		return nil, errRequired("context['message_id']")
	}
	if r.Type == "" {
		// Graph defaults type to text.
		r.Type = "text"
	}
	if err := r.checkBody(); err != nil {
		return nil, err
	}
	return &r, nil
}

// decodeSendJSON decodes body into r through encoding/json, refusing
// unknown keys and anything after the object.
func decodeSendJSON(body []byte, r *sendRequest) *graphError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(r); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errParam("Request body must hold exactly one JSON object")
	}
	return nil
}

// checkBody checks that the object named by Type is there and well formed,
// and that no other message object is.
func (r *sendRequest) checkBody() *graphError {
	objects := []struct {
		name    string
		present bool
	}{
		{"template", r.Template != nil},
		{"text", r.Text != nil},
		{"image", r.Image != nil},
		{"interactive", isSet(r.Interactive)},
		{"audio", isSet(r.Audio)},
		{"video", isSet(r.Video)},
		{"document", isSet(r.Document)},
		{"sticker", isSet(r.Sticker)},
		{"location", isSet(r.Location)},
		{"contacts", isSet(r.Contacts)},
		{"reaction", isSet(r.Reaction)},
	}
	known, present := false, false
	for _, o := range objects {
		if o.name == r.Type {
			known, present = true, o.present
		}
	}
	if !known {
		return errParam("Param type must be one of {AUDIO, CONTACTS, DOCUMENT, IMAGE, INTERACTIVE, LOCATION, REACTION, STICKER, TEMPLATE, TEXT, VIDEO} - got %q.", truncate(r.Type, 32))
	}
	for _, o := range objects {
		if o.present && o.name != r.Type {
			return errParam("Unexpected key %q for a message of type %s.", o.name, r.Type)
		}
	}
	if !present {
		return errRequired(r.Type)
	}
	switch r.Type {
	case "template":
		return r.Template.check()
	case "text":
		if r.Text.Body == "" {
			return errRequired("text['body']")
		}
		if utf8.RuneCountInString(r.Text.Body) > maxTextBody {
			return errParam("Param text['body'] must be at most %d characters long.", maxTextBody)
		}
	case "image":
		if err := r.Image.check("image"); err != nil {
			return err
		}
	case "interactive":
		var im interactiveMsg
		if err := json.Unmarshal(r.Interactive, &im); err != nil {
			return errParam("Param interactive must be an object: %v", err)
		}
		switch im.Type {
		case "":
			return errRequired("interactive['type']")
		case "button", "list", "cta_url", "product", "product_list", "catalog_message", "flow",
			"location_request_message", "address_message", "call_permission_request":
		default:
			return errParam("Param interactive['type'] is not a valid interactive type: %q", truncate(im.Type, 32))
		}
		if len(im.Action) == 0 || string(im.Action) == "null" {
			return errRequired("interactive['action']")
		}
	default:
		return errParam("Messages of type %s are not supported by the simulator.", r.Type)
	}
	return nil
}

// isSet reports whether an optional raw JSON value was given and not null.
func isSet(m json.RawMessage) bool { return len(m) > 0 && string(m) != "null" }

func (m *mediaObject) check(name string) *graphError {
	if m.ID == "" && m.Link == "" {
		return errParam("Param %s must have an id or a link.", name)
	}
	if utf8.RuneCountInString(m.Caption) > maxCaption {
		return errParam("Param %s['caption'] must be at most %d characters long.", name, maxCaption)
	}
	return nil
}

// freeForm reports whether the message needs the customer-service window.
func (r *sendRequest) freeForm() bool { return r.Type != "template" }

func (t *templateMsg) check() *graphError {
	if t.Name == "" {
		return errRequired("template['name']")
	}
	if t.Language == nil || t.Language.Code == "" {
		return errRequired("template['language']['code']")
	}
	if p := t.Language.Policy; p != "" && p != "deterministic" {
		return errParam("Param template['language']['policy'] must be one of {DETERMINISTIC} - got %q.", truncate(p, 32))
	}
	if len(t.Components) > maxComponentCount {
		return errParam("Param template['components'] has too many elements.")
	}
	for i := range t.Components {
		c := &t.Components[i]
		where := func() string { return fmt.Sprintf("template['components'][%d]", i) }
		switch strings.ToLower(c.Type) {
		case "header", "body":
			for j := range c.Parameters {
				if c.Parameters[j].plainText() {
					// The common case, passed without building its path.
					continue
				}
				if err := c.Parameters[j].check(strings.ToLower(c.Type), fmt.Sprintf("%s['parameters'][%d]", where(), j)); err != nil {
					return err
				}
			}
		case "button":
			if err := c.checkButton(where()); err != nil {
				return err
			}
		case "":
			return errRequired(where() + "['type']")
		default:
			return errParam("Param %s['type'] must be one of {HEADER, BODY, BUTTON} - got %q.", where(), truncate(c.Type, 32))
		}
	}
	return nil
}

func (c *component) checkButton(where string) *graphError {
	switch strings.ToLower(c.SubType) {
	case "":
		return errRequired(where + "['sub_type']")
	case "quick_reply", "url", "catalog", "copy_code", "flow", "mpm", "voice_call", "order_details":
	default:
		return errParam("Param %s['sub_type'] is not a valid button sub_type: %q", where, truncate(c.SubType, 32))
	}
	if c.Index == nil {
		return errRequired(where + "['index']")
	}
	if *c.Index < 0 || *c.Index > maxButtonIndex {
		return errParam("Param %s['index'] must be between 0 and %d.", where, maxButtonIndex)
	}
	if len(c.Parameters) == 0 {
		return errRequired(where + "['parameters']")
	}
	for j := range c.Parameters {
		p := &c.Parameters[j]
		pw := fmt.Sprintf("%s['parameters'][%d]", where, j)
		switch p.Type {
		case "payload":
			if p.Payload == nil || *p.Payload == "" {
				return errRequired(pw + "['payload']")
			}
		case "text":
			if p.Text == nil || *p.Text == "" {
				return errRequired(pw + "['text']")
			}
		case "coupon_code":
			if p.CouponCode == nil || *p.CouponCode == "" {
				return errRequired(pw + "['coupon_code']")
			}
		case "action":
			if len(p.Action) == 0 || string(p.Action) == "null" {
				return errRequired(pw + "['action']")
			}
		case "":
			return errRequired(pw + "['type']")
		default:
			return errParam("Param %s['type'] must be one of {PAYLOAD, TEXT, COUPON_CODE, ACTION} - got %q.", pw, truncate(p.Type, 32))
		}
	}
	return nil
}

// plainText reports whether p is a text parameter that check passes.
func (p *parameter) plainText() bool {
	return p.Type == "text" && p.Text != nil && *p.Text != "" && utf8.RuneCountInString(*p.Text) <= maxParamText
}

func (p *parameter) check(comp, where string) *graphError {
	switch p.Type {
	case "text":
		if p.Text == nil || *p.Text == "" {
			return errRequired(where + "['text']")
		}
		if utf8.RuneCountInString(*p.Text) > maxParamText {
			return errParam("Param %s['text'] must be at most %d characters long.", where, maxParamText)
		}
	case "currency":
		if comp != "body" {
			break
		}
		if p.Currency == nil || p.Currency.FallbackValue == "" || p.Currency.Code == "" || p.Currency.Amount1000 == nil {
			return errParam("Param %s['currency'] needs fallback_value, code and amount_1000.", where)
		}
		return nil
	case "date_time":
		if comp != "body" {
			break
		}
		if p.DateTime == nil || p.DateTime.FallbackValue == "" {
			return errRequired(where + "['date_time']['fallback_value']")
		}
		return nil
	case "image", "video", "document":
		if comp != "header" {
			break
		}
		m := map[string]*mediaObject{"image": p.Image, "video": p.Video, "document": p.Document}[p.Type]
		if m == nil {
			return errRequired(where + "['" + p.Type + "']")
		}
		return m.check(where + "['" + p.Type + "']")
	case "location":
		if comp != "header" {
			break
		}
		if len(p.Location) == 0 || string(p.Location) == "null" {
			return errRequired(where + "['location']")
		}
		return nil
	case "":
		return errRequired(where + "['type']")
	}
	if p.Type != "text" {
		return errParam("Param %s['type'] %q is not valid in a %s component.", where, truncate(p.Type, 32), comp)
	}
	return nil
}

// normalizeWAID reduces a phone number as Meta accepts it ("+1 (555)
// 012-3456") to its digits, the WhatsApp id.
func normalizeWAID(to string) (string, bool) {
	s := strings.TrimPrefix(strings.TrimSpace(to), "+")
	if digitsOnly(s) {
		// The common case: the digits as they are, without a copy.
		if len(s) < minWAIDDigits || len(s) > maxWAIDDigits || s[0] == '0' {
			return "", false
		}
		return s, true
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			b.WriteRune(c)
		case c == ' ' || c == '-' || c == '(' || c == ')' || c == '.':
		default:
			return "", false
		}
	}
	d := b.String()
	if len(d) < minWAIDDigits || len(d) > maxWAIDDigits || d[0] == '0' {
		return "", false
	}
	return d, true
}

// digitsOnly reports whether s is ASCII digits only.
func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// jsonError turns a decoding error into Graph's answer.
func jsonError(err error) *graphError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	msg := err.Error()
	switch {
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errParam("Request body is not valid JSON: %s", truncate(msg, 200))
	case errors.As(err, &typ):
		return errParam("Param %s must be of type %s, got %s.", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(msg, "json: unknown field "):
		return errParam("Unexpected key %s.", strings.TrimPrefix(msg, "json: unknown field "))
	default:
		return errParam("Invalid request body: %s", truncate(msg, 200))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
