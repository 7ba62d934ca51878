package dispatcher

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"

	"github.com/heraldhq/herald/schemas"
)

// recipientQueue is one recipient's requests of a batch, in record order,
// and where they stand.
type recipientQueue struct {
	items []item
	// next is the first undecided item; try is its state once begun.
	next int
	try  *try
	// retryAt is when the head's next call may be made (a retry's
	// backoff); zero when it may be made at once.
	retryAt time.Time
	// mu is held by takeTurn while it queues for its sender's turn and
	// registers the wait, and by resumeTurn, so that a worker handed the
	// queue by the limiter finds the wait registered. waiting and
	// waitFrom (when it started) are guarded by it.
	mu       sync.Mutex
	waiting  bool
	waitFrom time.Time
}

// batchRun runs the queues of one batch: workers take ready queues, a
// queue that must wait is parked on a timer without a worker.
type batchRun struct {
	d       *Dispatcher
	ctx     context.Context
	results []*kgo.Record
	// outs[i] is the outcome in results[i], if any.
	outs []*schemas.Outcome
	// emit produces a result record as soon as it is decided.
	emit func(*kgo.Record)
	// ready holds the queues a worker may take (each queue is in it at
	// most once, so it never blocks: its capacity is the queue count).
	ready chan *recipientQueue
	// turned holds the queues the limiter handed their sender's turn
	// (takeTurn), ahead of ready: a turn is for now, and a queue behind
	// a batch's worth of ready ones would use it late, bunching its
	// sender's calls.
	turned chan *recipientQueue
	// left counts the queues not finished; done is closed at zero.
	left atomic.Int64
	done chan struct{}

	mu     sync.Mutex
	timers map[*recipientQueue]*time.Timer
	// turns are the queues waiting for their sender's turn (takeTurn).
	turns   map[*recipientQueue]turnWait
	stopped bool
}

// turnWait is a queue's wait for its sender's turn: cancel takes it out
// of the limiter's queue, expiry wakes it at its request's deadline.
type turnWait struct {
	cancel func() bool
	expiry *time.Timer
}

// sendAll runs every queue, at most Concurrency calls at a time, each queue
// in order, and stores each request's result record (outcome, or request
// deferred to the scheduled topic) in results, and its outcome in outs. A queue whose head must
// wait, for its recipient's pair-rate turn or a retry's backoff, is parked
// on a timer and holds no worker; a wait longer than MaxHold defers the
// queue's remaining requests (see batchRun.deferRest). A queue stops at its
// first request left undecided because ctx ended.
func (d *Dispatcher) sendAll(ctx context.Context, queues [][]item, results []*kgo.Record, outs []*schemas.Outcome, emit func(*kgo.Record)) {
	if len(queues) == 0 {
		return
	}
	b := &batchRun{
		d: d, ctx: ctx, results: results, outs: outs, emit: emit,
		ready:  make(chan *recipientQueue, len(queues)),
		turned: make(chan *recipientQueue, len(queues)),
		done:   make(chan struct{}),
		timers: make(map[*recipientQueue]*time.Timer),
		turns:  make(map[*recipientQueue]turnWait),
	}
	b.left.Store(int64(len(queues)))
	for _, q := range queues {
		b.ready <- &recipientQueue{items: q}
	}
	var wg sync.WaitGroup
	for range min(d.cfg.Concurrency, len(queues)) {
		wg.Go(b.work)
	}
	wg.Wait()
	b.mu.Lock()
	b.stopped = true
	for _, t := range b.timers {
		t.Stop()
	}
	turns := b.turns
	b.turns = nil
	b.mu.Unlock()
	// Outside b.mu: cancel takes the limiter's lock, which takeTurn holds
	// under b.mu. A turn handed over meanwhile is lost (sends fewer, never
	// more); its queue goes to ready, which nobody reads any more.
	for _, w := range turns {
		w.cancel()
		if w.expiry != nil {
			w.expiry.Stop()
		}
	}
	// Every turn handed over is in turned now (cancel waited for the
	// limiter's lock): the ones no worker took up are given back as
	// picked, else their sender's limiter would hold its next turns.
	for drained := false; !drained; {
		select {
		case q := <-b.turned:
			if q.try.picked != nil {
				q.try.picked()
				q.try.picked = nil
			}
		default:
			drained = true
		}
	}
}

// work runs ready queues until every queue finished or ctx ended (parked
// queues are then left undecided).
func (b *batchRun) work() {
	for {
		select {
		case q := <-b.turned:
			b.run(q)
			continue
		default:
		}
		select {
		case q := <-b.turned:
			b.run(q)
		case q := <-b.ready:
			b.run(q)
		case <-b.done:
			return
		case <-b.ctx.Done():
			return
		}
	}
}

// run advances q as far as it goes without waiting: it decides requests
// until the head must wait (then q is parked or deferred), q is finished,
// or ctx ended.
func (b *batchRun) run(q *recipientQueue) {
	d := b.d
	if q.try != nil {
		// Back from a wait: parked, or for its sender's turn.
		b.resumeTurn(q)
	}
	for q.next < len(q.items) {
		it := q.items[q.next]
		if q.try == nil {
			t, o := d.begin(it.req, it.attempts)
			if o != nil {
				b.decided(q, o)
				continue
			}
			q.try = t
		}
		wake := q.retryAt
		if turn := d.pairs.turn(it.req, it.planned); turn.After(wake) {
			wake = turn
		}
		// An open breaker pauses its sender's queues: parked (or
		// deferred) until its next probe, holding no worker.
		reason := ""
		if until := d.breakers.get(string(it.req.Channel), it.req.Sender).pausedUntil(); until.After(wake) {
			wake, reason = until, "breaker"
		}
		if wait := time.Until(wake); wait > 0 {
			// A turn handed over is for now, not for after the wait.
			q.try.turn = false
			if dl := it.req.Deadline; !dl.IsZero() && !wake.Before(dl) {
				b.decided(q, d.decide(it.req, schemas.OutcomeExpired, "", q.try.attempts, q.try.last))
				continue
			}
			if wait > d.cfg.MaxHold {
				b.deferRest(q, wake, reason)
				break
			}
			b.park(q, wait)
			return
		}
		if !q.try.turn {
			if dl := it.req.Deadline; !dl.IsZero() && !time.Now().Before(dl) {
				// Woken by takeTurn's expiry, or past it meanwhile.
				b.decided(q, d.decide(it.req, schemas.OutcomeExpired, "", q.try.attempts, q.try.last))
				continue
			}
			if !b.takeTurn(q, it.req) {
				return // waiting for the sender's turn, without a worker
			}
		}
		o, again := d.attempt(b.ctx, q.try)
		switch {
		case o != nil:
			b.decided(q, o)
		case !again.IsZero():
			q.retryAt = again
		default:
			b.finish() // ctx ended: the rest stays undecided
			return
		}
	}
	b.finish()
}

// takeTurn takes the turn of q's head for its sender's rate limit before
// the head takes a worker's call: true when the turn is q's now. Else q
// waits in the limiter's queue holding no worker, and goes back to ready
// when the limiter hands it the turn (q.try.turn set), or at the head's
// deadline (then it is expired). So a sender waiting for its rate holds
// none of the Concurrency calls that other senders could use.
func (b *batchRun) takeTurn(q *recipientQueue, req *schemas.DispatchRequest) bool {
	lim := b.d.limiterFor(req.Channel)
	t := q.try
	// q.mu is held across Take so that the wait is registered before a
	// worker that took the handed-over queue looks for it (resumeTurn).
	// granted takes no lock: Take may call it, and the limiter calls it
	// under its own lock. takeTurn runs on workers only, so never after
	// sendAll stopped the batch.
	q.mu.Lock()
	defer q.mu.Unlock()
	now, cancel := lim.Take(req.Sender, func(picked func()) {
		t.turn, t.picked = true, picked
		b.turned <- q // never blocks: each queue is in ready or turned at most once
	})
	if now {
		t.turn = true
		b.d.m.limiterWait.Observe(0)
		return true
	}
	q.waiting, q.waitFrom = true, time.Now()
	w := turnWait{cancel: cancel}
	if dl := req.Deadline; !dl.IsZero() {
		w.expiry = time.AfterFunc(time.Until(dl), func() {
			if cancel() {
				b.turned <- q // still waiting: run expires the head
			}
		})
	}
	b.mu.Lock()
	b.turns[q] = w
	b.mu.Unlock()
	return false
}

// resumeTurn forgets the turn wait of q, which the limiter handed its
// turn (or whose deadline came), tells the limiter a worker took the
// turn up, and counts the wait.
func (b *batchRun) resumeTurn(q *recipientQueue) {
	if q.try.picked != nil {
		q.try.picked()
		q.try.picked = nil
	}
	q.mu.Lock()
	waiting, from := q.waiting, q.waitFrom
	q.waiting = false
	q.mu.Unlock()
	if !waiting {
		return
	}
	b.mu.Lock()
	w := b.turns[q]
	delete(b.turns, q)
	b.mu.Unlock()
	if w.expiry != nil {
		w.expiry.Stop()
	}
	b.d.m.limiterWait.Observe(time.Since(from).Seconds())
}

// decided stores the head's outcome and moves q to its next request.
func (b *batchRun) decided(q *recipientQueue, o *schemas.Outcome) {
	idx := q.items[q.next].idx
	b.results[idx], b.outs[idx] = outcomeRecord(o), o
	b.emit(b.results[idx])
	q.next++
	q.try, q.retryAt = nil, time.Time{}
}

// park puts q back in ready after wait.
func (b *batchRun) park(q *recipientQueue, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.timers[q] = time.AfterFunc(wait, func() {
		b.mu.Lock()
		delete(b.timers, q)
		stopped := b.stopped
		b.mu.Unlock()
		if !stopped {
			b.ready <- q
		}
	})
}

// finish counts one queue done.
func (b *batchRun) finish() {
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

// deferRest defers q's undecided requests to schemas.TopicScheduled, for
// reason (empty: retry or pair_rate, from q's state): the
// head with send_at wake, each next one PairInterval later (its planned
// turn), each with schemas.HeaderAttempts. The turns are reserved in the
// pair plan, so that later requests to the recipient on this replica are
// planned behind them. A request whose turn falls at or after its deadline
// is expired instead (its turn goes to the next), one refused by begin is
// decided as begin says.
func (b *batchRun) deferRest(q *recipientQueue, wake time.Time, reason string) {
	d := b.d
	switch {
	case reason != "":
	case !q.retryAt.IsZero() && !q.retryAt.Before(wake):
		reason = "retry"
	default:
		reason = "pair_rate"
	}
	slot := wake
	for q.next < len(q.items) {
		it := q.items[q.next]
		t := q.try
		if t == nil {
			var o *schemas.Outcome
			if t, o = d.begin(it.req, it.attempts); o != nil {
				b.decided(q, o)
				continue
			}
		}
		if dl := it.req.Deadline; !dl.IsZero() && !slot.Before(dl) {
			b.decided(q, d.decide(it.req, schemas.OutcomeExpired, "", t.attempts, t.last))
			continue
		}
		r := *it.req
		r.SendAt = slot.UTC()
		bs, _ := r.Marshal() // cannot fail: plain fields only
		b.results[it.idx] = &kgo.Record{
			Topic: schemas.TopicScheduled, Key: r.Key(), Value: bs,
			Headers: []kgo.RecordHeader{{Key: schemas.HeaderAttempts, Value: []byte(strconv.Itoa(t.attempts))}},
		}
		b.emit(b.results[it.idx])
		d.pairs.reserve(it.req, slot)
		d.m.deferred.WithLabelValues(reason).Inc()
		reason = "queued"
		q.next++
		q.try, q.retryAt = nil, time.Time{}
		if d.cfg.PairInterval > 0 {
			slot = slot.Add(d.cfg.PairInterval)
		}
	}
}

// deferredAttempts reads schemas.HeaderAttempts of a dispatch record: the
// calls made before the dispatcher deferred it, and whether it did (its
// SendAt is then a turn planned for the recipient). A malformed value
// counts as not deferred.
func deferredAttempts(rec *kgo.Record) (attempts int, planned bool) {
	for _, h := range rec.Headers {
		if h.Key != schemas.HeaderAttempts {
			continue
		}
		n, err := strconv.Atoi(string(h.Value))
		if err != nil || n < 0 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// pairSweepEvery is how many plan changes pass between two sweeps of
// entries whose turn has passed.
const pairSweepEvery = 4096

// pairPlan plans Meta's pair rate: per (sender, recipient) it remembers
// the last call Meta counted (accepted, in doubt, or refused with 131056)
// and the latest turn given to a deferred request, and plans the next
// request PairInterval after them. It lives as long as the dispatcher, so
// it spans batches; a recipient's requests reach one replica (they share a
// partition), so one replica's plan is enough, except across a rebalance.
type pairPlan struct {
	interval time.Duration
	// now is the clock, replaced in tests.
	now func() time.Time

	mu       sync.Mutex
	last     map[pairKey]time.Time
	reserved map[pairKey]time.Time
	changes  int
}

// newPairPlan returns a plan of interval; 0 or negative plans nothing.
func newPairPlan(interval time.Duration) *pairPlan {
	return &pairPlan{interval: interval, now: time.Now, last: make(map[pairKey]time.Time), reserved: make(map[pairKey]time.Time)}
}

// pairKey is the plan's key of a request: its sender and recipient (Meta's
// pair is the business number and the user); a struct, not a joined
// string, so that a lookup allocates nothing.
type pairKey struct{ sender, to string }

// pairKeyOf is the plan's key of req.
func pairKeyOf(req *schemas.DispatchRequest) pairKey { return pairKey{req.Sender, req.To} }

// turn is the earliest time req may be sent: PairInterval after the last
// counted call to its recipient, and, unless req holds a planned turn,
// after the latest turn given to a deferred request. Zero when req may go
// at once.
func (p *pairPlan) turn(req *schemas.DispatchRequest, planned bool) time.Time {
	if p.interval <= 0 || req.Channel != schemas.ChannelWhatsApp {
		return time.Time{}
	}
	k := pairKeyOf(req)
	p.mu.Lock()
	defer p.mu.Unlock()
	var t time.Time
	if last, ok := p.last[k]; ok {
		t = last.Add(p.interval)
	}
	if r, ok := p.reserved[k]; ok && !planned {
		if rt := r.Add(p.interval); rt.After(t) {
			t = rt
		}
	}
	return t
}

// answered notes the answer of a call to req's recipient at now: an
// accepted or possibly sent message, or Meta's 131056, starts the interval.
func (p *pairPlan) answered(req *schemas.DispatchRequest, err error, now time.Time) {
	if p.interval <= 0 || req.Channel != schemas.ChannelWhatsApp {
		return
	}
	if err != nil && errorCode(err) != codePairRate && errorCode(err) != 0 {
		return // not sent: 130429, a refusal, an unreachable provider...
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last[pairKeyOf(req)] = now
	p.changed()
}

// reserve notes a turn given to a deferred request to req's recipient.
func (p *pairPlan) reserve(req *schemas.DispatchRequest, turn time.Time) {
	if p.interval <= 0 {
		return
	}
	k := pairKeyOf(req)
	p.mu.Lock()
	defer p.mu.Unlock()
	if turn.After(p.reserved[k]) {
		p.reserved[k] = turn
	}
	p.changed()
}

// changed sweeps now and then. Call with p.mu held.
func (p *pairPlan) changed() {
	p.changes++
	if p.changes%pairSweepEvery != 0 {
		return
	}
	cut := p.now().Add(-p.interval)
	for k, t := range p.last {
		if t.Before(cut) {
			delete(p.last, k)
		}
	}
	for k, t := range p.reserved {
		if t.Before(cut) {
			delete(p.reserved, k)
		}
	}
}

// nextPoll is the most records the next batch gets, and whether a batch
// handed back carries requests over to it (kafka.RunCarrying then does
// not wait for new records).
func (d *Dispatcher) nextPoll() (int, bool) { return d.pollSize, d.carry.carrying() }

// minPoll is the fewest records a batch is offered (with Concurrency if
// larger): enough that a burst to a few recipients and the others of
// their partition share a batch, so that a recipient parked for its pair
// rate lets the others go by.
const minPoll = 256

// maxPoll is the most records a batch is offered. More than
// kafka.MaxPollRecords: a paced backlog of many senders must give each of
// them MaxBatchTime of work in one batch (100 senders at 80 a second for
// 2 s are 16,000 requests), else every batch ends when its busiest
// sender is done and the others idle until then.
const maxPoll = 50_000

// sizePoll sizes the next batch from the last one of n records: a batch
// cut short by MaxBatchTime is followed by one of one and a half times as
// many records as it decided (what the rate limits let through in that
// time, and a margin so that every sender, whose share of a batch varies,
// still has work when the batch is cut), one that finished by one twice
// its size, at least minPoll (or Concurrency) and at most maxPoll. So a
// paced backlog is not fetched again and again (each cut batch hands
// back its undecided records: about a third), while an unpaced one soon
// gets full batches.
func (d *Dispatcher) sizePoll(n int, results []*kgo.Record, cut bool) {
	size := 2 * n
	if cut {
		decided, left := 0, 0
		for _, r := range results {
			switch {
			case r == nil:
				left++
			case r != decidedBefore:
				decided++
			}
		}
		// The requests carried over (left) are part of the next batch.
		size = decided + decided/2 - left
	}
	d.pollSize = min(max(size, d.cfg.Concurrency, minPoll), maxPoll)
}

// decidedBefore stands, in a batch's results, for a record decided
// before (a duplicate the ledger knows): nothing is produced for it again.
var decidedBefore = &kgo.Record{}

// handBack ends a batch cut short by MaxBatchTime: it marks the decided
// prefix of each partition for commit and carries the undecided requests
// over to the next batch, ahead of what it polls (their records follow in
// each partition: the consumer is not rewound, so nothing is fetched or
// decoded again, and the requests decided behind an undecided one are not
// seen again). A rebalance between the batches drops the carried requests
// of the partitions revoked: their new owner fetches them from the
// committed offset, as after a restart.
func (d *Dispatcher) handBack(recs, results []*kgo.Record, queues [][]item) error {
	d.markDecided(recs, results)
	var left []carried
	for _, q := range queues {
		for _, it := range q {
			if results[it.idx] == nil {
				left = append(left, carried{rec: recs[it.idx], it: it})
			}
		}
	}
	// In recs' order, which is each partition's offset order.
	slices.SortFunc(left, func(a, b carried) int { return cmp.Compare(a.it.idx, b.it.idx) })
	d.carry.put(left)
	d.m.batchesCut.Inc()
	return kafka.ErrHandledPart
}

// markDecided marks for commit, per partition of recs, the records before
// its first undecided one, or, when none is undecided, every record read
// of it: a batch that carried requests over decided records behind them
// that it does not hold.
func (d *Dispatcher) markDecided(recs, results []*kgo.Record) {
	done := donePrefix(recs, results)
	open := make(map[int32]bool)
	for i, r := range results {
		if r == nil {
			open[recs[i].Partition] = true
		}
	}
	for i, r := range done {
		if last := d.carry.lastOf(r.Partition); !open[r.Partition] && last != nil && last.Offset > r.Offset {
			done[i] = last
		}
	}
	if len(done) > 0 {
		d.cl.MarkCommitRecords(done...)
	}
}

// carried is an undecided request of a batch handed back, and its record.
type carried struct {
	rec *kgo.Record
	it  item
}

// carrySet holds the requests a batch handed back, for the next batch.
// The consume loop puts and takes them; the rebalance callbacks drop those
// of the partitions revoked or lost.
type carrySet struct {
	mu   sync.Mutex
	left []carried
	// last is the last record polled of each partition.
	last map[int32]*kgo.Record
}

// polled notes the last record polled of each partition in recs.
func (c *carrySet) polled(recs []*kgo.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = make(map[int32]*kgo.Record)
	}
	for _, r := range recs {
		if l := c.last[r.Partition]; l == nil || r.Offset > l.Offset {
			c.last[r.Partition] = r
		}
	}
}

// lastOf is the last record polled of partition p, nil if none.
func (c *carrySet) lastOf(p int32) *kgo.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[p]
}

func (c *carrySet) put(left []carried) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = left
}

// take returns the carried requests and empties the set.
func (c *carrySet) take() []carried {
	c.mu.Lock()
	defer c.mu.Unlock()
	left := c.left
	c.left = nil
	return left
}

// carrying reports whether requests are carried.
func (c *carrySet) carrying() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.left) > 0
}

// drop forgets the carried requests of the partitions in lost.
func (c *carrySet) drop(lost map[string][]int32) {
	parts := lost[schemas.TopicDispatch]
	if len(parts) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = slices.DeleteFunc(c.left, func(r carried) bool { return slices.Contains(parts, r.rec.Partition) })
	for _, p := range parts {
		delete(c.last, p)
	}
}
