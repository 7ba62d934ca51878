package reach

import "time"

// Suppressions is what a reader of schemas.TopicSuppressions knows of each
// recipient's marketing opt-out: per key the record of the latest time
// wins, so an older one (a failed status Meta retried for days) changes
// nothing, and a lift (START) is kept so that an older suppression read
// after it does not come back. The dispatcher refuses with it, the
// segmenter skips and counts with it. Not safe for concurrent use.
type Suppressions struct {
	m map[string]suppression
}

// suppression is one key's latest record.
type suppression struct {
	on bool
	at time.Time
}

// NewSuppressions returns an empty set.
func NewSuppressions() *Suppressions { return &Suppressions{m: make(map[string]suppression)} }

// Set records that key is (on) or is no longer suppressed from at on,
// unless a later record is known; it reports whether that changed whether
// key is suppressed.
func (s *Suppressions) Set(key string, on bool, at time.Time) bool {
	cur, known := s.m[key]
	switch {
	case known && at.Before(cur.at):
		return false // older news
	case known && cur.on == on:
		s.m[key] = suppression{on: on, at: at}
		return false // the same, learned again later
	}
	s.m[key] = suppression{on: on, at: at}
	return true
}

// Delete forgets key (a tombstone: no longer suppressed).
func (s *Suppressions) Delete(key string) { delete(s.m, key) }

// On reports whether key is suppressed.
func (s *Suppressions) On(key string) bool { return s.m[key].on }
