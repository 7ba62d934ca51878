package ingest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func basic(key string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")) }

// seg posts a Segment call with the write key as Basic auth ("" for none).
func (h *harness) seg(typ, key, body string) *http.Response {
	h.t.Helper()
	if key == "" {
		return h.do(http.MethodPost, "/v1/"+typ, body, "Content-Type", "application/json").Result()
	}
	return h.do(http.MethodPost, "/v1/"+typ, body, "Content-Type", "application/json", "Authorization", basic(key)).Result()
}

func segEventID(app, messageID string) string {
	sum := sha256.Sum256([]byte("segment|" + app + "|" + messageID))
	return hex.EncodeToString(sum[:16])
}

func TestSegmentCalls(t *testing.T) {
	ts := "2026-11-20T10:30:00.000Z"
	at := time.Date(2026, 11, 20, 10, 30, 0, 0, time.UTC)
	tests := []struct {
		typ, body string
		want      schemas.Event
	}{
		{
			"track", `{"userId":"u1","messageId":"m-track","event":"Order Completed","timestamp":"` + ts + `",
			"properties":{"revenue":39.95,"items":3,"cuisine":"asian","shipping":{"city":"Berlin","geo":{"lat":52.5}},"tags":["a","b"],"products":[{"sku":"x"}]},
			"context":{"locale":"de-DE","timezone":"Europe/Berlin","ip":"1.2.3.4"}}`,
			schemas.Event{
				ID: segEventID("shop", "m-track"), Kind: schemas.KindEvent, Name: "Order Completed", UserID: "u1", Time: at,
				Language: "de", Timezone: "Europe/Berlin",
				Attributes: map[string]any{
					"revenue": 39.95, "items": 3.0, "cuisine": "asian", "shipping.city": "Berlin", "shipping.geo.lat": 52.5,
					"tags": []any{"a", "b"}, "products": `[{"sku":"x"}]`,
				},
				Context: map[string]any{"locale": "de-DE", "timezone": "Europe/Berlin", "ip": "1.2.3.4"},
			},
		},
		{
			"identify", `{"anonymousId":"anon-1","userId":42,"messageId":"m-id","timestamp":"` + ts + `","traits":{"plan":"pro","vip":true,"logins":7,"interests":["food",3,true],"address":{"country":"DE"}}}`,
			schemas.Event{
				ID: segEventID("shop", "m-id"), Kind: schemas.KindTags, UserID: "42", AnonymousID: "anon-1", Time: at,
				Tags: map[string]any{"plan": "pro", "vip": true, "logins": 7.0, "interests": []any{"food", "3", "true"}, "address.country": "DE"},
			},
		},
		{
			"page", `{"anonymousId":"a2","messageId":"m-page","timestamp":"` + ts + `","name":"Pricing","category":"Docs","properties":{"url":"https://x.example/pricing"}}`,
			schemas.Event{
				ID: segEventID("shop", "m-page"), Kind: schemas.KindEvent, Name: schemas.EventPageView, AnonymousID: "a2", Time: at,
				Attributes: map[string]any{"url": "https://x.example/pricing", "name": "Pricing", "category": "Docs"},
			},
		},
		{
			"screen", `{"userId":"u3","messageId":"m-screen","timestamp":"` + ts + `","name":"Cart"}`,
			schemas.Event{
				ID: segEventID("shop", "m-screen"), Kind: schemas.KindEvent, Name: schemas.EventScreenOpen, UserID: "u3", Time: at,
				Attributes: map[string]any{"name": "Cart"},
			},
		},
		{
			"group", `{"userId":"u4","messageId":"m-group","timestamp":"` + ts + `","groupId":"acme","traits":{"employees":120,"industry":"food"}}`,
			schemas.Event{
				ID: segEventID("shop", "m-group"), Kind: schemas.KindEvent, Name: schemas.EventGroup, UserID: "u4", Time: at,
				Attributes: map[string]any{"group_id": "acme", "employees": 120.0, "industry": "food"},
			},
		},
		{
			"alias", `{"userId":"u5","previousId":"anon-5","messageId":"m-alias","timestamp":"` + ts + `"}`,
			schemas.Event{ID: segEventID("shop", "m-alias"), Kind: schemas.KindAlias, UserID: "u5", PreviousID: "anon-5", Time: at},
		},
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			h := newHarness(t, Config{})
			from := time.Now()
			resp := h.seg(tc.typ, shopKey, tc.body)
			to := time.Now()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			want := tc.want
			want.App = "shop"
			sameEvent(t, h.events(1)[0], &want, from, to)
		})
	}
}

func TestSegmentAuth(t *testing.T) {
	h := newHarness(t, Config{})
	track := func(extra string) string { return `{"userId":"u","event":"E"` + extra + `}` }
	// The write key in the body works as well as Basic auth.
	if r := h.seg("track", "", track(`,"writeKey":"`+shopKey+`"`)); r.StatusCode != 200 {
		t.Fatalf("writeKey in body: %d", r.StatusCode)
	}
	if e := h.events(1)[0]; e.App != "shop" {
		t.Fatalf("app %q", e.App)
	}
	for _, tc := range []struct {
		name, auth, body, field string
	}{
		{"none", "", track(""), "writeKey"},
		{"unknown", basic("nope"), track(""), "Authorization"},
		{"unknown in body", "", track(`,"writeKey":"nope"`), "writeKey"},
		{"differ", basic(shopKey), track(`,"writeKey":"` + otherKey + `"`), "writeKey"},
		{"not basic", "Bearer " + shopKey, track(""), "Authorization"},
		{"api token is not a write key", basic(shopToken), track(""), "Authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"Content-Type", "application/json"}
			if tc.auth != "" {
				hdr = append(hdr, "Authorization", tc.auth)
			}
			wantError(t, h.do(http.MethodPost, "/v1/track", tc.body, hdr...), http.StatusUnauthorized, tc.field)
		})
	}
	if n := h.endOffset(schemas.TopicEvents); n != 1 {
		t.Fatalf("%d records, want only the first", n)
	}
}

func TestSegmentBatch(t *testing.T) {
	h := newHarness(t, Config{})
	// The client's clock is 10 minutes fast: sentAt and originalTimestamp
	// are both on its clock, and the event happened 30s before sending.
	now := time.Now().UTC()
	skewed := now.Add(10 * time.Minute)
	body := fmt.Sprintf(`{"batch":[
		{"type":"track","userId":"u1","messageId":"b1","event":"Viewed","context":{"ip":"9.9.9.9"}},
		{"type":"identify","userId":"u1","messageId":"b2","traits":{"plan":"free"},"originalTimestamp":%q},
		{"type":"track","userId":"u1","messageId":"b1","event":"Viewed"}
	],"context":{"library":{"name":"analytics-go"},"ip":"1.1.1.1"},"sentAt":%q}`,
		skewed.Add(-30*time.Second).Format(time.RFC3339Nano), skewed.Format(time.RFC3339Nano))
	rec := h.do(http.MethodPost, "/v1/batch", body, "Authorization", basic(shopKey))
	resp := wantJSON(t, rec, http.StatusOK)
	if resp["success"] != true || resp["events"] != float64(2) || resp["duplicates"] != float64(1) {
		t.Fatalf("answer %v, want success, 2 events, 1 duplicate", resp)
	}
	evs := h.events(2)
	if got := evs[0].Context; got["ip"] != "9.9.9.9" || got["library"] == nil {
		t.Fatalf("context of the first = %v: want its own ip and the batch's library", got)
	}
	if got := evs[1].Context; got["ip"] != "1.1.1.1" {
		t.Fatalf("context of the second = %v: want the batch's", got)
	}
	if d := evs[1].Time.Sub(now.Add(-30 * time.Second)); d < -2*time.Second || d > 2*time.Second {
		t.Fatalf("skew-corrected time %s is %s off the true time", evs[1].Time, d)
	}
	// A CDP retries the batch: nothing new.
	resp = wantJSON(t, h.do(http.MethodPost, "/v1/batch", body, "Authorization", basic(shopKey)), http.StatusOK)
	if resp["events"] != float64(0) || resp["duplicates"] != float64(3) {
		t.Fatalf("retry answered %v", resp)
	}
	if n := h.endOffset(schemas.TopicEvents); n != 2 {
		t.Fatalf("%d records after the retry, want 2", n)
	}
	// The same messageId from another app is another message.
	rec = h.do(http.MethodPost, "/v1/track", `{"userId":"u1","messageId":"b1","event":"Viewed"}`, "Authorization", basic(otherKey))
	wantJSON(t, rec, http.StatusOK)
	if n := h.endOffset(schemas.TopicEvents); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}

func TestSegmentBadInput(t *testing.T) {
	item := `{"type":"track","userId":"u","event":"E"}`
	items := func(n int) string { return `{"batch":[` + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}` }
	deep := `{"userId":"u","event":"E","properties":{"a":{"b":{"c":{"d":{"e":1}}}}}}`
	tests := []struct {
		name, typ, body string
		code            int
		field           string
	}{
		{"malformed", "track", `{"userId":`, 400, "body"},
		{"not an object", "track", `[1]`, 400, "body"},
		{"no user", "track", `{"event":"E"}`, 400, "userId"},
		{"user object", "track", `{"userId":{"a":1},"event":"E"}`, 400, "userId"},
		{"no event", "track", `{"userId":"u"}`, 400, "event"},
		{"reserved event", "track", `{"userId":"u","event":"PW_WhatsAppReceived"}`, 400, "event"},
		{"properties not object", "track", `{"userId":"u","event":"E","properties":[1]}`, 400, "properties"},
		{"too deep", "track", deep, 400, "properties.a.b.c.d"},
		{"bad timestamp", "track", `{"userId":"u","event":"E","timestamp":"yesterday"}`, 400, "timestamp"},
		{"future", "track", `{"userId":"u","event":"E","timestamp":"2999-01-01T00:00:00Z"}`, 400, "timestamp"},
		{"long id", "identify", `{"userId":"` + strings.Repeat("x", 300) + `"}`, 400, "userId"},
		{"group without id", "group", `{"userId":"u"}`, 400, "groupId"},
		{"alias without previous", "alias", `{"userId":"u"}`, 400, "previousId"},
		{"alias without user", "alias", `{"anonymousId":"a","previousId":"p"}`, 400, "userId"},
		{"single over 32 KB", "track", `{"userId":"u","event":"E","properties":{"x":"` + strings.Repeat("a", 33<<10) + `"}}`, 413, "body"},
		{"empty batch", "batch", `{"batch":[]}`, 400, "batch"},
		{"too many items", "batch", items(2501), 413, "batch"},
		{"batch over 500 KB", "batch", `{"batch":[{"type":"track","userId":"u","event":"E","properties":{"x":"` + strings.Repeat("a", 501<<10) + `"}}]}`, 413, "body"},
		{"item without type", "batch", `{"batch":[` + item + `,{"userId":"u","event":"E"}]}`, 400, "batch[1].type"},
		{"item bad type", "batch", `{"batch":[{"type":"purchase","userId":"u"}]}`, 400, "batch[0].type"},
		{"item without user", "batch", `{"batch":[` + item + `,{"type":"track","event":"E"}]}`, 400, "batch[1].userId"},
		{"item not object", "batch", `{"batch":[` + item + `,7]}`, 400, "batch[1]"},
		{"item field type", "batch", `{"batch":[{"type":"track","userId":"u","event":"E","writeKey":5}]}`, 400, "batch[0].writeKey"},
		{"item other key", "batch", `{"batch":[{"type":"track","userId":"u","event":"E","writeKey":"` + otherKey + `"}],"writeKey":"` + shopKey + `"}`, 401, "batch[0].writeKey"},
	}
	h := newHarness(t, Config{MaxBodyBytes: 4 << 20})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"Content-Type", "application/json"}
			if !strings.Contains(tc.body, `"writeKey":"`) {
				hdr = append(hdr, "Authorization", basic(shopKey))
			}
			wantError(t, h.do(http.MethodPost, "/v1/"+tc.typ, tc.body, hdr...), tc.code, tc.field)
		})
	}
	h.noRecords()
	// 2,500 items is the limit, not over it.
	wantJSON(t, h.do(http.MethodPost, "/v1/batch", items(2500), "Authorization", basic(shopKey)), http.StatusOK)
}

func TestSegmentKafkaDown(t *testing.T) {
	h := newHarness(t, Config{ProduceTimeout: 300 * time.Millisecond})
	body := `{"userId":"u","event":"E","messageId":"k1"}`
	wantJSON(t, h.do(http.MethodPost, "/v1/track", `{"userId":"u","event":"warm-up"}`, "Authorization", basic(shopKey)), http.StatusOK)
	h.kc.Broker.Close()
	rec := h.do(http.MethodPost, "/v1/track", body, "Authorization", basic(shopKey))
	wantError(t, rec, http.StatusServiceUnavailable, "")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Not remembered: the CDP's retry is not a duplicate.
	if h.srv.seen.Contains([]byte(apiSegment + ":shop|" + segEventID("shop", "k1"))) {
		t.Fatal("a messageId Kafka did not acknowledge is in the dedup window")
	}
}

func TestSegmentThrottled(t *testing.T) {
	h := newHarness(t, Config{RatePerCredential: 1, BurstPerCredential: 1})
	wantJSON(t, h.do(http.MethodPost, "/v1/track", `{"userId":"u","event":"E"}`, "Authorization", basic(shopKey)), http.StatusOK)
	rec := h.do(http.MethodPost, "/v1/track", `{"userId":"u","event":"E"}`, "Authorization", basic(shopKey))
	wantError(t, rec, http.StatusTooManyRequests, "Authorization")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
}

// wantJSON checks the status and decodes a JSON answer.
func wantJSON(t *testing.T, rec *httptest.ResponseRecorder, code int) map[string]any {
	t.Helper()
	if rec.Code != code {
		t.Fatalf("status %d, want %d; body %s", rec.Code, code, rec.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("decoding answer %s: %v", rec.Body, err)
	}
	return m
}
