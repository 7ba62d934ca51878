package schemas

// DecodeDispatchFacts' fast path, on fastDec (event_decode.go): the fact
// counter decodes every herald.facts.v1 record, and encoding/json's
// reflection was about half of its time. It produces exactly what
// json.Unmarshal would (FuzzDecodeDispatchFactsFast compares the two) or
// gives up, under the same rules as the events' fast path: any syntax
// error, null, a duplicate field, a key matching a field only
// case-insensitively, a value of another type, an integer with a fraction
// or exponent, invalid UTF-8 or a lone surrogate escape.

var dispatchFactsFields = []string{
	"v", "app", "dispatch_id", "day", "source_kind", "source_name", "template", "category", "country", "facts",
}

var dispatchFactFields = []string{"state", "detail", "amount", "currency", "time"}

// decodeDispatchFactsFast decodes b into f, or reports false when
// encoding/json must (f is then in an undefined state).
func decodeDispatchFactsFast(b []byte, f *DispatchFacts) bool {
	d := fastDec{b: b}
	return d.whole(func(key []byte, seen *uint64) bool { return d.dispatchFactsField(key, f, seen) })
}

// dispatchFactsField decodes the value of key into f.
func (d *fastDec) dispatchFactsField(key []byte, f *DispatchFacts, seen *uint64) bool {
	var s *string
	var n uint
	switch string(key) {
	case "v":
		if !once(seen, 0) {
			return false
		}
		v, ok := d.int()
		f.V = v
		return ok
	case "app":
		s, n = &f.App, 1
	case "dispatch_id":
		s, n = &f.DispatchID, 2
	case "day":
		s, n = &f.Day, 3
	case "source_kind":
		s, n = &f.SourceKind, 4
	case "source_name":
		s, n = &f.SourceName, 5
	case "template":
		s, n = &f.Template, 6
	case "category":
		s, n = &f.Category, 7
	case "country":
		s, n = &f.Country, 8
	case "facts":
		return once(seen, 9) && d.dispatchFactList(&f.Facts)
	default:
		return d.unknown(key, dispatchFactsFields)
	}
	if !once(seen, n) {
		return false
	}
	// The values repeat from record to record (apps, days, campaigns,
	// templates), except the dispatch id.
	return d.strInto(s, n != 2)
}

// dispatchFactList decodes an array of facts into *l, a new slice as
// encoding/json makes it (empty, not nil, for []).
func (d *fastDec) dispatchFactList(l *[]DispatchFact) bool {
	out := make([]DispatchFact, 0, 4)
	ok := d.array(func() bool {
		var x DispatchFact
		d.ws()
		ok := d.object(false, func(key []byte, seen *uint64) bool { return d.dispatchFactField(key, &x, seen) })
		out = append(out, x)
		return ok
	})
	*l = out
	return ok
}

// dispatchFactField decodes the value of key into x.
func (d *fastDec) dispatchFactField(key []byte, x *DispatchFact, seen *uint64) bool {
	var s *string
	var n uint
	switch string(key) {
	case "state":
		s, n = &x.State, 0
	case "detail":
		s, n = &x.Detail, 1
	case "amount":
		if !once(seen, 2) {
			return false
		}
		v, ok := d.int()
		x.Amount = int64(v)
		return ok
	case "currency":
		s, n = &x.Currency, 3
	case "time":
		return once(seen, 4) && d.time(&x.Time)
	default:
		return d.unknown(key, dispatchFactFields)
	}
	if !once(seen, n) {
		return false
	}
	return d.strInto(s, true)
}

// decodeDispatchFacts is json.Unmarshal of b into f, through the fast path
// when it can.
func decodeDispatchFacts(b []byte, f *DispatchFacts) error {
	return fastOrJSON(b, f, decodeDispatchFactsFast)
}
