package ingest

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the ingest stage; see the package comment for the list.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	produced    *prometheus.CounterVec
	sigFailures prometheus.Counter
	foreign     prometheus.Counter
	skipped     *prometheus.CounterVec
	throttled   prometheus.Counter
	duplicates  *prometheus.CounterVec
	// tracking.go
	tracked      *prometheus.CounterVec
	trackingLost prometheus.Counter
}

// newMetrics builds the metrics and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingest_requests_total",
			Help: "HTTP requests answered by ingest, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_ingest_request_duration_seconds",
			Help:    "Time to answer an ingest request, Kafka acknowledgement included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingest_records_produced_total",
			Help: "Records acknowledged by Kafka, by event kind (deadletter for dead letters).",
		}, []string{"kind"}),
		sigFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_ingest_webhook_signature_failures_total",
			Help: "Webhook POSTs refused for a missing, malformed or wrong X-Hub-Signature-256.",
		}),
		foreign: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_ingest_webhook_foreign_changes_total",
			Help: "Webhook changes skipped because their phone number id is unknown or owned by an app the signing secret does not belong to.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingest_webhook_skipped_total",
			Help: "Webhook parts ignored on purpose, by reason (object, field, malformed_value).",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingest_duplicates_total",
			Help: "Redelivered items dropped at the edge (already acknowledged within the dedup window), by API: webhook (Meta's retries, wamid+status), segment (messageId).",
		}, []string{"api"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_ingest_throttled_total",
			Help: "Requests refused with 429 because their credential (API token, write key) was over its rate.",
		}),
		tracked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_ingest_tracking_hits_total",
			Help: "Hits of email tracking links, by kind (open, click, unsubscribe) and result (event, malformed, forged, unknown_app, throttled, not_configured).",
		}, []string{"kind", "result"}),
		trackingLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_ingest_tracking_lost_total",
			Help: "Clicks redirected without their event because Kafka did not acknowledge it in time (the reader is never kept from the link).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.produced, m.sigFailures, m.foreign, m.skipped, m.throttled, m.duplicates, m.tracked, m.trackingLost} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering ingest metrics: %w", err)
		}
	}
	return m, nil
}
