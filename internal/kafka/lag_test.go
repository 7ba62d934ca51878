package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestLagCollector: the lag reported is the end offsets minus the group's
// commits, per topic, and the largest partition's.
func TestLagCollector(t *testing.T) {
	c := kafkatest.New(t, 2)
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, 10)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: schemas.TopicDispatch, Partition: int32(i % 2), Value: []byte("x")}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Group "done" consumes and commits 6 of the 10 records.
	consumer := c.Client(t, kgo.ConsumerGroup("done"), kgo.ConsumeTopics(schemas.TopicDispatch), kgo.DisableAutoCommit())
	var got []*kgo.Record
	for len(got) < 10 && ctx.Err() == nil {
		got = append(got, consumer.PollFetches(ctx).Records()...)
	}
	var commit []*kgo.Record
	seen := map[int32]int{}
	for _, r := range got {
		if seen[r.Partition] < 3 {
			commit = append(commit, r)
			seen[r.Partition]++
		}
	}
	if err := consumer.CommitRecords(ctx, commit...); err != nil {
		t.Fatal(err)
	}

	lc := kafka.NewLagCollector(cl, "done", "never")
	reg := prometheus.NewRegistry()
	reg.MustRegister(lc)
	want := `
# HELP herald_kafka_consumer_group_lag Records of the topic not yet committed by the consumer group, summed over partitions.
# TYPE herald_kafka_consumer_group_lag gauge
herald_kafka_consumer_group_lag{group="done",topic="herald.dispatch.v1"} 4
# HELP herald_kafka_consumer_group_max_partition_lag The largest uncommitted-record count of one partition of the topic for the consumer group.
# TYPE herald_kafka_consumer_group_max_partition_lag gauge
herald_kafka_consumer_group_max_partition_lag{group="done",topic="herald.dispatch.v1"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "herald_kafka_consumer_group_lag", "herald_kafka_consumer_group_max_partition_lag"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(lc, "herald_kafka_consumer_group_members"); n < 1 {
		t.Fatalf("members reported for %d groups", n)
	}
}
