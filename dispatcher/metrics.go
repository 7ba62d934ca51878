package dispatcher

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus metrics, listed in the package doc.
type metrics struct {
	sends *prometheus.CounterVec
	// sendsBy caches sends' children by sendsKey: a label lookup hashes
	// and locks, once per send.
	sendsBy            sync.Map
	providerErrors     *prometheus.CounterVec
	sendDuration       prometheus.Histogram
	limiterWait        prometheus.Histogram
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	deadLetters        prometheus.Counter
	inflight           prometheus.Gauge
	scheduled          prometheus.Counter
	senderRate         *prometheus.GaugeVec
	senderShare        *prometheus.GaugeVec
	rateLowered        *prometheus.CounterVec
	limiterMembers     prometheus.Gauge
	deferred           *prometheus.CounterVec
	batchesCut         prometheus.Counter
	inDoubt            *prometheus.CounterVec
	duplicates         prometheus.Counter
	reconciled         prometheus.Counter
	ledgerIDs          prometheus.Gauge
	intentErrors       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_sends_total",
			Help: "Dispatch requests decided, by channel and outcome state.",
		}, []string{"channel", "state"}),
		providerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_provider_errors_total",
			Help: "Failed provider calls, by Graph error code (or http_<status>, unreachable, in_doubt).",
		}, []string{"code"}),
		sendDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_dispatcher_send_duration_seconds",
			Help:    "Duration of one provider call.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		limiterWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_dispatcher_limiter_wait_seconds",
			Help:    "Time spent waiting for a sender's rate limit before a call.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_dispatcher_breaker_state",
			Help: "Circuit breaker state per sender: 0 closed, 1 half-open, 2 open.",
		}, []string{"sender"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_breaker_transitions_total",
			Help: "Circuit breaker state changes, by the state entered.",
		}, []string{"to"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_dead_letters_total",
			Help: "Dispatch records that could not be decoded and went to the dead-letter topic.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatcher_inflight",
			Help: "Provider calls in flight.",
		}),
		scheduled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_scheduled_total",
			Help: "Dispatch requests with a send_at still in the future, forwarded to the scheduled topic instead of sent.",
		}),
		senderRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_dispatcher_sender_rate",
			Help: "A sender's current global adaptive rate in messages a second, all replicas together, as this replica sees it.",
		}, []string{"sender"}),
		senderShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_dispatcher_sender_share",
			Help: "This replica's grant of a sender's rate, in messages a second.",
		}, []string{"sender"}),
		rateLowered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_rate_lowered_total",
			Help: "Lowerings of a sender's rate this replica made after a Meta rate-limit answer, by Graph code (4, 80007, 130429).",
		}, []string{"sender", "code"}),
		limiterMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatcher_limiter_members",
			Help: "Dispatcher replicas sharing the senders' rates, this one included, as this replica sees them.",
		}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_deferred_total",
			Help: "Requests deferred to the scheduled topic because their recipient's next turn was further than max_hold away, by reason (pair_rate, retry, breaker, queued, in_doubt).",
		}, []string{"reason"}),
		batchesCut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_batches_cut_total",
			Help: "Batches cut short by max_batch_time: their undecided records were fetched again.",
		}),
		inDoubt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_in_doubt_total",
			Help: "Sends that may or may not have reached the provider, by reason: call (no answer to a call), crash (an intent without outcome found after a restart or rebalance, held and reported), resent (such a send made again, policy resend).",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_duplicates_total",
			Help: "Redelivered dispatch requests skipped because their id was already decided.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_reconciled_total",
			Help: "Sends in doubt that a status webhook proved Meta got: reported accepted instead of sent again.",
		}),
		ledgerIDs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatcher_ledger_ids",
			Help: "Dispatch ids held for deduplication, all assigned partitions together.",
		}),
		intentErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dispatcher_intent_errors_total",
			Help: "Intents that could not be written before a call (the call waits and is tried again).",
		}),
	}
	for _, r := range []string{inDoubtCall, inDoubtCrash, inDoubtResent} {
		m.inDoubt.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.sends, m.providerErrors, m.sendDuration, m.limiterWait,
		m.breakerState, m.breakerTransitions, m.deadLetters, m.inflight, m.scheduled,
		m.senderRate, m.senderShare, m.rateLowered, m.limiterMembers, m.deferred, m.batchesCut,
		m.inDoubt, m.duplicates, m.reconciled, m.ledgerIDs, m.intentErrors,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering dispatcher metrics: %w", err)
		}
	}
	return m, nil
}

// schedulerMetrics are the scheduler's Prometheus metrics, listed in the
// package doc.
type schedulerMetrics struct {
	pending      prometheus.Gauge
	released     prometheus.Counter
	skipped      *prometheus.CounterVec
	deadLetters  prometheus.Counter
	releaseDelay prometheus.Histogram
	paused       prometheus.Gauge
	replaying    prometheus.Gauge
}

func newSchedulerMetrics(reg prometheus.Registerer) (*schedulerMetrics, error) {
	m := &schedulerMetrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_scheduler_pending",
			Help: "Scheduled dispatch requests held in memory until their send_at.",
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_scheduler_released_total",
			Help: "Scheduled dispatch requests produced to the dispatch topic, their release marker acknowledged.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_scheduler_skipped_total",
			Help: "Scheduled requests not released because a marker showed them released (released) or another request of their id was (duplicate).",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_scheduler_dead_letters_total",
			Help: "Scheduled-topic records that could not be decoded or validated and went to the dead-letter topic.",
		}),
		releaseDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_scheduler_release_delay_seconds",
			Help:    "Time from a request's send_at to its release.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_scheduler_paused_partitions",
			Help: "Partitions whose fetching is paused because max_pending requests are pending.",
		}),
		replaying: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_scheduler_replaying_partitions",
			Help: "Partitions being re-read after an assignment, whose requests are held until the re-read reaches the high watermark.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.pending, m.released, m.skipped, m.deadLetters, m.releaseDelay, m.paused, m.replaying,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering scheduler metrics: %w", err)
		}
	}
	return m, nil
}

// templateMetrics are the template store's and sync's Prometheus metrics,
// listed in the package doc.
type templateMetrics struct {
	templates *prometheus.GaugeVec
	records   *prometheus.CounterVec
	syncs     *prometheus.CounterVec
	changes   *prometheus.CounterVec
	checks    *prometheus.CounterVec
	ready     prometheus.GaugeFunc
	// checked are the children of checks by result, resolved once: the
	// check runs on every template send.
	checked map[string]prometheus.Counter
}

func newTemplateMetrics(reg prometheus.Registerer, ready func() bool) (*templateMetrics, error) {
	m := &templateMetrics{
		templates: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_dispatcher_templates",
			Help: "WhatsApp templates in the dispatcher's template store, by status (a webhook's status counts until a later sync).",
		}, []string{"status"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_template_records_total",
			Help: "Template topic records read: template, signal, deleted (tombstones), invalid (not applied).",
		}, []string{"result"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_template_syncs_total",
			Help: "Template listings of one app, by result: ok, error (the templates known stay as they were).",
		}, []string{"result"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_template_changes_total",
			Help: "Template records the sync wrote: written (new or changed template), deleted (tombstones).",
		}, []string{"change"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatcher_template_checks_total",
			Help: "Template sends checked before any provider call, by result: passed, unchecked (app not synced or without a WABA id), and the refusals unknown, not_approved, params.",
		}, []string{"result"}),
		ready: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_dispatcher_templates_ready",
			Help: "1 once the template store has read the templates topic up to its end at start.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
	}
	m.checked = make(map[string]prometheus.Counter)
	for _, r := range []string{checkPassed, checkUnchecked, checkUnknown, checkNotApproved, checkParams} {
		m.checked[r] = m.checks.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.syncs.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.templates, m.records, m.syncs, m.changes, m.checks, m.ready} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering dispatcher template metrics: %w", err)
		}
	}
	return m, nil
}

// sendsKey is the labels of one child of herald_dispatcher_sends_total.
type sendsKey struct{ channel, state string }

// sent is the child of herald_dispatcher_sends_total for channel and state.
func (m *metrics) sent(channel, state string) prometheus.Counter {
	k := sendsKey{channel, state}
	if c, ok := m.sendsBy.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.sendsBy.LoadOrStore(k, m.sends.WithLabelValues(channel, state))
	return c.(prometheus.Counter)
}
