// Package segmenter is Herald's second stage: it consumes user events from
// schemas.TopicEvents, keeps a durable profile per user in memory, keeps
// saved segments' membership up to date, answers inbound WhatsApp messages
// that match a keyword rule, and produces the replies as
// schemas.DispatchRequest records to schemas.TopicDispatch.
//
// # State
//
// A Profile per record key of TopicEvents (app and hwid, or app and user id)
// lives in a fastcache.Cache of Config.CacheBytes, in a compact binary
// encoding (see codec.go). Every event kind is applied: register sets the
// fields and tags and marks the profile registered, unregister clears the
// mark, tags merges tags (null removes one), every event counts under its
// name (at most MaxEventNames names, the least recently seen one replaced),
// inbound records the last inbound time (the 24-hour customer-service
// window), the WhatsApp number and the sender's profile name (tag
// TagProfileName). A profile's encoding is capped at 62 KiB (fastcache keeps
// entries below 64 KiB) and its key at 1 KiB: an event that would break
// either goes to the dead-letter topic and leaves the profile unchanged.
// The last 8 event ids of a profile are remembered, so an event redelivered
// after a failed batch is not counted twice (its reply is produced again,
// with the same id).
//
// # Tags view
//
// Every profile whose tags or default tags (Language, Country, Timezone,
// the registration mark, the profile name) changed gets one
// schemas.ProfileTags record on the compacted schemas.TopicTags, written
// with its changelog record (see Durable state) and before the offsets of
// the events behind it are committed. Ingest's getTags serves them; counters and the
// service window are not part of it (they change on every event).
//
// # Segments
//
// Saved segments (schemas.SegmentDef on the compacted TopicSegments, read
// whole by every replica before it processes any event) are compiled
// Filters. After an event is applied to a profile, only the segments of its
// app that read something the event changed (a tag it names, the event
// name, a default tag) are evaluated; when the result differs from the
// profile's membership, the membership is updated (it is part of the
// profile and of its changelog) and a PW_SegmentEntered or
// PW_SegmentExited event (attribute "segment") is produced on TopicEvents
// for the user, with an id derived from the causing event, the segment and
// the direction. Where no event of the user comes, sweeps (sweep.go)
// re-evaluate segments over every profile of a partition: the segment API
// writes one per partition when a segment is saved (its existing members
// enter) or deleted (membership dropped), and each member writes one per
// owned partition every Config.SweepInterval for segments with relative
// times ("-30d", Filter.UsesNow), whose membership changes as time passes.
//
// # Campaigns
//
// A targeted campaign (the segment API's createTargetedMessage) arrives as
// one schemas.KindCampaign event per partition of TopicEvents. The member
// owning a partition runs its share in order with the partition's other
// events: it visits every profile of the partition (a key index kept beside
// the cache, filled on save and on restore), and sends the template to
// those the filter matches, registered, with a WhatsApp number, not opted
// out of MARKETING, with every {{tag:...}} variable set. Dispatch ids are
// hex(sha256("cmp|"+campaign id+"|"+profile key))[:32]: a campaign event
// redelivered after a crash produces the same requests. The send time is
// now, a UTC time, or a local time of a date in each user's timezone;
// Config.Limits then applies per user: quiet hours (defer to their end, or
// drop) and a cap on MARKETING messages per moving window, counted in the
// profile (and its changelog). A preview (Campaign.Preview) counts instead
// of sending and writes a schemas.CampaignPreview per partition to
// TopicPreviews: the sendable users by country, in and out of the service
// window when their message is due, and the template category. The
// segment API sums the parts and prices them with the rate card of
// Config.Pricing (internal/pricing: an estimate, Meta's per-message rules);
// the category is the template's when the app's templates are on
// TopicTemplates (templates.go: the campaign API also refuses unknown,
// unapproved or ill-fitting templates then), else the request's, else
// MARKETING is assumed and the answer says so. The preview also answers
// the app's messaging tier and its headroom: the segmenter reads the
// dispatchers' tier claims on schemas.TopicReach (tier.go, the same
// internal/reach decisions), and createTargetedMessage refuses a campaign
// with more users outside the window than the headroom unless
// allow_over_tier. Every WhatsApp request (keyword reply, campaign, journey)
// carries the user's window_until (last inbound + 24 h) for the
// dispatcher's window and tier checks.
//
// A campaign or sweep visits every profile of its partition, so Run does
// not hold its outputs and decoded profiles until the batch ends: every
// 4,096 of them (partChunk) the requests are produced and the changed
// profiles sealed (pending.go), their changelog records written after
// the requests they count. A crash in between repeats the campaign
// record: the users sent to already get the same request (same id) again,
// and their send, in the profile, is not counted twice.
//
// # Keyword replies
//
// An inbound text fires at most one KeywordRule (see KeywordRule for the
// modes, scopes and order; matching works on the text case-folded, without
// accents and with its whitespace collapsed). The built-in STOP and
// UNSUBSCRIBE set the profile's marketing opt-out and START clears it, each
// with a confirmation text, unless a rule in scope replaces them
// (BuiltinKeywords). A rule's profile actions (OptOut, SetTags) are applied
// to the profile right after the message itself, in the same batch, and the
// profile is saved again, so the changelog record of the batch carries them
// and the next message of the batch sees them (a PROMO after a STOP gets no
// MARKETING template); they are not applied again for a redelivered
// message. A rule with OptOut also writes the sender's marketing opt-out
// to schemas.TopicSuppressions (a schemas.Suppression, Lifted for START,
// dated by the message), produced with the batch's outputs: the dispatcher
// refuses MARKETING templates from it, and a START lifts an opt-out the
// dispatcher learned from Meta's 131050. The segmenter reads that topic
// too (suppressionView): campaigns and journeys skip MARKETING templates to
// a suppressed number as to a profile that sent STOP, and previews count it
// as opted out. Its reply is a DispatchRequest with a deterministic ID,
// hex(sha256("kw|"+event id+"|"+rule name))[:32] (the rule name defaults
// to the upper-case keyword), so that a replay produces the same request.
// The reply goes from the number that received the message to its sender.
// Users who opted out get no MARKETING template (confirmations, texts and
// other templates still go); free-form text expires when the service window
// closes; messages older than Config.DispatchTTL get no reply (their profile
// actions still apply).
//
// # Delivery
//
// Run consumes with internal/kafka.RunDrainingN: a batch's offsets are
// committed only after its dispatch requests and dead letters, and then
// the changelog records of its changes, were acknowledged by Kafka; on
// shutdown the batch in hand is finished, the pending changelog written
// and committed first (kafka.DefaultDrainGrace at most each), so a
// graceful restart repeats no keyword reply.
// Records that are not valid events (bad JSON, unknown version, missing
// fields) go to schemas.TopicDeadLetter with the reason; nothing is dropped
// silently.
//
// # Durable state
//
// Every profile changed is written, in the encoding of codec.go, to the
// compacted changelog schemas.TopicProfiles, on the same partition number
// as the events it came from (a manual partitioner for that topic), after
// the outputs of the events that changed it and before their offsets are
// marked. While the segmenter works through a backlog the writes are
// coalesced (pending.go): a profile changed by many batches gets one
// record with its latest state when the segmenter catches up, after
// Config.ChangelogInterval, at Config.ChangelogBytes, before partitions
// are revoked and at the stop. When the group assigns events partitions, the
// segmenter reads those changelog partitions from the start to their
// current end into the cache before any of their records is fetched
// (OnPartitionsAssigned), so a restarted process, or a member taking over a
// partition, continues from the last state written. A profile also records
// the partition and offset of the last event applied to it: the batch
// redelivered after a crash between the changelog write and the offset
// commit is recognised record by record and not applied twice (its keyword
// replies are produced again, with the same ids). Run refuses to start when
// the changelog has fewer partitions than the events topic, and stops when
// a partition's profiles cannot be restored.
//
// # Journeys
//
// A journey (journey.go) is a versioned definition on TopicJourneys,
// saved through the journey API (journey_api.go) after it compiled: steps
// send (WhatsApp template or in-window text, email, push), wait (a
// duration, a local time of day and weekdays, a date tag), wait for an
// event with a timeout (any event, feedback on the journey's last send,
// WhatsApp read, reply or button), split by segment or A/B/n, update tags,
// call the app's webhook (a signed POST through the dispatcher), and exit; journey-level goal, re-entry policy, frequency cap and quiet
// hours. Users enter on an event with a filter, an inbound keyword, a
// segment entry or the API (startJourney). Each user's runs are part of
// their profile, so they are durable, exact and move with the partition
// like every other field; waits are timers (timers.go) whose earliest
// deadline each changelog record carries in a header, rebuilt at restore
// and fired by KindTick events the partition's owner writes while a timer
// is due. Every move is a PW_JourneyEntered, PW_JourneyStep or
// PW_JourneyExited event for analysts, and every send a dispatch request
// with an id derived from the journey, version, user, entry and step, so
// a replay after a crash sends nothing new.
//
// # Known limits
//
//   - fastcache is a cache: when full it overwrites its oldest entries,
//     live or not. An evicted profile is read back from its latest
//     changelog record, whose offset the key index keeps (cold.go): one
//     fetch per event of a cold user, one sequential read per partition for
//     a campaign or sweep. Size Config.CacheBytes for the hot profiles
//     (herald_segmenter_profiles counts the cached ones,
//     herald_segmenter_cold_loads_total the reads back).
//   - Profiles of partitions that moved to another member stay in the cache
//     until evicted or overwritten by the next restore of that partition.
//   - Outputs and the changelog are produced together but not in a Kafka
//     transaction: a crash between them and the offset commit repeats the
//     events' dispatch requests (same ids) and tags records. While behind,
//     that is up to Config.ChangelogInterval of events (5 s by default).
//   - A user known by hwid and by user id has two profiles: identity
//     resolution (merge.go) joins a CDP's anonymous and earlier user ids
//     to the user id (Segment identify, track and alias), not devices; a
//     journey reaches a user on the channels of one profile, so
//     registerDevice of a WhatsApp subscriber takes their email and push
//     token too.
//
// # Metrics
//
//	herald_segmenter_events_total{kind}               events applied, by kind
//	herald_segmenter_duplicate_events_total           events skipped as already applied
//	herald_segmenter_cold_loads_total                 evicted profiles read back from the changelog
//	herald_segmenter_cold_read_errors_total           failed changelog reads of evicted profiles (retried)
//	herald_segmenter_tag_definitions_total            tag registry records written (tag names or value types new to the registry)
//	herald_segmenter_dispatch_requests_total{source}  dispatch requests produced (source: keyword)
//	herald_segmenter_keyword_matches_total{mode}      inbound texts a rule fired for: first_word, exact, pattern, any, builtin
//	herald_segmenter_keyword_actions_total{action}    keyword actions: template, text (replies), set_tags, opt_out, opt_in (profile)
//	herald_segmenter_keyword_skipped_total{reason}    matched keywords without reply: opted_out, empty_param, window_closed, stale, profile_full
//	herald_segmenter_dead_letters_total               records sent to the dead-letter topic
//	herald_segmenter_ignored_tags_total               tag values not stored (objects, nested lists)
//	herald_segmenter_tag_records_total                ProfileTags records produced to TopicTags
//	herald_segmenter_changelog_records_total          profile changelog records produced to TopicProfiles
//	herald_segmenter_changelog_writes_total{reason}   writes of the pending changelog (each then commits its events): caught_up, interval, bytes, revoke, stop
//	herald_segmenter_changelog_coalesced_total        changelog records saved: a profile changed again before its pending record was written
//	herald_segmenter_restored_profiles_total          profiles loaded from the changelog on assignment
//	herald_segmenter_restore_duration_seconds         time to restore newly assigned partitions
//	herald_segmenter_segment_evaluations_total        segment filters evaluated on profile changes
//	herald_segmenter_segment_changes_total{event}     segment entries and exits
//	herald_segmenter_campaign_skipped_total{reason}   campaign matches not sent to: no_whatsapp, unregistered, opted_out, empty_param, frequency_cap, quiet_hours, evicted
//	herald_segmenter_profiles                         profiles in the cache
//	herald_segmenter_batch_duration_seconds           time to process a batch and produce its outputs
//	herald_segmenter_merge_steps_total{step}          identity-resolution steps written: pull, push, done
//	herald_segmenter_merge_conflicts_total            merges refused (the earlier profile went to another user)
//	herald_segmenter_forwarded_events_total           events of a merged profile written again for its user
//	herald_segmenter_hot_switches_total{to}           a worker turning its decoded profiles kept between events off or on (hot.go)
package segmenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/schemas"
)

// Size limits of cache entries: fastcache stores an entry only when key,
// value and 4 bytes of lengths stay below 64 KiB.
const (
	maxKeyBytes     = 1 << 10
	maxProfileBytes = 62 << 10
)

// stage is the Stage of the dead letters the segmenter writes.
const stage = "segmenter"

// Segmenter is the segmenter stage.
//
// Its state is shared (core: the cache, the key index, the registries,
// the clients) and per worker (the batch state below). Process splits a
// batch by profile key among Config.Workers workers, each a Segmenter with
// the same core: a key is always the same worker's (its owner), so each
// profile is only ever in one worker's hot map and its events are applied
// in order. Records that visit a whole partition (campaigns, sweeps, ticks)
// run alone, between the shared runs before and after them, and reach each
// profile through its owner's hot map and change list.
type Segmenter struct {
	*core

	// The batch state of a worker. (The Segmenter New returns only uses
	// buf, for Profile.)
	//
	// batchCtx is the context of the batch Process runs; coldErr, when
	// set, is why the batch cannot complete (an evicted profile could not
	// be read back).
	batchCtx context.Context
	coldErr  error
	// seenDefs are the tag registry records of the current batch,
	// produced at its end.
	seenDefs []*kgo.Record
	// hot are decoded profiles by key, each the same as the cache holds
	// (save puts them here; a failed change is reverted). Cleared on
	// restore, when full (hotMax), and when hotp turns them off (hot.go).
	hot  map[string]*Profile
	hotp hotPolicy
	buf  []byte // cache reads
	enc  []byte // profile encodings: the changelog's
	cenc []byte // and the cache's
	// encs holds the changelog and tags record values of changed
	// profiles (keepEnc), many to a block; a full block is left to the
	// records that share it.
	encs []byte
	// tagsBuf is where sealChange builds a TopicTags record value.
	tagsBuf []byte
	// pos is the position in the batch of the record in hand.
	pos int
	// changed are the profiles whose tags a batch changed, in the order of
	// their first change, with their index by key: each gets one
	// ProfileTags record on TopicTags at the end of the batch.
	changed   []changedProfile
	changedAt map[string]int
	// touched are the indexes in changed of the profiles the part in hand
	// changed, and pendBytes what the sealed ones hold (Run only: the
	// list is kept from part to part until it is written; pending.go).
	touched   []int
	pendBytes int
	// fields is scratch space for appendTagsRecord; entered the segments
	// the current event entered.
	fields  tagScratch
	entered []string
	// segMask is evalSegments' candidate set, reused.
	segMask []uint64
	// seenSegs are the segments applyInPlace evaluates for the event in
	// hand (inPlaceEvent).
	seenSegs seenSegments
	dlLog    throttle

	// workers process the batches (nil in a worker); merged and mergeTmp
	// hold their changes merged, reused from batch to batch.
	workers          []*Segmenter
	merged, mergeTmp []changedProfile
}

// core is the state the workers of a Segmenter share.
type core struct {
	cfg   Config
	log   *slog.Logger
	cl    *kgo.Client // nil for a Segmenter used through Process only
	kcfg  kafka.Config
	rules *rules
	// prices is the rate card of the preview's estimated cost.
	prices *pricing.Table
	m      *metrics
	now    func() time.Time

	// mu serialises Process and Profile: a profile update is a
	// read-modify-write of a cache entry.
	mu     sync.Mutex
	cache  *fastcache.Cache
	segs   *segments
	owned  ownedParts
	tagReg *tagRegistry     // TopicTagDefs
	tmpl   *templateView    // TopicTemplates
	tiers  *tierView        // TopicReach
	supp   *suppressionView // TopicSuppressions
	// journeys are the compiled journeys (TopicJourneys); timers each
	// partition's journey deadlines.
	journeys *journeys
	timers   *timers
	started  time.Time // the journeys' clock starts here
	keys     *keyIndex
	cold     coldReader
	// ws are the workers (Segmenter.workers): a profile's owner keeps its
	// decoded copy and its changes of a batch; top is the Segmenter they
	// work for (which merges their changes).
	ws  []*Segmenter
	top *Segmenter

	// emit, set by handle for the Process call in hand (nil otherwise),
	// takes outputs before the call ends: flushPart hands it those of a
	// partition-wide record every partChunk outputs and changed profiles,
	// so that a campaign or sweep over a million users does not hold a
	// million decoded profiles and their records until it ends.
	emit      func([]*kgo.Record)
	partChunk int

	// coalesce is set by Run: the workers' changed profiles are kept from
	// part to part and written by writePending (pending.go), which
	// pending's marks then commit.
	coalesce bool
	pending  pendingLog
	// writeRecs is writePending's slice of records, reused.
	writeRecs []kgo.Record

	// crashAfterProduce, in tests, ends a batch after its outputs were
	// acknowledged and before its offsets are marked: a crash there.
	crashAfterProduce atomic.Pointer[func() error]
	// holdPending, in tests, keeps handle from ever finding itself caught
	// up: the changelog waits for the interval, the bytes, a revocation
	// or the stop.
	holdPending atomic.Bool
	// fatal is set when a partition's profiles cannot be restored: handle
	// refuses every batch from then on.
	fatal   atomic.Pointer[error]
	closing chan struct{} // closed by Close

	// campCl produces campaign records (manual partitions); built on
	// first use by campaignClient.
	campOnce sync.Once
	campCl   *kgo.Client
	campErr  error

	closeOnce sync.Once
}

// New builds a segmenter and its Kafka client (kcfg.Opts(log) with
// kcfg.ConsumerOpts(cfg.Group, schemas.TopicEvents)). Metrics are
// registered with prom (nil: not registered); one Segmenter per registry.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, prom prometheus.Registerer) (*Segmenter, error) {
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating kafka config: %w", err)
	}
	s, err := newSegmenter(cfg, log, prom)
	if err != nil {
		return nil, err
	}
	s.kcfg = kcfg
	opts := append(kcfg.Opts(log), kcfg.ConsumerOpts(s.cfg.Group, schemas.TopicEvents)...)
	opts = append(opts, kgo.RecordPartitioner(newChangelogPartitioner()), kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			// No batch is in hand (kafka.ConsumerOpts blocks rebalances
			// while one is): what is pending is written, then committed.
			if err := s.flushPending(ctx, writeRevoke); err != nil && !errors.Is(err, errFlushPoisoned) {
				s.log.Warn("writing the pending changelog before partitions move: their new owner replays the events", "err", err)
			}
			kafka.CommitOnRevoke(ctx, cl, revoked)
			s.onLost(ctx, cl, revoked)
		}),
		kgo.OnPartitionsLost(s.onLost))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	s.cl = cl
	return s, nil
}

// newSegmenter builds everything but the Kafka client.
func newSegmenter(cfg Config, log *slog.Logger, prom prometheus.Registerer) (*Segmenter, error) {
	cfg.Keywords = slices.Clone(cfg.Keywords) // Validate fills defaults in place
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating segmenter config: %w", err)
	}
	rs, err := compileRules(cfg.Keywords)
	if err != nil { // cannot happen after Validate
		return nil, fmt.Errorf("compiling keyword rules: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prices, err := pricing.New(cfg.Pricing)
	if err != nil {
		return nil, fmt.Errorf("segmenter: loading the rate card: %w", err)
	}
	log.Info("rate card of the campaign preview's estimated cost", "card", prices.Source(), "currency", prices.Currency(),
		"markets", prices.Markets(), "rules", prices.Rules())
	cache := fastcache.New(cfg.CacheBytes)
	if !cfg.CacheLazy {
		t0 := time.Now()
		prefault(cache)
		log.Info("profile cache written once (prefault)", "bytes", cfg.CacheBytes, "took", time.Since(t0))
	}
	m, err := newMetrics(prom, cache)
	if err != nil {
		cache.Reset()
		return nil, err
	}
	c := &core{
		segs:     newSegments(),
		tagReg:   newTagRegistry(),
		tmpl:     newTemplateView(),
		tiers:    newTierView(),
		supp:     newSuppressionView(),
		journeys: newJourneys(),
		started:  time.Now(),
		timers:   newTimers(),
		keys:     newKeyIndex(),
		closing:  make(chan struct{}),
		cfg:      cfg,
		log:      log,
		rules:    rs,
		prices:   prices,
		m:        m,
		now:      time.Now,
		cache:    cache,
	}
	s := &Segmenter{core: c}
	for range cfg.Workers {
		s.workers = append(s.workers, &Segmenter{
			core: c, changedAt: make(map[string]int), hot: make(map[string]*Profile),
			dlLog: throttle{every: 10 * time.Second},
		})
	}
	c.ws, c.top, c.partChunk = s.workers, s, partChunk
	return s, nil
}

// clearHot forgets every worker's decoded profiles; s.mu is held.
func (s *Segmenter) clearHot() {
	for _, w := range s.workers {
		clear(w.hot)
	}
}

// Run consumes TopicEvents until ctx is done: each polled batch goes through
// Process, its outputs are produced, and only then are its offsets marked
// for commit. It returns nil when ctx is done, or the error that stopped it
// (the batch was not committed and will be consumed again).
func (s *Segmenter) Run(ctx context.Context) error {
	if s.cl == nil {
		return errors.New("segmenter: Run needs the Kafka client New builds")
	}
	if err := s.checkPartitions(ctx); err != nil {
		return err
	}
	// Saved segments first: events processed before them would miss
	// entries and exits.
	feedCtx, stopFeed := context.WithCancel(ctx)
	var feed sync.WaitGroup
	defer func() { stopFeed(); feed.Wait() }()
	ready, tagsReady, journeysReady := make(chan struct{}), make(chan struct{}), make(chan struct{})
	feed.Go(func() { s.runSegmentsFeed(feedCtx, ready) })
	// The tag registry too, so that tags it holds are not written again,
	// and the journeys, which events may enter or move on.
	feed.Go(func() { s.runTagsFeed(feedCtx, tagsReady) })
	feed.Go(func() { s.runJourneysFeed(feedCtx, journeysReady) })
	for _, c := range []chan struct{}{ready, tagsReady, journeysReady} {
		select {
		case <-c:
		case <-ctx.Done():
			return nil
		}
	}
	feed.Go(func() { s.runSweeps(feedCtx) })
	feed.Go(func() { s.runTicks(feedCtx) })
	feed.Go(func() { s.runTemplatesFeed(feedCtx) })
	feed.Go(func() { s.runTierFeed(feedCtx) })
	feed.Go(func() { s.runSuppressionsFeed(feedCtx) })
	s.log.Info("segmenter running", "group", s.cfg.Group, "topic", schemas.TopicEvents, "keywords", len(s.cfg.Keywords))
	// A stop finishes the batch in hand and writes the pending changelog
	// (its outputs and changelog are produced and its offsets committed),
	// so a restart repeats no reply.
	s.coalesce = true
	if err := kafka.RunDrainingN(ctx, kafka.DefaultDrainGrace, s.cl, s.log, func() int { return pollRecords }, s.handle); err != nil {
		s.pending.poison()
		return err
	}
	return s.finish()
}

// finish writes what is pending when Run stops and commits it.
func (s *Segmenter) finish() error {
	ctx, cancel := context.WithTimeout(context.Background(), kafka.DefaultDrainGrace)
	defer cancel()
	if err := s.flushPending(ctx, writeStop); err != nil {
		if errors.Is(err, errFlushPoisoned) {
			return nil // a batch failed and ctx ended: Run returns nil as ever
		}
		return fmt.Errorf("segmenter: writing the pending changelog at shutdown (the events are replayed at the next start): %w", err)
	}
	if err := s.cl.CommitMarkedOffsets(ctx); err != nil {
		s.log.Warn("committing offsets at shutdown", "err", err)
	}
	return nil
}

// handle is Run's batch handler. It processes the batch a part at a time
// and produces each part's outputs while it processes the next; the
// profiles a part changed stay pending in the workers' lists (pending.go)
// and are written, once every output before them is acknowledged, when
// the segmenter has caught up, the oldest change is
// Config.ChangelogInterval old, or they hold Config.ChangelogBytes. The
// events are marked for commit once the records covering them are
// acknowledged, so handle returns kafka.ErrMarkLater when it wrote none.
//
// The changelog is what a restart takes as applied: were it to land
// before the outputs (the changelog and the dispatch partitions have
// different leaders, and the process dies between the two), the replayed
// events would be skipped as applied and their sends lost. Outputs landing
// first is the safe way round: a replay sends them again with the same ids.
func (s *Segmenter) handle(ctx context.Context, recs []*kgo.Record) error {
	if err := s.fatal.Load(); err != nil {
		return *err
	}
	start := time.Now()
	var wg sync.WaitGroup
	var (
		errOnce  sync.Once
		firstErr error
		failed   atomic.Bool
		produced atomic.Int64
		flushErr error
	)
	done := func(_ *kgo.Record, err error) {
		defer wg.Done()
		if err != nil {
			// The changes of these events must never be written.
			s.pending.poison()
			failed.Store(true)
			errOnce.Do(func() { firstErr = err })
			return
		}
		produced.Add(1)
	}
	// flushFull writes the pending records when they hold
	// Config.ChangelogBytes, after every output before them. locked: s.mu
	// is held (a part of a campaign or sweep, inside Process).
	flushFull := func(locked bool) error {
		if s.pendingBytes() < s.cfg.ChangelogBytes {
			return nil
		}
		wg.Wait()
		if failed.Load() {
			return nil // handle returns firstErr
		}
		if locked {
			return s.writePending(ctx, writeBytes)
		}
		return s.flushPending(ctx, writeBytes)
	}
	produce := func(out []*kgo.Record) {
		wg.Add(len(out))
		for _, r := range out {
			s.cl.Produce(ctx, r, done)
		}
	}
	emit := func(out []*kgo.Record) {
		produce(out)
		if err := flushFull(true); err != nil && flushErr == nil {
			flushErr = err
		}
	}
	for part := range slices.Chunk(recs, handlePart) {
		out, err := s.process(ctx, part, emit)
		if err == nil {
			err = flushErr
		}
		if err != nil {
			s.pending.poison()
			wg.Wait()
			return err
		}
		produce(out)
		s.pending.mark(part, time.Now())
		if err := flushFull(false); err != nil {
			return err
		}
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("producing the outputs of %d records (%d acknowledged): %w", len(recs), produced.Load(), firstErr)
	}
	s.m.batchDuration.Observe(time.Since(start).Seconds())
	reason := s.pending.due(time.Now(), !s.holdPending.Load() && caughtUp(ctx, s.cl), s.pendingBytes(), &s.cfg)
	if reason == "" && s.crashAfterProduce.Load() != nil {
		reason = writeCaughtUp
	}
	if reason == "" {
		return kafka.ErrMarkLater
	}
	return s.flushPending(ctx, reason) // which marks the batch
}

// caughtUp reports whether what is left after the batch of handle's ctx
// (on the brokers past its partitions' last records, and buffered in the
// client) fits in one poll: no backlog to coalesce the changelog over. A
// segmenter keeping up with its traffic then writes after every batch, as
// its commits and the group's lag (which KEDA scales on) need; one that
// is behind coalesces.
func caughtUp(ctx context.Context, cl *kgo.Client) bool {
	behind, ok := kafka.Behind(ctx)
	return !ok || behind+cl.BufferedFetchRecords() < pollRecords
}

// pollRecords is the most records Run hands to handle at once: more than
// the client buffers from one fetch (8 partitions of 1 MB hold about 32,000
// events), so a poll takes the whole buffered fetch and the client fetches
// the next one while handle works, instead of after a poll that left part
// of it. handle works through them handlePart at a time, so what a batch
// holds beyond the records is one part's.
const pollRecords = 50_000

// handlePart is how many records handle processes before it produces their
// outputs: the next part is processed while those are in flight.
const handlePart = 2500

// partChunk is how many outputs and changed profiles a partition-wide
// record run by handle holds before flushPart hands them out (a changed
// profile is a few KB decoded: about 10 MB).
const partChunk = 4096

// Close closes the Kafka client, frees the cache and unregisters the
// metrics. Call it after Run returned.
func (s *Segmenter) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.campOnce.Do(func() {}) // no client from here on
		if s.campCl != nil {
			s.campCl.Close()
		}
		s.cold.once.Do(func() {})
		if s.cold.cl != nil {
			s.cold.cl.Close()
		}
		if s.cl != nil {
			s.cl.Close()
		}
		s.m.unregister()
		s.mu.Lock()
		s.cache.Reset()
		s.clearHot()
		s.mu.Unlock()
	})
}

// Process applies recs (TopicEvents records, in order) to the profiles and
// returns the records to produce: dispatch requests for TopicDispatch and
// dead letters for TopicDeadLetter, in the order of the records that caused
// them, then one TopicProfiles changelog record per profile the batch
// changed and one TopicTags record per profile whose tags changed. It
// never fails on a record's content; the error is ctx's, when ctx is done
// before the batch starts. Safe for concurrent use (calls are
// serialised). It is for a Segmenter that does not Run: Run keeps the
// changes pending for its own writes (pending.go), so a Process call
// beside it would return none.
func (s *Segmenter) Process(ctx context.Context, recs []*kgo.Record) ([]*kgo.Record, error) {
	return s.process(ctx, recs, nil)
}

// process is Process, but for a partition-wide record emit, when not nil,
// takes the outputs in parts as they come (flushPart): each part is
// ordered as a whole Process's outputs are (a profile's changelog record
// after the outputs its change caused), and the outputs returned are the
// rest. A profile may then have several changelog records in one call, the
// last one its latest state.
func (s *Segmenter) process(ctx context.Context, recs []*kgo.Record, emit func([]*kgo.Record)) ([]*kgo.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emit = emit
	defer func() { s.emit = nil }()
	now := s.now().UTC()
	evs := s.decodeAll(recs)
	if len(s.workers) == 1 {
		out, err := s.workers[0].processBatch(ctx, recs, evs, now, nil)
		if err != nil {
			return nil, err
		}
		return s.endPart(out), nil
	}
	var out []*kgo.Record
	for start := 0; start < len(recs); {
		// The records up to the next partition-wide one (a campaign,
		// sweep or tick: it visits every profile of its partition) are
		// shared among the workers by profile key; that one runs alone.
		end := start
		for end < len(recs) && !partitionWide(evs[end].e) {
			end++
		}
		var err error
		if out, err = s.processShared(ctx, out, recs[start:end], evs[start:end], now); err != nil {
			return nil, err
		}
		if end == len(recs) {
			break
		}
		if out, err = s.workers[0].processBatch(ctx, recs[end:end+1], evs[end:end+1], now, out); err != nil {
			return nil, err
		}
		start = end + 1
	}
	return s.endPart(out), nil
}

// endPart ends a Process call, or a part of one (flushPart): under Run
// (coalesce) it seals the changed profiles, kept for writePending, and
// appends the tag registry records to out; else it appends the changes
// (appendAllChanges).
func (s *Segmenter) endPart(out []*kgo.Record) []*kgo.Record {
	if !s.coalesce {
		return s.appendAllChanges(out)
	}
	s.sealAll()
	for _, w := range s.workers {
		out = append(out, w.seenDefs...)
		clear(w.seenDefs)
		w.seenDefs = w.seenDefs[:0]
	}
	return out
}

// appendAllChanges appends the changes the workers hold (appendChanges)
// to out, and forgets them.
func (s *Segmenter) appendAllChanges(out []*kgo.Record) []*kgo.Record {
	if len(s.workers) == 1 {
		w := s.workers[0]
		w.sealChanges()
		return w.appendChanges(out, w.changed)
	}
	// The changelog, tags and tag registry records after every other
	// output, in that order, as one worker orders them. A profile's
	// changes are all in its owner's list, so each key has one changelog
	// record, its latest.
	var wg sync.WaitGroup
	for _, w := range s.workers {
		wg.Go(w.sealChanges) // the tags records, on every worker at once
	}
	wg.Wait()
	// The merges write into two slices Process keeps (merged, mergeTmp),
	// and the workers keep theirs, so a batch allocates none of them.
	all := s.merged[:0]
	for _, w := range s.workers {
		s.mergeTmp = mergeChanged(s.mergeTmp[:0], all, w.changed)
		all, s.mergeTmp = s.mergeTmp, all
		clear(w.changed)
		w.changed = w.changed[:0]
		clear(w.changedAt)
	}
	clear(s.mergeTmp) // what it held is in all now
	w := s.workers[0]
	for _, o := range s.workers[1:] {
		w.seenDefs = append(w.seenDefs, o.seenDefs...)
		clear(o.seenDefs)
		o.seenDefs = o.seenDefs[:0]
	}
	out = w.appendChanges(out, all)
	s.merged = all[:0]
	return out
}

// flushPart is called by a partition-wide record (s is the worker running
// it) before each profile it visits: when emit is set and out and the
// changed profiles the workers hold reach partChunk, it hands them to emit
// (the changelog records after the outputs, as at the end of a batch) and
// returns an empty out to go on with. The order is what durability needs:
// a profile's dispatch requests are produced before the changelog record
// that marks the campaign counted in it, and a replay after a crash sends
// again with the same ids, as for a whole batch.
func (s *Segmenter) flushPart(out []*kgo.Record) []*kgo.Record {
	if s.emit == nil {
		return out
	}
	n := len(out)
	for _, w := range s.ws {
		if s.coalesce {
			n += len(w.touched)
		} else {
			n += len(w.changed)
		}
	}
	if n < s.partChunk {
		return out
	}
	s.emit(s.top.endPart(out))
	return nil
}

// sealChanges seals each of s's changed profiles (sealChange), for
// appendChanges.
func (s *Segmenter) sealChanges() {
	for i := range s.changed {
		s.sealChange(&s.changed[i])
	}
}

// sealChange builds, from c's decoded profile, its changelog record's
// timer header and, when its tags changed, its TopicTags record value
// (in s.tagsBuf, then in c.tagsVal's own bytes when they fit, else kept
// with keepEnc), then lets the profile and the event go: c then holds
// what its records need. A change made in place has no decoded profile:
// c keeps the header of its last decoded change.
func (s *Segmenter) sealChange(c *changedProfile) {
	if c.p != nil {
		c.hdr = appendTimerHeader(c.hdr[:0], c.p)
		if c.tags {
			s.tagsBuf = appendTagsRecord(s.tagsBuf[:0], &s.fields, c.p, c.e)
			if cap(c.tagsVal) >= len(s.tagsBuf) {
				c.tagsVal = append(c.tagsVal[:0], s.tagsBuf...) // not in flight
			} else {
				c.tagsVal = s.keepEnc(s.tagsBuf)
			}
			c.tags = false
		}
	}
	c.p, c.e = nil, nil
}

// mergeChanged appends to out a and b merged, both in the order of their
// first change (pos), in that order (a first where they tie); out shares
// no memory with a or b.
func mergeChanged(out, a, b []changedProfile) []changedProfile {
	out = slices.Grow(out, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].pos <= b[0].pos {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// decoded is a record's event, or why it has none.
type decoded struct {
	e   *schemas.Event
	key []byte // e.Key()
	err error
	pos int // in the batch: orders the changes
}

// partitionWide reports whether e is a record that visits every profile of
// its partition rather than one: those run with no other record in
// parallel.
func partitionWide(e *schemas.Event) bool {
	return e != nil && (e.Kind == schemas.KindCampaign || e.Kind == schemas.KindSweep || e.Kind == schemas.KindTick)
}

// decodeAll decodes recs' events, on every worker at once when there are
// enough of them: decoding needs no state.
func (s *Segmenter) decodeAll(recs []*kgo.Record) []decoded {
	evs := make([]decoded, len(recs))
	decode := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			evs[i].e, evs[i].err = schemas.DecodeEventAttrs(recs[i].Value)
			if evs[i].err == nil {
				evs[i].key = evs[i].e.Key()
			}
			evs[i].pos = i
		}
	}
	n := len(s.workers)
	if n == 1 || len(recs) < 64 {
		decode(0, len(recs))
		return evs
	}
	var wg sync.WaitGroup
	for i := range n {
		lo, hi := i*len(recs)/n, (i+1)*len(recs)/n
		wg.Go(func() { decode(lo, hi) })
	}
	wg.Wait()
	return evs
}

// processShared processes recs, none of them partition-wide, on all the
// workers at once: each profile key always goes to the same worker, which
// applies its events in order. The outputs are appended to out worker by
// worker.
func (s *Segmenter) processShared(ctx context.Context, out []*kgo.Record, recs []*kgo.Record, evs []decoded, now time.Time) ([]*kgo.Record, error) {
	if len(recs) == 0 {
		return out, nil
	}
	n := len(s.workers)
	parts := make([][]*kgo.Record, n)
	pevs := make([][]decoded, n)
	// Keys hash evenly over the workers: each share is about len/n (a
	// few standard deviations more fits), so no share grows.
	share := len(recs)/n + len(recs)/(8*n) + 16
	for w := range n {
		parts[w] = make([]*kgo.Record, 0, share)
		pevs[w] = make([]decoded, 0, share)
	}
	for i, r := range recs {
		w := s.ownerIndex(r, evs[i])
		parts[w] = append(parts[w], r)
		pevs[w] = append(pevs[w], evs[i])
	}
	outs := make([][]*kgo.Record, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, w := range s.workers {
		if len(parts[i]) > 0 {
			wg.Go(func() { outs[i], errs[i] = w.processBatch(ctx, parts[i], pevs[i], now, nil) })
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, o := range outs {
		out = append(out, o...)
	}
	return out, nil
}

// ownerIndex is the worker of rec: its profile key's owner, or, for a
// record with no profile (undecodable), any worker (its partition's).
func (s *Segmenter) ownerIndex(rec *kgo.Record, d decoded) int {
	if d.e == nil {
		return int(rec.Partition) % len(s.ws)
	}
	return s.ownerOf(d.key)
}

// ownerOf is the index of the worker that owns the profile of key: the
// only one that keeps it decoded (hot) and lists its changes.
func (c *core) ownerOf(key []byte) int {
	if len(c.ws) == 1 {
		return 0
	}
	return int(xxhash.Sum64(key) % uint64(len(c.ws)))
}

// owner is the worker that owns key's profile.
func (c *core) owner(key []byte) *Segmenter { return c.ws[c.ownerOf(key)] }

// processBatch is a worker's share of Process: its records in order, their
// outputs appended to out. Its changes wait in s.changed for appendChanges.
func (s *Segmenter) processBatch(ctx context.Context, recs []*kgo.Record, evs []decoded, now time.Time, out []*kgo.Record) ([]*kgo.Record, error) {
	s.batchCtx, s.coldErr = ctx, nil
	defer func() { s.batchCtx = nil }()
	for i, rec := range recs {
		s.pos = evs[i].pos
		out = s.processRecord(out, rec, evs[i], now)
		if s.coldErr != nil {
			// The batch cannot be applied without that profile; the
			// stage stops rather than write it empty (a restart restores
			// every profile from the changelog).
			return nil, s.coldErr
		}
	}
	return out, nil
}

// changedProfile is a profile the current batch changed.
type changedProfile struct {
	key       []byte
	partition int32          // of TopicEvents: the changelog partition
	e         *schemas.Event // the latest event that changed it: its identity
	p         *Profile       // nil when the latest change was made in place (saveInPlace)
	enc       []byte         // p's encoding as last saved: the changelog value
	tags      bool           // its tags changed: it gets a TopicTags record
	pos       int            // of the batch record that first changed it
	tagsVal   []byte         // its TopicTags record value, once sealChange built it
	// hdr is the timer header of the latest change made on the decoded
	// profile (a change in place leaves the journeys as they are).
	hdr []kgo.RecordHeader
	// Under Run (pending.go): touched is set while the profile is in
	// touched; size is what it held when last sealed.
	touched bool
	size    int
}

// noteChanged records that e changed p (its tags when tags is set). It is
// called right after p was saved: s.enc is its encoding.
func (s *Segmenter) noteChanged(key []byte, partition int32, e *schemas.Event, p *Profile, tags bool) {
	o := s.owner(key) // s itself, but for a partition-wide record
	i, ok := o.changedAt[string(key)]
	s.noteChangedAt(o, i, ok, key, partition, e, p, tags)
}

// noteChangedAt is noteChanged with key's owner o and its index in
// o.changed (ok: there is one) looked up already.
func (s *Segmenter) noteChangedAt(o *Segmenter, i int, ok bool, key []byte, partition int32, e *schemas.Event, p *Profile, tags bool) {
	if ok {
		c := &o.changed[i]
		if p == nil && c.p != nil {
			c.hdr = appendTimerHeader(c.hdr[:0], c.p) // the journeys' deadline stays
		}
		c.partition, c.e, c.p, c.tags = partition, e, p, c.tags || tags
		c.enc = append(c.enc[:0], s.enc...) // not in flight: written and forgotten at once
		if s.coalesce && !c.touched {
			c.touched = true
			o.touched = append(o.touched, i)
		}
		return
	}
	o.changedAt[string(key)] = len(o.changed)
	if s.coalesce {
		// Kept past the batch: its own copy of the key, not the event's.
		key = s.keepEnc(key)
		o.touched = append(o.touched, len(o.changed))
	}
	o.changed = append(o.changed, changedProfile{key: key, partition: partition, e: e, p: p, tags: tags, enc: s.keepEnc(s.enc), pos: s.pos, touched: s.coalesce})
}

// encBlock is the size of the blocks keepEnc copies record values into.
const encBlock = 64 << 10

// keepEnc returns a copy of b that stays as it is until the record that
// takes it is produced: b's bytes appended to the current block of s.encs,
// or to a new one when it is full (blocks are never written again, so a
// record in flight keeps its value). One allocation per block, not per
// record.
func (s *Segmenter) keepEnc(b []byte) []byte {
	if cap(s.encs)-len(s.encs) < len(b) {
		if len(b) > encBlock/4 {
			return slices.Clone(b)
		}
		s.encs = make([]byte, 0, encBlock)
	}
	n := len(s.encs)
	s.encs = append(s.encs, b...)
	return s.encs[n:len(s.encs):len(s.encs)]
}

// appendChanges appends, per profile the batch changed (changed: s's own
// list, or the workers' lists merged), its changelog record (TopicProfiles,
// to the partition of its events) and, when its tags changed, its TopicTags
// record, then the batch's tag registry records; then forgets them
// (changed is cleared, s.changed emptied).
func (s *Segmenter) appendChanges(out []*kgo.Record, changed []changedProfile) []*kgo.Record {
	// changed is sealed (sealChanges). One growth of out for all of
	// them, and the changelog records in one allocation.
	ntags := 0
	for i := range changed {
		if changed[i].tagsVal != nil {
			ntags++
		}
	}
	out = slices.Grow(out, len(changed)+ntags+len(s.seenDefs))
	recs := make([]kgo.Record, len(changed)+ntags)
	for i, c := range changed {
		r := &recs[i]
		*r = kgo.Record{Topic: schemas.TopicProfiles, Partition: c.partition, Key: c.key, Value: c.enc, Headers: c.hdr}
		out = append(out, r)
	}
	s.m.changelogRecords.Add(float64(len(changed)))
	n := 0
	for _, c := range changed {
		if c.tagsVal == nil {
			continue
		}
		r := &recs[len(changed)+n]
		*r = kgo.Record{Topic: schemas.TopicTags, Key: c.key, Value: c.tagsVal}
		out = append(out, r)
		n++
	}
	s.m.tagRecords.Add(float64(n))
	out = append(out, s.seenDefs...)
	clear(s.seenDefs)
	s.seenDefs = s.seenDefs[:0]
	clear(changed)
	clear(s.changed)
	s.changed = s.changed[:0]
	clear(s.changedAt)
	return out
}

func (s *Segmenter) processRecord(out []*kgo.Record, rec *kgo.Record, dec decoded, now time.Time) []*kgo.Record {
	e := dec.e
	if dec.err != nil {
		return s.deadLetter(out, rec, fmt.Sprintf("decoding event: %v", dec.err))
	}
	if e.Kind == schemas.KindCampaign {
		return s.runCampaign(out, rec, e, now)
	}
	if e.Kind == schemas.KindSweep {
		return s.runSweep(out, rec, e, now)
	}
	if e.Kind == schemas.KindTick {
		return s.runTick(out, rec, e)
	}
	if e.Kind == schemas.KindTemplate {
		// A template change concerns no user; the dispatcher's template
		// sync reads it.
		s.m.events[e.Kind].Inc()
		return out
	}
	key := dec.key
	if len(key) > maxKeyBytes {
		return s.deadLetter(out, rec, fmt.Sprintf("profile key of %d bytes is over the %d-byte limit (hwid or user_id too long)", len(key), maxKeyBytes))
	}
	p, known, applied := s.lookupEvent(key, rec, e, now)
	if applied {
		return out // in place: nothing else for the event to do (inPlaceEvent)
	}
	if !known {
		var err error
		if p, known, err = s.loadCold(s.batchCtx, rec.Partition, key); err != nil {
			s.coldErr = fmt.Errorf("reading the evicted profile of an event at partition %d offset %d: %w", rec.Partition, rec.Offset, err)
			return out
		}
	}
	if e.Kind == schemas.KindMerge {
		return s.runMerge(out, rec, key, e, p, known, now)
	}
	if known && p.mergedInto != "" {
		return s.forward(out, rec, key, e, p)
	}
	if !known {
		p = new(Profile)
	}
	dup := p.applied(rec.Partition, rec.Offset)
	if !dup {
		mark := len(out)
		var u update
		out, u = s.update(out, key, rec, e, p, now)
		if u.dup {
			dup = true
		} else {
			if err := s.save(key, p); err != nil {
				s.revert(key, p)
				return s.deadLetter(out[:mark], rec, err.Error())
			}
			if !known { // known keys are in the index already (saved or restored)
				s.keys.add(rec.Partition, key)
			}
			s.m.events[e.Kind].Inc()
			if len(e.Tags) > 0 {
				s.seenDefs = s.appendSeen(s.seenDefs, e, p, now)
			}
			s.noteChanged(key, rec.Partition, e, p, u.tags)
			if d := p.nextDeadline(); !d.IsZero() && !d.Equal(u.deadline) {
				s.timers.add(rec.Partition, key, d)
			}
		}
	}
	if dup {
		s.m.duplicates.Inc()
		out = s.reaskMerges(out, key, e, p)
	}
	return s.trigger(out, key, rec, e, p, dup, now)
}

// update is what applying an event did to a profile.
type update struct {
	// dup: the event was applied before (its id is a recent one); the
	// profile is unchanged.
	dup bool
	// tags: the profile's tags (or registration) changed, so its TopicTags
	// record is due.
	tags bool
	// deadline is the profile's next time-based deadline before the event.
	deadline time.Time
}

// update applies e, the record rec's event, to p in memory: the profile
// change, the incremental evaluation of the segments the change can
// affect (segment entered and exited events appended to out), and the
// journeys the event moves. Making it durable (the cache, the changelog)
// is the caller's part.
func (s *Segmenter) update(out []*kgo.Record, key []byte, rec *kgo.Record, e *schemas.Event, p *Profile, now time.Time) ([]*kgo.Record, update) {
	a := p.apply(e)
	if a.dup {
		return out, update{dup: true}
	}
	if a.ignoredTags > 0 {
		s.m.ignoredTags.Add(float64(a.ignoredTags))
	}
	p.src = srcPos{partition: rec.Partition, next: rec.Offset + 1}
	u := update{deadline: p.nextDeadline()}
	out = s.evalSegments(out, e, p, changeOf(e, a.defaults, a.seen), now)
	var jtags bool
	out, _, jtags = s.runJourneys(out, key, e, p, s.entered, now)
	if e.UserID != "" && (e.AnonymousID != "" || e.Kind == schemas.KindAlias) {
		out = s.askMerges(out, key, e, p)
	}
	u.tags = e.Kind == schemas.KindRegister || e.Kind == schemas.KindTags || a.defaults || jtags
	return out, u
}

// trigger runs the keyword rules on an inbound message: the matching
// rule's profile actions (once: not again when dup, the event applied
// before) and its reply, a dispatch request appended to out.
func (s *Segmenter) trigger(out []*kgo.Record, key []byte, rec *kgo.Record, e *schemas.Event, p *Profile, dup bool, now time.Time) []*kgo.Record {
	if e.Kind != schemas.KindInbound || e.Inbound.Text == "" {
		return out
	}
	r := s.rules.match(e.App, e.Inbound.PhoneNumberID, e.Inbound.Text)
	if r == nil {
		return out
	}
	s.m.keywordMatches[r.label].Inc()
	// The profile actions (opt-out, tags) are part of applying the event:
	// once, not again for a redelivered one (p has them already), and
	// saved with it, whether or not a reply follows.
	if !dup {
		var skip string
		if out, skip = s.applyRule(out, key, rec.Partition, e, p, r, now); skip != "" {
			s.m.skip(skip)
			return out
		}
	}
	if !r.replies() {
		return out
	}
	var d schemas.DispatchRequest // on the stack: Marshal copies what it needs
	if skip := s.keywordReply(&d, e, p, r, now); skip != "" {
		s.m.skip(skip)
		s.log.Debug("keyword matched without reply", "app", e.App, "keyword", r.name, "event_id", e.ID, "reason", skip)
		return out
	}
	if err := d.Validate(); err != nil {
		return s.deadLetter(out, rec, fmt.Sprintf("building reply to keyword %s: %v", r.name, err))
	}
	b, err := d.Marshal()
	if err != nil {
		return s.deadLetter(out, rec, fmt.Sprintf("encoding reply to keyword %s: %v", r.name, err))
	}
	s.m.keywordDispatch.Inc()
	if d.Template != nil {
		s.m.keywordActions[actionTemplate].Inc()
	} else {
		s.m.keywordActions[actionText].Inc()
	}
	return append(out, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b})
}

// hotMax bounds Segmenter.hot (decoded profiles take a few KB each: about
// 25 MB); past it the map starts afresh.
const hotMax = 1 << 13

// lookup returns the profile of key: the decoded copy kept since its last
// save in this process (hot), else the one stored in the cache; ok is false
// when there is none (never stored, or evicted). A stored profile that does
// not decode (a bug: only this package writes them) is logged and replaced
// by a new one.
func (s *Segmenter) lookup(key []byte) (*Profile, bool) {
	if p, ok := s.owner(key).hotProfile(key); ok {
		return p, true
	}
	return s.loadStored(key)
}

// hotProfile is the decoded profile of key that s, its owner, keeps, when
// it keeps decoded profiles (hotp) and that one.
func (s *Segmenter) hotProfile(key []byte) (*Profile, bool) {
	if s.hotp.off {
		return nil, false
	}
	p, ok := s.hot[string(key)]
	return p, ok
}

// lookupEvent is lookup for the profile of e, the event of rec, which the
// owner's hotPolicy counts: at the end of a window it may turn the hot map
// off (forgetting it) or on again. When e is an event inPlaceEvent takes,
// of a profile only the cache holds, it is applied to the encoding there
// (saveInPlace) when it can be: applied is then set, and the event done.
func (s *Segmenter) lookupEvent(key []byte, rec *kgo.Record, e *schemas.Event, now time.Time) (p *Profile, known, applied bool) {
	o := s.owner(key)
	if switched, on := o.hotp.observe(key); switched {
		if on {
			s.m.hotSwitches.WithLabelValues("on").Inc()
		} else {
			clear(o.hot)
			s.m.hotSwitches.WithLabelValues("off").Inc()
		}
	}
	if p, ok := o.hotProfile(key); ok {
		return p, true, false
	}
	s.buf = s.cache.Get(s.buf[:0], key)
	if len(s.buf) == 0 {
		return nil, false, false
	}
	if !s.cfg.DecodeAlways && s.inPlaceEvent(e, now) && s.saveInPlace(o, key, rec, e) {
		return nil, true, true
	}
	p, known = s.decodeStored()
	return p, known, false
}

// saveInPlace applies e, the event of rec, to the profile of key as the
// cache holds it (s.buf) with applyInPlace and the segments inPlaceEvent
// left in s.seenSegs, and makes the result what save and noteChanged make
// a decoded profile's, or reports false (nothing changed) when
// applyInPlace cannot, or when the profile's tags record is due in this
// batch (it is built from the decoded profile).
func (s *Segmenter) saveInPlace(o *Segmenter, key []byte, rec *kgo.Record, e *schemas.Event) bool {
	at, changed := o.changedAt[string(key)]
	if changed && o.changed[at].tags {
		return false
	}
	var ignored int
	var ok bool
	s.enc, s.cenc, ignored, ok = applyInPlace(s.enc[:0], s.cenc[:0], s.buf, e, rec.Partition, rec.Offset, &s.seenSegs)
	if !ok || s.store(o, key) != nil {
		return false
	}
	if ignored > 0 {
		s.m.ignoredTags.Add(float64(ignored))
	}
	s.m.events[e.Kind].Inc()
	s.m.inPlace.Inc()
	s.m.segmentEvals.Add(float64(len(s.seenSegs.list)))
	s.noteChangedAt(o, at, changed, key, rec.Partition, e, nil, false)
	return true
}

// loadStored decodes the profile the cache holds for key.
func (s *Segmenter) loadStored(key []byte) (*Profile, bool) {
	s.buf = s.cache.Get(s.buf[:0], key)
	if len(s.buf) == 0 {
		return nil, false
	}
	return s.decodeStored()
}

// decodeStored decodes s.buf, a profile the cache held.
func (s *Segmenter) decodeStored() (*Profile, bool) {
	p, err := decodeProfile(s.buf)
	if err != nil {
		s.log.Error("decoding cached profile, starting it afresh", "err", err)
		return new(Profile), true
	}
	return p, true
}

// save stores p under key, or returns why it cannot (then p is as the
// caller left it: revert it). The decoded p stays in hot, so the next event
// of the user skips the decode.
func (s *Segmenter) save(key []byte, p *Profile) error {
	s.enc, s.cenc = appendProfiles(s.enc[:0], s.cenc[:0], p, true)
	o := s.owner(key)
	if err := s.store(o, key); err != nil {
		return err
	}
	if o.hotp.off {
		return nil
	}
	hot := o.hot
	q, ok := hot[string(key)]
	if q == p {
		return nil // there already: no second map access, no key copy
	}
	if !ok && len(hot) >= hotMax {
		clear(hot)
	}
	hot[string(key)] = p
	return nil
}

// store puts s.cenc in the cache as key's profile, its changelog form in
// s.enc within the size limit, and notes the save in o's (key's owner's)
// hotPolicy; or returns why it cannot.
func (s *Segmenter) store(o *Segmenter, key []byte) error {
	if len(s.enc) > maxProfileBytes {
		return fmt.Errorf("profile would be %d bytes, over the %d-byte limit (too many or too large tags)", len(s.enc), maxProfileBytes)
	}
	s.cache.Set(key, s.cenc)
	o.hotp.saved(key)
	return nil
}

// revert puts p, a profile of key changed but not saved, back to what the
// cache holds: p may be shared (hot, the batch's changed profiles).
func (s *Segmenter) revert(key []byte, p *Profile) {
	stored, ok := s.loadStored(key)
	if !ok {
		stored = new(Profile)
	}
	*p = *stored
}

func (s *Segmenter) deadLetter(out []*kgo.Record, rec *kgo.Record, reason string) []*kgo.Record {
	s.m.deadLetters.Inc()
	if n, ok := s.dlLog.allow(time.Now()); ok {
		s.log.Warn("dead-lettering record", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "reason", reason, "suppressed", n)
	} else {
		s.log.Debug("dead-lettering record", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "reason", reason)
	}
	return append(out, kafka.DeadLetter(stage, rec, reason))
}

// Profile returns a copy of the profile of hwid in app, if the cache holds
// one (ProfileOf for the users known by user or anonymous id).
func (s *Segmenter) Profile(app, hwid string) (*Profile, bool) {
	return s.ProfileOf(app, hwid, "", "")
}

// ProfileOf returns a copy of the profile of the user an event with these
// ids belongs to (schemas.ProfileKey: hwid first, then user id, then
// anonymous id), if the cache holds one. A profile merged into another
// user's (identity resolution) is returned as the empty forwarder it is.
func (s *Segmenter) ProfileOf(app, hwid, userID, anonymousID string) (*Profile, bool) {
	key := schemas.ProfileKey(app, hwid, userID, anonymousID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = s.cache.Get(s.buf[:0], key)
	if len(s.buf) == 0 {
		return nil, false
	}
	p, err := decodeProfile(s.buf)
	if err != nil {
		return nil, false
	}
	return p, true
}

// throttle lets one log line through per interval and counts the others.
type throttle struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log at now, and how many were suppressed since
// the last line that was.
func (t *throttle) allow(now time.Time) (int, bool) {
	if now.Sub(t.last) < t.every {
		t.suppressed++
		return 0, false
	}
	n := t.suppressed
	t.last, t.suppressed = now, 0
	return n, true
}
