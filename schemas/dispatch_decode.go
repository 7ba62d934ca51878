package schemas

// This file is DecodeDispatchRequest's fast path, on the fastDec of
// DecodeEvent's (event_decode.go): the dispatcher decodes every dispatch
// request once before its send, and encoding/json's reflection was a few
// percent of a send's CPU.
//
// It decodes the WhatsApp shapes (template with body and header
// parameters, text) with their identity, source and times; it gives up on
// what DecodeEvent's fast path gives up on (syntax errors, null, duplicate
// fields, case-insensitive key matches, escapes it cannot reproduce,
// invalid UTF-8, numbers that are not integers) and on the other
// channels' bodies (email, push, webhook) and template button URLs, which
// then go to encoding/json. TestDecodeDispatchFastTaken and
// FuzzDecodeDispatchFast compare the two.

// dispatchFields are the DispatchRequest's JSON names; a key that matches
// one case-insensitively goes to encoding/json.
var dispatchFields = []string{
	"v", "id", "app", "channel", "sender", "to", "hwid", "user_id", "country", "template", "text",
	"email", "push", "webhook", "source", "created", "deadline", "send_at", "window_until",
}

var (
	templateFields = []string{"name", "language", "category", "body", "header", "button_url"}
	textFields     = []string{"body", "preview_url"}
	sourceFields   = []string{"kind", "name", "event_id"}
)

// decodeDispatchFast decodes b into r, or reports false when encoding/json
// must (r is then in an undefined state).
func decodeDispatchFast(b []byte, r *DispatchRequest) bool {
	d := fastDec{b: b}
	return d.whole(func(key []byte, seen *uint64) bool { return d.dispatchField(key, r, seen) })
}

// decodeDispatch decodes a DispatchRequest value: the fast path, else
// encoding/json.
func decodeDispatch(b []byte, r *DispatchRequest) error { return fastOrJSON(b, r, decodeDispatchFast) }

// dispatchField decodes the value of key into r.
func (d *fastDec) dispatchField(key []byte, r *DispatchRequest, seen *uint64) bool {
	var s *string
	var n uint
	interned := false
	switch string(key) {
	case "v":
		if !once(seen, 0) {
			return false
		}
		v, ok := d.int()
		r.V = v
		return ok
	case "id":
		s, n = &r.ID, 1
	case "app":
		s, n = &r.App, 2
		interned = true
	case "channel":
		if !once(seen, 3) {
			return false
		}
		v, ok := d.istr()
		r.Channel = Channel(v)
		return ok
	case "sender":
		s, n = &r.Sender, 4
		interned = true
	case "to":
		s, n = &r.To, 5
	case "hwid":
		s, n = &r.HWID, 6
	case "user_id":
		s, n = &r.UserID, 7
	case "country":
		s, n = &r.Country, 8
		interned = true
	case "template":
		if !once(seen, 9) {
			return false
		}
		r.Template = new(Template)
		return d.object(false, func(k []byte, seen *uint64) bool { return d.templateField(k, r.Template, seen) })
	case "text":
		if !once(seen, 10) {
			return false
		}
		r.Text = new(Text)
		return d.object(false, func(k []byte, seen *uint64) bool { return d.textField(k, r.Text, seen) })
	case "source":
		if !once(seen, 11) {
			return false
		}
		return d.object(false, func(k []byte, seen *uint64) bool { return d.sourceField(k, &r.Source, seen) })
	case "created":
		return once(seen, 12) && d.time(&r.Created)
	case "deadline":
		return once(seen, 13) && d.time(&r.Deadline)
	case "send_at":
		return once(seen, 14) && d.time(&r.SendAt)
	case "window_until":
		return once(seen, 15) && d.time(&r.WindowUntil)
	default:
		// email, push and webhook are among the names: encoding/json's.
		return d.unknown(key, dispatchFields)
	}
	return once(seen, n) && d.strInto(s, interned)
}

// templateField decodes the value of key into t; button_url goes to
// encoding/json.
func (d *fastDec) templateField(key []byte, t *Template, seen *uint64) bool {
	switch string(key) {
	case "name":
		return once(seen, 0) && d.strInto(&t.Name, true)
	case "language":
		return once(seen, 1) && d.strInto(&t.Language, true)
	case "category":
		return once(seen, 2) && d.strInto(&t.Category, true)
	case "body":
		return once(seen, 3) && d.strSlice(&t.Body)
	case "header":
		return once(seen, 4) && d.strSlice(&t.Header)
	}
	return d.unknown(key, templateFields)
}

// textField decodes the value of key into t.
func (d *fastDec) textField(key []byte, t *Text, seen *uint64) bool {
	switch string(key) {
	case "body":
		return once(seen, 0) && d.strInto(&t.Body, false)
	case "preview_url":
		if !once(seen, 1) {
			return false
		}
		v, ok := d.bool()
		t.PreviewURL = v
		return ok
	}
	return d.unknown(key, textFields)
}

// sourceField decodes the value of key into s.
func (d *fastDec) sourceField(key []byte, s *Source, seen *uint64) bool {
	switch string(key) {
	case "kind":
		return once(seen, 0) && d.strInto(&s.Kind, true)
	case "name":
		return once(seen, 1) && d.strInto(&s.Name, true)
	case "event_id":
		return once(seen, 2) && d.strInto(&s.EventID, false)
	}
	return d.unknown(key, sourceFields)
}

// strSlice decodes an array of strings into v. An empty array is an
// empty, non-nil slice, as encoding/json makes it.
func (d *fastDec) strSlice(v *[]string) bool {
	*v = []string{}
	return d.array(func() bool {
		if d.peek() != '"' {
			return false
		}
		s, ok := d.str()
		*v = append(*v, s)
		return ok
	})
}
