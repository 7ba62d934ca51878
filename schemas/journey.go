package schemas

import (
	"encoding/json"
	"strconv"
	"time"
)

// Journey events: the segmenter produces them on TopicEvents, keyed like
// the user's other events, as a user moves through a journey, so that
// analysts count entries, branches and conversions. Attributes: "journey"
// (its id), "version"; PW_JourneyStep also "step" (the step entered) and
// "from" (the step left, or the branch taken: "timeout", "event", an A/B
// branch name, "yes"/"no"); PW_JourneyExited also "reason" (completed,
// goal, archived, replaced).
const (
	EventJourneyEntered = "PW_JourneyEntered"
	EventJourneyStep    = "PW_JourneyStep"
	EventJourneyExited  = "PW_JourneyExited"
	// EventJourneyStart is what the journey API's startJourney writes for
	// each user it names: the segmenter enters the user into the journey
	// (attribute "journey").
	EventJourneyStart = "PW_JourneyStart"
)

// Journey step types (JourneyStep.Type).
const (
	StepSend         = "send"
	StepWait         = "wait"
	StepWaitEvent    = "wait_event"
	StepSplitSegment = "split_segment"
	StepSplitAB      = "split_ab"
	StepUpdateTags   = "update_tags"
	StepWebhook      = "webhook"
	StepExit         = "exit"
)

// Pseudo-events a wait_event step may wait for, besides any event name:
// the last WhatsApp message of the journey read (its status webhook), any
// WhatsApp reply of the user, or a reply with a button payload
// (JourneyStep.Payload).
const (
	WaitWhatsAppRead   = "whatsapp.read"
	WaitWhatsAppReply  = "whatsapp.reply"
	WaitWhatsAppButton = "whatsapp.button"
)

// Journey re-entry policies (JourneyDef.Reentry).
const (
	// ReentryAfterExit (the default) lets a user enter again once they
	// left the journey.
	ReentryAfterExit = "after_exit"
	// ReentryNever lets a user enter once.
	ReentryNever = "never"
)

// MaxJourneySteps bounds a journey's steps.
const MaxJourneySteps = 100

// JourneyDef is a record on TopicJourneys (compacted, key JourneyKey): one
// version of an app's journey. Saving a journey again writes the next
// version; users who entered an earlier one finish it. Archived stops new
// entries (and, like a newer version, is a record of its own).
type JourneyDef struct {
	V       int    `json:"v"`
	App     string `json:"app"`
	ID      string `json:"id"`
	Version int    `json:"version"`
	Name    string `json:"name,omitempty"`
	// Entry says how users enter.
	Entry JourneyEntry `json:"entry"`
	// Goal, when set, ends the journey for a user as soon as they do the
	// event (a conversion).
	Goal *JourneyGoal `json:"goal,omitempty"`
	// Reentry is ReentryAfterExit (default) or ReentryNever.
	Reentry string `json:"reentry,omitempty"`
	// FrequencyCap bounds the journey's messages to one user: at most Max
	// in any PeriodSeconds; a send past it is skipped (counted) and the
	// journey goes on.
	FrequencyCap *FrequencyCap `json:"frequency_cap,omitempty"`
	// QuietHours ("HH:mm" in the user's timezone, UTC when unknown) hold
	// the journey's sends (authentication templates excepted) until they
	// end.
	QuietHours *QuietHours `json:"quiet_hours,omitempty"`
	// Sender is the WhatsApp phone-number id the journey's WhatsApp
	// messages come from (the journey API sets the app's default).
	Sender string `json:"sender,omitempty"`
	// Steps run from the first; each names the next by id.
	Steps []JourneyStep `json:"steps"`
	// Archived: no new entries.
	Archived bool      `json:"archived,omitempty"`
	Updated  time.Time `json:"updated"`
}

// JourneyEntry is how users enter a journey: on an event (with a filter
// over the profile the event updated, in the segment language), on an
// inbound WhatsApp message whose first word is Keyword, when they enter a
// saved segment, or through the API (startJourney). At least one.
type JourneyEntry struct {
	Event   string `json:"event,omitempty"`
	Filter  string `json:"filter,omitempty"`
	Keyword string `json:"keyword,omitempty"`
	Segment string `json:"segment,omitempty"`
	API     bool   `json:"api,omitempty"`
}

// JourneyGoal is a journey's conversion event.
type JourneyGoal struct {
	Event string `json:"event"`
}

// QuietHours are local times of day between which nothing is sent.
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// JourneyStep is one step of a journey. Which fields apply depends on Type:
//
//	send           Channel (whatsapp, email, push) and its message: Template
//	               or Text (WhatsApp; text only inside the 24-hour
//	               window), Email, Push; then Next
//	wait           Duration ("90m", "1h", "2d"), or UntilTime ("09:00",
//	               with optional Weekdays) in the user's timezone, or
//	               UntilTag (a date tag); then Next
//	wait_event     Event (an event name or a WaitWhatsApp* pseudo-event;
//	               MatchSend: only feedback on the journey's last send;
//	               Payload for whatsapp.button) for at most Timeout; then
//	               OnEvent or OnTimeout
//	split_segment  Filter (segment language) on the profile: Yes or No
//	split_ab       Branches with percentages summing to 100, fixed per
//	               user
//	update_tags    Tags set on the profile; then Next
//	webhook        a signed JSON POST of Body (string values may use
//	               placeholders) and the user's identity to URL (https,
//	               or http to loopback), through the dispatcher; then Next
//	exit           the end
//
// Template, Text, Email and Push bodies may use {{tag:NAME|fallback}} and
// {{profile_name}}.
type JourneyStep struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Next string `json:"next,omitempty"`

	Channel  Channel       `json:"channel,omitempty"`
	Template *Template     `json:"template,omitempty"`
	Text     string        `json:"text,omitempty"`
	Email    *JourneyEmail `json:"email,omitempty"`
	Push     *JourneyPush  `json:"push,omitempty"`

	Duration  string   `json:"duration,omitempty"`
	UntilTime string   `json:"until_time,omitempty"`
	Weekdays  []string `json:"weekdays,omitempty"`
	UntilTag  string   `json:"until_tag,omitempty"`

	Event     string `json:"event,omitempty"`
	MatchSend bool   `json:"match_send,omitempty"`
	Payload   string `json:"payload,omitempty"`
	Timeout   string `json:"timeout,omitempty"`
	OnEvent   string `json:"on_event,omitempty"`
	OnTimeout string `json:"on_timeout,omitempty"`

	Filter string `json:"filter,omitempty"`
	Yes    string `json:"yes,omitempty"`
	No     string `json:"no,omitempty"`

	Branches []JourneyBranch `json:"branches,omitempty"`

	Tags map[string]any `json:"tags,omitempty"`

	URL  string         `json:"url,omitempty"`
	Body map[string]any `json:"body,omitempty"`
}

// JourneyEmail is a send step's email.
type JourneyEmail struct {
	Subject string `json:"subject"`
	Text    string `json:"text,omitempty"`
	HTML    string `json:"html,omitempty"`
}

// JourneyPush is a send step's push notification.
type JourneyPush struct {
	Title string            `json:"title"`
	Body  string            `json:"body"`
	Data  map[string]string `json:"data,omitempty"`
}

// JourneyBranch is one branch of an A/B/n split.
type JourneyBranch struct {
	Name    string `json:"name,omitempty"`
	Percent int    `json:"percent"`
	Next    string `json:"next"`
}

// JourneyKey is the record key of a journey version on TopicJourneys.
func JourneyKey(app, id string, version int) []byte {
	return []byte(app + keySep + id + keySep + strconv.Itoa(version))
}

// Key returns the record key, see JourneyKey.
func (d *JourneyDef) Key() []byte { return JourneyKey(d.App, d.ID, d.Version) }

// Validate checks the fields consumers rely on; the segmenter checks the
// steps (reachability, edges, channels, splits) when it compiles them.
func (d *JourneyDef) Validate() error {
	switch {
	case !ValidAppID(d.App):
		return invalid("journey: app %q is not a valid app id", d.App)
	case d.ID == "" || len(d.ID) > 128:
		return invalid("journey: id must be 1 to 128 bytes")
	case d.Version < 1:
		return invalid("journey: version must be at least 1")
	case len(d.Steps) == 0 && !d.Archived:
		return invalid("journey: steps are required")
	case len(d.Steps) > MaxJourneySteps:
		return invalid("journey: %d steps, at most %d", len(d.Steps), MaxJourneySteps)
	}
	return nil
}

// DecodeJourneyDef decodes and validates a TopicJourneys record value.
func DecodeJourneyDef(b []byte) (*JourneyDef, error) {
	d := new(JourneyDef)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the record, setting V.
func (d *JourneyDef) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}
