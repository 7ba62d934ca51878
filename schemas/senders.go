package schemas

import (
	"encoding/json"
	"math"
	"time"
)

// SenderState is a record on TopicSenders, the dispatcher replicas'
// coordination topic for the global per-sender rate limit. Every replica
// writes, every heartbeat period, one record with Sender empty (a member
// heartbeat: "I am alive") and one per sender it has recent work or rate
// news for; every replica reads every partition from the end. Key
// MemberKey(Member): one replica's records stay in order on one partition,
// so seeing its member heartbeat means its sender records of the same beat
// were seen too. Short retention; nothing reads it from the start.
type SenderState struct {
	V int `json:"v"`
	// Member is the writing replica's id, random per process.
	Member string `json:"member"`
	// Sender is the WhatsApp phone-number id; empty for a member heartbeat.
	Sender string `json:"sender"`
	// PeriodMS is the writer's heartbeat period in milliseconds: readers
	// take it for gone after three periods without a record.
	PeriodMS int64 `json:"period_ms"`
	// Leaving is set on the member heartbeat a replica writes when it
	// stops: readers forget it at once.
	Leaving bool `json:"leaving,omitempty"`
	// Demand is the sends a second the member wants for Sender: its sends
	// in the last period plus those waiting, per second.
	Demand float64 `json:"demand"`
	// Backlog is how many sends of Sender were waiting at the member.
	Backlog int `json:"backlog"`
	// Grant is the sends a second the member allows itself for Sender now.
	Grant float64 `json:"grant"`
	// Rate is the sender's global adaptive rate as the member believes it;
	// Configured is the rate configured for the sender at the member (the
	// smallest configured rate of the live members is used).
	Rate       float64 `json:"rate"`
	Configured float64 `json:"configured"`
	// LoweredRate, LoweredAt and LoweredCode describe the latest lowering
	// of the rate the member knows of: a Meta rate-limit answer (code 4,
	// 80007 or 130429) at LoweredAt set the rate to LoweredRate, from which
	// it climbs back by steps while no further lowering comes. Zero when
	// the rate is at its configured value.
	LoweredRate float64   `json:"lowered_rate,omitempty"`
	LoweredAt   time.Time `json:"lowered_at,omitzero"`
	LoweredCode int       `json:"lowered_code,omitempty"`
	// Time is when the member wrote the record, by its clock.
	Time time.Time `json:"time"`
}

// MaxMemberID is the longest member id, in bytes.
const MaxMemberID = 64

// MemberKey is the record key of a member's records on TopicSenders.
func MemberKey(member string) []byte { return []byte(member) }

// Key returns the record key, see MemberKey.
func (s *SenderState) Key() []byte { return MemberKey(s.Member) }

// Validate checks the fields readers rely on: a member id, a positive
// period, and rates that are finite and not negative.
func (s *SenderState) Validate() error {
	switch {
	case s.Member == "" || len(s.Member) > MaxMemberID:
		return invalid("sender state: member must be 1 to %d bytes", MaxMemberID)
	case s.PeriodMS <= 0:
		return invalid("sender state: period_ms %d must be positive", s.PeriodMS)
	case s.Time.IsZero():
		return invalid("sender state: time is required")
	case s.Backlog < 0:
		return invalid("sender state: backlog %d is negative", s.Backlog)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"demand", s.Demand},
		{"grant", s.Grant},
		{"rate", s.Rate},
		{"configured", s.Configured},
		{"lowered_rate", s.LoweredRate},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return invalid("sender state: %s %v must be a finite number, not negative", f.name, f.v)
		}
	}
	return nil
}

// DecodeSenderState decodes and validates a TopicSenders record value.
func DecodeSenderState(b []byte) (*SenderState, error) {
	s := new(SenderState)
	if err := decode(b, s, func() int { return s.V }); err != nil {
		return nil, err
	}
	return s, nil
}

// Marshal encodes the record, setting V.
func (s *SenderState) Marshal() ([]byte, error) {
	s.V = V1
	return json.Marshal(s)
}
