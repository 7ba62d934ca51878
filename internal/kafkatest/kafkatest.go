// Package kafkatest gives tests a real Kafka protocol broker: franz-go's
// kfake, in process, with Herald's topics created, closed when the test ends.
package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// Cluster is a test broker and a ready config pointing at it.
type Cluster struct {
	Config  kafka.Config
	Broker  *broker.Broker
	Cluster *kfake.Cluster
}

// New starts a broker with every Herald topic (partitions each) and stops it
// when t ends.
func New(t testing.TB, partitions int32) *Cluster {
	t.Helper()
	if partitions <= 0 {
		partitions = 4
	}
	b, err := broker.Start(broker.Config{Partitions: partitions, Topics: schemas.Topics}, nil)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(b.Close)
	cfg := kafka.Config{Brokers: b.Addrs(), Partitions: partitions}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Broker: b, Cluster: b.Cluster()}
}

// Client returns a plain client to the cluster, closed when t ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(c.Config.Opts(nil), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// ReadAll consumes topic from the start until it has read n records or the
// test's deadline (or 10 s) passes, and returns what it read.
func (c *Cluster) ReadAll(t testing.TB, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	return readN(t, cl, n)
}
