package segmenter

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/reach"
	"github.com/heraldhq/herald/schemas"
)

// suppressionView is the segmenter's copy of the marketing opt-outs on
// schemas.TopicSuppressions: those the dispatchers learned from Meta
// (131050, in an answer or a failed status) as well as the segmenter's own
// STOP and START. A campaign or journey skips a suppressed recipient's
// MARKETING templates as it skips a profile that opted out with STOP, and a
// preview counts them as opted out, instead of leaving them to the
// dispatcher's refusal (-14). Per key the record of the latest time wins
// (reach.Suppressions, as the dispatchers read the topic).
type suppressionView struct {
	mu  sync.RWMutex
	set *reach.Suppressions
}

func newSuppressionView() *suppressionView {
	return &suppressionView{set: reach.NewSuppressions()}
}

// apply takes in one TopicSuppressions record: a tombstone lifts the key,
// a record older than the key's latest changes nothing, one that does not
// decode is skipped.
func (v *suppressionView) apply(r *kgo.Record, warn func(string, ...any)) {
	if len(r.Value) == 0 {
		v.mu.Lock()
		v.set.Delete(string(r.Key))
		v.mu.Unlock()
		return
	}
	sp, err := schemas.DecodeSuppression(r.Value)
	if err != nil {
		warn("skipping a suppression record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	v.mu.Lock()
	v.set.Set(string(sp.Key()), !sp.Lifted, sp.Time)
	v.mu.Unlock()
}

// suppressed reports whether app may not send MARKETING templates to to.
func (v *suppressionView) suppressed(app, to string) bool {
	if to == "" {
		return false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.set.On(string(schemas.SuppressionKey(app, to)))
}

// runSuppressionsFeed reads TopicSuppressions from the start into s.supp
// until ctx is done. Nothing waits for it to catch up: until it has, the
// dispatcher still refuses what it would have skipped.
func (s *Segmenter) runSuppressionsFeed(ctx context.Context) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicSuppressions,
		func(r *kgo.Record) { s.supp.apply(r, s.log.Warn) }, func() {}); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}

// optedOut reports whether p may not get app's MARKETING templates: it
// opted out with STOP, or its WhatsApp number is suppressed.
func (s *Segmenter) optedOut(app string, p *Profile) bool {
	return p.OptedOut || s.supp.suppressed(app, p.WhatsApp)
}
