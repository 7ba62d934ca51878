package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Reasons of herald_dispatcher_in_doubt_total.
const (
	inDoubtCall   = "call"
	inDoubtCrash  = "crash"
	inDoubtResent = "resent"
)

// ledger remembers, per assigned partition, what became of recent dispatch
// ids: the outcomes on schemas.TopicOutcomes, the intents and statuses on
// schemas.TopicIntents (both keyed like the requests, so partition p of
// each is about dispatch partition p). It is filled from those topics when
// a partition is first seen after its assignment (load), kept up to date
// with the outcomes this replica produces (decided), topped up from the
// intents topic when a request in doubt needs Meta's word (refresh), and
// dropped when the partition is revoked or lost.
type ledger struct {
	cfg  DeliveryConfig
	opts []kgo.Opt
	adm  *kadm.Client
	m    *metrics
	now  func() time.Time
	// tail follows the intents partitions of the loaded partitions for
	// statuses (statuses.go); nil in tests that build a ledger alone.
	tail *statusTail

	mu    sync.Mutex
	parts map[int32]*partLedger
}

// partLedger is one partition's ids, in the order first seen, so that the
// oldest are forgotten first (Window, MaxIDs).
type partLedger struct {
	ids   map[string]*idState
	order []string
	head  int
	// marksNext is the next offset of the intents partition to read.
	marksNext int64
}

// idState is what the ledger knows of one dispatch id.
type idState struct {
	// outcome is the state of its latest outcome; empty when none.
	outcome schemas.OutcomeState
	// intent is the time of its latest intent, attempts its call number.
	intent   time.Time
	attempts int
	// answered is the last call answered with an error to be retried.
	answered int
	// wamid is Meta's message id from a status webhook: Meta got it.
	wamid string
	seen  time.Time
	// resent is set once this replica let it go again (policy resend), so
	// that a batch fetched again does not count it twice.
	resent bool
	// status and statusAt are the latest status mark's status and time.
	status   string
	statusAt time.Time
	// doubt is the in_doubt outcome while it is the latest outcome: what
	// a reconciled outcome is made of. reconciling is set once one is
	// being produced.
	doubt       *schemas.Outcome
	reconciling bool
}

// reconcileJob is an in_doubt outcome a status proved accepted: a
// reconciled outcome is due (Dispatcher.reconcile).
type reconcileJob struct {
	p        int32
	doubt    *schemas.Outcome
	wamid    string
	status   string
	statusAt time.Time
}

func newLedger(cfg DeliveryConfig, opts []kgo.Opt, adm *kadm.Client, m *metrics) *ledger {
	return &ledger{cfg: cfg, opts: opts, adm: adm, m: m, now: time.Now, parts: make(map[int32]*partLedger)}
}

// state returns what p knows of id, or nil.
func (l *ledger) state(p int32, id string) *idState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.parts[p]; pl != nil {
		if s := pl.ids[id]; s != nil {
			c := *s
			return &c
		}
	}
	return nil
}

// resend notes that id of p is sent again, and reports whether it was not
// noted before.
func (l *ledger) resend(p int32, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.parts[p]; pl != nil {
		if s := pl.ids[id]; s != nil && !s.resent {
			s.resent = true
			return true
		}
	}
	return false
}

// decided notes the outcomes this replica produced for partition p, and
// returns the in_doubt ones whose status arrived meanwhile: they are due a
// reconciled outcome.
func (l *ledger) decided(p int32, outs []*schemas.Outcome) []reconcileJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	pl := l.parts[p]
	if pl == nil {
		return nil
	}
	var jobs []reconcileJob
	for _, o := range outs {
		s := pl.outcome(o.DispatchID, o.State, l.now())
		if o.State == schemas.OutcomeInDoubt && s.outcome == schemas.OutcomeInDoubt {
			s.doubt = o
			if j, ok := s.due(p); ok {
				jobs = append(jobs, j)
			}
		}
	}
	l.bound(pl)
	return jobs
}

// due reports the reconciliation s needs: an in_doubt outcome and a status
// with a wamid, none produced yet. It marks it started.
func (s *idState) due(p int32) (reconcileJob, bool) {
	if s.outcome != schemas.OutcomeInDoubt || s.doubt == nil || s.wamid == "" || s.reconciling {
		return reconcileJob{}, false
	}
	s.reconciling = true
	return reconcileJob{p: p, doubt: s.doubt, wamid: s.wamid, status: s.status, statusAt: s.statusAt}, true
}

// status applies a status mark the tail read at offset off of partition p
// and returns the reconciliation it makes due, if any; owned is false when
// p is not (or no longer) this replica's.
func (l *ledger) status(p int32, off int64, m *schemas.DeliveryMark) (job reconcileJob, due, owned bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pl := l.parts[p]
	if pl == nil {
		return reconcileJob{}, false, false
	}
	pl.marksNext = max(pl.marksNext, off+1)
	pl.mark(m, l.now())
	job, due = pl.ids[m.DispatchID].due(p)
	l.bound(pl)
	return job, due, true
}

// advance notes that the tail read partition p of the intents topic up to
// next (marks without a status: nothing to apply).
func (l *ledger) advance(p int32, next int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.parts[p]; pl != nil {
		pl.marksNext = max(pl.marksNext, next)
	}
}

// unreconciled undoes due after a reconciled outcome could not be
// produced: the next status of id tries again.
func (l *ledger) unreconciled(p int32, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.parts[p]; pl != nil {
		if s := pl.ids[id]; s != nil {
			s.reconciling = false
		}
	}
}

// drop forgets revoked or lost partitions of the dispatch topic.
func (l *ledger) drop(parts map[string][]int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range parts[schemas.TopicDispatch] {
		delete(l.parts, p)
	}
	l.gauge()
	if l.tail != nil {
		l.tail.unfollow(parts[schemas.TopicDispatch])
	}
}

// get returns p's entry for id, creating it.
func (pl *partLedger) get(id string, now time.Time) *idState {
	s := pl.ids[id]
	if s == nil {
		s = &idState{seen: now}
		pl.ids[id] = s
		pl.order = append(pl.order, id)
	}
	return s
}

func (pl *partLedger) outcome(id string, st schemas.OutcomeState, at time.Time) *idState {
	s := pl.get(id, at)
	// An accepted outcome (a reconciliation) outranks an in_doubt one,
	// whatever their order.
	if s.outcome != schemas.OutcomeAccepted {
		s.outcome = st
	}
	if s.outcome != schemas.OutcomeInDoubt {
		s.doubt = nil
	}
	return s
}

func (pl *partLedger) mark(m *schemas.DeliveryMark, at time.Time) {
	s := pl.get(m.DispatchID, at)
	switch m.Kind {
	case schemas.MarkIntent:
		if m.Time.After(s.intent) {
			s.intent = m.Time
		}
		s.attempts = max(s.attempts, m.Attempt)
	case schemas.MarkAnswered:
		s.answered = max(s.answered, m.Attempt)
	case schemas.MarkStatus:
		s.wamid = m.WAMID
		if !m.Time.Before(s.statusAt) {
			s.status, s.statusAt = m.Status, m.Time
		}
	}
}

// bound forgets the oldest ids of pl past MaxIDs or older than Window.
// Call with l.mu held.
func (l *ledger) bound(pl *partLedger) {
	cut := l.now().Add(-l.cfg.Window)
	for pl.head < len(pl.order) {
		id := pl.order[pl.head]
		s := pl.ids[id]
		if len(pl.ids) <= l.cfg.MaxIDs && s != nil && !s.seen.Before(cut) {
			break
		}
		delete(pl.ids, id)
		pl.order[pl.head] = ""
		pl.head++
	}
	if pl.head > len(pl.order)/2 && pl.head > 1024 {
		pl.order = append([]string(nil), pl.order[pl.head:]...)
		pl.head = 0
	}
	l.gauge()
}

// gauge sets herald_dispatcher_ledger_ids. Call with l.mu held.
func (l *ledger) gauge() {
	n := 0
	for _, pl := range l.parts {
		n += len(pl.ids)
	}
	l.m.ledgerIDs.Set(float64(n))
}

// load reads, for every partition of recs the ledger does not hold yet,
// the outcomes and marks of the last Window (at most MaxIDs records of
// each topic) up to their end offsets, and has the tail follow their
// intents partitions from there. It returns the in_doubt outcomes whose
// status is there already (due a reconciled outcome) and the failed
// statuses read (to learn from: Dispatcher.learnLoaded).
func (l *ledger) load(ctx context.Context, recs []*kgo.Record) ([]reconcileJob, []*schemas.DeliveryMark, error) {
	var missing []int32
	seen := make(map[int32]bool)
	l.mu.Lock()
	for _, r := range recs {
		if l.parts[r.Partition] == nil && !seen[r.Partition] {
			seen[r.Partition] = true
			missing = append(missing, r.Partition)
		}
	}
	l.mu.Unlock()
	if len(missing) == 0 {
		return nil, nil, nil
	}
	since := l.now().Add(-l.cfg.Window).UnixMilli()
	after, err := l.adm.ListOffsetsAfterMilli(ctx, since, schemas.TopicOutcomes, schemas.TopicIntents)
	if err == nil {
		err = after.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing offsets of the last %v of %s and %s: %w", l.cfg.Window, schemas.TopicOutcomes, schemas.TopicIntents, err)
	}
	ends, err := l.adm.ListEndOffsets(ctx, schemas.TopicOutcomes, schemas.TopicIntents)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing end offsets of %s and %s: %w", schemas.TopicOutcomes, schemas.TopicIntents, err)
	}
	ranges := make(map[string]map[int32][2]int64)
	for _, topic := range []string{schemas.TopicOutcomes, schemas.TopicIntents} {
		ranges[topic] = make(map[int32][2]int64)
		for _, p := range missing {
			end, ok := ends.Lookup(topic, p)
			if !ok {
				return nil, nil, fmt.Errorf("partition %d of %s does not exist: it needs as many partitions as %s", p, topic, schemas.TopicDispatch)
			}
			start := end.Offset
			if a, ok := after.Lookup(topic, p); ok && a.Offset >= 0 {
				start = min(a.Offset, end.Offset)
			}
			start = max(start, end.Offset-int64(l.cfg.MaxIDs))
			ranges[topic][p] = [2]int64{start, end.Offset}
		}
	}
	fresh := make(map[int32]*partLedger, len(missing))
	for _, p := range missing {
		fresh[p] = &partLedger{ids: make(map[string]*idState), marksNext: ranges[schemas.TopicIntents][p][1]}
	}
	var failed []*schemas.DeliveryMark
	err = l.read(ctx, ranges, func(r *kgo.Record) {
		pl := fresh[r.Partition]
		if r.Topic == schemas.TopicOutcomes {
			var o struct {
				DispatchID string               `json:"dispatch_id"`
				State      schemas.OutcomeState `json:"state"`
			}
			if json.Unmarshal(r.Value, &o) != nil || o.DispatchID == "" {
				return
			}
			s := pl.outcome(o.DispatchID, o.State, r.Timestamp)
			if s.outcome == schemas.OutcomeInDoubt {
				// Kept whole: a reconciled outcome is made of it.
				if full, err := schemas.DecodeOutcome(r.Value); err == nil {
					s.doubt = full
				}
			}
			return
		}
		if m, err := schemas.DecodeDeliveryMark(r.Value); err == nil {
			pl.mark(m, r.Timestamp)
			if m.Kind == schemas.MarkStatus && m.Status == "failed" {
				failed = append(failed, m)
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var jobs []reconcileJob
	for p, pl := range fresh {
		l.parts[p] = pl
		for _, s := range pl.ids {
			if j, ok := s.due(p); ok {
				jobs = append(jobs, j)
			}
		}
		l.bound(pl)
		if l.tail != nil {
			l.tail.follow(p, pl.marksNext)
		}
	}
	return jobs, failed, nil
}

// refresh reads the marks written to partition p of the intents topic
// since the ledger last read it: statuses that arrived since.
func (l *ledger) refresh(ctx context.Context, p int32) error {
	l.mu.Lock()
	pl := l.parts[p]
	var from int64
	if pl != nil {
		from = pl.marksNext // the status tail advances it meanwhile
	}
	l.mu.Unlock()
	if pl == nil {
		return nil
	}
	ends, err := l.adm.ListEndOffsets(ctx, schemas.TopicIntents)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("listing end offsets of %s: %w", schemas.TopicIntents, err)
	}
	end, ok := ends.Lookup(schemas.TopicIntents, p)
	if !ok {
		return fmt.Errorf("partition %d of %s does not exist", p, schemas.TopicIntents)
	}
	var marks []*schemas.DeliveryMark
	ranges := map[string]map[int32][2]int64{schemas.TopicIntents: {p: {from, end.Offset}}}
	if err := l.read(ctx, ranges, func(r *kgo.Record) {
		if m, err := schemas.DecodeDeliveryMark(r.Value); err == nil {
			marks = append(marks, m)
		}
	}); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.parts[p] != pl {
		return nil // revoked meanwhile
	}
	now := l.now()
	for _, m := range marks {
		pl.mark(m, now)
	}
	pl.marksNext = max(pl.marksNext, end.Offset)
	l.bound(pl)
	return nil
}

// read hands every record of ranges (per topic and partition, [start, end)
// offsets) to apply, with a client of its own, and returns once each range
// was read to its end.
func (l *ledger) read(ctx context.Context, ranges map[string]map[int32][2]int64, apply func(*kgo.Record)) error {
	offsets := make(map[string]map[int32]kgo.Offset)
	pending := 0
	for topic, ps := range ranges {
		for p, rg := range ps {
			if rg[0] >= rg[1] {
				continue
			}
			if offsets[topic] == nil {
				offsets[topic] = make(map[int32]kgo.Offset)
			}
			offsets[topic][p] = kgo.NewOffset().At(rg[0])
			pending++
		}
	}
	if pending == 0 {
		return nil
	}
	opts := append(append([]kgo.Opt(nil), l.opts...),
		kgo.ConsumePartitions(offsets),
		// Records deleted by retention meanwhile: go on from the first one left.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating a client reading %s and %s back: %w", schemas.TopicOutcomes, schemas.TopicIntents, err)
	}
	defer cl.Close()
	for pending > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			ferr = fmt.Errorf("reading partition %d of %s back: %w", p, topic, err)
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			rg, ok := ranges[r.Topic][r.Partition]
			if !ok || r.Offset >= rg[1] {
				return
			}
			apply(r)
			if r.Offset == rg[1]-1 {
				pending--
			}
		})
	}
	return nil
}

// settle decides what to do with a request before it is queued, from what
// the ledger knows of its id on partition p. It returns nil to send it
// (out and rec nil), decidedBefore for a duplicate, or the record (and
// outcome) that settles it without a call: an in_doubt outcome (policy
// hold), an accepted one a status webhook proved, or the request deferred
// to schemas.TopicScheduled until ResendAfter passed (policy resend). It
// may read the intents partition for statuses (refresh), once per batch
// and partition (refreshed).
func (d *Dispatcher) settle(ctx context.Context, rec *kgo.Record, req *schemas.DispatchRequest, refreshed map[int32]bool) (*kgo.Record, *schemas.Outcome, error) {
	p := rec.Partition
	s := d.ledger.state(p, req.ID)
	if s == nil {
		return nil, nil, nil
	}
	if s.outcome != "" && s.outcome != schemas.OutcomeInDoubt {
		d.m.duplicates.Inc()
		return decidedBefore, nil, nil
	}
	inDoubt := s.outcome == schemas.OutcomeInDoubt || s.attempts > s.answered
	if s.wamid == "" && inDoubt && !refreshed[p] {
		refreshed[p] = true
		if err := d.ledger.refresh(ctx, p); err != nil {
			return nil, nil, err
		}
		if s = d.ledger.state(p, req.ID); s == nil {
			return nil, nil, nil // forgotten meanwhile (revoked): send, as without a ledger
		}
	}
	if s.wamid != "" {
		// Meta got it: a status webhook proves the call was accepted
		// (also when no intent is known: one older than the window).
		d.m.reconciled.Inc()
		o := d.decide(req, schemas.OutcomeAccepted, s.wamid, s.attempts, nil)
		return outcomeRecord(o), o, nil
	}
	if !inDoubt {
		// No intent, or every call was answered (a retry left
		// undecided): it goes on.
		return nil, nil, nil
	}
	if s.outcome == schemas.OutcomeInDoubt {
		d.m.duplicates.Inc()
		return decidedBefore, nil, nil // reported in doubt already
	}
	// An intent without an outcome nor a status: a replica stopped
	// between the call and its outcome.
	if d.cfg.Delivery.InDoubt == InDoubtHold {
		d.m.inDoubt.WithLabelValues(inDoubtCrash).Inc()
		err := fmt.Errorf("%w: call %d was started at %s by a dispatcher that stopped before its outcome, and no status webhook arrived; not sent again (delivery.in_doubt hold)",
			ErrInDoubt, s.attempts, s.intent.UTC().Format(time.RFC3339))
		o := d.decide(req, schemas.OutcomeInDoubt, "", s.attempts, err)
		return outcomeRecord(o), o, nil
	}
	if at := s.intent.Add(d.cfg.Delivery.ResendAfter); at.After(time.Now()) {
		// Give Meta's status webhook until then; the scheduler sends it
		// back, and it is settled again.
		r := *req
		r.SendAt = at.UTC()
		bs, _ := r.Marshal() // cannot fail: plain fields only
		d.m.deferred.WithLabelValues("in_doubt").Inc()
		return &kgo.Record{Topic: schemas.TopicScheduled, Key: r.Key(), Value: bs, Headers: rec.Headers}, nil, nil
	}
	if !d.ledger.resend(p, req.ID) {
		return nil, nil, nil // counted when its batch was first fetched
	}
	d.m.inDoubt.WithLabelValues(inDoubtResent).Inc()
	if d.throttle.allow("resend") {
		d.log.Warn("sending again a request in doubt (delivery.in_doubt resend): it may reach the user twice",
			"dispatch_id", req.ID, "app", req.App, "intent", s.intent)
	}
	return nil, nil, nil
}

// outcomeRecord is the TopicOutcomes record of o.
func outcomeRecord(o *schemas.Outcome) *kgo.Record {
	bs, _ := o.Marshal() // cannot fail: plain fields only
	return &kgo.Record{Topic: schemas.TopicOutcomes, Key: o.Key(), Value: bs}
}

// answered writes that call n of req was answered with an error to be
// retried, so that a replica that finds the request undecided later does not
// take that call for one in doubt. Best effort: a lost mark makes the call
// look in doubt (reported, not sent again, with the hold policy).
func (d *Dispatcher) answered(ctx context.Context, req *schemas.DispatchRequest, n int) {
	m := &schemas.DeliveryMark{
		Kind: schemas.MarkAnswered, DispatchID: req.ID, App: req.App, To: req.To,
		Attempt: n, Time: time.Now().UTC(),
	}
	bs, _ := m.Marshal() // cannot fail: plain fields only
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := produceOne(pctx, d.cl, &kgo.Record{Topic: schemas.TopicIntents, Key: m.Key(), Value: bs}); err != nil {
		d.m.intentErrors.Inc()
		if d.throttle.allow("answered") {
			d.log.Warn("writing that a call was answered", "dispatch_id", req.ID, "err", err)
		}
	}
}

// produceOne produces r and waits for its acknowledgement, as
// ProduceSync(ctx, r).FirstErr() does, without ProduceSync's five
// allocations (results, wait group, promise) on every send's intent: the
// waiter and its promise are pooled. The client calls a promise exactly
// once, whatever happens to the record, so the waiter is free again once
// it has been called.
func produceOne(ctx context.Context, cl *kgo.Client, r *kgo.Record) error {
	w := produceWaiters.Get().(*produceWaiter)
	cl.Produce(ctx, r, w.promise)
	err := <-w.done
	produceWaiters.Put(w)
	return err
}

// produceWaiter is produceOne's pooled state.
type produceWaiter struct {
	done    chan error
	promise func(*kgo.Record, error)
}

var produceWaiters = sync.Pool{New: func() any {
	w := &produceWaiter{done: make(chan error, 1)}
	w.promise = func(_ *kgo.Record, err error) { w.done <- err }
	return w
}}

// intend writes the intent of t's next call and waits for its ack.
func (d *Dispatcher) intend(ctx context.Context, t *try) error {
	if d.skipIntents {
		return nil
	}
	m := &schemas.DeliveryMark{
		Kind: schemas.MarkIntent, DispatchID: t.req.ID, App: t.req.App, To: t.req.To,
		Sender: t.req.Sender, Attempt: t.attempts + 1, Time: time.Now().UTC(),
	}
	bs, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("encoding intent of %s: %w", t.req.ID, err)
	}
	rec := &kgo.Record{Topic: schemas.TopicIntents, Key: m.Key(), Value: bs}
	if err := produceOne(ctx, d.cl, rec); err != nil {
		return fmt.Errorf("writing intent of %s (call %s): %w", t.req.ID, strconv.Itoa(m.Attempt), err)
	}
	return nil
}
