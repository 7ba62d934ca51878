package schemas

import (
	"encoding/json"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// This file is DecodeEvent's fast path: a single-pass, allocation-light
// decoder of the Event shapes Herald's own producers write, used before
// encoding/json on every TopicEvents record (the segmenter decodes each
// event once, and decoding was 40% of its time per event).
//
// The fast path either produces exactly what json.Unmarshal would (checked by
// FuzzDecodeEventFast, which compares the two on arbitrary input) or gives
// up, and DecodeEvent then runs json.Unmarshal on the record. It gives up on
// anything it does not handle the way encoding/json does, rather than
// approximate it:
//
//   - any syntax error (so every error message is encoding/json's);
//   - null for a field, a duplicate field, or a key that is not a field name
//     but matches one case-insensitively (encoding/json's matching);
//   - a value of another JSON type than the field's, an integer field with a
//     fraction or exponent, a number out of float64's range;
//   - invalid UTF-8 or a lone UTF-16 surrogate escape in a string (which
//     encoding/json replaces with U+FFFD);
//   - the rarely used nested shapes: campaign, template, and inbound's
//     media, location, contacts and reaction;
//   - nesting deeper than fastMaxDepth inside tags, attributes or context.

// fastMaxDepth bounds the nesting of values in the maps the fast path
// decodes; deeper values go to encoding/json.
const fastMaxDepth = 32

// fastDec is the state of one fast decode.
type fastDec struct {
	b []byte
	i int
	// s, when set, is b as a string: string values without escapes are
	// substrings of it instead of a string each (decodeEventSharedFast).
	s string
	// attrList puts an event's attributes in AttrList
	// (decodeEventAttrsFast).
	attrList bool
}

// decodeEventFast decodes b into e, or reports false when encoding/json must
// (e is then in an undefined state).
func decodeEventFast(b []byte, e *Event) bool {
	d := fastDec{b: b}
	return d.whole(func(key []byte, seen *uint64) bool { return d.eventField(key, e, seen) })
}

// decodeEventAttrsFast is decodeEventFast with the attributes in
// e.AttrList (DecodeEventAttrs).
func decodeEventAttrsFast(b []byte, e *Event) bool {
	d := fastDec{b: b, attrList: true}
	return d.whole(func(key []byte, seen *uint64) bool { return d.eventField(key, e, seen) })
}

// decodeEventSharedFast is decodeEventFast with the string values of e
// (those without escapes) substrings of one copy of b: one allocation per
// event instead of one per string (DecodeEventShared).
func decodeEventSharedFast(b []byte, e *Event) bool {
	d := fastDec{b: b, s: string(b)}
	return d.whole(func(key []byte, seen *uint64) bool { return d.eventField(key, e, seen) })
}

// array decodes an array, calling elem for each element (elem consumes it,
// or reports false, which ends array with false).
func (d *fastDec) array(elem func() bool) bool {
	if d.peek() != '[' {
		return false
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return true
		default:
			return false
		}
	}
}

// whole decodes the input as one object, field taking each key (see
// object), with nothing but whitespace around it.
func (d *fastDec) whole(field func(key []byte, seen *uint64) bool) bool {
	d.ws()
	if !d.object(false, field) {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}

// fastOrJSON decodes b into v with fast, else (v reset) with
// encoding/json: what every fast path's caller does.
func fastOrJSON[T any](b []byte, v *T, fast func([]byte, *T) bool) error {
	if fast(b, v) {
		return nil
	}
	var zero T
	*v = zero
	return json.Unmarshal(b, v)
}

// ws skips JSON whitespace.
func (d *fastDec) ws() {
	if d.i < len(d.b) && d.b[d.i] > ' ' { // the common case, compact JSON: one test
		return
	}
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, 0 at the end.
func (d *fastDec) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// object decodes an object, calling field for each key with the value next
// in the input; field must consume the value. seen is a bit set fields use
// to find duplicates.
// Keys of struct objects must be ASCII (a non-ASCII key can match a field
// name under encoding/json's case folding); keys of maps (utf8Keys) may be
// any valid UTF-8.
func (d *fastDec) object(utf8Keys bool, field func(key []byte, seen *uint64) bool) bool {
	if d.peek() != '{' {
		return false
	}
	d.i++
	var seen uint64
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		if d.peek() != '"' {
			return false
		}
		key, ok := d.rawKey(utf8Keys)
		if !ok || d.peek() != ':' {
			return false
		}
		d.i++
		d.ws()
		if !field(key, &seen) {
			return false
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return true
		default:
			return false
		}
	}
}

// rawKey reads a key without escapes (a key with escapes might spell a
// field name, so it goes to encoding/json).
func (d *fastDec) rawKey(utf8Keys bool) ([]byte, bool) {
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		if j = plainRun(d.b, j); j == len(d.b) {
			break
		}
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			if !ascii && !utf8.Valid(d.b[start:j]) {
				return nil, false
			}
			return d.b[start:j], true
		case c == '\\', c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			if !utf8Keys {
				return nil, false
			}
			ascii = false
		}
	}
	return nil, false
}

// once marks field bit n as seen and reports false when it was already.
func once(seen *uint64, n uint) bool {
	if *seen&(1<<n) != 0 {
		return false
	}
	*seen |= 1 << n
	return true
}

// unknown handles a key that names no field: encoding/json ignores it
// unless it matches a field name case-insensitively.
func (d *fastDec) unknown(key []byte, names []string) bool {
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return false
		}
	}
	_, ok := d.value(0)
	return ok
}

// eventFields are the Event's JSON names; "template", "campaign", "sweep"
// and "merge", which eventField has no case for, send the event to
// encoding/json through unknown.
var eventFields = []string{
	"v", "id", "app", "kind", "name", "time", "received", "hwid", "user_id", "anonymous_id",
	"previous_id", "device_type", "language", "timezone", "country", "email", "push_token", "app_version", "tags",
	"tag_types", "tag_ops", "attributes", "context", "inbound", "status", "template", "campaign", "sweep", "merge",
}

// eventField decodes the value of key into e.
func (d *fastDec) eventField(key []byte, e *Event, seen *uint64) bool {
	var s *string
	var n uint
	interned := false
	switch string(key) {
	case "v":
		if !once(seen, 0) {
			return false
		}
		v, ok := d.int()
		e.V = v
		return ok
	case "id":
		s, n = &e.ID, 1
	case "app":
		s, n = &e.App, 2
		interned = true
	case "kind":
		if !once(seen, 3) {
			return false
		}
		v, ok := d.istr()
		e.Kind = EventKind(v)
		return ok
	case "name":
		s, n = &e.Name, 4
		interned = true
	case "time":
		return once(seen, 5) && d.time(&e.Time)
	case "received":
		return once(seen, 6) && d.time(&e.Received)
	case "hwid":
		s, n = &e.HWID, 7
	case "user_id":
		s, n = &e.UserID, 8
	case "anonymous_id":
		s, n = &e.AnonymousID, 9
	case "previous_id":
		s, n = &e.PreviousID, 10
	case "device_type":
		if !once(seen, 11) {
			return false
		}
		v, ok := d.int()
		e.DeviceType = v
		return ok
	case "language":
		s, n = &e.Language, 12
		interned = true
	case "timezone":
		s, n = &e.Timezone, 13
		interned = true
	case "country":
		s, n = &e.Country, 14
		interned = true
	case "email":
		s, n = &e.Email, 15
	case "push_token":
		s, n = &e.PushToken, 16
	case "app_version":
		s, n = &e.AppVersion, 17
		interned = true
	case "tags":
		if !once(seen, 18) {
			return false
		}
		m, ok := d.anyMap(0)
		e.Tags = m
		return ok
	case "tag_types":
		if !once(seen, 19) {
			return false
		}
		m, ok := d.strMap()
		e.TagTypes = m
		return ok
	case "tag_ops":
		if !once(seen, 20) {
			return false
		}
		m, ok := d.strMap()
		e.TagOps = m
		return ok
	case "attributes":
		if !once(seen, 21) {
			return false
		}
		if d.attrList {
			l, ok := d.attrs()
			e.AttrList = l
			return ok
		}
		m, ok := d.anyMap(0)
		e.Attributes = m
		return ok
	case "context":
		if !once(seen, 22) {
			return false
		}
		m, ok := d.anyMap(0)
		e.Context = m
		return ok
	case "inbound":
		if !once(seen, 23) {
			return false
		}
		e.Inbound = new(Inbound)
		return d.object(false, func(k []byte, seen *uint64) bool { return d.inboundField(k, e.Inbound, seen) })
	case "status":
		if !once(seen, 24) {
			return false
		}
		e.Status = new(Status)
		return d.object(false, func(k []byte, seen *uint64) bool { return d.statusField(k, e.Status, seen) })
	default:
		return d.unknown(key, eventFields)
	}
	if !once(seen, n) {
		return false
	}
	return d.strInto(s, interned)
}

var inboundFields = []string{
	"phone_number_id", "from", "wamid", "type", "text", "profile_name", "context_id", "payload",
	"media", "location", "contacts", "reaction", "error_code", "error_title",
}

// inboundField decodes the value of key into in.
func (d *fastDec) inboundField(key []byte, in *Inbound, seen *uint64) bool {
	var s *string
	var n uint
	interned := false
	switch string(key) {
	case "phone_number_id":
		s, n = &in.PhoneNumberID, 0
		interned = true
	case "from":
		s, n = &in.From, 1
	case "wamid":
		s, n = &in.WAMID, 2
	case "type":
		s, n = &in.Type, 3
		interned = true
	case "text":
		s, n = &in.Text, 4
	case "profile_name":
		s, n = &in.ProfileName, 5
	case "context_id":
		s, n = &in.ContextID, 6
	case "payload":
		s, n = &in.Payload, 7
	case "error_code":
		if !once(seen, 8) {
			return false
		}
		v, ok := d.int()
		in.ErrorCode = v
		return ok
	case "error_title":
		s, n = &in.ErrorTitle, 9
	case "media", "location", "contacts", "reaction":
		return false
	default:
		return d.unknown(key, inboundFields)
	}
	if !once(seen, n) {
		return false
	}
	return d.strInto(s, interned)
}

var statusFields = []string{
	"phone_number_id", "wamid", "status", "recipient", "dispatch_id", "pricing_category", "billable",
	"pricing_model", "pricing_type", "conversation_id", "conversation_origin", "error_code", "error_title",
	"error_message", "error_details",
}

// statusField decodes the value of key into st.
func (d *fastDec) statusField(key []byte, st *Status, seen *uint64) bool {
	var s *string
	var n uint
	interned := false
	switch string(key) {
	case "phone_number_id":
		s, n = &st.PhoneNumberID, 0
		interned = true
	case "wamid":
		s, n = &st.WAMID, 1
	case "status":
		s, n = &st.Status, 2
		interned = true
	case "recipient":
		s, n = &st.Recipient, 3
	case "dispatch_id":
		s, n = &st.DispatchID, 4
	case "pricing_category":
		s, n = &st.PricingCategory, 5
		interned = true
	case "billable":
		if !once(seen, 6) {
			return false
		}
		v, ok := d.bool()
		st.Billable = v
		return ok
	case "pricing_model":
		s, n = &st.PricingModel, 7
		interned = true
	case "pricing_type":
		s, n = &st.PricingType, 8
		interned = true
	case "conversation_id":
		s, n = &st.ConversationID, 9
	case "conversation_origin":
		s, n = &st.ConversationOrigin, 10
		interned = true
	case "error_code":
		if !once(seen, 11) {
			return false
		}
		v, ok := d.int()
		st.ErrorCode = v
		return ok
	case "error_title":
		s, n = &st.ErrorTitle, 12
	case "error_message":
		s, n = &st.ErrorMessage, 13
	case "error_details":
		s, n = &st.ErrorDetails, 14
	default:
		return d.unknown(key, statusFields)
	}
	if !once(seen, n) {
		return false
	}
	return d.strInto(s, interned)
}

// strPlain marks the bytes of a string's common run, which rawKey, str and
// istr step over with one table load each: ASCII from 0x20 on, except '"'
// and '\\'.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainRun returns the index of the first byte of b from j on that
// strPlain does not mark, len(b) when there is none.
func plainRun(b []byte, j int) int {
	for j < len(b) && strPlain[b[j]] {
		j++
	}
	return j
}

// str decodes a string value.
func (d *fastDec) str() (string, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return "", false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		if j = plainRun(d.b, j); j == len(d.b) {
			break
		}
		c := d.b[j]
		switch {
		case c == '"':
			d.i = j + 1
			if !ascii && !utf8.Valid(d.b[start:j]) {
				return "", false
			}
			if d.s != "" {
				return d.s[start:j], true
			}
			return string(d.b[start:j]), true
		case c == '\\':
			return d.escaped(start)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// strInto decodes a string value into s, from the intern table when
// interned is set (istr).
func (d *fastDec) strInto(s *string, interned bool) bool {
	var ok bool
	if interned {
		*s, ok = d.istr()
	} else {
		*s, ok = d.str()
	}
	return ok
}

// istr is str for the values that repeat from event to event (app ids, event
// and tag names, languages, countries, statuses): those without escapes
// come from the intern table instead of a new allocation each.
func (d *fastDec) istr() (string, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return "", false
	}
	start := d.i + 1
	for j := start; j < len(d.b); j++ {
		if j = plainRun(d.b, j); j == len(d.b) {
			break
		}
		c := d.b[j]
		switch {
		case c == '"':
			d.i = j + 1
			if d.s != "" {
				return d.s[start:j], true // as cheap as the table, and no hashing
			}
			return intern(d.b[start:j]), true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			d.i = start - 1
			return d.str()
		}
	}
	return "", false
}

// internSlots is the size of the intern table: enough for the distinct
// names of a deployment's hot events, tags and apps.
const internSlots = 1 << 12

// internMax is the longest string interned.
const internMax = 40

var (
	internSeed = maphash.MakeSeed()
	internTab  [internSlots]atomic.Pointer[string]
)

// intern returns b as a string, the same one for the same bytes as long as
// no other string took its slot since: a lossy, lock-free table (a slot
// holds the string seen last), so a value that repeats costs no
// allocation and one that does not costs one more.
func intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > internMax {
		return string(b)
	}
	slot := &internTab[maphash.Bytes(internSeed, b)&(internSlots-1)]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	v := string(b)
	slot.Store(&v)
	return v
}

// escaped decodes a string with escapes that starts at start.
func (d *fastDec) escaped(start int) (string, bool) {
	out := make([]byte, 0, 64)
	j := start
	for j < len(d.b) {
		c := d.b[j]
		switch {
		case c == '"':
			d.i = j + 1
			if !utf8.Valid(out) {
				return "", false
			}
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(d.b) {
			return "", false
		}
		switch d.b[j+1] {
		case '"', '\\', '/':
			out = append(out, d.b[j+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(d.b, j+2)
			if !ok {
				return "", false
			}
			j += 6
			if utf16.IsSurrogate(r) {
				// Only a valid pair is decoded here; encoding/json
				// replaces a lone surrogate.
				if j+1 >= len(d.b) || d.b[j] != '\\' || d.b[j+1] != 'u' {
					return "", false
				}
				r2, ok := hex4(d.b, j+2)
				if !ok {
					return "", false
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", false
				}
				j += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", false
		}
		j += 2
	}
	return "", false
}

// hex4 parses the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// number returns the bytes of a number value, checked against JSON's
// grammar.
func (d *fastDec) number() ([]byte, bool) {
	b, i := d.b, d.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	d.i = i
	return b[start:i], true
}

// int decodes a number into an int as encoding/json does: no fraction, no
// exponent, in range.
func (d *fastDec) int() (int, bool) {
	raw, ok := d.number()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(bytesString(raw), 10, 0)
	return int(v), err == nil
}

// bool decodes true or false.
func (d *fastDec) bool() (bool, bool) {
	switch {
	case d.lit("true"):
		return true, true
	case d.lit("false"):
		return false, true
	}
	return false, false
}

// lit consumes the literal s when it is next.
func (d *fastDec) lit(s string) bool {
	if len(d.b)-d.i >= len(s) && string(d.b[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// time decodes a time the way encoding/json does: time.Time.UnmarshalJSON
// on the raw string literal, or utcTime for the form Herald's producers
// write.
func (d *fastDec) time(t *time.Time) bool {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return false
	}
	end := d.i + 1
	for end < len(d.b) && d.b[end] != '"' && d.b[end] != '\\' {
		end++
	}
	if end < len(d.b) && d.b[end] == '"' {
		if u, ok := utcTime(d.b[d.i+1 : end]); ok {
			*t, d.i = u, end+1
			return true
		}
	}
	start := d.i
	if !d.skipStr() {
		return false
	}
	return t.UnmarshalJSON(d.b[start:d.i]) == nil
}

// skipStr consumes a string value as str does, without making it.
func (d *fastDec) skipStr() bool {
	if d.s == "" {
		d.s = bytesString(d.b) // str only slices it
		defer func() { d.s = "" }()
	}
	_, ok := d.str()
	return ok
}

// utcTime parses b when it is "YYYY-MM-DDTHH:MM:SS" with an optional
// fraction of 1 to 9 digits after a '.' and "Z": what time.Time's
// MarshalJSON writes for a UTC time, so every event Herald's producers
// write. It gives the time encoding/json would (TestUTCTimeMatchesParse,
// FuzzUTCTime); ok is false for any other form, and for dates and clock
// readings out of range, which the caller leaves to encoding/json.
func utcTime(b []byte) (t time.Time, ok bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return t, false
	}
	num := func(b []byte) int {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	year, month, day := num(b[0:4]), num(b[5:7]), num(b[8:10])
	hour, minute, sec := num(b[11:13]), num(b[14:16]), num(b[17:19])
	nsec := 0
	if frac := b[19 : len(b)-1]; len(frac) > 0 {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return t, false
		}
		if nsec = num(frac[1:]); nsec < 0 {
			return t, false
		}
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return t, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

// daysIn is the number of days of month in year.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// strMap decodes an object of strings.
func (d *fastDec) strMap() (map[string]string, bool) {
	m := make(map[string]string)
	ok := d.object(true, func(key []byte, _ *uint64) bool {
		if d.peek() != '"' {
			return false
		}
		v, ok := d.str()
		m[intern(key)] = v
		return ok
	})
	return m, ok
}

// anyMap decodes an object into a map of the values encoding/json would put
// in an any.
func (d *fastDec) anyMap(depth int) (map[string]any, bool) {
	m := make(map[string]any)
	ok := d.object(true, func(key []byte, _ *uint64) bool {
		v, ok := d.value(depth + 1)
		m[intern(key)] = v
		return ok
	})
	return m, ok
}

// value decodes any value as encoding/json decodes into an any: objects to
// map[string]any, arrays to []any, numbers to float64.
func (d *fastDec) value(depth int) (any, bool) {
	if depth > fastMaxDepth {
		return nil, false
	}
	switch d.peek() {
	case '"':
		return d.str()
	case '{':
		return d.anyMap(depth)
	case '[':
		a := []any{}
		ok := d.array(func() bool {
			v, ok := d.value(depth + 1)
			a = append(a, v)
			return ok
		})
		if !ok {
			return nil, false
		}
		return a, true
	case 't', 'f':
		return d.bool()
	case 'n':
		return nil, d.lit("null")
	default:
		return d.float()
	}
}

// float decodes a number as encoding/json decodes it into an any.
func (d *fastDec) float() (float64, bool) {
	raw, ok := d.number()
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(bytesString(raw), 64)
	return f, err == nil
}

// bytesString is b as a string without a copy, for a parse that keeps no
// part of it (a parse error would, and is dropped): strconv's parsers take
// a string, and string(b) allocates because their errors keep it.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// attrs decodes an object as anyMap does, into a list sorted by name with
// the last value of a name that repeats (what the map keeps).
func (d *fastDec) attrs() ([]Attr, bool) {
	l := make([]Attr, 0, 4) // not nil even when empty: nil means Attributes holds them
	ok := d.object(true, func(key []byte, _ *uint64) bool {
		a := Attr{Name: intern(key)}
		var ok bool
		switch d.peek() {
		case '"':
			a.Kind = AttrString
			a.Str, ok = d.str()
		case 't', 'f':
			a.Kind = AttrBool
			a.Bool, ok = d.bool()
		case '{', '[', 'n':
			a.Kind = AttrOther
			a.Any, ok = d.value(1)
		default:
			a.Kind = AttrNumber
			a.Num, ok = d.float()
		}
		l = append(l, a)
		return ok
	})
	if !ok {
		return nil, false
	}
	if !slices.IsSortedFunc(l, compareAttrs) {
		slices.SortStableFunc(l, compareAttrs)
	}
	// A repeated name: keep its last value, as the map would.
	out := l[:0]
	for i := range l {
		if i+1 < len(l) && l[i+1].Name == l[i].Name {
			continue
		}
		out = append(out, l[i])
	}
	clear(l[len(out):])
	return out, true
}

func compareAttrs(a, b Attr) int { return strings.Compare(a.Name, b.Name) }
