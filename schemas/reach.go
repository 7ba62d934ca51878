package schemas

import (
	"encoding/json"
	"time"
)

// ReachClaim is a record on TopicReach, always on partition 0: a dispatcher
// replica's claim to reach To, a recipient outside the service window, with
// a business-initiated message (a template) on behalf of Business, within
// the business's messaging tier (Tier unique recipients per moving 24 h).
//
// Partition 0 orders every claim of every replica, so every reader decides
// each claim alike (internal/reach.Ledger): a claim is granted when To was
// granted within the 24 h before the claim's Time (a renewal), or when fewer
// than Tier other recipients were; else it is refused. The claiming replica
// sends only once it has read its own claim back granted. The segmenter
// reads the same topic for the tier headroom of its campaign previews.
// Key ReachKey(business, to); short retention (TopicConfigs).
type ReachClaim struct {
	V int `json:"v"`
	// ID identifies the claim (random): the claiming replica finds its
	// claim's decision by it.
	ID string `json:"id"`
	// Business is what Meta counts the tier of: the app's WhatsApp Business
	// account id, or "app:" and the app id for an app without one.
	Business string `json:"business"`
	App      string `json:"app"`
	To       string `json:"to"`
	// DispatchID is the request the claim is for, for operators.
	DispatchID string `json:"dispatch_id,omitempty"`
	// Tier is the business's messaging tier as the claiming replica is
	// configured (250, 2000, 10000 or 100000), so that every reader
	// decides the claim alike.
	Tier int `json:"tier"`
	// Time is when the claim was made, by the claimant's clock; the 24 h
	// window of the decision ends at it.
	Time time.Time `json:"time"`
}

// ReachKey is the record key of a ReachClaim.
func ReachKey(business, to string) []byte { return []byte(business + keySep + to) }

// Key returns the record key, see ReachKey.
func (c *ReachClaim) Key() []byte { return ReachKey(c.Business, c.To) }

// Validate checks the fields readers rely on.
func (c *ReachClaim) Validate() error {
	switch {
	case c.ID == "":
		return invalid("reach claim: id is required")
	case c.Business == "":
		return invalid("reach claim: business is required")
	case !ValidAppID(c.App):
		return invalid("reach claim: app %q is not a valid app id", c.App)
	case c.To == "":
		return invalid("reach claim: to is required")
	case c.Tier <= 0:
		return invalid("reach claim: tier %d must be positive", c.Tier)
	case c.Time.IsZero():
		return invalid("reach claim: time is required")
	}
	return nil
}

// DecodeReachClaim decodes and validates a TopicReach record value.
func DecodeReachClaim(b []byte) (*ReachClaim, error) {
	c := new(ReachClaim)
	if err := decode(b, c, func() int { return c.V }); err != nil {
		return nil, err
	}
	return c, nil
}

// Marshal encodes the claim, setting V.
func (c *ReachClaim) Marshal() ([]byte, error) {
	c.V = V1
	return json.Marshal(c)
}

// Suppression reasons.
const (
	// SuppressMarketingOptOut: Meta answered 131050, the user stopped
	// marketing messages from the business in WhatsApp.
	SuppressMarketingOptOut = "marketing_opt_out"
)

// Suppression is a record on TopicSuppressions (compacted): App must not send
// Reason's kind of message to To. The dispatcher writes one when Meta answers
// 131050, in a send answer or a failed status webhook, and refuses MARKETING
// templates to To before the call from then on; the segmenter writes one
// when the user sends STOP (Keyword set). Every replica of the dispatcher
// reads the whole topic. A record with Lifted set (the segmenter's, for
// START) lifts the key's suppression, and so does a tombstone. Readers keep
// per key the record of the latest Time: an older one (a failed status
// Meta retried for days) changes nothing. Key SuppressionKey(app, to).
type Suppression struct {
	V      int    `json:"v"`
	App    string `json:"app"`
	To     string `json:"to"`
	Reason string `json:"reason"`
	// Code is the provider's error code that taught it (131050).
	Code int `json:"code,omitempty"`
	// DispatchID is the request whose answer taught it.
	DispatchID string `json:"dispatch_id,omitempty"`
	// Keyword is the inbound keyword that set or lifted it (STOP, START),
	// when the user asked for it.
	Keyword string `json:"keyword,omitempty"`
	// Lifted: the user may be sent Reason's kind of message again from
	// Time on (START).
	Lifted bool `json:"lifted,omitempty"`
	// Time is when it was learned: Meta's answer, the failed status's
	// time, the inbound keyword's time.
	Time time.Time `json:"time"`
}

// SuppressionKey is the record key of a Suppression: RecipientKey.
func SuppressionKey(app, to string) []byte { return RecipientKey(app, to) }

// Key returns the record key, see SuppressionKey.
func (s *Suppression) Key() []byte { return SuppressionKey(s.App, s.To) }

// Validate checks the fields readers rely on.
func (s *Suppression) Validate() error {
	switch {
	case !ValidAppID(s.App):
		return invalid("suppression: app %q is not a valid app id", s.App)
	case s.To == "":
		return invalid("suppression: to is required")
	case s.Reason != SuppressMarketingOptOut:
		return invalid("suppression: reason %q is not %s", s.Reason, SuppressMarketingOptOut)
	case s.Time.IsZero():
		return invalid("suppression: time is required")
	}
	return nil
}

// DecodeSuppression decodes and validates a TopicSuppressions record value.
func DecodeSuppression(b []byte) (*Suppression, error) {
	s := new(Suppression)
	if err := decode(b, s, func() int { return s.V }); err != nil {
		return nil, err
	}
	return s, nil
}

// Marshal encodes the suppression, setting V.
func (s *Suppression) Marshal() ([]byte, error) {
	s.V = V1
	return json.Marshal(s)
}
