package ingest

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLimiterBucket(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(10, 3, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("past the burst: ok %v wait %s, want refused and 100ms", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another credential is limited by the first one's use")
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("a token refilled after 1/rate is refused")
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("refill gave more than rate*elapsed tokens")
	}
	now = now.Add(time.Hour)
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("after an idle hour, request %d refused: refill must cap at the burst, not below", i)
		}
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("refill exceeded the burst")
	}
	// Idle full buckets are swept.
	now = now.Add(2 * time.Minute)
	l.allow("c")
	total := 0
	for i := range l.shards {
		total += len(l.shards[i].buckets)
	}
	if total > 3 {
		t.Fatalf("%d buckets kept after every credential went idle", total)
	}
	if newLimiter(-1, 0, time.Now) != nil {
		t.Fatal("a negative rate must disable the limiter")
	}
	var off *limiter
	if ok, _ := off.allow("x"); !ok {
		t.Fatal("a nil limiter refused")
	}
}

// TestPushwooshRateLimit: a token over its rate gets 429 with Retry-After
// and a JSON error naming where the token came from; nothing is produced for
// the refused call; another app's token is unaffected.
func TestPushwooshRateLimit(t *testing.T) {
	h := newHarness(t, Config{RatePerCredential: 0.001, BurstPerCredential: 1})
	body := `{"request":{"application":"shop","hwid":"whatsapp:+16505551234","event":"OrderPlaced"}}`
	wantOK(t, h.post(pathEvent, shopToken, body))
	rec := h.post(pathEvent, shopToken, body)
	wantError(t, rec, http.StatusTooManyRequests, "Authorization")
	if ra := rec.Header().Get("Retry-After"); ra != "1000" {
		t.Fatalf("Retry-After %q, want 1000 (one token at 0.001/s)", ra)
	}
	wantOK(t, h.post(pathEvent, newsToken, `{"request":{"application":"news","hwid":"whatsapp:+16505551234","event":"OrderPlaced"}}`))
	h.events(2)
	if n := testutil.ToFloat64(h.srv.m.throttled); n != 1 {
		t.Fatalf("throttled counter %v, want 1", n)
	}
}
