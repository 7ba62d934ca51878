package schemas

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// Template statuses, as Meta names them (TemplateDef.Status). Only
// TemplateApproved templates send.
const (
	TemplateApproved = "APPROVED"
	TemplatePending  = "PENDING"
	TemplateRejected = "REJECTED"
	TemplatePaused   = "PAUSED"
	TemplateDisabled = "DISABLED"
)

// Template header formats, as Meta names them (the HEADER component's
// "format").
const (
	HeaderText     = "TEXT"
	HeaderImage    = "IMAGE"
	HeaderVideo    = "VIDEO"
	HeaderDocument = "DOCUMENT"
	HeaderLocation = "LOCATION"
)

// Template parameter formats, as Meta names them (the template's
// "parameter_format"): {{1}} or {{first_name}}.
const (
	ParamsPositional = "POSITIONAL"
	ParamsNamed      = "NAMED"
)

// RecordTemplateSignal is the HeaderRecord value of a TemplateSignal on
// TopicTemplates; records without the header are TemplateDefs (or their
// tombstones).
const RecordTemplateSignal = "template-signal"

// TemplateDef is a record on TopicTemplates (compacted, key TemplateDefKey):
// one message template of an app's WhatsApp Business account as Meta listed
// it (GET /{WABA-ID}/message_templates), with what the dispatcher needs to
// check a send against it before calling Meta. The dispatcher's template
// sync writes a record when a template is new or changed, and a tombstone
// (empty value) when it is no longer listed.
type TemplateDef struct {
	V   int    `json:"v"`
	App string `json:"app"`
	// WABAID is the WhatsApp Business account the template was listed in.
	WABAID string `json:"waba_id"`
	// ID is Meta's template id.
	ID string `json:"id"`
	// Name and Language (a code such as en_US) identify the template in a
	// send.
	Name     string `json:"name"`
	Language string `json:"language"`
	// Category is MARKETING, UTILITY or AUTHENTICATION.
	Category string `json:"category"`
	// Status is Meta's: APPROVED, PENDING, REJECTED, PAUSED, DISABLED, ...
	Status string `json:"status"`
	// ParameterFormat is POSITIONAL ({{1}}) or NAMED ({{first_name}});
	// empty means POSITIONAL.
	ParameterFormat string `json:"parameter_format,omitempty"`
	// Header is the HEADER component, nil when the template has none.
	Header *TemplateHeader `json:"header,omitempty"`
	// BodyParams is how many variables the BODY component has.
	BodyParams int `json:"body_params"`
	// Buttons are the buttons of the BUTTONS component in order: a button's
	// index in a send is its position here.
	Buttons []TemplateButton `json:"buttons,omitempty"`
	// Synced is when the listing that found the template as described
	// started (the dispatcher's clock).
	Synced time.Time `json:"synced"`
}

// TemplateHeader is the HEADER component of a template.
type TemplateHeader struct {
	// Format is TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION.
	Format string `json:"format"`
	// Params is how many variables a TEXT header has (0 or 1); 0 for the
	// other formats, whose one parameter is the media or the location.
	Params int `json:"params"`
}

// TemplateButton is one button of a template's BUTTONS component.
type TemplateButton struct {
	// Type is Meta's button type: QUICK_REPLY, URL, PHONE_NUMBER, OTP,
	// COPY_CODE, FLOW, ...
	Type string `json:"type"`
	// URLParam says a send must give the button a text parameter (in a
	// DispatchRequest, Template.ButtonURL[index]): a URL button whose url
	// ends in a variable, or an OTP button (the code).
	URLParam bool `json:"url_param,omitempty"`
}

// TemplateDefKey is the record key of a template on TopicTemplates:
// TemplateKey(app, name+"/"+language).
func TemplateDefKey(app, name, language string) []byte {
	return TemplateKey(app, name+"/"+language)
}

// Key returns the record key, see TemplateDefKey.
func (d *TemplateDef) Key() []byte { return TemplateDefKey(d.App, d.Name, d.Language) }

// Validate checks the fields the dispatcher relies on.
func (d *TemplateDef) Validate() error {
	switch {
	case !ValidAppID(d.App):
		return invalid("template: app %q is not a valid app id", d.App)
	case d.WABAID == "":
		return invalid("template: waba_id is required")
	case d.Name == "" || d.Language == "":
		return invalid("template: name and language are required")
	case d.Status == "":
		return invalid("template %s: status is required", d.Name)
	case d.BodyParams < 0:
		return invalid("template %s: body_params %d is negative", d.Name, d.BodyParams)
	case d.Header != nil && (d.Header.Format == "" || d.Header.Params < 0):
		return invalid("template %s: header.format is required and header.params must not be negative", d.Name)
	case d.Synced.IsZero():
		return invalid("template %s: synced is required", d.Name)
	}
	return nil
}

// DecodeTemplateDef decodes and validates a TopicTemplates template record.
func DecodeTemplateDef(b []byte) (*TemplateDef, error) {
	d := new(TemplateDef)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the template, setting V.
func (d *TemplateDef) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}

// TemplateSignal is a record on TopicTemplates with the header HeaderRecord:
// RecordTemplateSignal, key TemplateSignalKey: a template change Meta
// reported by webhook (status, quality or category), written by ingest next
// to the KindTemplate event on TopicEvents. Dispatchers apply a status
// change at once (a PAUSED template stops sending before the next sync) and
// sync the app's templates again. Its key differs from the template's, so
// that compaction keeps both.
type TemplateSignal struct {
	V   int    `json:"v"`
	App string `json:"app"`
	// EventID is the id of the KindTemplate event carrying the same change.
	EventID string `json:"event_id"`
	// Template is the change, as on the event.
	Template TemplateUpdate `json:"template"`
	// Time is when the change happened: Meta's time of the webhook entry
	// (the event's Time), which a retried delivery repeats. Dispatchers
	// order a change and a listing (TemplateDef.Synced) by it.
	Time time.Time `json:"time"`
	// Received is when ingest received the webhook.
	Received time.Time `json:"received"`
}

// TemplateSignalKey is the record key of a TemplateSignal:
// app + "|template-signal:" + name + "/" + language, or
// app + "|template-signal:id:" + templateID when the name or the language
// is not known.
func TemplateSignalKey(app, name, language, templateID string) []byte {
	if name == "" || language == "" {
		return []byte(app + keySep + "template-signal:id:" + templateID)
	}
	return []byte(app + keySep + "template-signal:" + name + "/" + language)
}

// Key returns the record key, see TemplateSignalKey.
func (s *TemplateSignal) Key() []byte {
	return TemplateSignalKey(s.App, s.Template.Name, s.Template.Language, s.Template.TemplateID)
}

// Validate checks the fields the dispatcher relies on.
func (s *TemplateSignal) Validate() error {
	t := &s.Template
	switch {
	case !ValidAppID(s.App):
		return invalid("template signal: app %q is not a valid app id", s.App)
	case t.Field == "":
		return invalid("template signal: template.field is required")
	case (t.Name == "" || t.Language == "") && t.TemplateID == "":
		return invalid("template signal: template.name and template.language, or template.template_id, are required")
	case s.Time.IsZero() || s.Received.IsZero():
		return invalid("template signal: time and received are required")
	}
	return nil
}

// DecodeTemplateSignal decodes and validates a TopicTemplates signal record.
func DecodeTemplateSignal(b []byte) (*TemplateSignal, error) {
	s := new(TemplateSignal)
	if err := decode(b, s, func() int { return s.V }); err != nil {
		return nil, err
	}
	return s, nil
}

// Marshal encodes the signal, setting V.
func (s *TemplateSignal) Marshal() ([]byte, error) {
	s.V = V1
	return json.Marshal(s)
}

// TemplateSignalGrace is how long a template webhook's status outranks a
// listing that disagrees with it: Meta's listing may lag its webhook, and
// a sync started just after a PAUSED webhook must not resume the template.
// A listing started later than this after the webhook is believed.
const TemplateSignalGrace = time.Minute

// MaxTemplateParamChars is Meta's limit on a text parameter
// (TextParameter.text, maxLength 32768).
const MaxTemplateParamChars = 32768

// FieldTemplateStatusUpdate is the webhook field of template status
// changes.
const FieldTemplateStatusUpdate = "message_template_status_update"

// EffectiveStatus is the status of the listed template d given sig, the
// last webhook change of it (nil: none): the listed status, unless a
// status change came later than the listing started, within
// TemplateSignalGrace. Every reader of TopicTemplates decides it so.
func (d *TemplateDef) EffectiveStatus(sig *TemplateSignal) string {
	st := d.Status
	if sig != nil && sig.Template.Field == FieldTemplateStatusUpdate {
		if ns, ok := SignalStatus(sig.Template.Event); ok && !d.Synced.After(sig.Time.Add(TemplateSignalGrace)) {
			st = ns
		}
	}
	return st
}

// SignalStatus maps a status webhook's event to the status it gives the
// template. FLAGGED (quality dropped, still sending) and unknown events
// change nothing; REINSTATED means approved again.
func SignalStatus(event string) (string, bool) {
	switch event {
	case "", "FLAGGED":
		return "", false
	case "REINSTATED":
		return TemplateApproved, true
	}
	return event, true
}

// ParamProblems lists how t's parameters do not fit def, each naming the
// request field: the header's type and count, the body count, the URL
// suffix of every button that takes one (and no other), no empty or
// oversized parameter. Meta does not type body variables (text, currency
// and date_time all fit) and requests carry text, so only body counts are
// checked.
func (def *TemplateDef) ParamProblems(t *Template) []string {
	var out []string
	if def.ParameterFormat == ParamsNamed && (def.BodyParams > 0 || (def.Header != nil && def.Header.Params > 0)) {
		out = append(out, "it uses named parameters ({{name}}), dispatch requests carry positional ones")
	}
	out = append(out, headerProblems(def.Header, t.Header)...)
	if len(t.Body) != def.BodyParams {
		out = append(out, fmt.Sprintf("template.body has %s, the template's body takes %d", params(len(t.Body)), def.BodyParams))
	}
	out = append(out, textProblems("template.body", t.Body)...)
	out = append(out, buttonProblems(def.Buttons, t.ButtonURL)...)
	return out
}

func headerProblems(h *TemplateHeader, given []string) []string {
	switch {
	case h == nil && len(given) > 0:
		return []string{fmt.Sprintf("template.header has %s, the template has no header", params(len(given)))}
	case h == nil:
		return nil
	case h.Format != HeaderText:
		// IMAGE, VIDEO, DOCUMENT, LOCATION: one parameter of that type,
		// which a dispatch request cannot carry.
		return []string{fmt.Sprintf("the template's header is %s: its media or location parameter cannot be given in a dispatch request", h.Format)}
	case len(given) != h.Params:
		return []string{fmt.Sprintf("template.header has %s, the template's TEXT header takes %d", params(len(given)), h.Params)}
	}
	return textProblems("template.header", given)
}

// textProblems reports empty parameters (Meta refuses them) and ones over
// Meta's length limit.
func textProblems(field string, vals []string) []string {
	var out []string
	for i, v := range vals {
		switch n := utf8.RuneCountInString(v); {
		case n == 0:
			out = append(out, fmt.Sprintf("%s[%d] is empty", field, i))
		case n > MaxTemplateParamChars:
			out = append(out, fmt.Sprintf("%s[%d] is %d characters, at most %d", field, i, n, MaxTemplateParamChars))
		}
	}
	return out
}

func buttonProblems(buttons []TemplateButton, given map[int]string) []string {
	var out []string
	for i, b := range buttons {
		v, ok := given[i]
		switch {
		case b.URLParam && !ok:
			out = append(out, fmt.Sprintf("template.button_url[%d] is missing: button %d (%s) takes a URL parameter", i, i, b.Type))
		case b.URLParam && v == "":
			out = append(out, fmt.Sprintf("template.button_url[%d] is empty", i))
		case !b.URLParam && ok:
			out = append(out, fmt.Sprintf("template.button_url[%d] is given, but button %d (%s) takes no URL parameter", i, i, b.Type))
		}
	}
	idx := make([]int, 0, len(given))
	for i := range given {
		if i < 0 || i >= len(buttons) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	for _, i := range idx {
		out = append(out, fmt.Sprintf("template.button_url[%d] is given, but the template has %s", i, plural(len(buttons), "button")))
	}
	return out
}

// params is "1 parameter", "2 parameters".
func params(n int) string { return plural(n, "parameter") }

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
