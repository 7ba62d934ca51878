// Package reach decides WhatsApp messaging-tier claims: Meta lets a business
// reach at most its tier's unique recipients outside the customer-service
// window in any moving 24 hours (250, 2,000, 10,000, 100,000 or unlimited).
//
// Dispatcher replicas write a schemas.ReachClaim to partition 0 of
// schemas.TopicReach before each business-initiated send outside the
// window; the partition orders the claims of every replica, and every reader
// feeds them, in offset order, to a Ledger, which decides each one alike:
// granted when the recipient was granted in the 24 h before the claim (a
// renewal, which moves the recipient's 24 h on), or when fewer than the
// claim's Tier recipients of its business were; refused otherwise. A replica
// sends only after reading its own claim back granted, so that all replicas
// together never grant more than the tier. The segmenter reads the same
// claims for the headroom its campaign previews show.
package reach

import (
	"time"

	"github.com/heraldhq/herald/schemas"
)

// Window is how long a reached recipient counts toward the tier.
const Window = 24 * time.Hour

// Ledger holds, per business, the recipients granted in the last Window, as
// of the claims fed to it. Not safe for concurrent use.
type Ledger struct {
	biz map[string]*business
}

// business is one business's granted recipients: last[to] is the time of
// the recipient's latest granted claim; order lists the grants in feed
// order, so the oldest ones are dropped first (entries of recipients
// granted again later are stale and skipped).
type business struct {
	last  map[string]time.Time
	order []grant
	head  int
}

type grant struct {
	to string
	at time.Time
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{biz: make(map[string]*business)} }

// Apply decides claim c, the next one in partition order, and records it
// when granted. It reports whether c is granted.
func (l *Ledger) Apply(c *schemas.ReachClaim) bool {
	b := l.biz[c.Business]
	if b == nil {
		b = &business{last: make(map[string]time.Time)}
		l.biz[c.Business] = b
	}
	b.prune(c.Time)
	if _, renewal := b.last[c.To]; !renewal && len(b.last) >= c.Tier {
		return false
	}
	// A clock behind the latest grant's does not move the recipient back.
	if at, ok := b.last[c.To]; ok && at.After(c.Time) {
		return true
	}
	b.last[c.To] = c.Time
	b.order = append(b.order, grant{c.To, c.Time})
	return true
}

// Used returns how many recipients of business count toward its tier at now:
// those granted in the Window before now. It changes nothing (only the
// claims decide what is forgotten, so that every reader decides alike).
func (l *Ledger) Used(business string, now time.Time) int {
	b := l.biz[business]
	if b == nil {
		return 0
	}
	n := len(b.last)
	for _, g := range b.order[b.head:] {
		if now.Sub(g.at) < Window {
			break
		}
		if at, ok := b.last[g.to]; ok && at.Equal(g.at) {
			n--
		}
	}
	return n
}

// Counted reports whether to counts toward business's tier at now (a send to
// it would be a renewal).
func (l *Ledger) Counted(business, to string, now time.Time) bool {
	b := l.biz[business]
	if b == nil {
		return false
	}
	at, ok := b.last[to]
	return ok && now.Sub(at) < Window
}

// Businesses returns the businesses the ledger holds grants of.
func (l *Ledger) Businesses() []string {
	out := make([]string, 0, len(l.biz))
	for k := range l.biz {
		out = append(out, k)
	}
	return out
}

// prune forgets the grants that no longer count at now. Grants are fed
// nearly in time order (claimants' clocks differ a little): one later in the
// feed but earlier in time waits behind the ones before it.
func (b *business) prune(now time.Time) {
	for b.head < len(b.order) {
		g := b.order[b.head]
		if now.Sub(g.at) < Window {
			break
		}
		if at, ok := b.last[g.to]; ok && at.Equal(g.at) {
			delete(b.last, g.to)
		}
		b.order[b.head] = grant{}
		b.head++
	}
	if b.head > 1024 && b.head*2 > len(b.order) {
		b.order = append([]grant(nil), b.order[b.head:]...)
		b.head = 0
	}
}
