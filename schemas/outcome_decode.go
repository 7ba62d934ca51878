package schemas

// DecodeOutcome's fast path, on fastDec (event_decode.go): the analytics
// sink decodes every outcome. It produces exactly what json.Unmarshal
// would (FuzzDecodeOutcomeFast compares the two) or gives up under the
// rules of the events' fast path.

var outcomeFields = []string{
	"v", "dispatch_id", "app", "channel", "sender", "to", "country", "state", "provider_id", "template", "category",
	"source", "error_code", "error_message", "invalid_recipient", "attempts", "reconciled", "requested", "time",
}

// decodeOutcomeFast decodes b into o, or reports false when encoding/json
// must (o is then in an undefined state).
func decodeOutcomeFast(b []byte, o *Outcome) bool {
	d := fastDec{b: b}
	return d.whole(func(key []byte, seen *uint64) bool { return d.outcomeField(key, o, seen) })
}

// decodeOutcome is json.Unmarshal of b into o, through the fast path when
// it can.
func decodeOutcome(b []byte, o *Outcome) error { return fastOrJSON(b, o, decodeOutcomeFast) }

// outcomeField decodes the value of key into o.
func (d *fastDec) outcomeField(key []byte, o *Outcome, seen *uint64) bool {
	var s *string
	var n uint
	interned := true // most values repeat from outcome to outcome
	switch string(key) {
	case "v":
		return once(seen, 0) && d.intInto(&o.V)
	case "dispatch_id":
		s, n, interned = &o.DispatchID, 1, false
	case "app":
		s, n = &o.App, 2
	case "channel":
		if !once(seen, 3) {
			return false
		}
		v, ok := d.istr()
		o.Channel = Channel(v)
		return ok
	case "sender":
		s, n = &o.Sender, 4
	case "to":
		s, n, interned = &o.To, 5, false
	case "country":
		s, n = &o.Country, 6
	case "state":
		if !once(seen, 7) {
			return false
		}
		v, ok := d.istr()
		o.State = OutcomeState(v)
		return ok
	case "provider_id":
		s, n, interned = &o.ProviderID, 8, false
	case "template":
		s, n = &o.Template, 9
	case "category":
		s, n = &o.Category, 10
	case "source":
		return once(seen, 11) && d.object(false, func(k []byte, seen *uint64) bool { return d.sourceField(k, &o.Source, seen) })
	case "error_code":
		return once(seen, 12) && d.intInto(&o.ErrorCode)
	case "error_message":
		s, n = &o.ErrorMessage, 13
	case "invalid_recipient":
		return once(seen, 14) && d.boolInto(&o.InvalidRecipient)
	case "attempts":
		return once(seen, 15) && d.intInto(&o.Attempts)
	case "reconciled":
		return once(seen, 16) && d.boolInto(&o.Reconciled)
	case "requested":
		return once(seen, 17) && d.time(&o.Requested)
	case "time":
		return once(seen, 18) && d.time(&o.Time)
	default:
		return d.unknown(key, outcomeFields)
	}
	if !once(seen, n) {
		return false
	}
	return d.strInto(s, interned)
}

// intInto decodes an integer into *v (see int).
func (d *fastDec) intInto(v *int) bool {
	x, ok := d.int()
	*v = x
	return ok
}

// boolInto decodes true or false into *v.
func (d *fastDec) boolInto(v *bool) bool {
	x, ok := d.bool()
	*v = x
	return ok
}
