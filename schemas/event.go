package schemas

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
	// KindAlias says that PreviousID (an earlier user id or anonymous id)
	// and UserID are the same user (Segment alias).
	KindAlias EventKind = "alias"
	// KindTemplate is a change of a WhatsApp message template (Meta webhook
	// fields message_template_status_update, message_template_quality_update,
	// template_category_update): Template is set. It concerns no user: HWID,
	// UserID and AnonymousID are empty and the record key is the template's.
	KindTemplate EventKind = "template"
	// KindCampaign is one partition's share of a targeted campaign
	// (Campaign): the segmenter that owns the partition sends to the
	// matching users of its profiles. The segment API writes one record per
	// partition of TopicEvents, keyed CampaignKey, partition set explicitly.
	KindCampaign EventKind = "campaign"
	// KindSweep is one partition's share of a re-evaluation of saved
	// segments over every profile (Sweep): after a segment is saved or
	// deleted (the segment API writes one per partition, keyed SweepKey),
	// and periodically for segments whose filters read the clock ("last
	// seen more than 30 days ago" changes without any event; each
	// segmenter writes them for the partitions it owns).
	KindSweep EventKind = "sweep"
	// KindTick wakes the segmenter owning its partition to fire the
	// journey timers that came due there (each owner writes them for its
	// partitions while timers are due). It concerns no user and no app:
	// App is TickApp.
	KindTick EventKind = "tick"
	// KindMerge is one step of joining two profiles of one user (Merge),
	// written by segmenters only: when an alias or an event carrying both a
	// user id and an anonymous id names an earlier profile, its owner hands
	// that profile over to the user's, and forwards the earlier id's later
	// events. Key: Merge.Key.
	KindMerge EventKind = "merge"
)

// TickApp is the app of KindTick events.
const TickApp = "_herald"

// TickKey is the record key of a KindTick event.
func TickKey() []byte { return []byte(TickApp + keySep + "tick") }

// Kinds lists every EventKind.
var Kinds = []EventKind{KindRegister, KindUnregister, KindTags, KindEvent, KindInbound, KindStatus, KindAlias, KindTemplate, KindCampaign, KindSweep, KindTick, KindMerge}

// Default event names, as Pushwoosh names them.
const (
	EventDeviceRegistered   = "PW_DeviceRegistered"
	EventDeviceUnregistered = "PW_DeviceUnregistered"
	EventApplicationOpen    = "PW_ApplicationOpen"
	EventScreenOpen         = "PW_ScreenOpen"
	EventInAppPurchase      = "PW_InAppPurchase"
	EventWhatsAppReceived   = "PW_WhatsAppReceived"
	EventWhatsAppStatus     = "PW_WhatsAppStatus"
	// EventPageView is a web page view (Segment page); EventScreenOpen is
	// used for Segment screen.
	EventPageView = "PW_PageView"
	// EventGroup associates a user with a group or account (Segment group).
	EventGroup = "PW_Group"
	// EventUserRegistered is Pushwoosh registerUser: a user id bound to a
	// device.
	EventUserRegistered = "PW_UserRegistered"
	// EventEmailOpened, EventEmailClicked and EventEmailUnsubscribed are
	// produced by ingest's tracking links in the emails the dispatcher
	// sends (internal/track): the open pixel, a rewritten link, the
	// List-Unsubscribe link. Attributes: dispatch_id, source_kind,
	// source_name, and url for clicks.
	EventEmailOpened       = "PW_EmailOpened"
	EventEmailClicked      = "PW_EmailClicked"
	EventEmailUnsubscribed = "PW_EmailUnsubscribed"
	// EventPushOpened is posted by the app (postEvent) when the user opens
	// a push notification, with the notification's herald_dispatch_id
	// data value as the attribute dispatch_id.
	EventPushOpened = "PW_PushOpened"
)

// Tag types, as Pushwoosh names them (Event.TagTypes).
const (
	TagInteger = "integer"
	TagString  = "string"
	TagList    = "list"
	// TagDate values are strings in RFC 3339, UTC ("2026-11-24T10:30:00Z").
	TagDate    = "date"
	TagBoolean = "boolean"
	TagDecimal = "decimal"
	// TagVersion values are strings of dot-separated numbers ("1.2.3").
	TagVersion = "version"
)

// Tag operations (Event.TagOps). A tag without an operation is set to its
// value (null removes it).
const (
	// OpIncrement adds the (integer or decimal) value to the tag; an unset
	// tag counts as 0.
	OpIncrement = "increment"
	// OpAppend adds the list's items that the tag does not hold yet.
	OpAppend = "append"
	// OpRemove removes the list's items from the tag.
	OpRemove = "remove"
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
	// AnonymousID is a CDP's id of a user not known yet (Segment
	// anonymousId); it identifies the user when HWID and UserID are empty.
	AnonymousID string `json:"anonymous_id,omitempty"`
	// PreviousID is, for KindAlias, the earlier id now known as UserID.
	PreviousID string `json:"previous_id,omitempty"`

	DeviceType int    `json:"device_type,omitempty"`
	Language   string `json:"language,omitempty"`
	Timezone   string `json:"timezone,omitempty"`
	// Country is the ISO 3166-1 alpha-2 code, derived from the phone number
	// for WhatsApp and SMS subscribers.
	Country string `json:"country,omitempty"`
	// Email is the address of an email subscriber (device type 14),
	// lowercased; PushToken the token of a push device (1, 3).
	Email     string `json:"email,omitempty"`
	PushToken string `json:"push_token,omitempty"`
	// AppVersion is the application version the device reports
	// (Pushwoosh's "Application Version" default tag).
	AppVersion string `json:"app_version,omitempty"`

	// Tags are set by KindRegister and KindTags: name to value (string,
	// number, bool, list of strings, or null to remove the tag).
	Tags map[string]any `json:"tags,omitempty"`
	// TagTypes gives the Pushwoosh type (TagInteger, ...) of tags in Tags,
	// when the producer knows it; consumers infer the others from the JSON
	// value.
	TagTypes map[string]string `json:"tag_types,omitempty"`
	// TagOps gives the operation (OpIncrement, OpAppend, OpRemove) of tags
	// in Tags that are not simply set.
	TagOps map[string]string `json:"tag_ops,omitempty"`
	// Attributes are the event attributes of KindEvent.
	Attributes map[string]any `json:"attributes,omitempty"`
	// AttrList, when not nil, holds the attributes instead of Attributes
	// (which is then nil): DecodeEventAttrs decoded the event. Read
	// either form with Attr and AttrMap; Marshal encodes either.
	AttrList []Attr `json:"-"`
	// Context is what the producer said of its environment (Segment
	// context: ip, library, locale, page, ...).
	Context map[string]any `json:"context,omitempty"`

	Inbound  *Inbound        `json:"inbound,omitempty"`
	Status   *Status         `json:"status,omitempty"`
	Template *TemplateUpdate `json:"template,omitempty"`
	Campaign *Campaign       `json:"campaign,omitempty"`
	Sweep    *Sweep          `json:"sweep,omitempty"`
	Merge    *Merge          `json:"merge,omitempty"`
}

// Merge steps.
const (
	// MergePull asks the owner of From for its profile (key From).
	MergePull = "pull"
	// MergePush hands From's profile to the owner of Into (key Into).
	MergePush = "push"
	// MergeDone tells the owner of From that Into holds its data now (key
	// From): From keeps only its forwarding to Into.
	MergeDone = "done"
)

// Merge is a KindMerge event: one step of identity resolution between two
// profiles of one app, named by their profile keys (ProfileKey).
type Merge struct {
	Step string `json:"step"`
	// From is the earlier profile (an anonymous id's, or an earlier user
	// id's); Into the user's.
	From string `json:"from"`
	Into string `json:"into"`
	// Profile is, for MergePush, From's profile in the segmenter's own
	// binary encoding (opaque to other readers); empty when From had none.
	Profile []byte `json:"profile,omitempty"`
}

// Key is the record key of the merge step: From for pull and done, Into for
// push.
func (m *Merge) Key() []byte {
	if m.Step == MergePush {
		return []byte(m.Into)
	}
	return []byte(m.From)
}

// Sweep is a KindSweep event's re-evaluation.
type Sweep struct {
	// Segment names the saved segment to evaluate on every profile;
	// empty: every segment of the app whose filter reads the clock.
	Segment string `json:"segment,omitempty"`
	// Filter is the segment's filter as saved, so that a segmenter that
	// has not read the definition from TopicSegments yet evaluates the
	// right one; empty with Segment set: the segment was deleted, and the
	// profiles drop its membership (without exit events).
	Filter string `json:"filter,omitempty"`
}

// SweepKey is the record key of a KindSweep event.
func SweepKey(app, segment string) []byte { return []byte(app + keySep + "sweep:" + segment) }

// Campaign is a targeted WhatsApp template campaign (Pushwoosh
// createTargetedMessage): a template to the users a filter selects.
type Campaign struct {
	// ID identifies the campaign; dispatch ids derive from it and the
	// recipient, so a re-run sends nothing new.
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Filter is a segment filter expression (the segmenter's language).
	Filter string `json:"filter"`
	// Sender is the WhatsApp phone-number id to send from.
	Sender string `json:"sender"`
	// Template is sent to each recipient; its body, header and button
	// parameters may hold the placeholders {{tag:NAME}} and
	// {{profile_name}}, each with a "|fallback".
	Template Template `json:"template"`
	// SendAt is when to send (zero: now). With LocalTime it gives only the
	// date: each user gets the message at LocalTime ("HH:mm") of that date
	// in their own timezone (UTC when unknown).
	SendAt    time.Time `json:"send_at,omitzero"`
	LocalTime string    `json:"local_time,omitempty"`
	// Preview counts the audience instead of sending: each partition's
	// owner writes a CampaignPreview to TopicPreviews.
	Preview bool `json:"preview,omitempty"`
	// FrequencyCap, when set, skips the users who got Max campaign
	// messages (any campaign, any category) in the PeriodSeconds before
	// this one's send time; the segmenter's global marketing cap applies
	// too.
	FrequencyCap *FrequencyCap `json:"frequency_cap,omitempty"`
}

// MaxFrequencyCap is the largest FrequencyCap.Max: the segmenter
// remembers the latest 32 campaign messages of each user.
const MaxFrequencyCap = 32

// FrequencyCap is a campaign's own per-user cap.
type FrequencyCap struct {
	Max           int   `json:"max"`
	PeriodSeconds int64 `json:"period_seconds"`
}

// CampaignKey is the record key of a KindCampaign event.
func CampaignKey(app, id string) []byte { return []byte(app + keySep + "campaign:" + id) }

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
	// Payload is the id of a reply: button payload, interactive button or
	// list row id.
	Payload string `json:"payload,omitempty"`
	// Media is set for image, audio, video, document and sticker messages.
	Media *Media `json:"media,omitempty"`
	// Location is set for location messages.
	Location *Location `json:"location,omitempty"`
	// Contacts are the shared contacts of a contacts message.
	Contacts []Contact `json:"contacts,omitempty"`
	// Reaction is set for reaction messages.
	Reaction *Reaction `json:"reaction,omitempty"`
	// ErrorCode and ErrorTitle are set for unsupported messages.
	ErrorCode  int    `json:"error_code,omitempty"`
	ErrorTitle string `json:"error_title,omitempty"`
}

// Media of an inbound message; ID is Meta's media id, fetched through the
// Graph API.
type Media struct {
	ID       string `json:"id"`
	MimeType string `json:"mime_type,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// Location of an inbound location message.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	URL       string  `json:"url,omitempty"`
}

// Contact is one shared contact.
type Contact struct {
	Name string `json:"name,omitempty"`
	// Phones are the contact's numbers as sent (not normalised).
	Phones []string `json:"phones,omitempty"`
}

// Reaction of an inbound reaction message: Emoji is empty when the
// reaction was removed.
type Reaction struct {
	MessageID string `json:"message_id"`
	Emoji     string `json:"emoji,omitempty"`
}

// TemplateUpdate is a change of a message template reported by Meta.
type TemplateUpdate struct {
	// Field is the webhook field: message_template_status_update,
	// message_template_quality_update or template_category_update.
	Field string `json:"field"`
	// WABAID is the WhatsApp Business Account the template belongs to.
	WABAID     string `json:"waba_id,omitempty"`
	TemplateID string `json:"template_id,omitempty"`
	Name       string `json:"name,omitempty"`
	Language   string `json:"language,omitempty"`
	// Event is the new status (APPROVED, REJECTED, PAUSED, DISABLED, ...)
	// for status updates.
	Event string `json:"event,omitempty"`
	// Reason is Meta's reason for a status update, when given.
	Reason string `json:"reason,omitempty"`
	// Quality is the new quality score (GREEN, YELLOW, RED) for quality
	// updates.
	Quality string `json:"quality,omitempty"`
	// Category is the new category for category updates.
	Category string `json:"category,omitempty"`
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
	// PricingModel is Meta's pricing.pricing_model (PMP, CBP) and
	// PricingType its pricing.type (regular, free_customer_service,
	// free_entry_point), when given.
	PricingModel string `json:"pricing_model,omitempty"`
	PricingType  string `json:"pricing_type,omitempty"`
	// ConversationID and ConversationOrigin are Meta's conversation.id and
	// conversation.origin.type, when given.
	ConversationID     string `json:"conversation_id,omitempty"`
	ConversationOrigin string `json:"conversation_origin,omitempty"`
	// ErrorCode, ErrorTitle, ErrorMessage and ErrorDetails are the first of
	// Meta's errors[] of a failed status.
	ErrorCode    int    `json:"error_code,omitempty"`
	ErrorTitle   string `json:"error_title,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	ErrorDetails string `json:"error_details,omitempty"`
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
	case e.Kind == KindTemplate:
		if e.Template == nil || e.Template.Field == "" || (e.Template.Name == "" && e.Template.TemplateID == "") {
			return invalid("event: template.field and template.name or template.template_id are required for kind template")
		}
		return nil
	case e.Kind == KindSweep:
		if e.Sweep == nil {
			return invalid("event: sweep is required for kind sweep")
		}
		return nil
	case e.Kind == KindTick:
		return nil
	case e.Kind == KindMerge:
		m := e.Merge
		if m == nil || m.From == "" || m.Into == "" || m.From == m.Into {
			return invalid("event: merge.from and merge.into, two different profile keys, are required for kind merge")
		}
		if m.Step != MergePull && m.Step != MergePush && m.Step != MergeDone {
			return invalid("event: merge.step %q: want pull, push or done", m.Step)
		}
		return nil
	case e.Kind == KindCampaign:
		if c := e.Campaign; c == nil || c.ID == "" || c.Filter == "" || c.Sender == "" || c.Template.Name == "" || c.Template.Language == "" {
			return invalid("event: campaign.id, filter, sender, template.name and template.language are required for kind campaign")
		}
		if fc := e.Campaign.FrequencyCap; fc != nil && (fc.Max < 1 || fc.Max > MaxFrequencyCap || fc.PeriodSeconds < 1) {
			return invalid("event: campaign.frequency_cap needs max 1 to %d and a positive period_seconds", MaxFrequencyCap)
		}
		return nil
	case e.HWID == "" && e.UserID == "" && e.AnonymousID == "":
		return invalid("event: hwid, user_id or anonymous_id is required")
	}
	for name, op := range e.TagOps {
		switch op {
		case OpIncrement, OpAppend, OpRemove:
		default:
			return invalid("event: tag_ops.%s: unknown operation %q", name, op)
		}
	}
	switch e.Kind {
	case KindRegister, KindUnregister, KindTags:
	case KindAlias:
		if e.UserID == "" || e.PreviousID == "" {
			return invalid("event: user_id and previous_id are required for kind alias")
		}
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

// Key returns the record key of the event, see EventKey; a template update's
// is TemplateKey.
func (e *Event) Key() []byte {
	if e.Kind == KindCampaign && e.Campaign != nil {
		return CampaignKey(e.App, e.Campaign.ID)
	}
	if e.Kind == KindSweep && e.Sweep != nil {
		return SweepKey(e.App, e.Sweep.Segment)
	}
	if e.Kind == KindTick {
		return TickKey()
	}
	if e.Kind == KindMerge && e.Merge != nil {
		return e.Merge.Key()
	}
	if e.Kind == KindTemplate && e.Template != nil {
		id := e.Template.Name
		if id == "" {
			id = e.Template.TemplateID
		}
		return TemplateKey(e.App, id)
	}
	return ProfileKey(e.App, e.HWID, e.UserID, e.AnonymousID)
}

// DecodeEvent decodes and validates a TopicEvents record value.
//
// It decodes the common shapes with a fast path (event_decode.go) and the
// rest with encoding/json, with the same results and errors either way.
func DecodeEvent(b []byte) (*Event, error) { return decodeValidEvent(b, decodeEventFast) }

// DecodeEventShared is DecodeEvent with the event's strings sharing one
// copy of b where they can (the fast path's values without escapes): one
// allocation per event instead of one per string, for a caller that drops
// the strings of an event together, as the analytics sink does once their
// rows are inserted. A caller that keeps some of them for long (the
// segmenter's state) would keep the whole value alive with each: it uses
// DecodeEvent.
func DecodeEventShared(b []byte) (*Event, error) { return decodeValidEvent(b, decodeEventSharedFast) }

// DecodeEventAttrs is DecodeEvent for a consumer that reads the attributes
// by name or in name order, the segmenter: where the fast path decodes the
// event, the attributes go into AttrList, sorted, and Attributes is left
// nil. That spares a map and a boxed value per attribute (an event's
// attributes were 40% of its decoding). An event the fast path leaves to
// encoding/json has Attributes as DecodeEvent gives them.
func DecodeEventAttrs(b []byte) (*Event, error) { return decodeValidEvent(b, decodeEventAttrsFast) }

// Attr is an event attribute in AttrList. A string, number or bool is in
// Str, Num or Bool; any other value (an array, an object, null) is in Any,
// as encoding/json decodes it into an any.
type Attr struct {
	Name string
	Kind AttrKind
	Bool bool
	Str  string
	Num  float64
	Any  any
}

// AttrKind is the JSON type of an Attr.
type AttrKind uint8

// Attribute kinds.
const (
	AttrString AttrKind = iota + 1
	AttrNumber
	AttrBool
	AttrOther // an array, an object or null
)

// Value is a's value as it would be in Attributes.
func (a *Attr) Value() any {
	switch a.Kind {
	case AttrString:
		return a.Str
	case AttrNumber:
		return a.Num
	case AttrBool:
		return a.Bool
	}
	return a.Any
}

// Attr returns the attribute name, from whichever form e holds.
func (e *Event) Attr(name string) (any, bool) {
	if e.AttrList == nil {
		v, ok := e.Attributes[name]
		return v, ok
	}
	i, ok := slices.BinarySearchFunc(e.AttrList, name, func(a Attr, name string) int { return strings.Compare(a.Name, name) })
	if !ok {
		return nil, false
	}
	return e.AttrList[i].Value(), true
}

// AttrMap returns the attributes as a map: Attributes, or a new map of
// AttrList.
func (e *Event) AttrMap() map[string]any {
	if e.AttrList == nil {
		return e.Attributes
	}
	m := make(map[string]any, len(e.AttrList))
	for i := range e.AttrList {
		m[e.AttrList[i].Name] = e.AttrList[i].Value()
	}
	return m
}

func decodeValidEvent(b []byte, fast func([]byte, *Event) bool) (*Event, error) {
	e := new(Event)
	if err := fastOrJSON(b, e, fast); err != nil {
		return nil, fmt.Errorf("%w: decoding json: %v", ErrInvalid, err)
	}
	if e.V != V1 {
		return nil, fmt.Errorf("%w: got v=%d, want %d", ErrVersion, e.V, V1)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// Marshal encodes the event, setting V.
func (e *Event) Marshal() ([]byte, error) {
	e.V = V1
	if e.Attributes == nil && len(e.AttrList) > 0 {
		c := *e
		c.Attributes = e.AttrMap()
		return json.Marshal(&c)
	}
	return json.Marshal(e)
}
