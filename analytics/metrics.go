package analytics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the sink; the package doc lists them.
type metrics struct {
	rowsInserted   *prometheus.CounterVec
	insertDuration *prometheus.HistogramVec
	insertErrors   *prometheus.CounterVec
	deadLetters    prometheus.Counter
	batchRows      prometheus.Histogram
	rowsRejected   *prometheus.CounterVec
	paused         prometheus.Gauge
	factsPending   prometheus.Counter
	factsResolved  prometheus.Counter
	// The fact counter's (counter.go).
	factsCounted  prometheus.Counter
	factsRepeated prometheus.Counter
	factsLate     prometheus.Counter
	seenDispatch  prometheus.Gauge
	seenLoad      prometheus.Histogram
	// The settler's (settle.go).
	settleRuns     prometheus.Counter
	settleErrors   prometheus.Counter
	keysSettled    *prometheus.CounterVec
	settleDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rowsInserted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_analytics_rows_inserted_total",
			Help: "Rows ClickHouse acknowledged, by table.",
		}, []string{"table"}),
		insertDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_analytics_insert_duration_seconds",
			Help:    "Duration of one insert attempt into ClickHouse, successful or not, by table.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms .. 16 s
		}, []string{"table"}),
		insertErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_analytics_insert_errors_total",
			Help: "Failed insert attempts into ClickHouse (each is retried), by table.",
		}, []string{"table"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_dead_letters_total",
			Help: "Records the analytics sink could not decode or store, handed to the dead-letter topic.",
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_analytics_batch_rows",
			Help:    "Rows decoded from one polled batch of records.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65536
		}),
		rowsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_analytics_rows_rejected_total",
			Help: "Rows ClickHouse refused (found by splitting a refused insert); their records are dead-lettered, by table.",
		}, []string{"table"}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_analytics_fetch_paused",
			Help: "1 while fetching is paused because ClickHouse refuses inserts, else 0.",
		}),
		factsPending: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_facts_pending_total",
			Help: "Facts of statuses and replies parked in pending_facts because their dispatch was not known yet.",
		}),
		factsResolved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_facts_resolved_total",
			Help: "Parked facts attributed to their dispatch later.",
		}),
		factsCounted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_facts_counted_total",
			Help: "Facts of herald.facts.v1 the fact counter counted (appended to fact_log).",
		}),
		factsRepeated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_facts_repeated_total",
			Help: "Facts of herald.facts.v1 skipped because their dispatch's state was counted already (redelivery, or two topics implying one state).",
		}),
		factsLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_facts_late_total",
			Help: "Facts of dispatches requested before the horizon, whose counted states were looked up in fact_log.",
		}),
		seenDispatch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_analytics_facts_seen_dispatches",
			Help: "Dispatches the fact counter remembers for its partitions (within the horizon).",
		}),
		seenLoad: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_analytics_facts_load_seconds",
			Help:    "Duration of loading one partition's counted facts from fact_log when it is assigned.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10 ms .. 80 s
		}),
		settleRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_settle_runs_total",
			Help: "Settles of the event aggregates (event_days, journey_days) into their settled counts.",
		}),
		settleErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_analytics_settle_errors_total",
			Help: "Settles that failed (retried an interval later; the queries stay exact without them).",
		}),
		keysSettled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_analytics_keys_settled_total",
			Help: "Keys whose count the settler wrote, by settled table.",
		}, []string{"table"}),
		settleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_analytics_settle_duration_seconds",
			Help:    "Duration of one settle of every dirty key, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms .. 40 s
		}),
	}
	for _, t := range settledTables {
		m.keysSettled.WithLabelValues(t.name)
	}
	for _, table := range append(tableNames, factLogTable.name) {
		m.rowsInserted.WithLabelValues(table)
		m.insertDuration.WithLabelValues(table)
		m.insertErrors.WithLabelValues(table)
		m.rowsRejected.WithLabelValues(table)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.rowsInserted, m.insertDuration, m.insertErrors, m.deadLetters, m.batchRows, m.rowsRejected, m.paused, m.factsPending, m.factsResolved,
		m.factsCounted, m.factsRepeated, m.factsLate, m.seenDispatch, m.seenLoad,
		m.settleRuns, m.settleErrors, m.keysSettled, m.settleDuration,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering analytics metrics: %w", err)
		}
	}
	return m, nil
}
