package schemas

import (
	"encoding/json"
	"time"
)

// DeadLetter is a record on TopicDeadLetter: a record a stage could not
// process, kept whole with the reason so that nothing is lost silently.
type DeadLetter struct {
	V int `json:"v"`
	// Stage is the stage that gave up: ingest, segmenter, dispatcher,
	// analytics.
	Stage     string `json:"stage"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// Key and Value are the original record's bytes (base64 in JSON).
	Key    []byte    `json:"key,omitempty"`
	Value  []byte    `json:"value,omitempty"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
}

// Validate checks the fields consumers rely on.
func (d *DeadLetter) Validate() error {
	if d.Stage == "" || d.Reason == "" {
		return invalid("deadletter: stage and reason are required")
	}
	return nil
}

// DecodeDeadLetter decodes and validates a TopicDeadLetter record value.
func DecodeDeadLetter(b []byte) (*DeadLetter, error) {
	d := new(DeadLetter)
	if err := decode(b, d, func() int { return d.V }); err != nil {
		return nil, err
	}
	return d, nil
}

// Marshal encodes the dead letter, setting V.
func (d *DeadLetter) Marshal() ([]byte, error) {
	d.V = V1
	return json.Marshal(d)
}
