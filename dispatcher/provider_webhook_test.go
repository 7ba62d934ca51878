package dispatcher

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestWebhookSends: a journey's webhook calls reach the app's endpoint
// signed, 503 is retried, 400 fails with the status, an app without a
// secret gets no call.
func TestWebhookSends(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte("whsec-test"))
		mac.Write(b)
		if r.Header.Get("X-Herald-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("X-Herald-Dispatch-Id")
		mu.Lock()
		calls[id]++
		n := calls[id]
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		bodies = append(bodies, m)
		mu.Unlock()
		switch {
		case id == "wh-retry" && n == 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case id == "wh-bad":
			http.Error(w, "no such user", http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	c := kafkatest.New(t, 2)
	now := time.Now().UTC()
	req := func(id, app string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: app, Channel: schemas.ChannelWebhook, To: "x", HWID: "whatsapp:+15550000001",
			Webhook: &schemas.Webhook{URL: srv.URL + "/herald", Body: map[string]any{"plan": "gold", "points": 3.0}},
			Source:  schemas.Source{Kind: "journey", Name: "vip"}, Created: now, Deadline: now.Add(time.Minute),
		}
	}
	produce(t, c.Client(t), dispatchRecord(t, req("wh-ok", "shop")), dispatchRecord(t, req("wh-retry", "shop")),
		dispatchRecord(t, req("wh-bad", "shop")), dispatchRecord(t, req("wh-unsigned", "other")))
	_, stop := startDispatcher(t, c, newFakeMeta(t), Config{MaxAttempts: 3, Limiter: LimiterConfig{Mode: LimiterNone}})
	got := map[string]*schemas.Outcome{}
	for _, o := range readOutcomes(t, c, 4) {
		got[o.DispatchID] = o
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]struct {
		state    schemas.OutcomeState
		code     int
		attempts int
	}{
		"wh-ok": {schemas.OutcomeAccepted, 0, 1}, "wh-retry": {schemas.OutcomeAccepted, 0, 2},
		"wh-bad": {schemas.OutcomeFailed, 400, 1}, "wh-unsigned": {schemas.OutcomeFailed, 0, 0},
	} {
		o := got[id]
		if o == nil || o.State != want.state || o.Attempts != want.attempts || (want.code != 0 && o.ErrorCode != want.code) {
			t.Errorf("%s: %+v, want %+v", id, o, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["wh-unsigned"] != 0 {
		t.Fatal("an app without a secret got a call")
	}
	if b := bodies[0]; b["app"] != "shop" || b["hwid"] != "whatsapp:+15550000001" || b["body"].(map[string]any)["plan"] != "gold" {
		t.Fatalf("call body %v", b)
	}
}
