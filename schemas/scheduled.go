package schemas

import (
	"encoding/json"
	"time"
)

// MaxScheduleAhead is how far in the future a SendAt may be: ingest refuses
// later send dates, and the scheduler dead-letters requests whose SendAt is
// more than this after the record was written. TopicScheduled must retain
// records longer than this (see TopicConfigs): a pending request holds its
// partition's committed offset until it is released.
const MaxScheduleAhead = 90 * 24 * time.Hour

// Record headers on TopicScheduled. The topic holds two record types; a
// release marker carries the header HeaderRecord with the value
// RecordScheduleRelease, and every other record is a DispatchRequest. A
// header rather than a field in the value, so that telling the two apart does
// not need a JSON decode, and so that producers writing requests need not add
// anything. TopicTemplates tells its two record types apart the same way
// (RecordTemplateSignal).
const (
	HeaderRecord          = "herald-record"
	RecordScheduleRelease = "schedule-release"
)

// HeaderAttempts is set by the dispatcher on a request it deferred to
// TopicScheduled because its recipient's next turn (Meta's pair rate, or a
// retry's backoff) was too far away: the provider calls already made for
// it, in decimal. It also says the request's SendAt is a turn the
// dispatcher planned for the recipient. The scheduler releases a request
// with every header it was written with; producers must not set this one.
const HeaderAttempts = "herald-attempts"

// ScheduleRelease is a release marker on TopicScheduled: the scheduler
// produced the request ID (read from the same partition, at Offset) to
// TopicDispatch at Released. It is written to the request's partition after
// the dispatch was acknowledged, so that a scheduler re-reading the partition
// after a crash or a rebalance does not release the request again.
type ScheduleRelease struct {
	V  int    `json:"v"`
	ID string `json:"id"`
	// Offset is the offset of the released request on TopicScheduled, for
	// operators; the scheduler matches markers to requests by ID.
	Offset   int64     `json:"offset"`
	Released time.Time `json:"released"`
}

// Validate checks the fields the scheduler relies on.
func (r *ScheduleRelease) Validate() error {
	switch {
	case r.ID == "":
		return invalid("schedule release: id is required")
	case r.Released.IsZero():
		return invalid("schedule release: released is required")
	}
	return nil
}

// DecodeScheduleRelease decodes and validates a release marker value.
func DecodeScheduleRelease(b []byte) (*ScheduleRelease, error) {
	r := new(ScheduleRelease)
	if err := decode(b, r, func() int { return r.V }); err != nil {
		return nil, err
	}
	return r, nil
}

// Marshal encodes the marker, setting V.
func (r *ScheduleRelease) Marshal() ([]byte, error) {
	r.V = V1
	return json.Marshal(r)
}
