package dispatcher

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// schedulerStage is the scheduler's name in dead letters.
const schedulerStage = "scheduler"

const (
	// schedulerPoll is the most records read per poll.
	schedulerPoll = 10000
	// maxSleep bounds one wait for the next due request, so that a jump
	// of the wall clock (the timer runs on the monotonic one) is noticed
	// within it.
	maxSleep = 30 * time.Second
	// horizonSlack is how much later than schemas.MaxScheduleAhead after
	// the record's timestamp a SendAt may be before it is dead-lettered:
	// room for producers' clocks.
	horizonSlack = 24 * time.Hour
)

// SchedulerConfig configures the scheduler.
type SchedulerConfig struct {
	// Group is the Kafka consumer group. Default "herald-scheduler".
	Group string `yaml:"group"`
	// MaxPending bounds the requests held in memory. At or past it the
	// scheduler pauses fetching (PauseFetchPartitions) the partitions it
	// has caught up on, and resumes once releases bring it below. It may
	// be exceeded by one poll (10,000 records) and by partitions that are
	// still being re-read after an assignment (see Scheduler). Default
	// 1,000,000.
	MaxPending int `yaml:"max_pending"`
	// ReleaseBatch is the most requests released in one round (one
	// acknowledged produce to the dispatch topic, then one of their release
	// markers). Default 10,000.
	ReleaseBatch int `yaml:"release_batch"`
	// Now is the clock that decides when a request is due. Default
	// time.Now. Tests set it; the wait for the next due request is a real
	// timer of SendAt minus Now (at most 30 s, then it looks again).
	Now func() time.Time `yaml:"-"`
}

// Validate checks the config and fills defaults.
func (c *SchedulerConfig) Validate() error {
	if c.Group == "" {
		c.Group = "herald-scheduler"
	}
	if c.MaxPending < 0 {
		return fmt.Errorf("scheduler: max_pending %d is negative", c.MaxPending)
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1_000_000
	}
	if c.ReleaseBatch < 0 {
		return fmt.Errorf("scheduler: release_batch %d is negative", c.ReleaseBatch)
	}
	if c.ReleaseBatch == 0 {
		c.ReleaseBatch = 10000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Scheduler holds dispatch requests from schemas.TopicScheduled until their
// SendAt and then produces them, unchanged (same ID, SendAt kept, the
// record's headers too), to schemas.TopicDispatch. Build it with NewScheduler, run it with Run, release
// it with Close. It consumes in its own group (SchedulerConfig.Group), next to
// the dispatcher.
//
// Pending requests are kept in memory in a min-heap by SendAt; a timer wakes
// the loop at the earliest SendAt. A due request is produced to the dispatch
// topic and, once Kafka acknowledged it, a release marker
// (schemas.ScheduleRelease, record header schemas.HeaderRecord =
// schemas.RecordScheduleRelease) with the request record's key is produced to
// the request's own partition of the scheduled topic (set explicitly, so that
// a request written with another partitioner still gets its marker next to
// it). Every other record on the topic is taken as a DispatchRequest.
//
// Offsets: a record is settled when it is a release marker, a request that
// was released (dispatch and marker acknowledged) or found released, or a
// dead letter that was acknowledged. Per partition only the contiguous prefix
// of settled records is marked for commit, so the committed offset is the
// oldest unreleased request's and a restart re-reads every pending request.
//
// Replay: re-reading a partition finds requests whose marker follows later in
// the log. Until the scheduler has read up to the partition's high watermark
// as reported by the first fetch after the assignment (every marker written
// before it took the partition over lies below it), requests read from that
// partition are held, not released even when due; a marker read meanwhile
// settles every held request of its ID. (Caught up means a record at or past
// the high watermark's offset minus one was read; transactional producers,
// whose control records end a log without a readable record, would keep a
// partition held until its next record. Herald's producers are not
// transactional.) Requests of one ID pending in one
// partition are released once: the others are duplicates (a producer's
// retry) and settled with it.
//
// So a request is released exactly once, except after a crash (or a lost
// group membership) between the acknowledgement of its dispatch and that of
// its marker: the next owner releases it again, with the same dispatch ID,
// and the dispatcher may send it twice.
//
// A request whose Deadline passed before its release is still released: the
// dispatcher turns it into an OutcomeExpired, so its outcome is recorded.
// Records that do not decode, fail validation, have no send_at, or a send_at
// more than schemas.MaxScheduleAhead (plus a day) after the record's
// timestamp go to schemas.TopicDeadLetter with the reason. On revocation the
// marked offsets are committed and the partition's pending requests dropped:
// the new owner re-reads them.
//
// Metrics: see the package doc (herald_scheduler_*).
type Scheduler struct {
	cfg      SchedulerConfig
	log      *slog.Logger
	m        *schedulerMetrics
	cl       *kgo.Client
	throttle *throttle

	// mu guards the state below: the loop holds it while it processes a
	// poll, the rebalance callbacks while they drop partitions.
	mu      sync.Mutex
	parts   map[int32]*schedPartition
	due     entryHeap
	pending int
	paused  map[int32]bool

	// wakeMu guards pollCancel and woken: wake interrupts the loop's wait.
	wakeMu     sync.Mutex
	pollCancel context.CancelFunc
	woken      bool

	closeOnce sync.Once
}

// schedPartition is the scheduler's state of one partition it owns.
type schedPartition struct {
	id int32
	// replayEnd is the high watermark of the first fetch after the
	// assignment; -1 before it. Requests are held until next reaches it.
	replayEnd int64
	caughtUp  bool
	// next is the offset after the last record read, epoch that record's
	// leader epoch.
	next  int64
	epoch int32
	// queue holds the unsettled requests in offset order (settled ones are
	// dropped from its front, and compacted out when they are most of it);
	// the commit point is its first offset, or next when it is empty.
	queue []*entry
	// open is how many entries of queue are unsettled.
	open int
	// held are requests read before catching up.
	held []*entry
	// byID are the pending requests by dispatch ID.
	byID map[string][]*entry
	// marked is the last commit offset marked.
	marked int64
}

// entry is one pending request.
type entry struct {
	part   *schedPartition
	offset int64
	epoch  int32
	id     string
	key    []byte // RecipientKey: the dispatch record's key
	recKey []byte // the scheduled record's key: the marker's key
	value  []byte
	// headers go with the released record (schemas.HeaderAttempts).
	headers []kgo.RecordHeader
	sendAt  time.Time
	// idx is the entry's index in the heap, -1 when not in it.
	idx     int
	settled bool
}

// NewScheduler builds a scheduler consuming schemas.TopicScheduled in
// cfg.Group. reg may be nil (metrics are then not registered).
func NewScheduler(cfg SchedulerConfig, kcfg kafka.Config, log *slog.Logger, reg prometheus.Registerer) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("stage", schedulerStage)
	m, err := newSchedulerMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg:      cfg,
		log:      log,
		m:        m,
		throttle: newThrottle(time.Second),
		parts:    make(map[int32]*schedPartition),
		paused:   make(map[int32]bool),
	}
	opts := append(kcfg.Opts(log), kcfg.ConsumerOpts(cfg.Group, schemas.TopicScheduled)...)
	// These replace ConsumerOpts' revoke callback: the scheduler also drops
	// the partitions' pending requests.
	opts = append(opts,
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.RecordPartitioner(markerPartitioner{manual: kgo.ManualPartitioner(), byKey: kgo.StickyKeyPartitioner(nil)}),
	)
	if s.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("scheduler: creating kafka client: %w", err)
	}
	return s, nil
}

// markerPartitioner writes records to TopicScheduled (release markers) to
// the partition set on the record, and every other record by its key's
// murmur2 hash, as franz-go's and the Java client's default partitioners do.
type markerPartitioner struct{ manual, byKey kgo.Partitioner }

func (p markerPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == schemas.TopicScheduled {
		return p.manual.ForTopic(t)
	}
	return p.byKey.ForTopic(t)
}

// Run consumes and releases until ctx is done (then it returns nil) or a
// release or dead letter cannot be produced (then it returns the error; what
// was not settled is re-read after a restart).
func (s *Scheduler) Run(ctx context.Context) error {
	s.log.Info("scheduler running", "group", s.cfg.Group, "max_pending", s.cfg.MaxPending)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.cl.CommitMarkedOffsets(cctx); err != nil {
			s.log.Warn("committing offsets at shutdown", "err", err)
		}
	}()
	for {
		s.mu.Lock()
		err := s.release(ctx)
		if err == nil {
			s.flowControl()
		}
		wait, timed := s.nextWait()
		s.mu.Unlock()
		if err != nil {
			s.cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.cl.AllowRebalance()

		pctx, done := s.pollContext(ctx, wait, timed)
		fetches := s.cl.PollRecords(pctx, schedulerPoll)
		done()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.log.Warn("fetching", "topic", topic, "partition", p, "err", err)
			}
		})
		s.mu.Lock()
		err = s.read(ctx, fetches)
		s.mu.Unlock()
		if err != nil {
			s.cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Close leaves the consumer group. Call it after Run returned.
func (s *Scheduler) Close() {
	s.closeOnce.Do(s.cl.Close)
}

// wake interrupts the loop's wait for the next due request, so that it
// looks at the clock again (tests move the clock).
func (s *Scheduler) wake() {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.pollCancel != nil {
		s.pollCancel()
		s.pollCancel = nil
		return
	}
	s.woken = true
}

// pollContext is ctx, also cancelled after wait when timed, or by wake.
func (s *Scheduler) pollContext(ctx context.Context, wait time.Duration, timed bool) (context.Context, func()) {
	pctx, cancel := context.WithCancel(ctx)
	var t *time.Timer
	if timed {
		t = time.AfterFunc(wait, cancel)
	}
	s.wakeMu.Lock()
	if s.woken {
		s.woken = false
		cancel()
	} else {
		s.pollCancel = cancel
	}
	s.wakeMu.Unlock()
	return pctx, func() {
		if t != nil {
			t.Stop()
		}
		s.wakeMu.Lock()
		s.pollCancel = nil
		s.wakeMu.Unlock()
		cancel()
	}
}

// nextWait is how long until the earliest pending request is due, capped
// at maxSleep; timed is false when nothing is pending.
func (s *Scheduler) nextWait() (time.Duration, bool) {
	if len(s.due) == 0 {
		return 0, false
	}
	return min(max(s.due[0].sendAt.Sub(s.cfg.Now()), 0), maxSleep), true
}

// read takes in one poll: requests become pending, markers settle the
// requests they released, bad records are dead-lettered; then the commit
// points advance.
func (s *Scheduler) read(ctx context.Context, fetches kgo.Fetches) error {
	var (
		dead    []*kgo.Record
		touched = make(map[*schedPartition]bool)
	)
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if fp.Topic != schemas.TopicScheduled || len(fp.Records) == 0 {
			return
		}
		p := s.parts[fp.Partition]
		if p == nil {
			p = &schedPartition{id: fp.Partition, replayEnd: -1, byID: make(map[string][]*entry), marked: -1}
			s.parts[fp.Partition] = p
		}
		if p.replayEnd < 0 {
			p.replayEnd = fp.HighWatermark
		}
		touched[p] = true
		for _, rec := range fp.Records {
			if dl := s.readRecord(p, rec); dl != nil {
				dead = append(dead, dl)
			}
		}
	})
	if len(dead) > 0 {
		pctx, cancel := graceContext(ctx)
		defer cancel()
		if err := kafka.ProduceAll(pctx, s.cl, dead); err != nil {
			return fmt.Errorf("producing %d dead letters: %w", len(dead), err)
		}
		s.m.deadLetters.Add(float64(len(dead)))
	}
	for p := range touched {
		s.advance(p)
	}
	s.m.pending.Set(float64(s.pending))
	return nil
}

// readRecord takes in one record of p and returns its dead letter, if any.
func (s *Scheduler) readRecord(p *schedPartition, rec *kgo.Record) *kgo.Record {
	p.next, p.epoch = rec.Offset+1, rec.LeaderEpoch
	defer s.maybeCaughtUp(p)
	if isReleaseMarker(rec) {
		r, err := schemas.DecodeScheduleRelease(rec.Value)
		if err != nil {
			return s.deadLetter(rec, "decoding release marker: "+err.Error())
		}
		for _, e := range p.byID[r.ID] {
			if e.offset < rec.Offset {
				s.settle(e)
				s.m.skipped.WithLabelValues("released").Inc()
			}
		}
		return nil
	}
	d, err := schemas.DecodeDispatchRequest(rec.Value)
	if err == nil {
		err = d.ValidateScheduled()
	}
	if err != nil {
		return s.deadLetter(rec, "decoding scheduled dispatch request: "+err.Error())
	}
	if !rec.Timestamp.IsZero() && d.SendAt.After(rec.Timestamp.Add(schemas.MaxScheduleAhead+horizonSlack)) {
		return s.deadLetter(rec, fmt.Sprintf("send_at %s is more than %d days after the record was written (%s): the topic's retention may not keep it",
			d.SendAt.Format(time.RFC3339), schemas.MaxScheduleAhead/(24*time.Hour), rec.Timestamp.UTC().Format(time.RFC3339)))
	}
	e := &entry{
		part:    p,
		offset:  rec.Offset,
		epoch:   rec.LeaderEpoch,
		id:      d.ID,
		key:     d.Key(),
		recKey:  append([]byte(nil), rec.Key...),
		value:   append([]byte(nil), rec.Value...),
		headers: slices.Clone(rec.Headers),
		sendAt:  d.SendAt,
		idx:     -1,
	}
	p.queue = append(p.queue, e)
	p.open++
	p.byID[e.id] = append(p.byID[e.id], e)
	s.pending++
	if p.caughtUp {
		heap.Push(&s.due, e)
	} else {
		p.held = append(p.held, e)
	}
	return nil
}

// maybeCaughtUp moves p's held requests to the heap once p was read up to
// its replay end: every marker that could settle them has been read.
func (s *Scheduler) maybeCaughtUp(p *schedPartition) {
	if p.caughtUp || p.next < p.replayEnd {
		return
	}
	p.caughtUp = true
	for _, e := range p.held {
		if !e.settled {
			heap.Push(&s.due, e)
		}
	}
	p.held = nil
}

func isReleaseMarker(rec *kgo.Record) bool {
	for _, h := range rec.Headers {
		if h.Key == schemas.HeaderRecord {
			return string(h.Value) == schemas.RecordScheduleRelease
		}
	}
	return false
}

func (s *Scheduler) deadLetter(rec *kgo.Record, reason string) *kgo.Record {
	if s.throttle.allow("dead_letter") {
		s.log.Warn("dead-lettering scheduled record", "partition", rec.Partition, "offset", rec.Offset, "reason", reason)
	}
	return kafka.DeadLetter(schedulerStage, rec, reason)
}

// settle marks e done and forgets it; the commit point moves on advance.
func (s *Scheduler) settle(e *entry) {
	if e.settled {
		return
	}
	e.settled = true
	s.pending--
	e.part.open--
	if e.idx >= 0 {
		heap.Remove(&s.due, e.idx)
	}
	p := e.part
	same := p.byID[e.id]
	for i, o := range same {
		if o == e {
			same = append(same[:i], same[i+1:]...)
			break
		}
	}
	if len(same) == 0 {
		delete(p.byID, e.id)
	} else {
		p.byID[e.id] = same
	}
	e.value, e.headers = nil, nil
}

// advance marks p's settled prefix for commit.
func (s *Scheduler) advance(p *schedPartition) {
	i := 0
	for i < len(p.queue) && p.queue[i].settled {
		i++
	}
	if i > 0 {
		clear(p.queue[:i])
		p.queue = p.queue[i:]
	}
	// Settled entries behind a pending one (one due in 90 days holds
	// everything after it) would otherwise pile up.
	if len(p.queue) >= 1024 && p.open < len(p.queue)/2 {
		kept := make([]*entry, 0, 2*p.open)
		for _, e := range p.queue {
			if !e.settled {
				kept = append(kept, e)
			}
		}
		p.queue = kept
	}
	to := kgo.EpochOffset{Epoch: p.epoch, Offset: p.next}
	if len(p.queue) > 0 {
		to = kgo.EpochOffset{Epoch: p.queue[0].epoch, Offset: p.queue[0].offset}
	}
	if to.Offset <= p.marked {
		return
	}
	p.marked = to.Offset
	s.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{schemas.TopicScheduled: {p.id: to}})
}

// release produces the due requests (at most ReleaseBatch) to the dispatch
// topic, then their markers, and settles those whose marker was
// acknowledged.
func (s *Scheduler) release(ctx context.Context) error {
	now := s.cfg.Now()
	type pid struct {
		p  *schedPartition
		id string
	}
	var (
		batch   []*entry
		inBatch = make(map[pid]bool)
	)
	for len(s.due) > 0 && len(batch) < s.cfg.ReleaseBatch && !s.due[0].sendAt.After(now) {
		e := heap.Pop(&s.due).(*entry)
		// A second request of one ID in one partition is a duplicate:
		// it is settled with the first once that one's marker is
		// acknowledged (it stays in byID until then).
		if k := (pid{e.part, e.id}); !inBatch[k] {
			inBatch[k] = true
			batch = append(batch, e)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	// A release that started is finished even when shutting down, so that
	// its marker is written and a restart does not release it again.
	pctx, cancel := graceContext(ctx)
	defer cancel()

	byRec := make(map[*kgo.Record]*entry, len(batch))
	recs := make([]*kgo.Record, 0, len(batch))
	for _, e := range batch {
		r := &kgo.Record{Topic: schemas.TopicDispatch, Key: e.key, Value: e.value, Headers: e.headers}
		byRec[r] = e
		recs = append(recs, r)
	}
	var firstErr error
	sent := make([]*entry, 0, len(batch))
	for _, res := range s.cl.ProduceSync(pctx, recs...) {
		if res.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("producing scheduled dispatch %s: %w", byRec[res.Record].id, res.Err)
			}
			continue
		}
		sent = append(sent, byRec[res.Record])
	}
	released := now.UTC()
	markers := make([]*kgo.Record, 0, len(sent))
	clear(byRec)
	for _, e := range sent {
		b, _ := (&schemas.ScheduleRelease{ID: e.id, Offset: e.offset, Released: released}).Marshal() // cannot fail: plain fields only
		r := &kgo.Record{
			Topic: schemas.TopicScheduled, Partition: e.part.id, Key: e.recKey, Value: b,
			Headers: []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordScheduleRelease)}},
		}
		byRec[r] = e
		markers = append(markers, r)
	}
	touched := make(map[*schedPartition]bool)
	for _, res := range s.cl.ProduceSync(pctx, markers...) {
		e := byRec[res.Record]
		if res.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("producing release marker of %s (its dispatch was produced; a restart releases it again): %w", e.id, res.Err)
			}
			continue
		}
		s.m.released.Inc()
		s.m.releaseDelay.Observe(max(s.cfg.Now().Sub(e.sendAt), 0).Seconds())
		// Other pending requests of this ID in the partition are
		// duplicates: a re-read would find them released by this marker.
		for _, o := range append([]*entry(nil), e.part.byID[e.id]...) {
			if o != e {
				s.settle(o)
				s.m.skipped.WithLabelValues("duplicate").Inc()
			}
		}
		s.settle(e)
		touched[e.part] = true
	}
	for p := range touched {
		s.advance(p)
	}
	s.m.pending.Set(float64(s.pending))
	if firstErr != nil {
		// Unacknowledged entries stay unsettled (and out of the heap):
		// Run stops and their offsets are not committed.
		return firstErr
	}
	return nil
}

// flowControl pauses fetching the caught-up partitions while MaxPending
// requests are pending and resumes them below it. Partitions still being
// re-read keep fetching: their held requests can only be released once
// they caught up.
func (s *Scheduler) flowControl() {
	replaying := 0
	for _, p := range s.parts {
		if !p.caughtUp {
			replaying++
		}
	}
	s.m.replaying.Set(float64(replaying))
	if s.pending >= s.cfg.MaxPending {
		var pause []int32
		for id, p := range s.parts {
			if p.caughtUp && !s.paused[id] {
				pause = append(pause, id)
				s.paused[id] = true
			}
		}
		if len(pause) > 0 {
			s.cl.PauseFetchPartitions(map[string][]int32{schemas.TopicScheduled: pause})
			s.log.Warn("pausing fetches: too many pending scheduled requests", "pending", s.pending, "max_pending", s.cfg.MaxPending, "partitions", pause)
		}
	} else if len(s.paused) > 0 {
		resume := make([]int32, 0, len(s.paused))
		for id := range s.paused {
			resume = append(resume, id)
		}
		clear(s.paused)
		s.cl.ResumeFetchPartitions(map[string][]int32{schemas.TopicScheduled: resume})
		s.log.Info("resuming fetches", "pending", s.pending, "partitions", resume)
	}
	s.m.paused.Set(float64(len(s.paused)))
}

// onRevoked commits what was settled and drops the partitions' pending
// requests; their new owner re-reads them from the committed offset. With
// BlockRebalanceOnPoll it does not run while the loop processes a poll.
func (s *Scheduler) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// An error here only means the next owner re-reads a few settled
	// records: markers make that harmless. The client logs it.
	_ = cl.CommitMarkedOffsets(ctx)
	s.drop(revoked[schemas.TopicScheduled])
}

// onLost drops the partitions without committing (the group is gone).
func (s *Scheduler) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop(lost[schemas.TopicScheduled])
}

func (s *Scheduler) drop(parts []int32) {
	if len(parts) == 0 {
		return
	}
	gone := make(map[*schedPartition]bool, len(parts))
	var unpause []int32
	for _, id := range parts {
		p := s.parts[id]
		if p == nil {
			continue
		}
		gone[p] = true
		s.pending -= p.open
		delete(s.parts, id)
		if s.paused[id] {
			delete(s.paused, id)
			unpause = append(unpause, id)
		}
	}
	if len(unpause) > 0 {
		// Paused partitions stay paused across assignments; a later owner
		// of this one starts fresh.
		s.cl.ResumeFetchPartitions(map[string][]int32{schemas.TopicScheduled: unpause})
	}
	kept := s.due[:0]
	for _, e := range s.due {
		if gone[e.part] {
			e.idx = -1
			continue
		}
		kept = append(kept, e)
	}
	clear(s.due[len(kept):])
	s.due = kept
	for i, e := range s.due {
		e.idx = i
	}
	heap.Init(&s.due)
	s.m.pending.Set(float64(s.pending))
	s.m.paused.Set(float64(len(s.paused)))
	s.log.Info("partitions dropped", "partitions", parts, "pending", s.pending)
}

// graceContext is a context for producing what must be produced even when
// ctx ends: it ends shutdownGrace after ctx.
func graceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, cancel) })
	return pctx, func() { stop(); cancel() }
}

// entryHeap is a min-heap of entries by SendAt, then offset.
type entryHeap []*entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if !h[i].sendAt.Equal(h[j].sendAt) {
		return h[i].sendAt.Before(h[j].sendAt)
	}
	return h[i].offset < h[j].offset
}

func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
	*h = append(*h, e)
}

func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}
