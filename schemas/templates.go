package schemas

import (
	"encoding/json"
	"time"
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
