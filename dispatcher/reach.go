package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/reach"
	"github.com/heraldhq/herald/schemas"
)

// The reach gate holds the checks of who may be reached at all, before any
// wait or call (docs/LIMITS.md, "Messaging tier, window and opt-out"):
//
//   - free-form text to a recipient whose service window is known to be
//     closed fails with CodeWindowClosed: the request's WindowUntil passed,
//     or Meta answered 131047 for the recipient since the window the
//     request knows of ended (remembered in memory for 24 h: the recipient's
//     requests are keyed to one partition, so to one replica at a time);
//   - a MARKETING template to a recipient Meta answered 131050 for fails
//     with CodeOptedOut: the answer is written to schemas.TopicSuppressions
//     (compacted, key app|to), which every replica reads whole, so it holds
//     across replicas, rebalances and restarts;
//   - a template to a recipient not known to be inside the service window,
//     of an app with a messaging tier, is claimed on partition 0 of
//     schemas.TopicReach and sent only once this replica read its claim
//     back granted (internal/reach decides claims in partition order, alike
//     at every replica); refused, it fails with CodeTierExceeded.
const (
	// categoryMarketing is Meta's MARKETING template category.
	categoryMarketing = "MARKETING"
	// claimWait bounds the wait for a claim to be read back; past it the
	// request is retried (its claim may have been granted: then it counts
	// a recipient not reached, the safe side).
	claimWait = 10 * time.Second
	// claimRetry is the wait before claiming again after a claim could not
	// be produced or read back.
	claimRetry = time.Second
	// suppressTimeout bounds writing a learned opt-out.
	suppressTimeout = 5 * time.Second
)

// reachGate is the dispatcher's view of TopicReach and TopicSuppressions.
type reachGate struct {
	reg *apps.Registry
	log *slog.Logger
	m   *reachMetrics
	// claims reads TopicReach from the start and writes claims to its
	// partition 0; sups reads TopicSuppressions and writes opt-outs.
	claims, sups *kgo.Client
	// supsReady is closed once sups caught up with the topic at start.
	supsReady chan struct{}
	throttle  *throttle

	mu      sync.Mutex
	ledger  *reach.Ledger
	waiters map[string]chan bool
	// suppressed holds the latest suppression record of each
	// SuppressionKey: set or lifted, and when.
	suppressed *reach.Suppressions
	// closed holds when Meta last answered 131047, by RecipientKey;
	// closedPruned is its size after the last pruning.
	closed       map[string]time.Time
	closedPruned int
}

func newReachGate(kopts []kgo.Opt, reg *apps.Registry, log *slog.Logger, prom prometheus.Registerer) (*reachGate, error) {
	g := &reachGate{
		reg: reg, log: log, supsReady: make(chan struct{}), throttle: newThrottle(time.Second),
		ledger: reach.NewLedger(), waiters: make(map[string]chan bool), suppressed: reach.NewSuppressions(),
		closed: make(map[string]time.Time),
	}
	m, err := newReachMetrics(prom, g)
	if err != nil {
		return nil, err
	}
	g.m = m
	if g.claims, err = kgo.NewClient(append(append([]kgo.Opt{}, kopts...),
		append(kafka.FollowOpts(schemas.TopicReach), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)...); err != nil {
		return nil, fmt.Errorf("dispatcher: creating the reach client: %w", err)
	}
	if g.sups, err = kgo.NewClient(append(append([]kgo.Opt{}, kopts...), kafka.FollowOpts(schemas.TopicSuppressions)...)...); err != nil {
		g.claims.Close()
		return nil, fmt.Errorf("dispatcher: creating the suppressions client: %w", err)
	}
	return g, nil
}

// run follows both topics until ctx is done.
func (g *reachGate) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		kafka.Follow(ctx, g.claims, schemas.TopicReach, g.log, g.applyClaim, func() {})
	})
	wg.Go(func() {
		kafka.Follow(ctx, g.sups, schemas.TopicSuppressions, g.log, g.applySuppression, func() { close(g.supsReady) })
	})
	wg.Wait()
}

// waitReady waits until the suppressions were read up to their end at start
// (true) or ctx is done (false). Claims need no wait: each is decided when
// it is read back, after everything before it.
func (g *reachGate) waitReady(ctx context.Context) bool {
	select {
	case <-g.supsReady:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *reachGate) close() {
	g.claims.Close()
	g.sups.Close()
}

// applyClaim decides one TopicReach record and hands the decision to the
// request waiting for it, if it is ours.
func (g *reachGate) applyClaim(r *kgo.Record) {
	c, err := schemas.DecodeReachClaim(r.Value)
	if err != nil {
		g.m.records.WithLabelValues("invalid").Inc()
		if g.throttle.allow("claim") {
			g.log.Warn("skipping an invalid reach claim", "partition", r.Partition, "offset", r.Offset, "err", err)
		}
		return
	}
	if r.Partition != 0 {
		// Not ordered with the others: not a claim of this protocol.
		g.m.records.WithLabelValues("invalid").Inc()
		return
	}
	g.mu.Lock()
	granted := g.ledger.Apply(c)
	ch := g.waiters[c.ID]
	delete(g.waiters, c.ID)
	g.mu.Unlock()
	if granted {
		g.m.records.WithLabelValues("granted").Inc()
	} else {
		g.m.records.WithLabelValues("refused").Inc()
	}
	if ch != nil {
		ch <- granted
	}
}

// applySuppression takes in one TopicSuppressions record: a tombstone
// lifts the key's suppression; a record sets or lifts it unless the key
// holds a later one already.
func (g *reachGate) applySuppression(r *kgo.Record) {
	if r.Value == nil {
		g.mu.Lock()
		g.suppressed.Delete(string(r.Key))
		g.mu.Unlock()
		g.m.records.WithLabelValues("lifted").Inc()
		return
	}
	s, err := schemas.DecodeSuppression(r.Value)
	if err != nil {
		g.m.records.WithLabelValues("invalid").Inc()
		if g.throttle.allow("suppression") {
			g.log.Warn("skipping an invalid suppression", "partition", r.Partition, "offset", r.Offset, "err", err)
		}
		return
	}
	g.mu.Lock()
	g.setSuppressed(string(s.Key()), !s.Lifted, s.Time)
	g.mu.Unlock()
	if s.Lifted {
		g.m.records.WithLabelValues("lifted").Inc()
	} else {
		g.m.records.WithLabelValues("suppression").Inc()
	}
}

// setSuppressed records that key is (on) or is no longer suppressed from
// at on, unless a later record is known; it reports whether it changed
// what the gate knows. Call with g.mu held.
func (g *reachGate) setSuppressed(key string, on bool, at time.Time) bool {
	return g.suppressed.Set(key, on, at)
}

// check refuses req before any call when its recipient cannot be reached
// with it: text outside the window, marketing to an opted-out recipient.
// category is the template's category, "" when unknown.
func (g *reachGate) check(req *schemas.DispatchRequest, category string, now time.Time) error {
	if req.Channel != schemas.ChannelWhatsApp {
		return nil
	}
	key := string(req.Key())
	if req.Text != nil {
		if req.WindowClosed(now) {
			g.m.refused.WithLabelValues("window").Inc()
			return fmt.Errorf("%w: the recipient's window ended at %s (window_until)", ErrWindowClosed, req.WindowUntil.UTC().Format(time.RFC3339))
		}
		g.mu.Lock()
		at, ok := g.closed[key]
		g.mu.Unlock()
		// A window_until more than 24 h after Meta's answer means an
		// inbound message since: the window opened again. One less far
		// is the window Meta just said is closed.
		if ok && now.Sub(at) < reach.Window && (req.WindowUntil.IsZero() || !req.WindowUntil.After(at.Add(reach.Window))) {
			g.m.refused.WithLabelValues("window_meta").Inc()
			return fmt.Errorf("%w: Meta answered 131047 for the recipient at %s", ErrWindowClosed, at.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if req.Template != nil && strings.EqualFold(category, categoryMarketing) {
		g.mu.Lock()
		out := g.suppressed.On(key)
		g.mu.Unlock()
		if out {
			g.m.refused.WithLabelValues("opt_out").Inc()
			return fmt.Errorf("%w: Meta answered 131050 for the recipient (herald.suppressions.v1); marketing template %q not sent", ErrOptedOut, req.Template.Name)
		}
	}
	return nil
}

// needsClaim reports whether req counts toward app's messaging tier: a
// template, not known to be inside the recipient's window, of an app with
// a tier.
func needsClaim(app *apps.App, req *schemas.DispatchRequest, now time.Time) bool {
	return req.Channel == schemas.ChannelWhatsApp && req.Template != nil && app.Tier() != apps.TierUnlimited && !req.InWindow(now)
}

// errClaimUnknown: the claim's decision could not be read back in time.
var errClaimUnknown = errors.New("messaging-tier claim not read back")

// claim claims req's recipient within app's tier and waits for the
// decision. It returns ErrTierExceeded (wrapped) when refused,
// errClaimUnknown or ctx's error when undecided.
func (g *reachGate) claim(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) error {
	var b [12]byte
	_, _ = rand.Read(b[:])
	c := &schemas.ReachClaim{
		ID: hex.EncodeToString(b[:]), Business: app.Business(), App: app.ID, To: req.To,
		DispatchID: req.ID, Tier: app.Tier(), Time: time.Now().UTC(),
	}
	v, err := c.Marshal()
	if err != nil {
		return fmt.Errorf("encoding reach claim: %w", err)
	}
	ch := make(chan bool, 1)
	g.mu.Lock()
	g.waiters[c.ID] = ch
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.waiters, c.ID)
		g.mu.Unlock()
	}()
	cctx, cancel := context.WithTimeout(ctx, claimWait)
	defer cancel()
	if err := g.claims.ProduceSync(cctx, &kgo.Record{Topic: schemas.TopicReach, Partition: 0, Key: c.Key(), Value: v}).FirstErr(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: producing it: %v", errClaimUnknown, err)
	}
	select {
	case granted := <-ch:
		if !granted {
			g.m.refused.WithLabelValues("tier").Inc()
			return fmt.Errorf("%w: business %s reached %d unique recipients outside the service window in the last 24 h", ErrTierExceeded, c.Business, c.Tier)
		}
		return nil
	case <-cctx.Done():
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w within %s", errClaimUnknown, claimWait)
	}
}

// learn remembers what a permanent Meta answer to req says of its
// recipient: 131050 (stopped marketing messages) is written to
// TopicSuppressions, 131047 (window closed) kept in memory.
func (g *reachGate) learn(ctx context.Context, req *schemas.DispatchRequest, err error) {
	if req.Channel != schemas.ChannelWhatsApp {
		return
	}
	now := time.Now()
	switch errorCode(err) {
	case codeReengagement:
		g.learnClosed(string(req.Key()), now, learnedAnswer)
	case codeMarketingOptOut:
		g.learnOptOut(ctx, req.App, req.To, req.ID, now, learnedAnswer)
	}
}

// Where a learned fact came from, the from label of
// herald_dispatcher_learned_total.
const (
	learnedAnswer = "answer" // a send answer
	learnedStatus = "status" // a failed status webhook
)

// learnStatus remembers what a failed status webhook (a status mark of
// ingest on TopicIntents) says of its recipient, as learn does for
// answers: Meta reports 131050 and 131047 in the status of a send it
// accepted. The status's time is when it was learned, so that a status
// Meta retried for days does not undo a later START.
func (g *reachGate) learnStatus(ctx context.Context, m *schemas.DeliveryMark) {
	if m.Kind != schemas.MarkStatus || m.Status != "failed" {
		return
	}
	g.m.failedStatuses.WithLabelValues(strconv.Itoa(m.ErrorCode)).Inc()
	switch m.ErrorCode {
	case codeReengagement:
		g.learnClosed(string(schemas.RecipientKey(m.App, m.To)), m.Time, learnedStatus)
	case codeMarketingOptOut:
		g.learnOptOut(ctx, m.App, m.To, m.DispatchID, m.Time, learnedStatus)
	}
}

// learnClosed notes that Meta said at at that key's window was closed.
func (g *reachGate) learnClosed(key string, at time.Time, from string) {
	now := time.Now()
	if now.Sub(at) >= reach.Window {
		return // a status about a window long gone
	}
	g.m.learned.WithLabelValues("window_closed", from).Inc()
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, ok := g.closed[key]; !ok || at.After(prev) {
		g.closed[key] = at
	}
	if len(g.closed) > 2*g.closedPruned+1024 {
		for k, t := range g.closed {
			if now.Sub(t) >= reach.Window {
				delete(g.closed, k)
			}
		}
		g.closedPruned = len(g.closed)
	}
}

// learnOptOut notes that (app, to) stopped marketing messages at at and
// writes it to TopicSuppressions, unless that is known already or a later
// record (a START) lifted it.
func (g *reachGate) learnOptOut(ctx context.Context, app, to, dispatchID string, at time.Time, from string) {
	s := &schemas.Suppression{
		App: app, To: to, Reason: schemas.SuppressMarketingOptOut,
		Code: codeMarketingOptOut, DispatchID: dispatchID, Time: at.UTC(),
	}
	g.mu.Lock()
	changed := g.setSuppressed(string(s.Key()), true, s.Time)
	g.mu.Unlock()
	if !changed {
		return
	}
	g.m.learned.WithLabelValues("opt_out", from).Inc()
	v, err := s.Marshal()
	if err == nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), suppressTimeout)
		err = g.sups.ProduceSync(pctx, &kgo.Record{Topic: schemas.TopicSuppressions, Key: s.Key(), Value: v}).FirstErr()
		cancel()
	}
	if err != nil {
		// Kept in this replica's memory; another replica or a restart
		// learns it again from Meta's next 131050.
		g.log.Warn("writing a learned marketing opt-out", "app", app, "dispatch_id", dispatchID, "err", err)
	}
}

// reachMetrics are the reach gate's metrics, listed in the package doc.
type reachMetrics struct {
	refused *prometheus.CounterVec
	learned *prometheus.CounterVec
	records *prometheus.CounterVec
	// failedStatuses counts the failed status webhooks read back, by code.
	failedStatuses *prometheus.CounterVec
	used           *prometheus.Desc
	room           *prometheus.Desc
	g              *reachGate
}

func newReachMetrics(reg prometheus.Registerer, g *reachGate) (*reachMetrics, error) {
	m := &reachMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_refusals_total",
			Help: "WhatsApp requests refused before the call, by reason: window (window_until passed), window_meta (Meta answered 131047 since), opt_out (131050 learned), tier (messaging tier reached).",
		}, []string{"reason"}),
		learned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_learned_total",
			Help: "What Meta said of a recipient, remembered: opt_out (131050, new suppressions only), window_closed (131047); from a send answer or a failed status webhook.",
		}, []string{"what", "from"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_reach_records_total",
			Help: "Records read from the reach and suppressions topics: granted and refused claims (every replica's), suppression, lifted (START or a tombstone), invalid.",
		}, []string{"result"}),
		failedStatuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_failed_statuses_total",
			Help: "Failed status webhooks of this replica's partitions read back from the intents topic, by Meta's error code (0: none given).",
		}, []string{"code"}),
		used: prometheus.NewDesc("herald_dispatcher_tier_used",
			"Unique recipients outside the service window granted in the last 24 h, per business (WABA id), all replicas together.", []string{"business"}, nil),
		room: prometheus.NewDesc("herald_dispatcher_tier_headroom",
			"The business's messaging tier minus herald_dispatcher_tier_used (apps with a messaging_tier only).", []string{"business"}, nil),
		g: g,
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.refused, m.learned, m.records, m.failedStatuses, m} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering dispatcher reach metrics: %w", err)
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector for the tier gauges.
func (m *reachMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.used
	ch <- m.room
}

// Collect implements prometheus.Collector: the tier gauges as of now.
func (m *reachMetrics) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	for _, a := range m.g.reg.All() {
		tier := a.Tier()
		if tier == apps.TierUnlimited {
			continue
		}
		used := m.g.ledger.Used(a.Business(), now)
		ch <- prometheus.MustNewConstMetric(m.used, prometheus.GaugeValue, float64(used), a.Business())
		ch <- prometheus.MustNewConstMetric(m.room, prometheus.GaugeValue, float64(max(tier-used, 0)), a.Business())
	}
}

// category returns t's category: the request's, else the synced template's,
// else "".
func (s *templateStore) category(app *apps.App, t *schemas.Template) string {
	if t == nil {
		return ""
	}
	if t.Category != "" {
		return t.Category
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e := s.apps[app.ID].byRefs()[templateRef(t.Name, t.Language)]; e != nil && e.def != nil {
		return e.def.Category
	}
	return ""
}
