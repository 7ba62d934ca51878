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
