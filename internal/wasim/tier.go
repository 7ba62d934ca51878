package wasim

import (
	"sync"
	"time"
)

// tierWindow is the moving window of a messaging tier: Meta counts the
// unique users a business reached outside the service window in the last
// 24 hours.
const tierWindow = 24 * time.Hour

// tiers enforces the messaging tier of each WhatsApp Business account:
// a template to a user outside the number's service window is a
// business-initiated message and counts that user for 24 hours; once a
// WABA reached its tier of unique users in the moving 24 h, templates to
// further users outside the window fail (131048, see Config.MessagingTier).
// A user reached within the last 24 h counts once: messaging them again is
// always allowed and renews their 24 h.
type tiers struct {
	mu sync.Mutex
	// def is Config.MessagingTier; byWABA are SetMessagingTier's overrides.
	def    int
	byWABA map[string]int
	// reached holds, per WABA, when each user was last reached outside
	// the window.
	reached map[string]map[string]time.Time
	// pruned is the size of a WABA's map after its last pruning.
	pruned map[string]int
}

func newTiers(def int) *tiers {
	return &tiers{def: def, byWABA: make(map[string]int), reached: make(map[string]map[string]time.Time), pruned: make(map[string]int)}
}

// set changes the tier of one WABA; 0 makes it unlimited.
func (t *tiers) set(waba string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byWABA[waba] = n
}

// limit is waba's tier, 0 for unlimited. Call with t.mu held.
func (t *tiers) limit(waba string) int {
	if n, ok := t.byWABA[waba]; ok {
		return n
	}
	return t.def
}

// admit decides a business-initiated message of waba to waID at now: true
// (and counted) when waID was reached in the last 24 h or the WABA reached
// fewer than its tier; false when the tier is used up.
func (t *tiers) admit(waba, waID string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := t.limit(waba)
	if limit <= 0 {
		return true // unlimited: nothing to count
	}
	m := t.reached[waba]
	if m == nil {
		m = make(map[string]time.Time)
		t.reached[waba] = m
	}
	if at, ok := m[waID]; ok && now.Sub(at) < tierWindow {
		m[waID] = now
		return true
	}
	if t.usedLocked(waba, now) >= limit {
		return false
	}
	m[waID] = now
	return true
}

// used counts the users waba reached outside the window in the 24 h
// before now (0 for an unlimited WABA: its users are not counted).
func (t *tiers) used(waba string, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.usedLocked(waba, now)
}

// usedLocked is used with t.mu held; it forgets users reached more than
// 24 h ago once the map doubled since its last pruning.
func (t *tiers) usedLocked(waba string, now time.Time) int {
	m := t.reached[waba]
	if len(m) > 2*t.pruned[waba]+1024 {
		for id, at := range m {
			if now.Sub(at) >= tierWindow {
				delete(m, id)
			}
		}
		t.pruned[waba] = len(m)
	}
	n := 0
	for _, at := range m {
		if now.Sub(at) < tierWindow {
			n++
		}
	}
	return n
}
