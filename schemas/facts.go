package schemas

import (
	"time"

	"github.com/go-faster/city"

	"github.com/heraldhq/herald/internal/jsonenc"
)

// TopicFacts carries DispatchFacts: the analytics sink's attributed facts
// of each dispatch (every state it reached, with its source, template,
// category, country and request day), keyed by FactsKey(app, dispatch id)
// and partitioned by FactsPartition, so that one partition, and so one
// fact counter of the analytics stage, owns every fact of a dispatch. The
// sink produces a fact again when a record is redelivered to it; the
// counter counts each (dispatch, state) once. Its partition count may be
// any, but must not change while facts are in flight (see
// docs/ANALYTICS.md, "Exactly-once counts").
const TopicFacts = "herald.facts.v1"

// Fact states that are not a dispatch's state: replied (an inbound reply
// whose context is the message), billed (a billable status; Detail is the
// pricing category, Amount the price) and outcome (one of the dispatcher's
// outcomes; Detail is the outcome state: accepted, failed, expired,
// in_doubt). The others are the states of message_state: requested, sent,
// delivered, read, failed, expired, in_doubt.
const (
	FactReplied = "replied"
	FactBilled  = "billed"
	FactOutcome = "outcome"
)

// FactStates are the states a DispatchFact may carry.
var FactStates = []string{"requested", "sent", "delivered", "read", "failed", "expired", "in_doubt", FactReplied, FactBilled, FactOutcome}

// DispatchFacts is a record on TopicFacts: facts of one dispatch, with
// what the dispatch was (its attribution). Key FactsKey(App, DispatchID).
type DispatchFacts struct {
	V          int    `json:"v"`
	App        string `json:"app"`
	DispatchID string `json:"dispatch_id"`
	// Day is the UTC day of the request (the day every fact of the
	// dispatch is counted on), as 2006-01-02.
	Day        string `json:"day"`
	SourceKind string `json:"source_kind,omitempty"`
	SourceName string `json:"source_name,omitempty"`
	Template   string `json:"template,omitempty"`
	Category   string `json:"category,omitempty"`
	Country    string `json:"country,omitempty"`
	// Facts are the states reached, at least one.
	Facts []DispatchFact `json:"facts"`
}

// DispatchFact is one state a dispatch reached.
type DispatchFact struct {
	// State is one of FactStates.
	State string `json:"state"`
	// Detail is the time-to-read bucket of read, the pricing category of
	// billed, the error code of failed, the outcome state of outcome.
	Detail string `json:"detail,omitempty"`
	// Amount is the price of billed in millionths of Currency, -1 when no
	// rate was known.
	Amount   int64  `json:"amount,omitempty"`
	Currency string `json:"currency,omitempty"`
	// Time is when the state was reached.
	Time time.Time `json:"time"`
}

// FactsKey is the record key of DispatchFacts: the app and the dispatch id.
func FactsKey(app, dispatchID string) []byte { return []byte(app + keySep + dispatchID) }

// Key returns the record key, see FactsKey.
func (f *DispatchFacts) Key() []byte { return FactsKey(f.App, f.DispatchID) }

// FactsHash is the hash of a TopicFacts key: ClickHouse's cityHash64 of
// it (CityHash64 v1.0.2), so that SQL can compute it too
// (cityHash64(concat(app, '|', dispatch_id))).
func FactsHash(key []byte) uint64 { return city.CH64(key) }

// FactsPartition is the partition of TopicFacts a key goes to, of
// partitions: FactsHash(key) mod partitions. Producers to TopicFacts must
// use it (not Kafka's default murmur2 partitioner): the fact counter
// finds the dispatches a partition owns in ClickHouse by the same hash.
func FactsPartition(key []byte, partitions int) int {
	if partitions <= 0 {
		return 0
	}
	return int(FactsHash(key) % uint64(partitions))
}

// Validate checks the fields the fact counter relies on.
func (f *DispatchFacts) Validate() error {
	switch {
	case !ValidAppID(f.App):
		return invalid("facts: app %q is not a valid app id", f.App)
	case f.DispatchID == "":
		return invalid("facts: dispatch_id is required")
	case len(f.Facts) == 0:
		return invalid("facts: facts is empty")
	}
	if _, err := time.Parse(time.DateOnly, f.Day); err != nil {
		return invalid("facts: day %q is not a date (2006-01-02)", f.Day)
	}
	for i := range f.Facts {
		known := false
		for _, s := range FactStates {
			known = known || f.Facts[i].State == s
		}
		if !known {
			return invalid("facts: facts[%d].state %q is not one of %v", i, f.Facts[i].State, FactStates)
		}
		if f.Facts[i].Time.IsZero() {
			return invalid("facts: facts[%d].time is required", i)
		}
	}
	return nil
}

// DecodeDispatchFacts decodes and validates a TopicFacts record value.
func DecodeDispatchFacts(b []byte) (*DispatchFacts, error) {
	f := new(DispatchFacts)
	if err := decodeWith(b, f, decodeDispatchFacts, func() int { return f.V }); err != nil {
		return nil, err
	}
	return f, nil
}

// Marshal encodes the facts, setting V: the JSON encoding/json writes
// (without its HTML escaping), appended by hand because the analytics sink
// encodes one record per dispatch of every batch (about 3 times faster
// than json.Marshal; TestDispatchFactsMarshal compares the two).
func (f *DispatchFacts) Marshal() ([]byte, error) {
	f.V = V1
	return f.AppendJSON(make([]byte, 0, 160+96*len(f.Facts))), nil
}

// AppendJSON appends the record's JSON encoding to b (V as it is).
func (f *DispatchFacts) AppendJSON(b []byte) []byte {
	w := jsonenc.Object{B: b}
	w.Int("v", int64(f.V))
	w.Str("app", f.App)
	w.Str("dispatch_id", f.DispatchID)
	w.Str("day", f.Day)
	w.OptStr("source_kind", f.SourceKind)
	w.OptStr("source_name", f.SourceName)
	w.OptStr("template", f.Template)
	w.OptStr("category", f.Category)
	w.OptStr("country", f.Country)
	w.Key("facts")
	if f.Facts == nil {
		w.B = append(w.B, "null"...)
	} else {
		w.B = append(w.B, '[')
		for i := range f.Facts {
			if i > 0 {
				w.B = append(w.B, ',')
			}
			x := &f.Facts[i]
			o := jsonenc.Object{B: w.B}
			o.Str("state", x.State)
			o.OptStr("detail", x.Detail)
			o.OptInt("amount", x.Amount)
			o.OptStr("currency", x.Currency)
			o.Key("time")
			o.B = append(x.Time.AppendFormat(append(o.B, '"'), time.RFC3339Nano), '"')
			w.B, _ = o.End()
		}
		w.B = append(w.B, ']')
	}
	b, _ = w.End()
	return b
}
