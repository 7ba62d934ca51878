package segmenter

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/jsonenc"
	"github.com/heraldhq/herald/schemas"
)

// appendTagsRecord appends p's TopicTags record value, identified by e, the
// latest event applied: byte for byte what p.tagsRecord(e).Marshal()
// produces (TestAppendTagsRecord compares them), without building the
// record's map or going through reflection. sc is scratch space.
func appendTagsRecord(b []byte, sc *tagScratch, p *Profile, e *schemas.Event) []byte {
	pt := schemas.ProfileTags{App: e.App, HWID: e.HWID, UserID: e.UserID}
	if pt.HWID == "" && pt.UserID == "" {
		pt.AnonymousID = e.AnonymousID
	} else if pt.UserID == "" {
		pt.UserID = p.UserID
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, schemas.V1, 10)
	b = append(b, `,"app":`...)
	b = appendJSONString(b, pt.App)
	if pt.HWID != "" {
		b = append(b, `,"hwid":`...)
		b = appendJSONString(b, pt.HWID)
	}
	if pt.UserID != "" {
		b = append(b, `,"user_id":`...)
		b = appendJSONString(b, pt.UserID)
	}
	if pt.AnonymousID != "" {
		b = append(b, `,"anonymous_id":`...)
		b = appendJSONString(b, pt.AnonymousID)
	}
	b = append(b, `,"registered":`...)
	b = strconv.AppendBool(b, p.Registered)
	b = append(b, `,"tags":{`...)

	// The profile's own tags, then the default tags it has no tag of its
	// own for, in one list sorted by name (encoding/json writes map keys
	// sorted): one pass over the tags, no lookup by name after it.
	tags := p.Tags()
	fields, vals := sc.fields[:0], sc.vals[:0]
	for name, t := range tags {
		fields = append(fields, tagField{name: name, i: int32(len(vals))})
		vals = append(vals, t)
	}
	var lastOpen string
	if c, ok := p.Event(schemas.EventApplicationOpen); ok {
		lastOpen = pushwooshDate(c.Last)
	}
	defaults := [...]struct{ name, v string }{
		{schemas.TagLanguage, p.Language},
		{schemas.TagCountry, p.Country},
		{schemas.TagTimezone, p.Timezone},
		{schemas.TagAppVersion, p.AppVersion},
		{schemas.TagFirstInstall, pushwooshDate(p.FirstInstall)},
		{schemas.TagLastAppOpen, lastOpen},
	}
	for i, d := range defaults {
		if _, own := tags[d.name]; !own && d.v != "" {
			fields = append(fields, tagField{name: d.name, i: -int32(i) - 1})
		}
	}
	slices.SortFunc(fields, func(x, y tagField) int { return strings.Compare(x.name, y.name) })
	for i := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		f := fields[i]
		b = appendJSONString(b, f.name)
		b = append(b, ':')
		if f.i >= 0 {
			b = appendTagJSON(b, vals[f.i])
		} else {
			b = appendJSONString(b, defaults[-f.i-1].v)
		}
	}
	clear(fields) // the scratch keeps no strings alive
	clear(vals)
	sc.fields, sc.vals = fields, vals
	b = append(b, `},"updated":`...)
	b = appendJSONTime(b, p.LastSeen)
	return append(b, '}')
}

// tagScratch is appendTagsRecord's scratch space: the record's tag fields
// and the values of the profile's own tags among them.
type tagScratch struct {
	fields []tagField
	vals   []Tag
}

// tagField is one field of a TopicTags record's tags: the profile's own
// tag vals[i], or for i < 0 the default tag -i-1. Small, so the sort by
// name moves little.
type tagField struct {
	name string
	i    int32
}

// appendTagJSON appends t's value as encoding/json writes Tag.value().
func appendTagJSON(b []byte, t Tag) []byte {
	switch t.Kind {
	case TagString:
		return appendJSONString(b, t.Str)
	case TagNumber:
		return appendJSONFloat(b, t.Num)
	case TagBool:
		return strconv.AppendBool(b, t.Bool)
	case TagList:
		if t.List == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, s := range t.List {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return append(b, ']')
	}
	return append(b, "null"...)
}

// appendJSONTime appends t as encoding/json does (time.Time.MarshalJSON:
// RFC 3339 with nanoseconds).
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONFloat appends f as encoding/json's float64 encoder does. NaN
// and infinities, which encoding/json refuses, cannot be tags (tags come
// from JSON); they are written as null.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString appends s quoted as encoding/json does (see
// jsonenc.String).
func appendJSONString(b []byte, s string) []byte { return jsonenc.String(b, s) }

// appendSimpleEvent appends the JSON of e, an event the segmenter makes
// (journey and segment events): identity, name, times and attributes of
// strings and numbers. Other fields must be empty; it is what
// e.Marshal() produces (TestAppendSimpleEvent), without reflection.
func appendSimpleEvent(b []byte, e *schemas.Event) []byte {
	b = append(b, `{"v":1,"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"app":`...)
	b = appendJSONString(b, e.App)
	b = append(b, `,"kind":`...)
	b = appendJSONString(b, string(e.Kind))
	if e.Name != "" {
		b = append(b, `,"name":`...)
		b = appendJSONString(b, e.Name)
	}
	b = append(b, `,"time":`...)
	b = appendJSONTime(b, e.Time)
	b = append(b, `,"received":`...)
	b = appendJSONTime(b, e.Received)
	for _, f := range [...]struct{ k, v string }{{"hwid", e.HWID}, {"user_id", e.UserID}, {"anonymous_id", e.AnonymousID}} {
		if f.v != "" {
			b = append(b, ',', '"')
			b = append(b, f.k...)
			b = append(b, '"', ':')
			b = appendJSONString(b, f.v)
		}
	}
	if len(e.Attributes) > 0 {
		b = append(b, `,"attributes":{`...)
		keys := make([]string, 0, len(e.Attributes))
		for k := range e.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			switch v := e.Attributes[k].(type) {
			case string:
				b = appendJSONString(b, v)
			case float64:
				b = appendJSONFloat(b, v)
			case bool:
				b = strconv.AppendBool(b, v)
			default:
				b = append(b, "null"...)
			}
		}
		b = append(b, '}')
	}
	return append(b, '}')
}
