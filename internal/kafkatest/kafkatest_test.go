package kafkatest

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

func TestProduceConsume(t *testing.T) {
	c := New(t, 2)
	cl := c.Client(t)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: schemas.TopicEvents, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if got := c.ReadAll(t, schemas.TopicEvents, 1); len(got) != 1 || string(got[0].Value) != "x" {
		t.Fatalf("read %v", got)
	}
}
