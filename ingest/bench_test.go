package ingest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/internal/kafkatest"
)

// benchServer is a Server on a real kfake broker, rate limit off.
func benchServer(b *testing.B) http.Handler {
	b.Helper()
	kc := kafkatest.New(b, 8)
	srv, err := New(Config{RatePerCredential: -1}, testRegistry(b), kc.Client(b), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return srv.Handler()
}

// benchRequests serves requests made by mk from parallel goroutines, each
// answered after Kafka acknowledged, and reports events/s; allocs/op are per
// request (per event for single-event calls). The HTTP transport is left
// out: loopback figures are in docs/BENCHMARKS.md (herald loadgen, wrk).
func benchRequests(b *testing.B, eventsPerRequest int, mk func(n int64) (path, body string, hdr http.Header)) {
	h := benchServer(b)
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // requests wait for Kafka: keep many in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			path, body, hdr := mk(seq.Add(1))
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Header = hdr
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
			}
		}
	})
	b.ReportMetric(float64(b.N*eventsPerRequest)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkPostEvent(b *testing.B) {
	hdr := http.Header{"Content-Type": {"application/json"}, "Authorization": {"Token " + shopToken}}
	benchRequests(b, 1, func(n int64) (string, string, http.Header) {
		return pathEvent, fmt.Sprintf(`{"request":{"application":"shop","hwid":"whatsapp:+9198%08d","event":"OrderPlaced","attributes":{"cuisine":"asian","amount":%d,"currency":"USD"}}}`,
			n%100_000, n%60), hdr
	})
}

func BenchmarkWebhookStatus(b *testing.B) {
	benchRequests(b, 1, func(n int64) (string, string, http.Header) {
		body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"waba","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":%q},"statuses":[{"id":"wamid.b%d","status":"delivered","timestamp":"1749416383","recipient_id":"9198%08d","pricing":{"billable":true,"pricing_model":"PMP","category":"marketing"}}]}}]}]}`,
			shopPhone1, n, n%100_000)
		return "/whatsapp/webhooks", body, http.Header{"Content-Type": {"application/json"}, signatureHeader: {sign(secretA, body)}}
	})
}

// BenchmarkSegmentBatch: /v1/batch of 500 track calls; allocs/op are per
// batch (divide by 500 for per event).
func BenchmarkSegmentBatch(b *testing.B) {
	const size = 500
	hdr := http.Header{"Content-Type": {"application/json"}, "Authorization": {basic(shopKey)}}
	benchRequests(b, size, func(n int64) (string, string, http.Header) {
		var sb strings.Builder
		sb.WriteString(`{"batch":[`)
		for i := range size {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"type":"track","messageId":"b-%d-%d","userId":"user-%d","event":"Order Completed","properties":{"cuisine":"asian","revenue":%d}}`,
				n, i, (n*size+int64(i))%100_000, i%60)
		}
		sb.WriteString(`],"context":{"library":{"name":"bench"}}}`)
		return "/v1/batch", sb.String(), hdr
	})
}
