package schemas

import (
	"encoding/json"
	"time"
)

// ProfileTags is a record on TopicTags: the current tags of one profile, as
// the segmenter holds them after applying the profile's events. TopicTags is
// compacted: the latest record per key is the profile's state, so a reader
// that consumes the topic from the start holds every profile's tags.
// Ingest's getTags reads it; so can any consumer that wants tags without
// asking the segmenter (a CDP sync, a data warehouse).
//
// The segmenter writes a record for a profile after a batch in which its
// tags or default fields changed (register, unregister, tags events, an
// inbound message that changed the profile name); counters and the service
// window change too often to be part of it.
type ProfileTags struct {
	V      int    `json:"v"`
	App    string `json:"app"`
	HWID   string `json:"hwid,omitempty"`
	UserID string `json:"user_id,omitempty"`
	// AnonymousID keys the profile when it has neither hwid nor user id
	// (a Segment anonymousId).
	AnonymousID string `json:"anonymous_id,omitempty"`
	// Registered is false after unregisterDevice (the tags stay).
	Registered bool `json:"registered"`
	// Tags by name: the user's tags (string, number, boolean, or list of
	// strings; dates and versions are strings) and the default tags known
	// (Language, Country, Timezone, Application Version, First Install,
	// Last Application Open).
	Tags map[string]any `json:"tags"`
	// Updated is the time of the latest event applied to the profile.
	Updated time.Time `json:"updated"`
}

// Default tag names in ProfileTags.Tags, as Pushwoosh names them. Dates
// are "YYYY-MM-DD HH:mm" UTC.
const (
	TagLanguage     = "Language"
	TagCountry      = "Country"
	TagTimezone     = "Timezone"
	TagAppVersion   = "Application Version"
	TagFirstInstall = "First Install"
	TagLastAppOpen  = "Last Application Open"
)

// Validate checks the fields consumers rely on.
func (p *ProfileTags) Validate() error {
	switch {
	case !ValidAppID(p.App):
		return invalid("profile tags: app %q is not a valid app id", p.App)
	case p.HWID == "" && p.UserID == "" && p.AnonymousID == "":
		return invalid("profile tags: hwid, user_id or anonymous_id is required")
	}
	return nil
}

// Key returns the record key: the key of the profile's events, see
// ProfileKey.
func (p *ProfileTags) Key() []byte { return ProfileKey(p.App, p.HWID, p.UserID, p.AnonymousID) }

// DecodeProfileTags decodes and validates a TopicTags record value.
func DecodeProfileTags(b []byte) (*ProfileTags, error) {
	p := new(ProfileTags)
	if err := decode(b, p, func() int { return p.V }); err != nil {
		return nil, err
	}
	return p, nil
}

// Marshal encodes the record, setting V.
func (p *ProfileTags) Marshal() ([]byte, error) {
	p.V = V1
	return json.Marshal(p)
}
