package kafka

import (
	"context"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lagTimeout bounds the broker requests of one scrape.
const lagTimeout = 5 * time.Second

// LagCollector is a Prometheus collector of consumer-group lag, computed
// from the brokers at scrape time (kadm's Lag: the end offset of each
// partition minus the group's committed offset; a partition the group never
// committed counts whole). Every replica of a stage reports the same value
// for its group, so dashboards and alerts take max by (group, topic).
//
// Metrics:
//
//	herald_kafka_consumer_group_lag{group,topic}             records not yet committed by the group, summed over the topic's partitions
//	herald_kafka_consumer_group_max_partition_lag{group,topic} the largest lag of one partition (a stuck partition hides in the sum)
//	herald_kafka_consumer_group_members{group}               members of the group (replicas consuming)
//	herald_kafka_consumer_group_lag_errors_total{group}      scrapes whose lag could not be read
type LagCollector struct {
	adm    *kadm.Client
	groups []string

	lag, maxLag, members *prometheus.Desc
	errors               *prometheus.CounterVec
}

var _ prometheus.Collector = (*LagCollector)(nil)

// NewLagCollector reports the lag of groups through cl (any client: it
// only issues admin requests).
func NewLagCollector(cl *kgo.Client, groups ...string) *LagCollector {
	c := &LagCollector{
		adm:    kadm.NewClient(cl),
		groups: groups,
		lag: prometheus.NewDesc("herald_kafka_consumer_group_lag",
			"Records of the topic not yet committed by the consumer group, summed over partitions.", []string{"group", "topic"}, nil),
		maxLag: prometheus.NewDesc("herald_kafka_consumer_group_max_partition_lag",
			"The largest uncommitted-record count of one partition of the topic for the consumer group.", []string{"group", "topic"}, nil),
		members: prometheus.NewDesc("herald_kafka_consumer_group_members",
			"Members of the consumer group.", []string{"group"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_kafka_consumer_group_lag_errors_total",
			Help: "Scrapes whose consumer-group lag could not be read from the brokers.",
		}, []string{"group"}),
	}
	for _, g := range groups {
		c.errors.WithLabelValues(g)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.maxLag
	ch <- c.members
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
	defer cancel()
	lags, err := c.adm.Lag(ctx, c.groups...)
	seen := make(map[string]bool, len(c.groups))
	for _, g := range c.groups {
		if seen[g] {
			continue // each group's series once, even if named twice
		}
		seen[g] = true
		l, ok := lags[g]
		if err != nil || !ok || l.Error() != nil {
			c.errors.WithLabelValues(g).Inc()
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(len(l.Members)), g)
		topics := make([]string, 0, len(l.Lag))
		for t := range l.Lag {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			var sum, top int64
			for _, p := range l.Lag[t] {
				if p.Lag < 0 { // unknown (the partition's end could not be read)
					continue
				}
				sum += p.Lag
				top = max(top, p.Lag)
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(sum), g, t)
			ch <- prometheus.MustNewConstMetric(c.maxLag, prometheus.GaugeValue, float64(top), g, t)
		}
	}
	c.errors.Collect(ch)
}
