package ingest

import "github.com/heraldhq/herald/schemas"

// APIs of the redelivery window: the prefix of their keys and the "api"
// label of herald_ingest_duplicates_total.
const (
	apiWebhook = "webhook"
	apiSegment = "segment"
)

// fresh drops the events that were acknowledged before within the dedup
// window, or that repeat an earlier event of the same request, and returns
// the rest with their window keys. key gives an event's identity within
// the API: Meta's wamid and status (the deterministic event id), Segment's
// messageId. The keys are to be remembered only after Kafka acknowledged
// the events, so a request that failed is not mistaken for a duplicate
// when retried.
func (s *Server) fresh(api string, events []*schemas.Event, key func(*schemas.Event) string) ([]*schemas.Event, [][]byte) {
	out := make([]*schemas.Event, 0, len(events))
	keys := make([][]byte, 0, len(events))
	var inRequest map[string]bool
	if len(events) > 1 {
		inRequest = make(map[string]bool, len(events))
	}
	for _, e := range events {
		k := api + ":" + key(e)
		if inRequest[k] || s.seen.Contains([]byte(k)) {
			continue
		}
		if inRequest != nil {
			inRequest[k] = true
		}
		out = append(out, e)
		keys = append(keys, []byte(k))
	}
	if n := len(events) - len(out); n > 0 {
		s.m.duplicates.WithLabelValues(api).Add(float64(n))
	}
	return out, keys
}

// remember adds acknowledged keys to the window.
func (s *Server) remember(keys [][]byte) {
	for _, k := range keys {
		s.seen.Add(k)
	}
}
