// Package jsonenc appends JSON values byte for byte as encoding/json's
// Marshal writes them, without reflection: the hot paths that encode one
// record per event (the segmenter's dispatch requests, tags records and
// segment events) use it, and their tests compare the bytes with
// encoding/json's.
package jsonenc

import (
	"strconv"
	"time"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// plain marks the bytes String copies as they are: ASCII from 0x20 on,
// except '"', '\\', '<', '>' and '&'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// String appends s quoted as encoding/json does, HTML-safe: <, > and & as
// \u003c, \u003e, \u0026, U+2028 and U+2029 escaped, invalid UTF-8 as
// U+FFFD.
func String(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && plain[s[i]] { // the common run: one load a byte
			i++
		}
		if i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Time appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds, quoted); ok is false, and nothing is appended, for the
// times MarshalJSON refuses or writes differently: years outside 0-9999
// and zone offsets that are not whole minutes under 24 hours.
func Time(b []byte, t time.Time) ([]byte, bool) {
	_, off := t.Zone()
	if off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		return b, false
	}
	// The year in t's zone is within 0-9999: its local seconds since 1970
	// are (t.Year would compute the date once more than AppendFormat does).
	if local := t.Unix() + int64(off); local < year0 || local >= year10000 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// year0 and year10000 are the Unix times of 0000-01-01 and 10000-01-01,
// 00:00 UTC.
const (
	year0     = -62167219200
	year10000 = 253402300800
)

// Int appends n as a JSON number.
func Int(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// Object appends the fields of one JSON object to B, in the order they are
// given, as encoding/json writes a struct's: Str, Int, Bool and Time for
// fields without omitempty, the Opt forms for those with it (left out when
// empty or false or 0). End closes the object; its ok is false when a Time
// could not be written as encoding/json would (see Time).
type Object struct {
	B    []byte
	open bool
	bad  bool
}

// Key writes the separator and the name of the next field; the caller
// appends its value to B. Names are a struct's JSON names: written as
// they are, they must need no escaping.
func (o *Object) Key(name string) {
	if o.open {
		o.B = append(o.B, ',', '"')
	} else {
		o.B = append(o.B, '{', '"')
		o.open = true
	}
	o.B = append(o.B, name...)
	o.B = append(o.B, '"', ':')
}

// Str writes a string field.
func (o *Object) Str(name, v string) {
	o.Key(name)
	o.B = String(o.B, v)
}

// OptStr writes a string field unless v is empty.
func (o *Object) OptStr(name, v string) {
	if v != "" {
		o.Str(name, v)
	}
}

// Int writes a number field.
func (o *Object) Int(name string, v int64) {
	o.Key(name)
	o.B = Int(o.B, v)
}

// OptInt writes a number field unless v is 0.
func (o *Object) OptInt(name string, v int64) {
	if v != 0 {
		o.Int(name, v)
	}
}

// OptBool writes a true bool field, nothing for false.
func (o *Object) OptBool(name string, v bool) {
	if v {
		o.Key(name)
		o.B = append(o.B, "true"...)
	}
}

// Time writes a time field.
func (o *Object) Time(name string, t time.Time) {
	o.Key(name)
	var ok bool
	if o.B, ok = Time(o.B, t); !ok {
		o.bad = true
	}
}

// End closes the object and returns it; ok is false when a field could not
// be written as encoding/json writes it (the bytes are then not to be used).
func (o *Object) End() ([]byte, bool) {
	if !o.open {
		o.B = append(o.B, '{')
	}
	return append(o.B, '}'), !o.bad
}
