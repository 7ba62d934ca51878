package ingest

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heraldhq/herald/internal/service"
)

// TestHostileBodies: deeply nested JSON and invalid UTF-8 on every API
// family get a 4xx JSON error naming the field, and nothing reaches Kafka.
func TestHostileBodies(t *testing.T) {
	h := newHarness(t, Config{})
	h.startTagView(t)
	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	deepObj := strings.Repeat(`{"a":`, 20_000) + "1" + strings.Repeat("}", 20_000)
	deepSmall := strings.Repeat("[", 15_000) + strings.Repeat("]", 15_000) // under Segment's 32 KB per call
	bad := "\xff\xfe"
	pw := func(path, fields string) func() *httptest.ResponseRecorder {
		return func() *httptest.ResponseRecorder {
			return h.post(path, shopToken, `{"request":{"application":"shop",`+fields+`}}`)
		}
	}
	seg := func(typ, body string) func() *httptest.ResponseRecorder {
		return func() *httptest.ResponseRecorder {
			return h.do(http.MethodPost, "/v1/"+typ, body, "Content-Type", "application/json", "Authorization", basic(shopKey))
		}
	}
	wh := func(body string) func() *httptest.ResponseRecorder {
		return func() *httptest.ResponseRecorder { return h.webhook(secretA, body) }
	}
	const wa = `"hwid":"whatsapp:+16505551234"`
	tests := []struct {
		name  string
		send  func() *httptest.ResponseRecorder
		code  int
		field string
	}{
		{"registerDevice nested arrays", pw(pathRegister, `"device_type":21,`+wa+`,"tags":{"a":`+deep+`}`), 400, "body"},
		{"postEvent nested objects", pw(pathEvent, `"userId":"u","event":"E","attributes":`+deepObj), 400, "body"},
		{"setTags nested body", func() *httptest.ResponseRecorder { return h.post(pathSetTags, shopToken, deep) }, 400, "body"},
		{"setTags invalid UTF-8 tag value", pw(pathSetTags, wa+`,"tags":{"City":"`+bad+`"}`), 400, "body"},
		{"postEvent invalid UTF-8 event name", pw(pathEvent, wa+`,"event":"`+bad+`"`), 400, "body"},
		{"postEvent invalid UTF-8 attribute", pw(pathEvent, wa+`,"event":"E","attributes":{"note":"`+bad+`"}`), 400, "body"},
		{"registerUser invalid UTF-8 user id", pw("/json/1.3/registerUser", `"userId":"`+bad+`"`), 400, "body"},
		{"getTags invalid UTF-8 user id", pw(pathGetTags, `"userId":"`+bad+`"`), 400, "body"},
		{"createWhatsAppMessage invalid UTF-8 content", pw(pathWhatsApp, `"notifications":[{"content":"`+bad+`","devices":["+16505551234"]}]`), 400, "body"},
		{"Segment track nested", seg("track", `{"userId":"u","event":"E","properties":{"a":`+deepSmall+`}}`), 400, "body"},
		{"Segment batch nested", seg("batch", `{"batch":`+deep+`}`), 400, "body"},
		{"Segment track invalid UTF-8 event", seg("track", `{"userId":"u","event":"`+bad+`"}`), 400, "body"},
		{"Segment identify invalid UTF-8 trait", seg("identify", `{"userId":"u","traits":{"name":"`+bad+`"}}`), 400, "body"},
		{"webhook invalid UTF-8 text", wh(strings.Replace(textDelivery(shopPhone1, "16505551234", "wamid.u", "BAD"), "BAD", bad, 1)), 400, "body"},
		{"webhook nested", wh(`{"object":"whatsapp_business_account","entry":` + deep + `}`), 400, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, tt.send(), tt.code, tt.field)
		})
	}
	h.noRecords()
}

// TestShutdownDrains: a request waiting for Kafka's acknowledgement when
// the server is told to stop is answered 200 and its record is in Kafka;
// the server then stops taking connections.
func TestShutdownDrains(t *testing.T) {
	h := newHarness(t, Config{})
	// Hold the first produce request in the broker until released.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.kc.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			h.kc.Cluster.SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	srv, err := service.Listen("127.0.0.1:0", h.h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL()+pathEvent,
			strings.NewReader(`{"request":{"application":"shop","userId":"u-1","event":"Checkout"}}`))
		req.Header.Set("Authorization", "Token "+shopToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- result{err: err}
			return
		}
		resp.Body.Close()
		answered <- result{code: resp.StatusCode}
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached Kafka")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(30 * time.Second) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case r := <-answered:
		t.Fatalf("the request was answered (%+v) before Kafka acknowledged", r)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if r := <-answered; r.err != nil || r.code != http.StatusOK {
		t.Fatalf("in-flight request: %+v, want 200", r)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if evs := h.events(1); evs[0].Name != "Checkout" || evs[0].UserID != "u-1" {
		t.Fatalf("event %+v", evs[0])
	}
	if _, err := http.Post(srv.URL()+pathEvent, "application/json", strings.NewReader("{}")); err == nil {
		t.Fatal("a stopped server took a new request")
	}
}
