package dispatcher

import (
	"context"
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
}

// batchRun runs the queues of one batch: workers take ready queues, a
// queue that must wait is parked on a timer without a worker.
type batchRun struct {
	d       *Dispatcher
	ctx     context.Context
	results []*kgo.Record
	// ready holds the queues a worker may take (each queue is in it at
	// most once, so it never blocks: its capacity is the queue count).
	ready chan *recipientQueue
	// left counts the queues not finished; done is closed at zero.
	left atomic.Int64
	done chan struct{}

	mu      sync.Mutex
	timers  map[*recipientQueue]*time.Timer
	stopped bool
}

// sendAll runs every queue, at most Concurrency calls at a time, each queue
// in order, and stores each request's result record (outcome, or request
// deferred to the scheduled topic) in results. A queue whose head must
// wait, for its recipient's pair-rate turn or a retry's backoff, is parked
// on a timer and holds no worker; a wait longer than MaxHold defers the
// queue's remaining requests (see batchRun.deferRest). A queue stops at its
// first request left undecided because ctx ended.
func (d *Dispatcher) sendAll(ctx context.Context, queues [][]item, results []*kgo.Record) {
	if len(queues) == 0 {
		return
	}
	b := &batchRun{
		d: d, ctx: ctx, results: results,
		ready:  make(chan *recipientQueue, len(queues)),
		done:   make(chan struct{}),
		timers: make(map[*recipientQueue]*time.Timer),
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
	b.mu.Unlock()
}

// work runs ready queues until every queue finished or ctx ended (parked
// queues are then left undecided).
func (b *batchRun) work() {
	for {
		select {
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
		if wait := time.Until(wake); wait > 0 {
			if dl := it.req.Deadline; !dl.IsZero() && !wake.Before(dl) {
				b.decided(q, d.decide(it.req, schemas.OutcomeExpired, "", q.try.attempts, q.try.last))
				continue
			}
			if wait > d.cfg.MaxHold {
				b.deferRest(q, wake)
				break
			}
			b.park(q, wait)
			return
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

// decided stores the head's outcome and moves q to its next request.
func (b *batchRun) decided(q *recipientQueue, o *schemas.Outcome) {
	bs, _ := o.Marshal() // cannot fail: plain fields only
	b.results[q.items[q.next].idx] = &kgo.Record{Topic: schemas.TopicOutcomes, Key: o.Key(), Value: bs}
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

// deferRest defers q's undecided requests to schemas.TopicScheduled: the
// head with send_at wake, each next one PairInterval later (its planned
// turn), each with schemas.HeaderAttempts. The turns are reserved in the
// pair plan, so that later requests to the recipient on this replica are
// planned behind them. A request whose turn falls at or after its deadline
// is expired instead (its turn goes to the next), one refused by begin is
// decided as begin says.
func (b *batchRun) deferRest(q *recipientQueue, wake time.Time) {
	d := b.d
	reason := "pair_rate"
	if !q.retryAt.IsZero() && !q.retryAt.Before(wake) {
		reason = "retry"
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
	last     map[string]time.Time
	reserved map[string]time.Time
	changes  int
}

// newPairPlan returns a plan of interval; 0 or negative plans nothing.
func newPairPlan(interval time.Duration) *pairPlan {
	return &pairPlan{interval: interval, now: time.Now, last: make(map[string]time.Time), reserved: make(map[string]time.Time)}
}

// pairKeyOf is the plan's key of req: its sender and recipient (Meta's
// pair is the business number and the user).
func pairKeyOf(req *schemas.DispatchRequest) string { return req.Sender + "|" + req.To }

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

// nextPoll is the most records the next batch gets.
func (d *Dispatcher) nextPoll() int { return d.pollSize }

// minPoll is the fewest records a batch is offered (with Concurrency if
// larger): enough that a burst to a few recipients and the others of
// their partition share a batch, so that a recipient parked for its pair
// rate lets the others go by.
const minPoll = 256

// sizePoll sizes the next batch from the last one of n records: a batch
// cut short by MaxBatchTime is followed by one of as many records as it
// decided (what the rate limit lets through in that time), one that
// finished by one twice its size, at least minPoll (or Concurrency) and
// at most kafka.MaxPollRecords. So a paced backlog is not fetched again and
// again (each cut batch hands its undecided records back), while an
// unpaced one soon gets full batches.
func (d *Dispatcher) sizePoll(n int, results []*kgo.Record, cut bool) {
	size := 2 * n
	if cut {
		size = 0
		for _, r := range results {
			if r != nil && r != decidedBefore {
				size++
			}
		}
	}
	d.pollSize = min(max(size, d.cfg.Concurrency, minPoll), kafka.MaxPollRecords)
}

// decidedBefore stands, in a batch's results, for a record decided in an
// earlier batch that was handed back: nothing is produced for it again.
var decidedBefore = &kgo.Record{}

// handBack ends a batch cut short by MaxBatchTime: it marks and commits
// the decided prefix of each partition, rewinds each partition to its
// first undecided record, and remembers the decided records after that
// one, so that they are skipped when fetched again.
func (d *Dispatcher) handBack(ctx context.Context, recs, results []*kgo.Record) error {
	if done := donePrefix(recs, results); len(done) > 0 {
		d.cl.MarkCommitRecords(done...)
	}
	// SetOffsets takes the rewind point for committed: commit first.
	if err := d.cl.CommitMarkedOffsets(ctx); err != nil && d.throttle.allow("commit") {
		d.log.Warn("committing a batch handed back", "err", err)
	}
	rewind := make(map[string]map[int32]kgo.EpochOffset)
	for i, r := range recs {
		_, cut := rewind[r.Topic][r.Partition]
		switch {
		case cut && results[i] != nil:
			d.redo.add(r)
		case !cut && results[i] == nil:
			if rewind[r.Topic] == nil {
				rewind[r.Topic] = make(map[int32]kgo.EpochOffset)
			}
			rewind[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	d.cl.SetOffsets(rewind)
	d.m.batchesCut.Inc()
	return kafka.ErrHandledPart
}

// redoSet holds, per partition, the offsets of records decided behind an
// undecided one in a batch handed back. Only handle uses it.
type redoSet map[int32]map[int64]bool

func (s redoSet) add(r *kgo.Record) {
	if s[r.Partition] == nil {
		s[r.Partition] = make(map[int64]bool)
	}
	s[r.Partition][r.Offset] = true
}

// decided reports whether r was decided before, and forgets it.
func (s redoSet) decided(r *kgo.Record) bool {
	if !s[r.Partition][r.Offset] {
		return false
	}
	delete(s[r.Partition], r.Offset)
	return true
}

// prune forgets the offsets below the first of each partition in recs:
// committed, or the partition was taken over.
func (s redoSet) prune(recs []*kgo.Record) {
	if len(s) == 0 {
		return
	}
	first := make(map[int32]int64)
	for _, r := range recs {
		if f, ok := first[r.Partition]; !ok || r.Offset < f {
			first[r.Partition] = r.Offset
		}
	}
	for p, f := range first {
		for off := range s[p] {
			if off < f {
				delete(s[p], off)
			}
		}
		if len(s[p]) == 0 {
			delete(s, p)
		}
	}
}
