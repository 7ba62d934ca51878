// Package dispatcher is Herald's send stage: it consumes dispatch requests
// from schemas.TopicDispatch, sends each through its channel's provider
// (WhatsApp Cloud API, provider_whatsapp.go; email over SMTP,
// provider_email.go and smtp.go; push over FCM HTTP v1, provider_push.go;
// journeys' webhook calls, signed, provider_webhook.go)
// and produces one schemas.Outcome per request to schemas.TopicOutcomes.
// Records that do not decode go to schemas.TopicDeadLetter with the reason.
//
// Email and push (channels.go): the app's settings (internal/apps) give
// the SMTP server and From addresses, or the FCM project; the request's
// sender is the From address or the project (empty: the app's default),
// and each channel has its own rate limit per sender (EmailConfig,
// PushConfig) and the breakers of (channel, sender). SMTP 4xx replies and
// connection failures before the end of DATA are retried, 5xx fail with
// the reply code; FCM QUOTA_EXCEEDED, UNAVAILABLE and INTERNAL are retried
// no sooner than their Retry-After, UNREGISTERED fails with
// Outcome.InvalidRecipient set. A send that may have reached the provider
// without an answer is in doubt, as for WhatsApp.
//
// Each send passes, in order: the app check (the sender must be one of the
// request's app's phone-number ids), the circuit breaker of its (provider,
// sender) (an open breaker holds the request until it half-opens, within the
// request's deadline: its recipient's queue is parked without a worker
// until the breaker's open timeout ends, or deferred to the scheduler like
// a pair-rate wait when that is more than MaxHold away; then it waits on
// the breaker's state change, without polling, and goes as the half-open
// probe or after it succeeded; it is expired only past its own deadline), the
// sender's rate limit (Limiter: a batch's queue takes its sender's turn
// before it takes one of the Concurrency workers, waiting in the limiter's
// queue without one, so that a sender waiting for its rate holds no
// capacity another sender could use; queue.go), the intent, and the
// provider call. Ready
// (/readyz) reports not ready while the breaker of every sender this
// replica has sent for is open. Retryable errors (see IsRetryable) are retried with exponential
// backoff and jitter up to Config.MaxAttempts and the request's Deadline
// (past it: OutcomeExpired). A call that may have reached Meta without an
// answer is never retried (Meta has no idempotency key): it ends as
// OutcomeInDoubt, and the status webhooks, which echo the dispatch id in
// biz_opaque_callback_data, reconcile it.
//
// Rate limits: by default (LimiterConfig.Mode global) each sender's rate
// (Config.RatePerSender, or the app's whatsapp.throughput for the number;
// at most 1,000 a second) holds for all dispatcher replicas together: the
// replicas publish their demand per sender to schemas.TopicSenders every
// heartbeat and each takes a max-min fair share, raising its share only
// after the others have lowered theirs, so that joining and leaving
// replicas do not overshoot (limiter_global.go, docs/LIMITS.md). Meta's
// rate-limit answers (4, 80007, 130429) lower the sender's rate for every
// replica; quiet periods raise it back by steps.
//
// Pair rate: requests to one recipient are planned Config.PairInterval
// apart (Meta allows about one message per 6 s to one recipient, 131056
// past it). A recipient waiting for its turn or for a retry's backoff holds
// no worker: its queue is parked on a timer and the other recipients go on.
// A wait longer than Config.MaxHold defers the recipient's remaining
// requests of the batch to schemas.TopicScheduled with their planned
// send_at (header schemas.HeaderAttempts carries the calls made), so that
// no recipient holds the batch, and with it its partition, for long.
//
// Window, opt-out and messaging tier (reach.go, docs/LIMITS.md): WhatsApp
// requests are checked after the templates, before any wait or call.
// Free-form text whose WindowUntil passed, or to a recipient Meta answered
// 131047 for since the window the request knows of ended (kept in memory
// for 24 h), fails with CodeWindowClosed. A 131050 answer is written to
// schemas.TopicSuppressions (compacted, read whole by every replica before
// Run consumes a request) and later MARKETING templates to the recipient
// (the request's category, else the synced template's) fail with
// CodeOptedOut. Meta reports 131050 and 131047 mostly after accepting the
// send, in a failed status webhook: those are learned alike from the
// status marks ingest writes (statuses.go). The segmenter writes the
// user's STOP (a suppression) and START (one Lifted) to the same topic; per
// recipient the record of the latest time decides, so START lifts an
// opt-out learned from Meta and a failed status Meta retried for days
// does not bring it back. For an app with a whatsapp.messaging_tier, a template not
// known to be inside the recipient's window is claimed on partition 0 of
// schemas.TopicReach before the breaker and the rate limit; it is sent only
// once this replica read its claim back granted (internal/reach decides the
// claims of every replica in partition order, alike everywhere: granted for
// a recipient reached in the last 24 h, or while fewer than the tier were),
// else it fails with CodeTierExceeded. Failed, not deferred: room comes
// back only as the 24 h move on, past most requests' deadlines, and the
// campaign API refuses campaigns over the headroom beforehand. These
// refusals are counted in herald_dispatcher_refusals_total{reason}.
//
// Scheduled sends: a request whose SendAt is more than a second ahead of the
// dispatcher's clock is not sent: it is forwarded, unchanged, to
// schemas.TopicScheduled (produced and acknowledged before its offset is
// committed, like an outcome), so that "not before SendAt" holds for every
// producer of TopicDispatch. The Scheduler (scheduler.go), run next to the
// dispatcher in its own consumer group, holds the requests of
// TopicScheduled and releases each to TopicDispatch at its SendAt, writing a
// release marker after it so that a restart does not release it again; see
// Scheduler for the offsets it commits and the one case of a double release.
//
// Templates: a template request is checked against the app's templates
// before any wait or call, so that Meta's 132000 and 132001 never happen:
// a template unknown in that language ends as OutcomeFailed with
// CodeTemplateUnknown, one whose status is not APPROVED with
// CodeTemplateNotApproved (the message says the status), parameters that do
// not fit with CodeTemplateParams (the message names each request field
// that is wrong: the header's count, or a media or LOCATION header, which a
// request cannot fill; the body's count; a missing, empty or needless
// button_url; empty or over-long parameters; named-parameter templates).
// Meta does not type body variables (text, currency and date_time all fit)
// and requests carry text, so body parameters are checked by count. These
// refusals are permanent: no retry, no provider call.
//
// The templates come from schemas.TopicTemplates (compacted), which every
// replica reads whole into memory (templates.go); Run consumes no request
// before the store holds what the topic held at start (Ready, for
// /readyz). The sync (templates_sync.go) lists every app with a
// whatsapp.waba_id (GET /{version}/{waba-id}/message_templates, every page)
// once the store caught up, every Config.Templates.SyncInterval, and
// ResyncDelay after a template webhook, and writes a schemas.TemplateDef for
// each new or changed template and a tombstone for each no longer listed.
// Any replica may sync: each compares Meta's listing with the store, so
// several syncing write the same records at most twice and, once they read
// each other's, nothing. A failed listing (Meta down, a bad token) is
// logged and counted and writes nothing: the store keeps the last known
// templates. Ingest writes each template webhook to the topic too, as a
// schemas.TemplateSignal: its status (PAUSED, DISABLED, REJECTED, APPROVED
// again...) applies at once and outranks listings started less than a
// minute after it (Meta's listing may lag its webhooks).
//
// An app whose templates the store does not hold is not checked (its sends
// go to Meta, which decides, as before templates were synced): an app
// without a whatsapp.waba_id, or whose templates no sync has listed yet
// (at the very first start, or with Meta down then). Its first such send is
// logged.
//
// Requests of one batch run concurrently (Config.Concurrency), but requests
// to one recipient (one record key) run one after the other, in record order
// (a deferred request keeps its place: later requests to its recipient are
// deferred behind it, on this replica; after a rebalance a new request may
// overtake deferred ones, see docs/LIMITS.md).
//
// Delivery: the offsets of a batch are committed only after all its outcomes
// and dead letters were acknowledged by Kafka (each is produced as soon as
// it is decided). A batch starts sends for at most Config.MaxBatchTime (a
// backlog paced at a sender's share of its rate would otherwise hold a
// batch, and with it every rebalance, for minutes): then its decided
// prefix of each partition is committed and its undecided requests are
// carried over to the next batch, ahead of the records it polls, without
// fetching or decoding them again (a rebalance in between drops those of
// the partitions revoked). On shutdown (Run's
// ctx done) no new call starts, calls in flight finish (bounded by
// RequestTimeout), their outcomes are produced, and per partition the
// records up to the first undecided one are committed; the rest are
// delivered again later.
//
// No silent duplicates (delivery.go, docs/DELIVERY.md): Meta has no
// idempotency key, so before each call the dispatcher writes an intent
// (schemas.DeliveryMark, kind intent) to schemas.TopicIntents and waits for
// its ack, and after a call answered with an error it will retry, an
// answered mark. The call carries the dispatch id as
// biz_opaque_callback_data, and ingest writes each status webhook that
// echoes one to the same topic (kind status). Requests, outcomes and marks
// are all keyed by (app, recipient), so partition p of the three topics is
// about the same requests. When a replica first sees a dispatch partition
// after its assignment, it reads that partition of the outcomes and
// intents topics back for DeliveryConfig.Window (kadm
// ListOffsetsAfterMilli; at most DeliveryConfig.MaxIDs records of each) into
// a ledger of dispatch ids, kept up to date with its own outcomes and
// dropped on revocation. A request whose id has an outcome is a duplicate:
// skipped and committed, not sent. One with an intent not matched by an
// outcome or an answered mark was possibly sent by a replica that stopped
// between the call and its outcome: the ledger reads the intents partition
// again for a status, and a status makes it an accepted outcome with the
// status's wamid (reconciled); without one, DeliveryConfig.InDoubt decides:
// hold (the default) produces an in_doubt outcome and never sends it again,
// resend sends it again once ResendAfter has passed since the intent
// (deferring it to the scheduler until then), counted as a possible
// duplicate. A call without an answer (a timeout after the request was
// written) ends in_doubt at once. Every in-doubt send is counted in
// herald_dispatcher_in_doubt_total by reason.
//
// Late statuses (statuses.go): from a partition's load on, the replica
// follows the same partition of the intents topic for status marks. A
// status of a dispatch id whose latest outcome is in_doubt produces at
// once an accepted outcome with the status's wamid and Outcome.Reconciled
// set, superseding it (its Time at least a second later, for readers that
// keep the latest outcome by time); a failed status teaches the reach
// gate its 131050 or 131047.
//
// Metrics:
//
//	herald_dispatcher_sends_total{channel,state}     requests decided, by outcome state
//	herald_dispatcher_provider_errors_total{code}     failed provider calls, by Graph code (http_<status>, unreachable, in_doubt)
//	herald_dispatcher_send_duration_seconds           duration of one provider call
//	herald_dispatcher_limiter_wait_seconds            wait for the sender's rate limit
//	herald_dispatcher_sender_rate{sender}             the sender's global adaptive rate (msg/s, all replicas)
//	herald_dispatcher_sender_share{sender}            this replica's grant of it (msg/s)
//	herald_dispatcher_rate_lowered_total{sender,code} rate lowerings made after a Meta rate-limit answer (4, 80007, 130429)
//	herald_dispatcher_limiter_members                 replicas sharing the rates, this one included
//	herald_dispatcher_deferred_total{reason}          requests deferred to the scheduled topic (pair_rate, retry, breaker, queued, in_doubt)
//	herald_dispatcher_batches_cut_total               batches cut short by Config.MaxBatchTime (the rest fetched again)
//	herald_dispatcher_breaker_state{sender}           0 closed, 1 half-open, 2 open
//	herald_dispatcher_breaker_transitions_total{to}   breaker state changes
//	herald_dispatcher_dead_letters_total              undecodable records dead-lettered
//	herald_dispatcher_inflight                        provider calls in flight
//	herald_dispatcher_scheduled_total                 requests with a future send_at forwarded to the scheduled topic
//	herald_dispatcher_in_doubt_total{reason}          sends in doubt: call (no answer), crash (intent without outcome, held), resent (sent again, policy resend)
//	herald_dispatcher_duplicates_total                redelivered requests whose id was decided already, skipped
//	herald_dispatcher_reconciled_total                sends in doubt a status webhook proved accepted (a redelivery settled, or a late status)
//	herald_dispatcher_ledger_ids                      dispatch ids remembered for deduplication, all assigned partitions
//	herald_dispatcher_intent_errors_total             intents or answered marks that could not be written
//	herald_dispatcher_templates{status}               templates in the store, by status
//	herald_dispatcher_templates_ready                 1 once the template store caught up with the topic at start
//	herald_dispatcher_template_records_total{result}  template topic records read: template, signal, deleted, invalid
//	herald_dispatcher_template_syncs_total{result}    template listings of one app: ok, error
//	herald_dispatcher_template_changes_total{change}  template records the sync wrote: written, deleted
//	herald_dispatcher_template_checks_total{result}   template sends checked: passed, unchecked, unknown, not_approved, params
//	herald_dispatcher_refusals_total{reason}          WhatsApp requests refused before the call: window, window_meta, opt_out, tier
//	herald_dispatcher_learned_total{what,from}        what Meta said of a recipient, remembered: opt_out (131050, new suppressions), window_closed (131047); from answer or status
//	herald_dispatcher_failed_statuses_total{code}     failed status webhooks of this replica's partitions read back, by Meta code
//	herald_dispatcher_reach_records_total{result}     reach and suppression records read: granted, refused (claims of every replica), suppression, lifted, invalid
//	herald_dispatcher_tier_used{business}             unique recipients outside the window granted in the last 24 h (apps with a messaging_tier)
//	herald_dispatcher_tier_headroom{business}         the business's messaging tier minus tier_used
//
//	herald_scheduler_pending                          scheduled requests held in memory
//	herald_scheduler_released_total                   requests released to the dispatch topic (marker acknowledged)
//	herald_scheduler_skipped_total{reason}            requests not released: released (marker found on re-read), duplicate (same id released)
//	herald_scheduler_dead_letters_total               scheduled-topic records dead-lettered
//	herald_scheduler_release_delay_seconds            time from send_at to release
//	herald_scheduler_paused_partitions                partitions paused because max_pending requests are pending
//	herald_scheduler_replaying_partitions             partitions being re-read after assignment (their requests held)
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// stage is the dispatcher's name in dead letters.
const stage = "dispatcher"

const (
	// shutdownGrace bounds producing the outcomes of finished sends after
	// Run's ctx is done.
	shutdownGrace = 10 * time.Second
	// pairRateWait is the least backoff after 131056 when PairInterval
	// planning is disabled: Meta allows about one message per 6 s to one
	// recipient.
	pairRateWait = 6 * time.Second
	// sendAtSkew is how far in the future a request's SendAt may be and
	// the request still be sent rather than forwarded to the scheduler:
	// the scheduler releases at SendAt by its own clock, and a dispatcher
	// whose clock is a little behind must not send the request back.
	sendAtSkew = time.Second
)

// Dispatcher consumes dispatch requests and produces outcomes. Build it with
// New, run it with Run, release it with Close.
type Dispatcher struct {
	cfg       Config
	reg       *apps.Registry
	log       *slog.Logger
	m         *metrics
	cl        *kgo.Client
	http      *http.Client
	providers map[schemas.Channel]Provider
	limiter   Limiter
	// global is limiter when it is the global one (run by Run).
	global *globalLimiter
	pairs  *pairPlan
	// carry holds the undecided requests of a batch handed back past
	// MaxBatchTime, for the next batch (see handBack).
	carry *carrySet
	// pollSize is the most records the next batch gets (see nextPoll);
	// only the consume loop uses it.
	pollSize  int
	breakers  *breakers
	throttle  *throttle
	templates *templates
	// reach holds the window, opt-out and messaging-tier checks (reach.go).
	reach *reachGate
	// ledger remembers the recent dispatch ids of the assigned partitions
	// (delivery.go); tail follows their statuses (statuses.go).
	ledger *ledger
	tail   *statusTail
	// crashAfterCall, set by tests only, is called after each provider
	// call; returning true drops the call's outcome as a crash would.
	crashAfterCall func(*schemas.DispatchRequest) bool
	// skipIntents, set by BenchmarkIntentCost only, makes calls without
	// an intent first: what intents cost is measured against it.
	skipIntents bool

	// channels holds the email and push providers' state and their own
	// rate limits (channels.go).
	channels channels

	// backoffBase and backoffMax shape retries: base·2^(attempt-1), at most
	// max, with the upper half jittered.
	backoffBase, backoffMax time.Duration
	// badTokens holds the ids of apps whose token Meta refused (190), so
	// that it is logged loudly once, not once per send.
	badTokens sync.Map

	closeOnce sync.Once
}

// New builds a dispatcher consuming schemas.TopicDispatch in cfg.Group. reg
// gives each request's app (its senders and access token); prom may be nil
// (metrics are then not registered).
func New(cfg Config, kcfg kafka.Config, reg *apps.Registry, log *slog.Logger, prom prometheus.Registerer) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	if reg == nil {
		return nil, errors.New("dispatcher: app registry is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("stage", stage)
	m, err := newMetrics(prom)
	if err != nil {
		return nil, err
	}
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	// The default of 2 idle connections per host would make most of
	// Concurrency dial anew for each call, and so would the default of
	// 100 idle connections in all above a Concurrency of 100 (at 256, the
	// benchmark's simulator saw about 7,000 connections per 20,000 sends,
	// BenchmarkIntentCost's conns/run).
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	tr.MaxIdleConns = max(tr.MaxIdleConns, cfg.Concurrency)
	hc := &http.Client{
		Transport: tr,
		// Meta does not redirect sends; a redirected POST would turn into
		// a GET. The 3xx is reported as a failed call instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	chans, err := newChannels(cfg, hc)
	if err != nil {
		return nil, err
	}
	rateOf := func(sender string) float64 {
		if app, ok := reg.ByPhoneNumberID(sender); ok && app.Throughput(sender) > 0 {
			return app.Throughput(sender)
		}
		return cfg.RatePerSender
	}
	var (
		limiter Limiter
		global  *globalLimiter
	)
	switch cfg.Limiter.Mode {
	case LimiterGlobal:
		if global, err = newGlobalLimiter(cfg.Limiter, cfg.Burst, rateOf, kcfg.Opts(log), log, m); err != nil {
			chans.close()
			return nil, err
		}
		limiter = global
	case LimiterLocal:
		limiter = newLocalLimiter(rateOf, cfg.Burst)
	default:
		limiter = noLimit{}
	}
	var led *ledger
	carry := &carrySet{}
	copts := append(kcfg.Opts(log), kcfg.ConsumerOpts(cfg.Group, schemas.TopicDispatch)...)
	copts = append(copts,
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
			kafka.CommitOnRevoke(ctx, cl, lost)
			led.drop(lost)
			carry.drop(lost)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			led.drop(lost)
			carry.drop(lost)
		}),
	)
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		chans.close()
		if global != nil {
			global.close()
		}
		return nil, fmt.Errorf("dispatcher: creating kafka client: %w", err)
	}
	var tpl *templates
	tm, err := newTemplateMetrics(prom, func() bool { return tpl != nil && tpl.store.ready.Load() })
	if err == nil {
		tpl, err = newTemplates(cfg, kcfg, reg, cl, hc, log, tm)
	}
	var gate *reachGate
	if err == nil {
		gate, err = newReachGate(kcfg.Opts(log), reg, log, prom)
	}
	var tail *statusTail
	if err == nil {
		if tail, err = newStatusTail(kcfg.Opts(log), log); err != nil {
			gate.close()
		}
	}
	if err != nil {
		if tpl != nil {
			tpl.close()
		}
		cl.Close()
		return nil, err
	}
	led = newLedger(cfg.Delivery, kcfg.Opts(log), kadm.NewClient(cl), m)
	led.tail = tail
	return &Dispatcher{
		cfg:  cfg,
		reg:  reg,
		log:  log,
		m:    m,
		cl:   cl,
		http: hc,
		providers: map[schemas.Channel]Provider{
			schemas.ChannelWhatsApp: NewWhatsApp(cfg.WhatsAppBaseURL, cfg.GraphVersion, hc),
			schemas.ChannelEmail:    chans.email,
			schemas.ChannelPush:     chans.push,
			schemas.ChannelWebhook:  NewWebhook(nil),
		},
		channels:    chans,
		limiter:     limiter,
		global:      global,
		pairs:       newPairPlan(cfg.PairInterval),
		carry:       carry,
		pollSize:    max(cfg.Concurrency, minPoll),
		breakers:    newBreakers(cfg.Breaker, m),
		throttle:    newThrottle(time.Second),
		templates:   tpl,
		reach:       gate,
		ledger:      led,
		tail:        tail,
		backoffBase: 500 * time.Millisecond,
		backoffMax:  30 * time.Second,
	}, nil
}

// Run consumes until ctx is done (then it returns nil) or a batch's outcomes
// cannot be produced (then it returns the error, without committing that
// batch).
func (d *Dispatcher) Run(ctx context.Context) error {
	d.log.Info("dispatcher running", "group", d.cfg.Group, "whatsapp", d.cfg.WhatsAppBaseURL,
		"rate_per_sender", d.cfg.RatePerSender, "limiter", d.cfg.Limiter.Mode, "concurrency", d.cfg.Concurrency)
	tctx, stopTemplates := context.WithCancel(ctx)
	var tw sync.WaitGroup
	tw.Go(func() { d.templates.run(tctx) })
	tw.Go(func() { d.reach.run(tctx) })
	tw.Go(func() { d.runStatusTail(tctx) })
	defer func() { stopTemplates(); tw.Wait() }()
	// Requests are checked against the templates and the suppressions: not
	// before the stores hold what the topics hold.
	if !d.templates.waitReady(ctx) || !d.reach.waitReady(ctx) {
		return nil
	}
	if d.global == nil {
		return kafka.RunCarrying(ctx, d.cl, d.log, d.nextPoll, d.handle)
	}
	// The limiter outlives the consume loop: sends in flight at shutdown
	// still pace, and it says it leaves only after the last one.
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.global.run(lctx)
	}()
	err := kafka.RunCarrying(ctx, d.cl, d.log, d.nextPoll, d.handle)
	stop()
	<-done
	return err
}

// Ready returns nil once the dispatcher's template store has read
// schemas.TopicTemplates up to its end at start (Run consumes no request
// before): a readiness check for /readyz.
func (d *Dispatcher) Ready(context.Context) error {
	if !d.templates.store.ready.Load() {
		return errors.New("reading the templates topic " + schemas.TopicTemplates)
	}
	if n := d.breakers.allOpen(); n > 0 {
		return fmt.Errorf("the circuit breakers of all %d senders are open", n)
	}
	return nil
}

// Close leaves the consumer group and releases connections. Call it after
// Run returned.
func (d *Dispatcher) Close() {
	d.closeOnce.Do(func() {
		d.templates.close()
		d.reach.close()
		d.tail.close()
		d.cl.Close()
		if d.global != nil {
			d.global.close()
		}
		d.http.CloseIdleConnections()
		d.channels.close()
	})
}

// item is one decoded request and the index of its record in the batch.
// attempts are the calls made before it was deferred (header
// schemas.HeaderAttempts); planned says its SendAt is a turn this
// dispatcher planned for the recipient.
type item struct {
	idx      int
	req      *schemas.DispatchRequest
	attempts int
	planned  bool
}

// handle is the kafka.Handler: decode, send, produce outcomes and dead
// letters, and return once they are acknowledged.
func (d *Dispatcher) handle(ctx context.Context, polled []*kgo.Record) error {
	// The requests a batch handed back left undecided go first: they are
	// older than polled in each partition, and decoded and checked already.
	carried := d.carry.take()
	d.carry.polled(polled)
	recs := polled
	if len(carried) > 0 {
		recs = make([]*kgo.Record, 0, len(carried)+len(polled))
		for _, c := range carried {
			recs = append(recs, c.rec)
		}
		recs = append(recs, polled...)
	}
	// results[i] is what record i produced (an outcome or a dead letter);
	// nil while undecided.
	results := make([]*kgo.Record, len(recs))
	// outs[i] is the outcome in results[i], if any.
	outs := make([]*schemas.Outcome, len(recs))
	var queues [][]item
	// byKey is keyed by what the record key (schemas.RecipientKey) is made
	// of, without building it.
	type recipient struct{ app, to string }
	byKey := make(map[recipient]int)
	// enqueue adds it to its recipient's queue: one queue per recipient
	// keeps its sends in record order (Meta's pair rate and the user's
	// reading order are per recipient).
	enqueue := func(it item) {
		k := recipient{it.req.App, it.req.To}
		q, ok := byKey[k]
		if !ok {
			q = len(queues)
			byKey[k] = q
			queues = append(queues, nil)
		}
		queues[q] = append(queues[q], it)
	}
	for i, c := range carried {
		c.it.idx = i
		enqueue(c.it)
	}
	// The outcomes and intents of partitions new to this replica: no
	// request decided before is sent again (delivery.go).
	jobs, failed, err := d.ledger.load(ctx, polled)
	if err != nil {
		return fmt.Errorf("reading back decided requests: %w", err)
	}
	for _, j := range jobs {
		d.reconcile(ctx, j)
	}
	d.learnLoaded(ctx, failed)
	refreshed := make(map[int32]bool)
	for i := len(carried); i < len(recs); i++ {
		rec := recs[i]
		req, err := schemas.DecodeDispatchRequest(rec.Value)
		if err != nil {
			results[i] = kafka.DeadLetter(stage, rec, "decoding dispatch request: "+err.Error())
			d.m.deadLetters.Inc()
			if d.throttle.allow("dead_letter") {
				d.log.Warn("dead-lettering undecodable dispatch record", "topic", rec.Topic,
					"partition", rec.Partition, "offset", rec.Offset, "err", err)
			}
			continue
		}
		if req.SendAt.After(time.Now().Add(sendAtSkew)) {
			// Not to be sent yet: a producer wrote it here directly.
			// The scheduler releases it back at SendAt, unchanged.
			results[i] = &kgo.Record{Topic: schemas.TopicScheduled, Key: req.Key(), Value: rec.Value, Headers: rec.Headers}
			d.m.scheduled.Inc()
			continue
		}
		r, o, err := d.settle(ctx, rec, req, refreshed)
		if err != nil {
			return fmt.Errorf("reconciling dispatch %s: %w", req.ID, err)
		}
		if r != nil {
			results[i], outs[i] = r, o
			continue
		}
		attempts, planned := deferredAttempts(rec)
		enqueue(item{idx: i, req: req, attempts: attempts, planned: planned})
	}
	// Sends that happened must get their outcome even when shutting down:
	// produce past ctx's end for at most shutdownGrace. Each result is
	// produced as soon as it is decided, so that a batch ends with few
	// left to acknowledge (while it waits, no request of the next batch is
	// sent); the offsets are still marked only after all are.
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, cancel) })
	defer stop()
	prod := &producing{ctx: pctx, cl: d.cl}
	prod.done = prod.acked
	for _, r := range results {
		if r != nil && r != decidedBefore {
			prod.produce(r)
		}
	}
	bctx, cancelBatch := context.WithTimeout(ctx, d.cfg.MaxBatchTime)
	defer cancelBatch()
	d.sendAll(bctx, queues, results, outs, prod.produce)

	undecided := slices.Contains(results, nil)
	if n, err := prod.wait(); err != nil {
		return fmt.Errorf("producing %d outcomes and dead letters: %w", n, err)
	}
	d.noteDecided(ctx, recs, outs)
	if err := ctx.Err(); err != nil {
		// Interrupted batch: kafka.Run will not mark it; mark what is done.
		d.markDecided(recs, results)
		return err
	}
	d.sizePoll(len(recs), results, undecided)
	if undecided {
		return d.handBack(recs, results, queues)
	}
	if len(carried) > 0 {
		// kafka.RunN marks polled only, and all of recs is decided.
		d.markDecided(recs, results)
	}
	return nil
}

// producing produces a batch's results as they come and waits for their
// acknowledgements.
type producing struct {
	ctx context.Context
	cl  *kgo.Client
	wg  sync.WaitGroup
	n   atomic.Int64
	mu  sync.Mutex
	err error
	// done is acked, bound once: a closure per record would be an
	// allocation per send.
	done func(*kgo.Record, error)
}

// produce produces r; safe for concurrent use.
func (p *producing) produce(r *kgo.Record) {
	p.wg.Add(1)
	p.n.Add(1)
	p.cl.Produce(p.ctx, r, p.done)
}

// acked is the promise of every record of p.
func (p *producing) acked(_ *kgo.Record, err error) {
	if err != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = err
		}
		p.mu.Unlock()
	}
	p.wg.Done()
}

// wait waits for every record produced to be acknowledged and returns how
// many there were and the first error. Call it once the last produce
// returned.
func (p *producing) wait() (int, error) {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return int(p.n.Load()), p.err
}

// noteDecided tells the ledger the outcomes of a batch, acknowledged, and
// reconciles the in_doubt ones whose status arrived meanwhile.
func (d *Dispatcher) noteDecided(ctx context.Context, recs []*kgo.Record, outs []*schemas.Outcome) {
	byPart := make(map[int32][]*schemas.Outcome)
	for i, o := range outs {
		if o != nil {
			byPart[recs[i].Partition] = append(byPart[recs[i].Partition], o)
		}
	}
	for p, os := range byPart {
		for _, j := range d.ledger.decided(p, os) {
			d.reconcile(ctx, j)
		}
	}
}

// donePrefix returns, per partition, the last record before the first
// undecided one: marking it commits exactly the decided prefix.
func donePrefix(recs []*kgo.Record, results []*kgo.Record) []*kgo.Record {
	type tp struct {
		topic     string
		partition int32
	}
	last := make(map[tp]*kgo.Record)
	blocked := make(map[tp]bool)
	var order []tp
	for i, r := range recs {
		k := tp{r.Topic, r.Partition}
		if blocked[k] {
			continue
		}
		if results[i] == nil {
			blocked[k] = true
			continue
		}
		if _, seen := last[k]; !seen {
			order = append(order, k)
		}
		last[k] = r
	}
	out := make([]*kgo.Record, 0, len(order))
	for _, k := range order {
		out = append(out, last[k])
	}
	return out
}

// dispatch sends one request to its end, sleeping between attempts, and
// returns its outcome, or nil when ctx ended before the request was decided
// (it is then delivered again later). Batches use begin and attempt
// through sendAll instead, which park a waiting recipient rather than
// sleep.
func (d *Dispatcher) dispatch(ctx context.Context, req *schemas.DispatchRequest) *schemas.Outcome {
	if ctx.Err() != nil {
		return nil
	}
	t, o := d.begin(req, 0)
	if o != nil {
		return o
	}
	for {
		o, again := d.attempt(ctx, t)
		if o != nil || again.IsZero() {
			return o
		}
		if err := sleepCtx(ctx, time.Until(again)); err != nil {
			return nil
		}
	}
}

// try is one request on its way: what begin checked, and the calls made.
type try struct {
	req      *schemas.DispatchRequest
	app      *apps.App
	p        Provider
	attempts int
	last     error
	// claimed: the recipient was granted within the messaging tier.
	claimed bool
	// turn: the sender's rate limit has handed this request its turn for
	// the next call (a batch's queue takes it before it takes a worker,
	// queue.go); the next attempt uses it, or drops it, but never keeps
	// it for later, so that saved turns cannot add up to a burst.
	turn bool
	// picked, when the limiter handed the turn over, tells it that a
	// worker took the turn up (Limiter.Take).
	picked func()
}

// begin checks req before any call; attempts are the calls made for it
// before it was deferred. It returns the outcome when req is decided
// without a call (refused, or its deadline passed), else its try.
func (d *Dispatcher) begin(req *schemas.DispatchRequest, attempts int) (*try, *schemas.Outcome) {
	app, ok := d.reg.ByID(req.App)
	if !ok {
		return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: app %s: %w", req.ID, req.App, ErrUnknownApp))
	}
	p, ok := d.providers[req.Channel]
	if !ok {
		return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: %s: %w", req.ID, req.Channel, ErrUnsupportedChannel))
	}
	if req.Channel == schemas.ChannelWhatsApp {
		// Checked before any wait so that a foreign or unknown sender
		// never gets a breaker or a bucket.
		if !ownsSender(app, req.Sender) {
			return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: sender %s of app %s: %w", req.ID, req.Sender, app.ID, ErrForeignSender))
		}
		if err := checkRequest(req); err != nil {
			return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: %w", req.ID, err))
		}
		// Unknown, unapproved or mismatched templates never reach Meta
		// (132000/132001): see templates.go.
		if err := d.templates.store.check(app, req.Template); err != nil {
			return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: %w", req.ID, err))
		}
		// Text outside the window (131047) and marketing to an opted-out
		// recipient (131050) never reach Meta: see reach.go.
		if err := d.reach.check(req, d.templates.store.category(app, req.Template), time.Now()); err != nil {
			return nil, d.decide(req, schemas.OutcomeFailed, "", attempts, fmt.Errorf("dispatch %s: %w", req.ID, err))
		}
	} else if pp, ok := p.(preparer); ok {
		// Email and push: the app's settings, its sender, the message.
		if err := pp.prepare(app, req); err != nil {
			return nil, d.decide(req, schemas.OutcomeFailed, "", 0, fmt.Errorf("dispatch %s: %w", req.ID, err))
		}
	}
	if !req.Deadline.IsZero() && !time.Now().Before(req.Deadline) {
		return nil, d.decide(req, schemas.OutcomeExpired, "", attempts, nil)
	}
	return &try{req: req, app: app, p: p, attempts: attempts}, nil
}

// attempt makes the next call of t: the breaker, the sender's rate limit
// (unless t holds its turn already), the call. It returns the outcome when the request is decided, or the
// time of its next call when a retryable error leaves room for one before
// the deadline, or neither when ctx ended first.
func (d *Dispatcher) attempt(ctx context.Context, t *try) (*schemas.Outcome, time.Time) {
	req := t.req
	if ctx.Err() != nil {
		return nil, time.Time{}
	}
	turn := t.turn
	t.turn = false
	// The waits below end at the request's own deadline (then it is
	// expired) or when ctx ends (then it is left undecided, for the next
	// batch): ctx's deadline, the batch's MaxBatchTime, must not expire a
	// request that may wait longer. Their context is made only when one
	// must wait (most sends do not).
	w := waitCtx{parent: ctx, deadline: req.Deadline}
	defer w.release()
	if !t.claimed && needsClaim(t.app, req, time.Now()) {
		if o, again, ok := d.claimTier(ctx, w.get(), t); !ok {
			return o, again
		}
	}
	br := d.breakers.get(string(req.Channel), req.Sender)
	done, ok := br.tryAllow()
	if !ok {
		var err error
		if done, err = br.allow(w.get()); err != nil {
			if ctx.Err() != nil {
				return nil, time.Time{}
			}
			return d.decide(req, schemas.OutcomeExpired, "", t.attempts, t.last), time.Time{}
		}
	}
	lim := d.limiterFor(req.Channel)
	if !turn {
		start := time.Now()
		if err := lim.Wait(w.get(), req.Sender); err != nil {
			done(context.Canceled) // not a call: neither success nor failure
			if ctx.Err() != nil {
				return nil, time.Time{}
			}
			return d.decide(req, schemas.OutcomeExpired, "", t.attempts, t.last), time.Time{}
		}
		d.m.limiterWait.Observe(time.Since(start).Seconds())
	}

	// The intent first, acknowledged: a replica that finds it without an
	// outcome knows this call may have been made (delivery.go).
	if err := d.intend(ctx, t); err != nil {
		done(context.Canceled) // not a call
		if ctx.Err() != nil {
			return nil, time.Time{}
		}
		d.m.intentErrors.Inc()
		if d.throttle.allow("intent") {
			d.log.Warn("writing a send intent, retrying", "dispatch_id", req.ID, "err", err)
		}
		return nil, time.Now().Add(d.backoff(t.attempts+1, nil))
	}
	t.attempts++
	id, err := d.call(ctx, t.p, t.app, req)
	if d.crashAfterCall != nil && d.crashAfterCall(req) {
		done(context.Canceled)
		return nil, time.Time{}
	}
	done(err)
	lim.Observe(req.Sender, err)
	d.pairs.answered(req, err, time.Now())
	if err == nil {
		if req.Channel == schemas.ChannelWhatsApp {
			d.tokenWorks(t.app)
		}
		return d.decide(req, schemas.OutcomeAccepted, id, t.attempts, nil), time.Time{}
	}
	t.last = err
	d.m.providerErrors.WithLabelValues(errorLabel(err)).Inc()
	switch {
	case errors.Is(err, ErrInDoubt):
		d.m.inDoubt.WithLabelValues(inDoubtCall).Inc()
		return d.decide(req, schemas.OutcomeInDoubt, "", t.attempts, err), time.Time{}
	case !IsRetryable(err):
		if errorCode(err) == codeAccessToken {
			d.tokenBroken(t.app, err)
		}
		d.reach.learn(ctx, req, err)
		return d.decide(req, schemas.OutcomeFailed, "", t.attempts, err), time.Time{}
	case t.attempts >= d.cfg.MaxAttempts:
		return d.decide(req, schemas.OutcomeFailed, "", t.attempts, fmt.Errorf("giving up after %d attempts: %w", t.attempts, err)), time.Time{}
	}
	next := time.Now().Add(d.backoff(t.attempts, err))
	// The request's deadline, not rctx's: ctx may be a batch's, which ends
	// long before (the queue is then deferred, not expired).
	if !req.Deadline.IsZero() && next.After(req.Deadline) {
		return d.decide(req, schemas.OutcomeExpired, "", t.attempts, t.last), time.Time{}
	}
	// Undecided after an answered call: that call is not in doubt.
	d.answered(ctx, req, t.attempts)
	return nil, next
}

// waitCtx makes, at its first get, the context of an attempt's waits:
// parent's cancellation without its deadline (a batch's MaxBatchTime must
// not expire a request that may wait longer), and the request's own
// deadline. release ends it.
type waitCtx struct {
	parent   context.Context
	deadline time.Time
	ctx      context.Context
	stops    []func()
}

func (w *waitCtx) get() context.Context {
	if w.ctx != nil {
		return w.ctx
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(w.parent))
	stop := context.AfterFunc(w.parent, cancel)
	w.stops = append(w.stops, func() { stop() }, cancel)
	if !w.deadline.IsZero() {
		var cancelDl context.CancelFunc
		ctx, cancelDl = context.WithDeadline(ctx, w.deadline)
		w.stops = append(w.stops, cancelDl)
	}
	w.ctx = ctx
	return ctx
}

func (w *waitCtx) release() {
	for _, f := range w.stops {
		f()
	}
}

// claimTier claims t's recipient within its business's messaging tier
// (reach.go). It reports true when granted; else the outcome (refused, or
// expired), the time to claim again, or neither when ctx ended.
func (d *Dispatcher) claimTier(ctx, rctx context.Context, t *try) (*schemas.Outcome, time.Time, bool) {
	err := d.reach.claim(rctx, t.app, t.req)
	switch {
	case err == nil:
		t.claimed = true
		return nil, time.Time{}, true
	case errors.Is(err, ErrTierExceeded):
		return d.decide(t.req, schemas.OutcomeFailed, "", t.attempts, fmt.Errorf("dispatch %s: %w", t.req.ID, err)), time.Time{}, false
	case ctx.Err() != nil:
		return nil, time.Time{}, false
	case rctx.Err() != nil:
		return d.decide(t.req, schemas.OutcomeExpired, "", t.attempts, t.last), time.Time{}, false
	}
	if d.throttle.allow("claim") {
		d.log.Warn("messaging-tier claim undecided, claiming again", "dispatch_id", t.req.ID, "app", t.req.App, "err", err)
	}
	return nil, time.Now().Add(claimRetry), false
}

// call makes one provider call. The call is not cancelled by ctx (shutdown):
// once started it runs to its answer or RequestTimeout, so that a send that
// happened gets its outcome instead of being sent again after a restart.
func (d *Dispatcher) call(ctx context.Context, p Provider, app *apps.App, req *schemas.DispatchRequest) (string, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RequestTimeout)
	defer cancel()
	d.m.inflight.Inc()
	start := time.Now()
	id, err := p.Send(cctx, app, req)
	d.m.sendDuration.Observe(time.Since(start).Seconds())
	d.m.inflight.Dec()
	if err == nil && id == "" {
		err = fmt.Errorf("%w: provider returned no message id", ErrInDoubt)
	}
	return id, err
}

// backoff is the wait before attempt+1: base·2^(attempt-1) capped at max,
// its upper half random; at least the pair interval (pairRateWait when
// planning is off) after a pair-rate error.
func (d *Dispatcher) backoff(attempt int, err error) time.Duration {
	b := d.backoffMax
	if attempt-1 < 30 {
		b = min(d.backoffMax, d.backoffBase<<(attempt-1))
	}
	b = b/2 + rand.N(b/2+1)
	if errorCode(err) == codePairRate {
		w := d.cfg.PairInterval
		if w <= 0 {
			w = pairRateWait
		}
		b = max(b, w)
	}
	// FCM's Retry-After (QUOTA_EXCEEDED, UNAVAILABLE) is a floor.
	return max(b, retryAfter(err))
}

// decide builds the outcome of req, counts and logs it.
func (d *Dispatcher) decide(req *schemas.DispatchRequest, state schemas.OutcomeState, providerID string, attempts int, err error) *schemas.Outcome {
	o := &schemas.Outcome{
		DispatchID: req.ID,
		App:        req.App,
		Channel:    req.Channel,
		Sender:     req.Sender,
		To:         req.To,
		Country:    req.Country,
		State:      state,
		ProviderID: providerID,
		Source:     req.Source,
		Attempts:   attempts,
		Requested:  req.Created,
		Time:       time.Now().UTC(),
	}
	if t := req.Template; t != nil {
		o.Template = t.Name
		o.Category = t.Category
	}
	channelOutcome(o, req, err)
	switch {
	case state == schemas.OutcomeExpired:
		o.ErrorMessage = "deadline passed before the message could be sent"
		if err != nil {
			o.ErrorCode = errorCode(err)
			o.ErrorMessage += "; last error: " + err.Error()
		}
	case err != nil:
		o.ErrorCode = errorCode(err)
		o.ErrorMessage = err.Error()
	}
	d.m.sent(string(req.Channel), string(state)).Inc()
	if state != schemas.OutcomeAccepted && d.throttle.allow(string(state)+fmt.Sprint(o.ErrorCode)) {
		d.log.Warn("dispatch not accepted", "dispatch_id", req.ID, "app", req.App, "sender", req.Sender,
			"state", state, "code", o.ErrorCode, "attempts", attempts, "err", o.ErrorMessage)
	}
	return o
}

// tokenBroken logs once per app that Meta refuses its access token (190):
// every send of the app fails until an operator gives it a new token.
func (d *Dispatcher) tokenBroken(app *apps.App, err error) {
	if _, logged := d.badTokens.LoadOrStore(app.ID, struct{}{}); !logged {
		d.log.Error("whatsapp access token refused (code 190): the app needs a new token, its sends fail until then",
			"app", app.ID, "err", err)
	}
}

// tokenWorks notes that app's token works (again).
func (d *Dispatcher) tokenWorks(app *apps.App) {
	if _, bad := d.badTokens.LoadAndDelete(app.ID); bad {
		d.log.Info("whatsapp access token accepted again", "app", app.ID)
	}
}

// throttle lets one log line per key through per period, so a broken
// provider does not flood the log; the counters still count everything.
type throttle struct {
	period time.Duration
	mu     sync.Mutex
	last   map[string]time.Time
}

func newThrottle(period time.Duration) *throttle {
	return &throttle{period: period, last: make(map[string]time.Time)}
}

func (t *throttle) allow(key string) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.last[key]) < t.period {
		return false
	}
	t.last[key] = now
	return true
}
