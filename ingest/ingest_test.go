package ingest

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      Config
		want    Config
		wantErr string
	}{
		{"defaults", Config{}, Config{MaxBodyBytes: 1 << 20, ProduceTimeout: 10 * time.Second, RatePerCredential: 5000, BurstPerCredential: 10000, DedupWindow: 24 * time.Hour}, ""},
		{
			"kept",
			Config{MaxBodyBytes: 4096, ProduceTimeout: time.Second, RatePerCredential: 5, BurstPerCredential: 7, DedupWindow: time.Hour, DedupMaxBytes: 64 << 20},
			Config{MaxBodyBytes: 4096, ProduceTimeout: time.Second, RatePerCredential: 5, BurstPerCredential: 7, DedupWindow: time.Hour, DedupMaxBytes: 64 << 20},
			"",
		},
		{"no rate limit", Config{RatePerCredential: -1}, Config{MaxBodyBytes: 1 << 20, ProduceTimeout: 10 * time.Second, RatePerCredential: -1, DedupWindow: 24 * time.Hour}, ""},
		{"negative dedup window", Config{DedupWindow: -time.Second}, Config{}, "dedup_window"},
		{"negative dedup bytes", Config{DedupMaxBytes: -1}, Config{}, "dedup_max_bytes"},
		{"negative burst", Config{BurstPerCredential: -1}, Config{}, "burst_per_credential"},
		{"negative body", Config{MaxBodyBytes: -1}, Config{}, "max_body_bytes"},
		{"huge body", Config{MaxBodyBytes: 1 << 30}, Config{}, "max_body_bytes"},
		{"negative timeout", Config{ProduceTimeout: -time.Second}, Config{}, "produce_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in
			err := got.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	reg := testRegistry(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if _, err := New(Config{}, nil, cl, nil, nil); err == nil {
		t.Fatal("no error without a registry")
	}
	if _, err := New(Config{}, reg, nil, nil, nil); err == nil {
		t.Fatal("no error without a client")
	}
	if _, err := New(Config{MaxBodyBytes: -1}, reg, cl, nil, nil); err == nil {
		t.Fatal("no error for a bad config")
	}
	prom := prometheus.NewRegistry()
	if _, err := New(Config{}, reg, cl, nil, prom); err != nil {
		t.Fatal(err)
	}
	var are prometheus.AlreadyRegisteredError
	if _, err := New(Config{}, reg, cl, nil, prom); !errors.As(err, &are) {
		t.Fatalf("second registration: %v, want AlreadyRegisteredError", err)
	}
}

// TestKafkaUnreachable: when Kafka cannot acknowledge, every route answers
// 503 with Retry-After within ProduceTimeout, never 200.
func TestKafkaUnreachable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := newHarness(t, Config{ProduceTimeout: timeout})
	// The client is connected and working...
	wantOK(t, h.post(pathSetTags, shopToken, `{"request":{"application":"shop","userId":"u","tags":{"a":1}}}`))
	// ...then the broker goes away.
	h.kc.Broker.Close()
	tests := []struct {
		name string
		send func() *http.Response
	}{
		{"registerDevice", func() *http.Response {
			return h.post(pathRegister, shopToken, `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+16505551234"}}`).Result()
		}},
		{"setTags", func() *http.Response {
			return h.post(pathSetTags, shopToken, `{"request":{"application":"shop","userId":"u","tags":{"a":2}}}`).Result()
		}},
		{"postEvent", func() *http.Response {
			return h.post(pathEvent, shopToken, `{"request":{"application":"shop","userId":"u","event":"E"}}`).Result()
		}},
		{"webhook", func() *http.Response {
			return h.webhook(secretA, textDelivery(shopPhone1, "16505551234", "wamid.x", "hi")).Result()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp := tc.send()
			took := time.Since(start)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503", resp.StatusCode)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "5" {
				t.Fatalf("Retry-After %q, want 5", ra)
			}
			if took > timeout+2*time.Second {
				t.Fatalf("answered after %s, produce timeout is %s", took, timeout)
			}
		})
	}
	// And through wantError for the body.
	wantError(t, h.post(pathEvent, shopToken, `{"request":{"application":"shop","userId":"u","event":"E"}}`), http.StatusServiceUnavailable, "")
	if n := metricValue(t, h.srv.m.requests.WithLabelValues(routePostEvent, "503")); n != 2 {
		t.Fatalf("post_event 503s counted %v, want 2", n)
	}
}

// TestKafkaNeverReachable: a client that never reached a broker.
func TestKafkaNeverReachable(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	srv, err := New(Config{ProduceTimeout: 200 * time.Millisecond}, testRegistry(t), cl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, h: srv.Handler()}
	wantError(t, h.post(pathRegister, shopToken, `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+16505551234"}}`),
		http.StatusServiceUnavailable, "")
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, Config{})
	wantOK(t, h.post(pathRegister, shopToken, `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+16505551234"}}`))
	wantError(t, h.post(pathRegister, "", `{"request":{"application":"shop"}}`), 401, "request.auth")
	wantOK(t, h.webhook(secretA, textDelivery(shopPhone1, "16505551234", "wamid.m", "hi")))
	wantError(t, h.do(http.MethodPost, "/whatsapp/webhooks", `{}`), 401, "X-Hub-Signature-256")
	wantError(t, h.do(http.MethodGet, "/nope", ``), 404, "")

	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{h.srv.m.requests.WithLabelValues(routeRegisterDevice, "200"), 1},
		{h.srv.m.requests.WithLabelValues(routeRegisterDevice, "401"), 1},
		{h.srv.m.requests.WithLabelValues(routeWebhook, "200"), 1},
		{h.srv.m.requests.WithLabelValues(routeWebhook, "401"), 1},
		{h.srv.m.requests.WithLabelValues(routeNotFound, "404"), 1},
		{h.srv.m.produced.WithLabelValues("register"), 1},
		{h.srv.m.produced.WithLabelValues("inbound"), 1},
		{h.srv.m.sigFailures, 1},
		{h.srv.m.foreign, 0},
	} {
		if got := metricValue(t, c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c, got, c.want)
		}
	}
	if n := seriesCount(h.srv.m.duration); n != 3 {
		t.Errorf("duration series %d, want 3 (register, webhook, not found)", n)
	}
	mfs, err := h.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{
		"herald_ingest_requests_total", "herald_ingest_request_duration_seconds", "herald_ingest_records_produced_total",
		"herald_ingest_webhook_signature_failures_total", "herald_ingest_webhook_foreign_changes_total",
	} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}

func TestContentType(t *testing.T) {
	h := newHarness(t, Config{})
	body := `{"request":{"application":"shop","device_type":21,"hwid":"whatsapp:+16505551234"}}`
	for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/xml", "application/xml", "nonsense/"} {
		rec := h.do(http.MethodPost, pathRegister, body, "Authorization", "Token "+shopToken, "Content-Type", ct)
		wantError(t, rec, http.StatusUnsupportedMediaType, "Content-Type")
	}
	h.noRecords()
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "text/plain;charset=UTF-8", "application/vnd.api+json"} {
		wantOK(t, h.do(http.MethodPost, pathRegister, body, "Authorization", "Token "+shopToken, "Content-Type", ct))
	}
	if got := len(h.events(5)); got != 5 {
		t.Fatalf("%d events, want 5", got)
	}
}
