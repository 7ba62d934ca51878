package schemas

import (
	"encoding/json"
	"time"
)

// Segment events: the segmenter produces them on TopicEvents, keyed like
// the user's other events, when a profile change moves the user into or out
// of a saved segment. Attributes: "segment" (its name).
const (
	EventSegmentEntered = "PW_SegmentEntered"
	EventSegmentExited  = "PW_SegmentExited"
)

// MaxSegmentName is the longest segment name, in bytes.
const MaxSegmentName = 128

// SegmentDef is a record on TopicSegments (compacted, key SegmentKey): a
// saved segment of an app, its Pushwoosh filter expression (see the
// segmenter's Filter). A record with an empty value (a tombstone) deletes
// the segment.
type SegmentDef struct {
	V    int    `json:"v"`
	App  string `json:"app"`
	Name string `json:"name"`
	// Filter is the filter expression, e.g.
	// Event("OrderPlaced", "cuisine", EQ, "asian") * T("Registered", EQ, true).
	Filter string `json:"filter"`
	// Updated is when it was saved.
	Updated time.Time `json:"updated"`
}

// Validate checks the fields consumers rely on (not the filter: the
// segmenter compiles it).
func (d *SegmentDef) Validate() error {
	switch {
	case !ValidAppID(d.App):
		return invalid("segment: app %q is not a valid app id", d.App)
	case d.Name == "" || len(d.Name) > MaxSegmentName:
		return invalid("segment: name must be 1 to %d bytes", MaxSegmentName)
	case d.Filter == "":
		return invalid("segment: filter is required")
	}
	return nil
}

// SegmentKey is the record key of a segment on TopicSegments.
func SegmentKey(app, name string) []byte { return []byte(app + keySep + name) }

// Key returns the record key, see SegmentKey.
func (d *SegmentDef) Key() []byte { return SegmentKey(d.App, d.Name) }

// DecodeSegmentDef decodes and validates a TopicSegments record value.
func DecodeSegmentDef(b []byte) (*SegmentDef, error) {
	d := new(SegmentDef)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the definition, setting V.
func (d *SegmentDef) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}

// CampaignPreview is a record on TopicPreviews: one partition's count of a
// campaign's audience (Campaign.Preview), written by the segmenter owning
// the partition to partition 0, key CampaignKey. The segment API sums the
// parts of every partition.
type CampaignPreview struct {
	V         int    `json:"v"`
	App       string `json:"app"`
	Campaign  string `json:"campaign"`
	Partition int32  `json:"partition"`
	// Matched profiles match the filter; Sendable of them would get the
	// message; the others are counted by reason.
	Matched      int `json:"matched"`
	Sendable     int `json:"sendable"`
	OptedOut     int `json:"opted_out"`
	NoWhatsApp   int `json:"no_whatsapp"`
	Unregistered int `json:"unregistered"`
	EmptyParam   int `json:"empty_param"`
	// FrequencyCap users reached the per-user cap; QuietHours are in quiet
	// hours under the drop policy; Deferred of the sendable users get the
	// message when their quiet hours end.
	FrequencyCap int `json:"frequency_cap"`
	QuietHours   int `json:"quiet_hours"`
	Deferred     int `json:"deferred"`
	// OutsideWindow of the sendable users are outside the 24-hour service
	// window when their message is due (what matters for utility pricing
	// and the messaging tier).
	OutsideWindow int `json:"outside_window"`
	// ByCountry counts the sendable users by recipient country (ISO
	// 3166-1 alpha-2, "" when unknown: pricing depends on it), and
	// OutsideByCountry those of them outside the service window; the
	// others are inside it. A record without OutsideByCountry (written
	// before it existed) tells no split: readers count all its users as
	// outside.
	ByCountry        map[string]int `json:"by_country"`
	OutsideByCountry map[string]int `json:"outside_by_country"`
	// Category is the template category the partition counted for (Meta
	// prices by it); empty in records written before it existed.
	Category string    `json:"category"`
	Time     time.Time `json:"time"`
}

// Validate checks the fields consumers rely on.
func (p *CampaignPreview) Validate() error {
	if !ValidAppID(p.App) || p.Campaign == "" {
		return invalid("campaign preview: app and campaign are required")
	}
	return nil
}

// DecodeCampaignPreview decodes and validates a TopicPreviews record value.
func DecodeCampaignPreview(b []byte) (*CampaignPreview, error) {
	p := new(CampaignPreview)
	if err := decode(b, p, func() int { return p.V }); err != nil {
		return nil, err
	}
	return p, nil
}

// Marshal encodes the preview, setting V.
func (p *CampaignPreview) Marshal() ([]byte, error) {
	p.V = V1
	return json.Marshal(p)
}
