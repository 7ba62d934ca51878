package schemas

import "embed"

// JSONSchema holds the JSON Schema (draft 2020-12) of every record type, for
// producers and consumers not written in Go: jsonschema/event.v1.json,
// dispatch.v1.json (also the requests on TopicScheduled), outcome.v1.json,
// deadletter.v1.json, schedule_release.v1.json (release markers on
// TopicScheduled), tags.v1.json, segment.v1.json, preview.v1.json,
// template.v1.json and template_signal.v1.json (the two record types of
// TopicTemplates), sender_state.v1.json (heartbeats on TopicSenders), delivery_mark.v1.json
// (intents and statuses on TopicIntents), facts.v1.json (TopicFacts).
//
//go:embed jsonschema/*.json
var JSONSchema embed.FS
