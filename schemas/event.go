package schemas

import (
	"encoding/json"
	"time"
)

// EventKind says which of the optional parts of an Event are set.
type EventKind string

// Event kinds.
const (
	// KindRegister registers a subscriber (Pushwoosh registerDevice): HWID,
	// DeviceType and the optional UserID, Language, Timezone, Country, Tags.
	KindRegister EventKind = "register"
	// KindUnregister removes a subscriber (Pushwoosh unregisterDevice).
	KindUnregister EventKind = "unregister"
	// KindTags sets tags on a subscriber (Pushwoosh setTags): Tags.
	KindTags EventKind = "tags"
	// KindEvent is a custom or default event (Pushwoosh postEvent): Name and
	// Attributes.
	KindEvent EventKind = "event"
	// KindInbound is a message a user sent to a business WhatsApp number:
	// Name is EventWhatsAppReceived and Inbound is set.
	KindInbound EventKind = "inbound"
	// KindStatus is a delivery status of a message Herald sent: Status is set.
	KindStatus EventKind = "status"
)

// Default event names, as Pushwoosh names them.
const (
	EventDeviceRegistered   = "PW_DeviceRegistered"
	EventDeviceUnregistered = "PW_DeviceUnregistered"
	EventApplicationOpen    = "PW_ApplicationOpen"
	EventScreenOpen         = "PW_ScreenOpen"
	EventInAppPurchase      = "PW_InAppPurchase"
	EventWhatsAppReceived   = "PW_WhatsAppReceived"
	EventWhatsAppStatus     = "PW_WhatsAppStatus"
)

// Device types, as Pushwoosh numbers them.
const (
	DeviceIOS      = 1
	DeviceAndroid  = 3
	DeviceEmail    = 14
	DeviceSMS      = 18
	DeviceWhatsApp = 21
)

// Event is a record on TopicEvents: something a user did or that happened to
// a user, as ingest accepted it.
type Event struct {
	V int `json:"v"`
	// ID is unique per event; producers set it (ingest uses 128 random bits,
	// hex). Consumers deduplicate on it.
	ID   string    `json:"id"`
	App  string    `json:"app"`
	Kind EventKind `json:"kind"`
	// Name is the event name: a default one (PW_...) or a custom one.
	Name string `json:"name,omitempty"`
	// Time is when the event happened (the producer's timestampUTC, Meta's
	// timestamp), UTC.
	Time time.Time `json:"time"`
	// Received is when ingest accepted it, UTC.
	Received time.Time `json:"received"`

	// HWID is the device id: "whatsapp:+E164" for WhatsApp subscribers.
	HWID   string `json:"hwid,omitempty"`
	UserID string `json:"user_id,omitempty"`

	DeviceType int    `json:"device_type,omitempty"`
	Language   string `json:"language,omitempty"`
	Timezone   string `json:"timezone,omitempty"`
	// Country is the ISO 3166-1 alpha-2 code, derived from the phone number
	// for WhatsApp and SMS subscribers.
	Country string `json:"country,omitempty"`

	// Tags are set by KindRegister and KindTags: name to value (string,
	// number, bool, list of strings, or null to remove the tag).
	Tags map[string]any `json:"tags,omitempty"`
	// Attributes are the event attributes of KindEvent.
	Attributes map[string]any `json:"attributes,omitempty"`

	Inbound *Inbound `json:"inbound,omitempty"`
	Status  *Status  `json:"status,omitempty"`
}

// Inbound is a WhatsApp message a user sent (Meta webhook
// entry[].changes[].value.messages[]).
type Inbound struct {
	// PhoneNumberID is the business number that received it; replies are
	// sent from it.
	PhoneNumberID string `json:"phone_number_id"`
	// From is the sender's number, E.164 with the plus sign.
	From string `json:"from"`
	// WAMID is Meta's message id.
	WAMID string `json:"wamid"`
	// Type is Meta's message type: text, button, interactive, image, ...
	Type string `json:"type"`
	// Text is the body of a text message or the payload/title of a reply.
	Text        string `json:"text,omitempty"`
	ProfileName string `json:"profile_name,omitempty"`
	// ContextID is the wamid of the message this one replies to.
	ContextID string `json:"context_id,omitempty"`
}

// Status is a status of a message Herald sent (Meta webhook
// entry[].changes[].value.statuses[]).
type Status struct {
	PhoneNumberID string `json:"phone_number_id"`
	WAMID         string `json:"wamid"`
	// Status is sent, delivered, read or failed.
	Status string `json:"status"`
	// Recipient is the recipient's number, E.164 with the plus sign.
	Recipient string `json:"recipient"`
	// DispatchID is the DispatchRequest.ID echoed back by Meta in
	// biz_opaque_callback_data; empty for messages Herald did not send.
	DispatchID string `json:"dispatch_id,omitempty"`
	// PricingCategory is Meta's pricing.category (marketing, utility,
	// authentication, service, ...), when given.
	PricingCategory string `json:"pricing_category,omitempty"`
	Billable        bool   `json:"billable,omitempty"`
	ErrorCode       int    `json:"error_code,omitempty"`
	ErrorTitle      string `json:"error_title,omitempty"`
}

// Validate checks the fields every consumer relies on.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return invalid("event: id is required")
	case !ValidAppID(e.App):
		return invalid("event: app %q is not a valid app id", e.App)
	case e.Time.IsZero():
		return invalid("event: time is required")
	case e.HWID == "" && e.UserID == "":
		return invalid("event: hwid or user_id is required")
	}
	switch e.Kind {
	case KindRegister, KindUnregister, KindTags:
	case KindEvent:
		if e.Name == "" {
			return invalid("event: name is required for kind %q", e.Kind)
		}
	case KindInbound:
		if e.Inbound == nil || e.Inbound.From == "" || e.Inbound.PhoneNumberID == "" {
			return invalid("event: inbound.from and inbound.phone_number_id are required for kind inbound")
		}
	case KindStatus:
		if e.Status == nil || e.Status.WAMID == "" || e.Status.Status == "" {
			return invalid("event: status.wamid and status.status are required for kind status")
		}
	default:
		return invalid("event: unknown kind %q", e.Kind)
	}
	return nil
}

// Key returns the record key of the event, see EventKey.
func (e *Event) Key() []byte { return EventKey(e.App, e.HWID, e.UserID) }

// DecodeEvent decodes and validates a TopicEvents record value.
func DecodeEvent(b []byte) (*Event, error) {
	e := new(Event)
	if err := decode(b, e, func() int { return e.V }); err != nil {
		return nil, err
	}
	return e, nil
}

// Marshal encodes the event, setting V.
func (e *Event) Marshal() ([]byte, error) {
	e.V = V1
	return json.Marshal(e)
}
