package dispatcher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus metrics, listed in the package doc.
type metrics struct {
	sends              *prometheus.CounterVec
	providerErrors     *prometheus.CounterVec
	sendDuration       prometheus.Histogram
	limiterWait        prometheus.Histogram
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	deadLetters        prometheus.Counter
	inflight           prometheus.Gauge
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
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.sends, m.providerErrors, m.sendDuration, m.limiterWait,
		m.breakerState, m.breakerTransitions, m.deadLetters, m.inflight,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering dispatcher metrics: %w", err)
		}
	}
	return m, nil
}
