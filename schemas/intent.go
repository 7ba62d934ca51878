package schemas

import (
	"encoding/json"
	"time"

	"github.com/heraldhq/herald/internal/jsonenc"
)

// MarkKind tells the two records of TopicIntents apart.
type MarkKind string

// Mark kinds.
const (
	// MarkIntent is written by the dispatcher, and acknowledged, before
	// each provider call of a dispatch request: a replica that finds an
	// intent without an outcome knows the call may have been made.
	MarkIntent MarkKind = "intent"
	// MarkStatus is written by ingest for each WhatsApp status webhook
	// that carries a dispatch id (biz_opaque_callback_data): proof that
	// Meta got the message.
	MarkStatus MarkKind = "status"
	// MarkAnswered is written by the dispatcher after a call of an intent
	// was answered with an error it will retry: that call is not in doubt
	// even if the request is left undecided (deferred, or its replica
	// stopped before the retry).
	MarkAnswered MarkKind = "answered"
)

// DeliveryMark is a record on TopicIntents, keyed by RecipientKey(app, to)
// like the dispatch request it is about, so that it lands on the partition
// number of the request and of its outcome (the three topics must have the
// same partition count). The dispatcher reads a partition's marks when it is
// assigned the dispatch partition, to tell the sends a crashed replica may
// have made (an intent without an outcome) and whether Meta got them (a
// status).
type DeliveryMark struct {
	V          int      `json:"v"`
	Kind       MarkKind `json:"kind"`
	DispatchID string   `json:"dispatch_id"`
	App        string   `json:"app"`
	// To is the recipient, as in the dispatch request (E.164 for
	// WhatsApp).
	To string `json:"to"`
	// Sender and Attempt (the call's number, from 1) are set on intents;
	// Attempt on answered marks too.
	Sender  string `json:"sender,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// WAMID and Status (sent, delivered, read, failed) are set on statuses.
	WAMID  string `json:"wamid,omitempty"`
	Status string `json:"status,omitempty"`
	// ErrorCode is Meta's code of a failed status (its first errors[]
	// entry): 131050 (marketing opt-out), 131047 (window closed), 131026,
	// 131049... The dispatcher learns 131050 and 131047 from it.
	ErrorCode int `json:"error_code,omitempty"`
	// Time is when the intent was written, or the status's time.
	Time time.Time `json:"time"`
}

// Validate checks the fields consumers rely on.
func (m *DeliveryMark) Validate() error {
	switch {
	case m.Kind != MarkIntent && m.Kind != MarkStatus && m.Kind != MarkAnswered:
		return invalid("delivery mark: kind %q: want intent, status or answered", m.Kind)
	case m.DispatchID == "":
		return invalid("delivery mark: dispatch_id is required")
	case !ValidAppID(m.App):
		return invalid("delivery mark: app %q is not a valid app id", m.App)
	case m.To == "":
		return invalid("delivery mark: to is required")
	case m.Kind == MarkStatus && (m.WAMID == "" || m.Status == ""):
		return invalid("delivery mark: a status needs wamid and status")
	case m.Time.IsZero():
		return invalid("delivery mark: time is required")
	}
	return nil
}

// Key returns the record key, see RecipientKey.
func (m *DeliveryMark) Key() []byte { return RecipientKey(m.App, m.To) }

// DecodeDeliveryMark decodes and validates a TopicIntents record value.
func DecodeDeliveryMark(b []byte) (*DeliveryMark, error) {
	m := new(DeliveryMark)
	if err := decode(b, m, func() int { return m.V }); err != nil {
		return nil, err
	}
	return m, nil
}

// Marshal encodes the mark, setting V.
func (m *DeliveryMark) Marshal() ([]byte, error) {
	m.V = V1
	if b, ok := m.appendJSON(make([]byte, 0, 256)); ok {
		return b, nil
	}
	return json.Marshal(m)
}

// appendJSON appends m's JSON as encoding/json writes it, without
// reflection (an intent before every call); ok is false for a time
// MarshalJSON writes otherwise or refuses. TestDeliveryMarkAppendJSON
// compares the two.
func (m *DeliveryMark) appendJSON(b []byte) ([]byte, bool) {
	w := jsonenc.Object{B: b}
	w.Int("v", int64(m.V))
	w.Str("kind", string(m.Kind))
	w.Str("dispatch_id", m.DispatchID)
	w.Str("app", m.App)
	w.Str("to", m.To)
	w.OptStr("sender", m.Sender)
	w.OptInt("attempt", int64(m.Attempt))
	w.OptStr("wamid", m.WAMID)
	w.OptStr("status", m.Status)
	w.OptInt("error_code", int64(m.ErrorCode))
	w.Time("time", m.Time)
	return w.End()
}
