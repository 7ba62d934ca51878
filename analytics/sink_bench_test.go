package analytics

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// BenchmarkWrite measures Write into the real ClickHouse of chtest: batches
// of 5000 records (half inbound events, a quarter status events that also
// fill statuses, a quarter outcomes), decoded, split and inserted.
func BenchmarkWrite(b *testing.B) {
	_, conn := migratedDB(b)
	s, _, _ := newSink(b, Config{}, conn)
	const n = 5000
	o := offsets{}
	recs := make([]*kgo.Record, 0, n)
	var bytes int64
	for i := range n {
		at := base.Add(time.Duration(i) * time.Millisecond)
		var rec *kgo.Record
		switch i % 4 {
		case 0, 1:
			e := inbound(fmt.Sprintf("in-%d", i), "demo", fmt.Sprintf("+88017110%05d", i), "hi there", at)
			rec = o.rec(b, schemas.TopicEvents, e.Key(), e)
		case 2:
			e := status(fmt.Sprintf("st-%d", i), "demo", fmt.Sprintf("wamid.%d", i), "delivered", fmt.Sprintf("d%d", i), at)
			rec = o.rec(b, schemas.TopicEvents, e.Key(), e)
		case 3:
			x := outcome(fmt.Sprintf("d%d", i), "demo", schemas.OutcomeAccepted, "welcome", at)
			rec = o.rec(b, schemas.TopicOutcomes, x.Key(), x)
		}
		bytes += int64(len(rec.Value))
		recs = append(recs, rec)
	}
	rowsPerBatch := n + n/4 // status events make two rows
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Write(b.Context(), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*rowsPerBatch)/b.Elapsed().Seconds(), "rows/s")
}
