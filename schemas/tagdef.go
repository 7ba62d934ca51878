package schemas

import (
	"encoding/json"
	"slices"
	"time"
)

// TagMixed is the type of a tag seen with values of more than one type
// (TagDef.Type), which a filter cannot type-check.
const TagMixed = "mixed"

// TagTypes are the tag types a TagDef may carry.
var TagTypes = []string{TagInteger, TagString, TagList, TagDate, TagBoolean, TagDecimal, TagVersion, TagMixed}

// MaxTagName is the longest tag name, in bytes.
const MaxTagName = 128

// TagDef is a record on TopicTagDefs (compacted, key TagDefKey): a tag name
// an app uses and its type. The segment API checks filters against these,
// so that a filter naming a tag no profile has (a typo) or comparing it with
// a value of another type is refused when it is defined, not silently empty
// when it runs.
//
// Two writers, two keys per tag: the segment API writes Declared records
// (Pushwoosh addTag; deleteTag writes a tombstone), and the segmenter a
// seen record the first time one of its profiles gets a tag it has not seen
// (type from the event's tag_types or the value; TagMixed once values of another type were
// seen). A declared type wins over a seen one, whatever the order.
type TagDef struct {
	V        int    `json:"v"`
	App      string `json:"app"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Declared bool   `json:"declared,omitempty"`
	// Updated is when the record was written.
	Updated time.Time `json:"updated"`
}

// Validate checks the fields consumers rely on.
func (d *TagDef) Validate() error {
	switch {
	case !ValidAppID(d.App):
		return invalid("tag definition: app %q is not a valid app id", d.App)
	case d.Name == "" || len(d.Name) > MaxTagName:
		return invalid("tag definition: name must be 1 to %d bytes", MaxTagName)
	case !slices.Contains(TagTypes, d.Type):
		return invalid("tag definition: type %q is not one of %v", d.Type, TagTypes)
	}
	return nil
}

// TagDefKey is the record key of a tag definition on TopicTagDefs: the
// app, "declared" or "seen", and the tag name.
func TagDefKey(app, name string, declared bool) []byte {
	src := "seen"
	if declared {
		src = "declared"
	}
	return []byte(app + keySep + src + keySep + name)
}

// Key returns the record key, see TagDefKey.
func (d *TagDef) Key() []byte { return TagDefKey(d.App, d.Name, d.Declared) }

// DecodeTagDef decodes and validates a TopicTagDefs record value.
func DecodeTagDef(b []byte) (*TagDef, error) {
	d := new(TagDef)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the record, setting V.
func (d *TagDef) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}
