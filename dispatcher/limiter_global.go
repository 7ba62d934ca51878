package dispatcher

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// The global limiter shares each sender's rate among the dispatcher
// replicas that have work for it. The reasoning and the bound on overshoot
// are in docs/LIMITS.md; in short:
//
//   - Every replica (a member, random id per process) publishes to
//     schemas.TopicSenders every heartbeat H: per sender it has work or
//     rate news for, its demand (sends in the last period plus those
//     waiting, per second), its grant and its view of the sender's rate;
//     then a member heartbeat. Every member reads the topic from the end.
//   - A member's target for a sender is its max-min fair share of the
//     sender's rate over the live members' demands, what no member needs
//     split equally among all. A member silent for ttlBeats heartbeats is
//     gone; one that stops says so (Leaving).
//   - A target below the grant applies at once. A raise applies only when
//     the target has stayed up for raiseBeats heartbeats and fits in the
//     rate minus the grants the other members published: a member takes
//     more only after the others have said they took less.
//   - A member takes nothing before it has listened for warmupBeats
//     heartbeats, nor while it does not read its own heartbeats back
//     within the ttl (it cannot know what the others do: "blind").
//   - Meta's rate-limit answers (4, 80007, 130429) lower the sender's rate
//     by LowerFactor for everyone: the lowering (rate, time) travels in
//     every member's records and each member takes the minimum of the
//     lowerings it knows, each climbing back by RaiseStep every RaiseEvery.
//     A lowering within LowerCooldown of the last one is not made.
const (
	// ttlBeats heartbeats without a record and a member is gone.
	ttlBeats = 3
	// raiseBeats is how long a raised target must hold before it is
	// granted: the other members' decreases for it must have been seen.
	raiseBeats = 2
	// warmupBeats is how long a new member listens before taking a share.
	warmupBeats = 2
	// idleBeats without work, peers or a lowering and a sender's state
	// is forgotten (120 heartbeats: 30 s at the default 250 ms).
	idleBeats = 120
	// maxLowerings bounds the lowerings kept per sender.
	maxLowerings = 8
)

// lowersRate reports whether a Graph code lowers a sender's rate: 4
// (application request limit), 80007 (WABA rate limit), 130429
// (throughput). 131056 (pair rate) is about one recipient: the
// dispatcher's pair planning handles it.
func lowersRate(code int) bool {
	return code == codeTooManyCalls || code == codeRateLimitHit || code == codeThroughput
}

// lowering is one lowering of a sender's rate: to rate at at, for code.
type lowering struct {
	rate float64
	at   time.Time
	code int
}

// coord is the global limiter's state, without I/O: records in (receive),
// heartbeats out (tick), grants read by the limiter. Not safe for
// concurrent use (globalLimiter holds its lock).
type coord struct {
	member string
	period time.Duration
	cfg    LimiterConfig
	// rateOf is the configured rate of a sender at this member.
	rateOf func(sender string) float64

	started  time.Time
	lastEcho time.Time // when one of our own records was last read back
	lastTick time.Time
	// membersChanged is when a member last joined or left our view.
	membersChanged time.Time
	members        map[string]*peerMember
	senders        map[string]*senderCoord
}

// peerMember is another live member.
type peerMember struct {
	seen time.Time
	ttl  time.Duration
}

// peerSender is another member's latest record for one sender.
type peerSender struct {
	seen                      time.Time
	demand, grant, configured float64
}

// timedTarget is a target computed at a tick.
type timedTarget struct {
	at     time.Time
	target float64
}

// demandBeats is how many heartbeats of sends the demand averages over
// (the sends of one beat at a few a second are too few to be steady).
const demandBeats = 4

// senderCoord is one sender's state at this member.
type senderCoord struct {
	// own is the rate configured for the sender at this member;
	// configured the smallest of the live members' (as of the last rate).
	own, configured float64
	peers           map[string]*peerSender
	lowerings       []lowering
	history         []timedTarget
	grant           float64
	// rate, demand and backlog are as of the last tick.
	rate, demand float64
	backlog      int
	// sent and spans are the sends and lengths of the last demandBeats
	// heartbeats, a ring at beat % demandBeats.
	sent  [demandBeats]int
	spans [demandBeats]time.Duration
	beat  int
	// active is when this member last had work for the sender (zero for
	// a sender it only heard of).
	active time.Time
	// dominant is the lowest lowering now, when dominates.
	dominant  lowering
	dominates bool
}

func newCoord(member string, cfg LimiterConfig, rateOf func(string) float64, now time.Time) *coord {
	return &coord{
		member:         member,
		period:         cfg.Heartbeat,
		cfg:            cfg,
		rateOf:         rateOf,
		started:        now,
		lastTick:       now,
		membersChanged: now,
		members:        make(map[string]*peerMember),
		senders:        make(map[string]*senderCoord),
	}
}

func (c *coord) ttl() time.Duration { return ttlBeats * c.period }

// ready reports whether this member may take shares: it listened for the
// warm-up and reads its own heartbeats back.
func (c *coord) ready(now time.Time) bool {
	return now.Sub(c.started) >= warmupBeats*c.period && !c.lastEcho.IsZero() && now.Sub(c.lastEcho) <= c.ttl()
}

// blind reports whether this member, a ttl after its start, does not read
// its own heartbeats back: it cannot know what the others do.
func (c *coord) blind(now time.Time) bool {
	return now.Sub(c.started) >= c.ttl() && (c.lastEcho.IsZero() || now.Sub(c.lastEcho) > c.ttl())
}

// sender returns sender's state, creating it (with no grant) if needed.
func (c *coord) sender(sender string) *senderCoord {
	st := c.senders[sender]
	if st == nil {
		own := c.rateOf(sender)
		st = &senderCoord{own: own, configured: own, rate: own, peers: make(map[string]*peerSender)}
		c.senders[sender] = st
	}
	return st
}

// work returns sender's state for a member about to send from it. A state
// it did not have yet starts with the member's implicit share, rate / live
// members, when that is safe: nobody published a record for the sender
// within the ttl (else the state would exist), so no member uses more than
// its implicit share, and this member is ready with a membership stable
// for the raise delay.
func (c *coord) work(sender string, now time.Time) *senderCoord {
	if st := c.senders[sender]; st != nil {
		return st
	}
	st := c.sender(sender)
	st.active = now
	if c.ready(now) && now.Sub(c.membersChanged) >= raiseBeats*c.period {
		st.grant = st.rate / float64(len(c.members)+1)
		st.history = []timedTarget{{now, st.grant}}
	}
	return st
}

// receive takes in one record read from the topic at now. It returns the
// sender whose rate a lowering in the record cut (its grant was scaled
// down at once), or "".
func (c *coord) receive(r *schemas.SenderState, now time.Time) string {
	if r.Member == c.member {
		c.lastEcho = now
		return ""
	}
	if r.Leaving {
		if _, ok := c.members[r.Member]; ok {
			delete(c.members, r.Member)
			c.membersChanged = now
		}
		for _, st := range c.senders {
			delete(st.peers, r.Member)
		}
		return ""
	}
	m := c.members[r.Member]
	if m == nil {
		m = &peerMember{}
		c.members[r.Member] = m
		c.membersChanged = now
	}
	m.seen = now
	m.ttl = ttlBeats * time.Duration(r.PeriodMS) * time.Millisecond
	if r.Sender == "" {
		return ""
	}
	st := c.sender(r.Sender)
	st.peers[r.Member] = &peerSender{seen: now, demand: r.Demand, grant: r.Grant, configured: r.Configured}
	if r.LoweredRate > 0 && !r.LoweredAt.IsZero() {
		if c.addLowering(st, lowering{rate: r.LoweredRate, at: r.LoweredAt, code: r.LoweredCode}, now) {
			return r.Sender
		}
	}
	return ""
}

// addLowering merges l into st's lowerings. When l cuts the current rate,
// the grant is scaled down with it at once and addLowering reports true.
func (c *coord) addLowering(st *senderCoord, l lowering, now time.Time) bool {
	for _, o := range st.lowerings {
		if o.at.Equal(l.at) && o.rate == l.rate {
			return false
		}
	}
	before := c.rate(st, now)
	st.lowerings = append(st.lowerings, l)
	if len(st.lowerings) > maxLowerings {
		// Keep the ones that set the lowest rates now.
		slices.SortFunc(st.lowerings, func(a, b lowering) int {
			return cmp.Compare(c.climb(st, a, now), c.climb(st, b, now))
		})
		st.lowerings = st.lowerings[:maxLowerings]
	}
	after := c.rate(st, now)
	st.rate = after
	if after >= before {
		return false
	}
	// The cut applies to every member's share at once, before the next
	// tick recomputes it.
	f := after / before
	st.grant *= f
	for i := range st.history {
		st.history[i].target *= f
	}
	return true
}

// climb is the rate lowering l allows at now: its rate plus one RaiseStep
// of the member's own configured rate per RaiseEvery since it (not capped:
// rate caps it).
func (c *coord) climb(st *senderCoord, l lowering, now time.Time) float64 {
	steps := math.Floor(max(now.Sub(l.at), 0).Seconds() / c.cfg.RaiseEvery.Seconds())
	return l.rate + steps*c.cfg.RaiseStep*st.own
}

// rate is the sender's global rate at now: the smallest configured rate of
// the live members, cut by the lowerings (each climbing back), at least
// MinRate (or the configured rate when that is smaller). It forgets the
// lowerings that climbed back to this member's configured rate and notes
// the lowest one (published with the member's records, also while a
// smaller configured rate hides it).
func (c *coord) rate(st *senderCoord, now time.Time) float64 {
	st.configured = st.own
	for _, p := range st.peers {
		if p.configured > 0 && p.configured < st.configured {
			st.configured = p.configured
		}
	}
	st.dominates = false
	st.lowerings = slices.DeleteFunc(st.lowerings, func(l lowering) bool { return c.climb(st, l, now) >= st.own })
	low := math.Inf(1)
	for _, l := range st.lowerings {
		if v := c.climb(st, l, now); v < low {
			low, st.dominant, st.dominates = v, l, true
		}
	}
	return max(min(st.configured, low), min(c.cfg.MinRate, st.configured))
}

// lower cuts sender's rate by LowerFactor after a rate-limit answer with
// code, unless a lowering (ours or another member's) is younger than
// LowerCooldown. It reports whether it lowered.
func (c *coord) lower(sender string, code int, now time.Time) bool {
	st := c.sender(sender)
	for _, l := range st.lowerings {
		if now.Sub(l.at) < c.cfg.LowerCooldown {
			return false
		}
	}
	cur := c.rate(st, now)
	to := max(cur*c.cfg.LowerFactor, min(c.cfg.MinRate, st.configured))
	if to >= cur {
		return false // at the floor already
	}
	return c.addLowering(st, lowering{rate: to, at: now, code: code}, now)
}

// usage is what a pacer did since the last tick.
type usage struct{ granted, waiting int }

// tick recomputes every sender's rate and grant at now from use (this
// member's pacers) and what the other members published, forgets gone
// members and idle senders, and returns the records to publish: the sender
// records, then the member heartbeat.
func (c *coord) tick(now time.Time, use map[string]usage) []*schemas.SenderState {
	el := now.Sub(c.lastTick)
	if el <= 0 {
		el = c.period
	}
	c.lastTick = now
	for id, m := range c.members {
		if now.Sub(m.seen) > m.ttl {
			delete(c.members, id)
			c.membersChanged = now
		}
	}
	ready := c.ready(now)
	idle := idleBeats * c.period
	var recs []*schemas.SenderState
	for _, id := range slices.Sorted(maps.Keys(c.senders)) {
		st := c.senders[id]
		for mid, p := range st.peers {
			if _, live := c.members[mid]; !live || now.Sub(p.seen) > c.ttl() {
				delete(st.peers, mid)
			}
		}
		u := use[id]
		if u.granted > 0 || u.waiting > 0 {
			st.active = now
		}
		c.measure(st, u, el)
		st.rate = c.rate(st, now)
		active := !st.active.IsZero() && now.Sub(st.active) <= idle
		if !active && len(st.peers) == 0 && len(st.lowerings) == 0 {
			delete(c.senders, id)
			continue
		}
		c.regrant(st, ready, now)
		if active || len(st.lowerings) > 0 {
			recs = append(recs, c.record(id, st, now))
		}
	}
	return append(recs, &schemas.SenderState{Member: c.member, PeriodMS: c.period.Milliseconds(), Time: now.UTC()})
}

// measure sets st's demand: the sends of the last demandBeats heartbeats
// per second, plus the waiting ones spread over one heartbeat.
func (c *coord) measure(st *senderCoord, u usage, el time.Duration) {
	i := st.beat % demandBeats
	st.beat++
	st.sent[i], st.spans[i] = u.granted, el
	sent, span := 0, time.Duration(0)
	for j := range demandBeats {
		sent += st.sent[j]
		span += st.spans[j]
	}
	st.demand = float64(sent)/span.Seconds() + float64(u.waiting)/el.Seconds()
	st.backlog = u.waiting
}

// regrant sets st's grant from its target: at once when it is lower, after
// the raise delay and within the headroom the others left when higher.
func (c *coord) regrant(st *senderCoord, ready bool, now time.Time) {
	target := 0.0
	if ready {
		demands := []float64{st.demand}
		for _, p := range st.peers {
			demands = append(demands, p.demand)
		}
		// Members with no record for the sender want nothing of it but
		// get their part of what nobody wants.
		for id := range c.members {
			if _, ok := st.peers[id]; !ok {
				demands = append(demands, 0)
			}
		}
		target = fairShare(st.rate, demands, 0)
	}
	st.history = append(st.history, timedTarget{now, target})
	i := 0
	for i < len(st.history)-1 && now.Sub(st.history[i].at) >= raiseBeats*c.period {
		i++
	}
	st.history = st.history[i:]
	if target <= st.grant {
		st.grant = target
		return
	}
	low := target
	for _, h := range st.history {
		low = min(low, h.target)
	}
	headroom := st.rate
	for _, p := range st.peers {
		headroom -= p.grant
	}
	st.grant = max(st.grant, min(low, headroom))
}

// record is this member's heartbeat for one sender.
func (c *coord) record(sender string, st *senderCoord, now time.Time) *schemas.SenderState {
	r := &schemas.SenderState{
		Member: c.member, Sender: sender, PeriodMS: c.period.Milliseconds(),
		Demand: st.demand, Backlog: st.backlog, Grant: st.grant, Rate: st.rate, Configured: st.configured,
		Time: now.UTC(),
	}
	if st.dominates {
		l := st.dominant
		r.LoweredRate, r.LoweredAt, r.LoweredCode = l.rate, l.at.UTC(), l.code
	}
	return r
}

// fairShare is member self's share of rate among members wanting demands
// (sends a second): max-min fair (no member gets more than it wants while
// another gets less than it wants), and what nobody wants split equally
// among all of them, so the shares add up to rate.
func fairShare(rate float64, demands []float64, self int) float64 {
	n := len(demands)
	if n == 0 || rate <= 0 {
		return 0
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(demands[a], demands[b]) })
	left := rate
	level := math.Inf(1)
	for k, i := range order {
		fair := left / float64(n-k)
		if demands[i] > fair {
			level = fair
			break
		}
		left -= demands[i]
	}
	if math.IsInf(level, 1) {
		// Everyone is satisfied: the rest is split equally.
		return demands[self] + left/float64(n)
	}
	return min(demands[self], level)
}

// globalLimiter is the Limiter of LimiterConfig.Mode "global": coord plus
// a pacer per sender, fed by a Kafka client that publishes and reads
// schemas.TopicSenders. Run it with run; until then (and when the topic
// cannot be read) it lets nothing through.
type globalLimiter struct {
	cfg      LimiterConfig
	burst    int
	member   string
	cl       *kgo.Client
	log      *slog.Logger
	m        *metrics
	throttle *throttle
	now      func() time.Time
	// farewell is false in tests that simulate a crash.
	farewell bool

	mu       sync.Mutex
	c        *coord
	pacers   map[string]*pacer
	wasBlind bool

	closeOnce sync.Once
}

var _ Limiter = (*globalLimiter)(nil)

// newMemberID returns a random member id.
func newMemberID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading a random member id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// newGlobalLimiter builds the limiter with a client of its own (opts are
// the stage's Kafka options).
func newGlobalLimiter(cfg LimiterConfig, burst int, rateOf func(string) float64, opts []kgo.Opt, log *slog.Logger, m *metrics) (*globalLimiter, error) {
	member, err := newMemberID()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.ConsumeTopics(schemas.TopicSenders),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.FetchMaxWait(cfg.Heartbeat/2),
		// A heartbeat older than the ttl says nothing: fail it rather
		// than let heartbeats pile up while the broker is away (franz-go
		// allows no less than 1s).
		kgo.RecordDeliveryTimeout(max(ttlBeats*cfg.Heartbeat, time.Second)),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: creating the limiter's kafka client: %w", err)
	}
	l := &globalLimiter{
		cfg: cfg, burst: burst, member: member, cl: cl,
		log: log.With("component", "limiter", "member", member), m: m,
		throttle: newThrottle(10 * time.Second), now: time.Now, farewell: true,
		pacers: make(map[string]*pacer),
	}
	l.c = newCoord(member, cfg, rateOf, l.now())
	return l, nil
}

// Wait implements Limiter.
func (l *globalLimiter) Wait(ctx context.Context, sender string) error {
	return l.pacer(sender).wait(ctx)
}

// Take implements Limiter.
func (l *globalLimiter) Take(sender string, granted func(picked func())) (bool, func() bool) {
	return l.pacer(sender).reserve(granted)
}

// pacer is sender's pacer, made at its first use at its current grant.
func (l *globalLimiter) pacer(sender string) *pacer {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pacers[sender]
	if p == nil {
		st := l.c.work(sender, l.now())
		p = newPacer(st.grant, l.burst)
		l.pacers[sender] = p
	}
	return p
}

// Observe implements Limiter: Meta's rate-limit answers lower the rate.
func (l *globalLimiter) Observe(sender string, err error) {
	if err == nil {
		return
	}
	code := errorCode(err)
	if !lowersRate(code) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.c.lower(sender, code, l.now()) {
		return
	}
	st := l.c.senders[sender]
	l.m.rateLowered.WithLabelValues(sender, strconv.Itoa(code)).Inc()
	l.apply(sender, st)
	l.log.Info("sender rate lowered after a rate-limit answer", "sender", sender, "code", code, "rate", st.rate)
}

// apply sets sender's pacer and gauges from st. Call with l.mu held.
func (l *globalLimiter) apply(sender string, st *senderCoord) {
	if p := l.pacers[sender]; p != nil {
		p.setRate(st.grant)
	}
	l.m.senderRate.WithLabelValues(sender).Set(st.rate)
	l.m.senderShare.WithLabelValues(sender).Set(st.grant)
}

// run publishes heartbeats and reads the others' until ctx is done, then
// says it leaves (unless farewell is off) and closes the client.
func (l *globalLimiter) run(ctx context.Context) {
	defer l.close()
	l.mu.Lock()
	// The warm-up and the blindness count from here, not from New.
	l.c.started, l.c.lastTick = l.now(), l.now()
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { l.read(ctx) })
	t := time.NewTicker(l.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			l.leave()
			return
		case <-t.C:
			l.beat(ctx)
		}
	}
}

// read applies the records of the topic as they come.
func (l *globalLimiter) read(ctx context.Context) {
	for {
		fs := l.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return // (a closed client answers every poll at once)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if l.throttle.allow("fetch") {
				l.log.Warn("reading the limiter topic", "topic", topic, "partition", p, "err", err)
			}
		})
		now := l.now()
		l.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			r, err := schemas.DecodeSenderState(rec.Value)
			if err != nil {
				if l.throttle.allow("decode") {
					l.log.Warn("skipping an undecodable limiter record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
				}
				return
			}
			if cut := l.c.receive(r, now); cut != "" {
				l.apply(cut, l.c.senders[cut])
			}
		})
		l.mu.Unlock()
	}
}

// beat runs one heartbeat: recompute, apply, publish.
func (l *globalLimiter) beat(ctx context.Context) {
	now := l.now()
	l.mu.Lock()
	use := make(map[string]usage, len(l.pacers))
	for s, p := range l.pacers {
		g, w := p.take()
		use[s] = usage{g, w}
	}
	recs := l.c.tick(now, use)
	for s, p := range l.pacers {
		st := l.c.senders[s]
		if st == nil {
			// Forgotten after idleBeats without work: so is its pacer.
			delete(l.pacers, s)
			l.m.senderRate.DeleteLabelValues(s)
			l.m.senderShare.DeleteLabelValues(s)
			continue
		}
		p.setRate(st.grant)
	}
	for s, st := range l.c.senders {
		if _, ok := l.pacers[s]; ok {
			l.m.senderRate.WithLabelValues(s).Set(st.rate)
			l.m.senderShare.WithLabelValues(s).Set(st.grant)
		}
	}
	l.m.limiterMembers.Set(float64(len(l.c.members) + 1))
	blind := l.c.blind(now)
	if blind != l.wasBlind {
		l.wasBlind = blind
		if blind {
			l.log.Warn("not reading this replica's own heartbeats back from the limiter topic: sending paused until it does",
				"topic", schemas.TopicSenders)
		} else {
			l.log.Info("reading the limiter topic again: sending resumes", "topic", schemas.TopicSenders)
		}
	}
	l.mu.Unlock()
	l.publish(ctx, recs)
}

// publish produces recs without waiting; errors are logged (a member whose
// heartbeats do not come back stops sending, see coord.blind).
func (l *globalLimiter) publish(ctx context.Context, recs []*schemas.SenderState) {
	for _, r := range recs {
		b, _ := r.Marshal() // cannot fail: plain fields only
		l.cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicSenders, Key: r.Key(), Value: b}, func(_ *kgo.Record, err error) {
			if err != nil && ctx.Err() == nil && l.throttle.allow("produce") {
				l.log.Warn("publishing a limiter heartbeat", "err", err)
			}
		})
	}
}

// leave stops every pacer and tells the others this member is gone, so
// they take its shares over without waiting for the ttl.
func (l *globalLimiter) leave() {
	l.mu.Lock()
	for _, p := range l.pacers {
		p.setRate(0)
	}
	l.mu.Unlock()
	if !l.farewell {
		return
	}
	r := &schemas.SenderState{Member: l.member, PeriodMS: l.cfg.Heartbeat.Milliseconds(), Leaving: true, Time: l.now().UTC()}
	b, _ := r.Marshal() // cannot fail: plain fields only
	// Not ProduceSync: with the broker gone a produce can outlive its
	// context; run closes the client after this, failing it.
	done := make(chan error, 1)
	l.cl.Produce(context.Background(), &kgo.Record{Topic: schemas.TopicSenders, Key: r.Key(), Value: b}, func(_ *kgo.Record, err error) { done <- err })
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Second):
		err = context.DeadlineExceeded
	}
	if err != nil {
		l.log.Warn("publishing the limiter farewell (the others take this replica's shares over after the ttl)", "err", err)
	}
}

// close releases the client (run does when it returns; Dispatcher.Close
// when run was never called).
func (l *globalLimiter) close() { l.closeOnce.Do(l.cl.Close) }
