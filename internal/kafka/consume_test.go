package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBehind: a handler's context says how far its batch left its
// partitions behind their high watermarks.
func TestBehind(t *testing.T) {
	if _, ok := Behind(t.Context()); ok {
		t.Fatal("Behind outside a handler: ok")
	}
	fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "events", Partitions: []kgo.FetchPartition{
		{Partition: 0, HighWatermark: 10, Records: []*kgo.Record{{Offset: 3}, {Offset: 4}}}, // 5 left
		{Partition: 1, HighWatermark: 7, Records: []*kgo.Record{{Offset: 6}}},               // at the end
		{Partition: 2, HighWatermark: 100},                                                  // no records: unknown
	}}}}}
	if n, ok := Behind(withBehind(t.Context(), fetches)); !ok || n != 5 {
		t.Fatalf("Behind = %d, %v; want 5, true", n, ok)
	}
	if n, _ := Behind(withBehind(t.Context(), fetches[:0])); n != 0 {
		t.Fatalf("Behind of no fetch = %d", n)
	}
}
