package kafka_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestLoopsEndWhenClientClosed: Run and Follow return when their client is
// closed under them while their context is still live (a shutdown that
// closes clients first), instead of polling a closed client, which answers
// at once, in a loop that logs a warning per poll.
func TestLoopsEndWhenClientClosed(t *testing.T) {
	c := kafkatest.New(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	group := c.Client(t, kgo.ConsumerGroup("g"), kgo.ConsumeTopics(schemas.TopicDispatch), kgo.DisableAutoCommit())
	follow := c.Client(t, kafka.FollowOpts(schemas.TopicSegments)...)
	ran, followed := make(chan error, 1), make(chan struct{})
	go func() {
		ran <- kafka.Run(ctx, group, log, func(context.Context, []*kgo.Record) error { return nil })
	}()
	caughtUp := make(chan struct{})
	go func() {
		defer close(followed)
		kafka.Follow(ctx, follow, schemas.TopicSegments, log, func(*kgo.Record) {}, func() { close(caughtUp) })
	}()
	select {
	case <-caughtUp:
	case <-ctx.Done():
		t.Fatal("Follow never caught up with an empty topic")
	}
	group.Close()
	follow.Close()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run after its client closed: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run still polling a closed client")
	}
	select {
	case <-followed:
	case <-ctx.Done():
		t.Fatal("Follow still polling a closed client")
	}
}
