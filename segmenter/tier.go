package segmenter

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/reach"
	"github.com/heraldhq/herald/schemas"
)

// tierView is the segmenter's copy of the dispatchers' messaging-tier
// claims (schemas.TopicReach, partition 0), decided as the dispatchers
// decide them (internal/reach), for the tier headroom campaign previews
// show and createTargetedMessage checks.
type tierView struct {
	mu     sync.Mutex
	ledger *reach.Ledger
	ready  chan struct{}
}

func newTierView() *tierView {
	return &tierView{ledger: reach.NewLedger(), ready: make(chan struct{})}
}

// apply takes in one TopicReach record; records that do not decode, or not
// on partition 0 (not ordered with the claims), are skipped.
func (v *tierView) apply(r *kgo.Record, warn func(string, ...any)) {
	c, err := schemas.DecodeReachClaim(r.Value)
	if err != nil || r.Partition != 0 {
		warn("skipping a reach record", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	v.mu.Lock()
	v.ledger.Apply(c)
	v.mu.Unlock()
}

// tier is an app's messaging tier as the preview answers it.
type tier struct {
	// Limit is the tier (unique recipients outside the service window per
	// moving 24 h), 0 when unlimited; Used of them were reached in the last
	// 24 h; Headroom is Limit − Used (−1 when unlimited).
	Limit, Used, Headroom int
}

// headroom returns app's tier at now; 503 until the claims were read up to
// their end at start.
func (s *Segmenter) headroom(ctx context.Context, app *apps.App, now time.Time) (tier, *apiError) {
	limit := app.Tier()
	if limit == apps.TierUnlimited {
		return tier{Headroom: -1}, nil
	}
	if aerr := viewReady(ctx, s.tiers.ready, "the messaging-tier counts are still loading: retry"); aerr != nil {
		return tier{}, aerr
	}
	s.tiers.mu.Lock()
	used := s.tiers.ledger.Used(app.Business(), now)
	s.tiers.mu.Unlock()
	return tier{Limit: limit, Used: used, Headroom: max(limit-used, 0)}, nil
}

// runTierFeed reads TopicReach from the start into s.tiers until ctx is
// done, closing its ready channel once caught up.
func (s *Segmenter) runTierFeed(ctx context.Context) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicReach,
		func(r *kgo.Record) { s.tiers.apply(r, s.log.Warn) },
		func() { close(s.tiers.ready) }); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}
