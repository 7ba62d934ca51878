// Package schemas is Herald's wire contract: the Kafka topics the stages talk
// through, the record types on each topic, their version field, and the keys
// that decide partitioning.
//
// Every record value is one JSON object with a "v" field holding the record
// version (V1 for everything in this file). The JSON Schema files in
// jsonschema/ describe the same records for producers that are not written in
// Go; schemas_test.go checks that the Go types and the files agree.
//
// Topics and keys:
//
//	herald.events.v1      Event           key EventKey(app, hwid, userID)
//	herald.dispatch.v1    DispatchRequest key RecipientKey(app, to)
//	herald.scheduled.v1   DispatchRequest with a future SendAt, and
//	                      ScheduleRelease markers (header HeaderRecord)
//	                      key RecipientKey(app, to)
//	herald.outcomes.v1    Outcome         key RecipientKey(app, to)
//	herald.intents.v1     DeliveryMark    key RecipientKey(app, to): the dispatcher's
//	                      intents before each call, ingest's statuses by dispatch id
//	herald.deadletter.v1  DeadLetter      key: the key of the record it carries
//	herald.tags.v1        ProfileTags     key ProfileKey(app, hwid, userID, anonymousID), compacted
//	herald.profiles.v1    (segmenter-private changelog) key as the events', same partition, compacted
//	herald.segments.v1    SegmentDef      key SegmentKey(app, name), compacted
//	herald.previews.v1    CampaignPreview key CampaignKey(app, id), partition 0
//	herald.tagdefs.v1     TagDef          key TagDefKey(app, name, declared), compacted
//	herald.journeys.v1    JourneyDef      key JourneyKey(app, id, version), compacted
//	herald.templates.v1   TemplateDef     key TemplateDefKey(app, name, language), compacted;
//	                      TemplateSignal (header HeaderRecord) key TemplateSignalKey
//	herald.senders.v1     SenderState     key MemberKey(member), short retention
//	herald.reach.v1       ReachClaim      key ReachKey(business, to), partition 0, 48 h retention
//	herald.suppressions.v1 Suppression    key SuppressionKey(app, to), compacted
//	herald.facts.v1       DispatchFacts   key FactsKey(app, dispatch id), partition FactsPartition
//
// Events are keyed by app and user so that every event of one user reaches
// the same segmenter partition (the segmenter keeps per-user state and relies
// on seeing one user's events in order). Dispatch requests and outcomes are
// keyed by app and recipient so that sends to one recipient stay in order
// (Meta's pair rate, 131056, is per recipient).
//
// Dispatcher replicas share each sender's rate limit through
// herald.senders.v1: every replica writes its demand and grant per sender a
// few times a second and reads everyone's (see SenderState).
//
// Messaging tier and opt-outs: dispatcher replicas claim each recipient
// they reach outside the service window on partition 0 of herald.reach.v1,
// which orders the claims of all replicas, and send after reading their
// claim back granted (ReachClaim); the segmenter reads the same claims for
// the tier headroom of campaign previews. herald.suppressions.v1 holds the
// recipients Meta said stopped marketing messages (131050).
//
// Scheduled sends: a DispatchRequest whose SendAt is in the future goes to
// herald.scheduled.v1, not herald.dispatch.v1. The scheduler (in the
// dispatcher stage) holds it until SendAt, produces it unchanged to
// herald.dispatch.v1, and then writes a ScheduleRelease marker with the same
// key to the request's partition of herald.scheduled.v1, so that a scheduler
// re-reading the partition knows the request was released.
//
// Templates: herald.templates.v1 holds every app's WhatsApp message
// templates as the dispatcher's sync last listed them from Meta (TemplateDef,
// a tombstone when a template is gone), and the template changes Meta
// reported by webhook (TemplateSignal, written by ingest, told apart by the
// header HeaderRecord: RecordTemplateSignal). Every dispatcher replica reads
// the whole topic to check sends against the templates before calling Meta.
package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// V1 is the record version of every type in this package.
const V1 = 1

// Topic names. A topic name carries its major version: a breaking change to a
// record type gets a new topic, so old and new producers can run side by side.
const (
	TopicEvents     = "herald.events.v1"
	TopicDispatch   = "herald.dispatch.v1"
	TopicScheduled  = "herald.scheduled.v1"
	TopicOutcomes   = "herald.outcomes.v1"
	TopicDeadLetter = "herald.deadletter.v1"
	// TopicTags is compacted (TopicConfigs): the latest record per key is
	// the current state.
	TopicTags = "herald.tags.v1"
	// TopicProfiles is the segmenter's compacted changelog: its values are
	// the segmenter's private profile encoding, not a contract; only the
	// segmenter reads it. Partition p holds the profiles of the events of
	// TopicEvents partition p, so both need the same partition count.
	TopicProfiles = "herald.profiles.v1"
	// TopicSegments is compacted: the saved segments of every app.
	TopicSegments = "herald.segments.v1"
	// TopicPreviews carries campaign audience counts back to the segment
	// API (partition 0; short retention).
	TopicPreviews = "herald.previews.v1"
	// TopicTagDefs is compacted: the tag names each app uses, and their
	// types.
	TopicTagDefs = "herald.tagdefs.v1"
	// TopicTemplates is compacted: the WhatsApp message templates of every
	// app (TemplateDef) and the last webhook change of each
	// (TemplateSignal).
	TopicTemplates = "herald.templates.v1"
	// TopicJourneys is compacted: every version of every app's journeys.
	TopicJourneys = "herald.journeys.v1"
	// TopicIntents carries DeliveryMark records: the dispatcher's intent
	// before each provider call and ingest's status webhooks by dispatch
	// id, keyed like the dispatch requests (same partition count), so
	// that a dispatcher assigned a dispatch partition finds the sends a
	// crashed replica may have made and Meta's word on them.
	TopicIntents = "herald.intents.v1"
	// TopicSenders carries the dispatcher replicas' heartbeats of the
	// global per-sender rate limit (SenderState; short retention).
	TopicSenders = "herald.senders.v1"
	// TopicReach carries the dispatchers' messaging-tier claims
	// (ReachClaim), all on partition 0; 48 h retention.
	TopicReach = "herald.reach.v1"
	// TopicSuppressions is compacted: recipients not to send a kind of
	// message to (Suppression).
	TopicSuppressions = "herald.suppressions.v1"
)

// Topics lists every topic Herald creates at start.
var Topics = []string{TopicEvents, TopicDispatch, TopicScheduled, TopicOutcomes, TopicIntents, TopicDeadLetter, TopicTags, TopicProfiles, TopicSegments, TopicPreviews, TopicTagDefs, TopicTemplates, TopicJourneys, TopicSenders, TopicReach, TopicSuppressions, TopicFacts}

// TopicConfigs are the topic configs Herald sets on the topics it creates,
// by topic; topics not listed get the broker's defaults. Topics that exist
// already are left as they are: set these by hand on them.
var TopicConfigs = map[string]map[string]string{
	// Scheduled requests wait up to MaxScheduleAhead, and a pending request
	// keeps its partition's committed offset at it: the topic must keep
	// records for longer, with room for an outage. 120 days.
	TopicScheduled: {"retention.ms": "10368000000", "cleanup.policy": "delete"},
	// Marks are read back for the dispatcher's dedupe window (default
	// 24 h): a week leaves room for an outage.
	TopicIntents: {"retention.ms": "604800000", "cleanup.policy": "delete"},
	// The latest record per key is the state.
	TopicTags:      {"cleanup.policy": "compact"},
	TopicProfiles:  {"cleanup.policy": "compact"},
	TopicSegments:  {"cleanup.policy": "compact"},
	TopicTagDefs:   {"cleanup.policy": "compact"},
	TopicTemplates: {"cleanup.policy": "compact"},
	TopicJourneys:  {"cleanup.policy": "compact"},
	// Previews are read within seconds of being written: a day is plenty.
	TopicPreviews: {"retention.ms": "86400000"},
	// Replicas read heartbeats from the end and forget them after three
	// periods (under a second): an hour is for operators looking.
	TopicSenders: {"retention.ms": "3600000"},
	// Claims matter for the 24 h after them; 48 h leaves room for a reader
	// that was down.
	TopicReach:        {"retention.ms": "172800000", "cleanup.policy": "delete"},
	TopicSuppressions: {"cleanup.policy": "compact"},
}

// keySep separates the parts of a record key. App ids are validated not to
// contain it (see ValidAppID).
const keySep = "|"

// EventKey is the partitioning key of an Event: the app and the user's device
// id (hwid) when known, else the app and the user id. One user's events share
// one key and so one partition.
func EventKey(app, hwid, userID string) []byte {
	if hwid != "" {
		return []byte(app + keySep + hwid)
	}
	return []byte(app + keySep + "user:" + userID)
}

// ProfileKey is the key of a user's profile: EventKey, or the app and the
// anonymous id when there is neither hwid nor user id. Every event of a user
// (Event.Key) and the user's ProfileTags carry it.
func ProfileKey(app, hwid, userID, anonymousID string) []byte {
	if hwid == "" && userID == "" && anonymousID != "" {
		return []byte(app + keySep + "anon:" + anonymousID)
	}
	return EventKey(app, hwid, userID)
}

// TemplateKey is the partitioning key of a KindTemplate event: the app and
// the template's name (its id when the name is unknown). TemplateDefKey
// builds the keys of TopicTemplates from it.
func TemplateKey(app, template string) []byte {
	return []byte(app + keySep + "template:" + template)
}

// RecipientKey is the partitioning key of a DispatchRequest (on
// TopicDispatch and TopicScheduled) and an Outcome:
// the app and the recipient's address (E.164 number, email or push token).
func RecipientKey(app, to string) []byte {
	k := make([]byte, 0, len(app)+len(keySep)+len(to))
	return append(append(append(k, app...), keySep...), to...)
}

// ValidAppID reports whether id can be used as an app id: 1 to 64 characters
// from [A-Za-z0-9_.-]. Pushwoosh application codes ("ABCDE-12345") fit.
func ValidAppID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// ErrVersion is returned by the Decode functions when a record carries a
// version this build does not understand.
var ErrVersion = errors.New("unsupported record version")

// ErrInvalid is wrapped by Validate methods and Decode functions for records
// that parse but break the contract (a missing required field).
var ErrInvalid = errors.New("invalid record")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// decode unmarshals a record, checks its version and validates it.
func decode[T interface{ Validate() error }](b []byte, v T, version func() int) error {
	return decodeWith(b, v, func(b []byte, v T) error { return json.Unmarshal(b, v) }, version)
}

// decodeWith is decode with unmarshal instead of json.Unmarshal: a fast
// path that falls back to it (decodeDispatch, decodeOutcome, ...).
func decodeWith[T interface{ Validate() error }](b []byte, v T, unmarshal func([]byte, T) error, version func() int) error {
	if err := unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decoding json: %v", ErrInvalid, err)
	}
	if version() != V1 {
		return fmt.Errorf("%w: got v=%d, want %d", ErrVersion, version(), V1)
	}
	return v.Validate()
}

// scheduled validates a DispatchRequest as a TopicScheduled record.
type scheduled struct{ *DispatchRequest }

func (s *scheduled) Validate() error { return s.ValidateScheduled() }

// ValidateRecord decodes and validates value as a record of topic, as the
// pipeline's consumers do, and returns the key the record must be produced
// with. strict additionally refuses fields the record type does not have
// (consumers ignore them, so they are usually typos).
func ValidateRecord(topic string, value []byte, strict bool) ([]byte, error) {
	var (
		rec     interface{ Validate() error }
		version func() int
		key     func() []byte
	)
	switch topic {
	case TopicEvents:
		e := new(Event)
		rec, version, key = e, func() int { return e.V }, e.Key
	case TopicDispatch:
		d := new(DispatchRequest)
		rec, version, key = d, func() int { return d.V }, d.Key
	case TopicScheduled:
		// What producers write there are requests; release markers are
		// the scheduler's own and told apart by a header, not the value.
		d := new(DispatchRequest)
		rec, version, key = &scheduled{d}, func() int { return d.V }, d.Key
	case TopicOutcomes:
		o := new(Outcome)
		rec, version, key = o, func() int { return o.V }, o.Key
	case TopicIntents:
		m := new(DeliveryMark)
		rec, version, key = m, func() int { return m.V }, m.Key
	case TopicPreviews:
		p := new(CampaignPreview)
		rec, version, key = p, func() int { return p.V }, func() []byte { return CampaignKey(p.App, p.Campaign) }
	case TopicSegments:
		d := new(SegmentDef)
		rec, version, key = d, func() int { return d.V }, d.Key
	case TopicJourneys:
		d := new(JourneyDef)
		rec, version, key = d, func() int { return d.V }, d.Key
	case TopicTagDefs:
		d := new(TagDef)
		rec, version, key = d, func() int { return d.V }, d.Key
	case TopicTags:
		p := new(ProfileTags)
		rec, version, key = p, func() int { return p.V }, p.Key
	case TopicTemplates:
		// What the sync writes; ingest's signals are told apart by a
		// header, not the value (DecodeTemplateSignal checks them).
		d := new(TemplateDef)
		rec, version, key = d, func() int { return d.V }, d.Key
	case TopicSenders:
		st := new(SenderState)
		rec, version, key = st, func() int { return st.V }, st.Key
	case TopicReach:
		c := new(ReachClaim)
		rec, version, key = c, func() int { return c.V }, c.Key
	case TopicSuppressions:
		sp := new(Suppression)
		rec, version, key = sp, func() int { return sp.V }, sp.Key
	case TopicFacts:
		f := new(DispatchFacts)
		rec, version, key = f, func() int { return f.V }, f.Key
	case TopicDeadLetter:
		d := new(DeadLetter)
		rec, version, key = d, func() int { return d.V }, func() []byte { return d.Key }
	default:
		return nil, fmt.Errorf("unknown topic %q (one of %v)", topic, Topics)
	}
	if !strict {
		if err := decode(value, rec, version); err != nil {
			return nil, err
		}
		return key(), nil
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(rec); err != nil {
		return nil, fmt.Errorf("%w: decoding json: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: decoding json: data after the record", ErrInvalid)
	}
	if version() != V1 {
		return nil, fmt.Errorf("%w: got v=%d, want %d", ErrVersion, version(), V1)
	}
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	return key(), nil
}
