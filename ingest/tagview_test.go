package ingest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

const pathGetTags = "/json/1.3/getTags"

// startTagView runs a view on h's broker until the test ends.
func (h *harness) startTagView(t *testing.T) *TagView {
	t.Helper()
	v, err := NewTagView(TagViewConfig{}, h.kc.Config, slog.New(slog.NewTextHandler(t.Output(), nil)), h.prom)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = v.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); v.Close() })
	h.srv.ServeTags(v)
	return v
}

// produceTags writes records to TopicTags as the segmenter does.
func (h *harness) produceTags(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	cl := h.kc.Client(t)
	for _, r := range recs {
		r.Topic = schemas.TopicTags
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func tagsRecord(t *testing.T, pt *schemas.ProfileTags) *kgo.Record {
	t.Helper()
	b, err := pt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Key: pt.Key(), Value: b}
}

// eventually retries f until it returns "" or 10 s pass.
func eventually(t *testing.T, f func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGetTags(t *testing.T) {
	h := newHarness(t, Config{})
	const hwid = "whatsapp:+4915123456789"
	updated := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

	// Without a view, and before the view has read the topic: 503.
	body := `{"request":{"application":"shop","hwid":"` + hwid + `"}}`
	rec := h.post(pathGetTags, shopToken, body)
	wantError(t, rec, http.StatusServiceUnavailable, "")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}

	// What the segmenter wrote before ingest started: an older and a newer
	// state of one profile, the same number in another app, a profile known
	// by user id, a bad record, and a profile deleted by a tombstone.
	h.produceTags(t,
		tagsRecord(t, &schemas.ProfileTags{App: "shop", HWID: hwid, Registered: true, Tags: map[string]any{"City": "Bonn"}, Updated: updated.Add(-time.Hour)}),
		tagsRecord(t, &schemas.ProfileTags{App: "other", HWID: hwid, Registered: true, Tags: map[string]any{"City": "Paris"}, Updated: updated}),
		tagsRecord(t, &schemas.ProfileTags{App: "shop", UserID: "u-42", Tags: map[string]any{"Plan": "gold"}, Updated: updated}),
		&kgo.Record{Key: []byte("shop|whatsapp:+4915122222222"), Value: []byte(`{"v":1,"app":"shop"}`)},
		tagsRecord(t, &schemas.ProfileTags{App: "shop", HWID: "whatsapp:+4915111111111", Tags: map[string]any{"x": 1.0}, Updated: updated}),
		&kgo.Record{Key: []byte("shop|whatsapp:+4915111111111")},
		tagsRecord(t, &schemas.ProfileTags{
			App: "shop", HWID: hwid, Registered: true, Updated: updated,
			Tags: map[string]any{"City": "Berlin", "Age": 31.0, "VIP": true, "Likes": []string{"sushi"}, "Language": "de", "Country": "DE"},
		}),
	)
	v := h.startTagView(t)
	eventually(t, func() string {
		if !v.Ready() {
			return "the view did not catch up"
		}
		return ""
	})

	type answer struct {
		Result     map[string]any `json:"result"`
		Registered bool           `json:"registered"`
		Updated    time.Time      `json:"updated"`
	}
	get := func(t *testing.T, token, body string) answer {
		t.Helper()
		resp := wantOK(t, h.post(pathGetTags, token, body))
		b, _ := json.Marshal(resp)
		var a answer
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	sameJSON := func(t *testing.T, got any, want string) {
		t.Helper()
		b, _ := json.Marshal(got)
		var w any
		if err := json.Unmarshal([]byte(want), &w); err != nil {
			t.Fatal(err)
		}
		wb, _ := json.Marshal(w)
		if string(b) != string(wb) {
			t.Fatalf("got %s, want %s", b, wb)
		}
	}

	t.Run("latest state of a profile, typed", func(t *testing.T) {
		a := get(t, shopToken, body)
		sameJSON(t, a.Result, `{"Age":31,"City":"Berlin","Country":"DE","Language":"de","Likes":["sushi"],"VIP":true}`)
		if !a.Registered || !a.Updated.Equal(updated) {
			t.Fatalf("registered %v updated %s", a.Registered, a.Updated)
		}
	})
	t.Run("hwid normalised as at registration, second token, auth in the body", func(t *testing.T) {
		a := get(t, "", `{"request":{"application":"shop","auth":"`+shopToken2+`","hwid":"whatsapp:+49 151 2345 6789"}}`)
		sameJSON(t, a.Result["City"], `"Berlin"`)
	})
	t.Run("by user id", func(t *testing.T) {
		a := get(t, shopToken, `{"request":{"application":"shop","userId":"u-42"}}`)
		sameJSON(t, a.Result, `{"Plan":"gold"}`)
	})
	t.Run("each app sees its own profile of one number", func(t *testing.T) {
		a := get(t, otherToken, `{"request":{"application":"other","hwid":"`+hwid+`"}}`)
		sameJSON(t, a.Result, `{"City":"Paris"}`)
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tt := range []struct {
			name, token, body string
			code              int
			field             string
		}{
			{"another app's data", shopToken, `{"request":{"application":"other","hwid":"` + hwid + `"}}`, http.StatusForbidden, "request.application"},
			{"no token", "", body, http.StatusUnauthorized, "request.auth"},
			{"unknown token", "nope-token-0123456789", body, http.StatusUnauthorized, "Authorization"},
			{"unknown number", shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+4915199999999"}}`, http.StatusNotFound, "request.hwid"},
			{"deleted by a tombstone", shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+4915111111111"}}`, http.StatusNotFound, "request.hwid"},
			{"invalid record not stored", shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+4915122222222"}}`, http.StatusNotFound, "request.hwid"},
			{"unknown user id", shopToken, `{"request":{"application":"shop","userId":"u-43"}}`, http.StatusNotFound, "request.userId"},
			{"neither hwid nor userId", shopToken, `{"request":{"application":"shop"}}`, http.StatusBadRequest, "request.hwid"},
			{"invalid number", shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+12"}}`, http.StatusBadRequest, "request.hwid"},
			{"malformed JSON", shopToken, `{"request":`, http.StatusBadRequest, "body"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantError(t, h.post(pathGetTags, tt.token, tt.body), tt.code, tt.field)
			})
		}
		wantError(t, h.do(http.MethodGet, pathGetTags, ""), http.StatusMethodNotAllowed, "")
	})
	t.Run("follows the topic", func(t *testing.T) {
		h.produceTags(t, tagsRecord(t, &schemas.ProfileTags{App: "shop", HWID: hwid, Updated: updated.Add(time.Minute), Tags: map[string]any{"City": "Hamburg"}}))
		eventually(t, func() string {
			if a := get(t, shopToken, body); a.Result["City"] != "Hamburg" || a.Registered {
				return "the update did not reach getTags"
			}
			return ""
		})
	})
	if got := metricValue(t, v.records.WithLabelValues("invalid")); got != 1 {
		t.Fatalf("invalid records %v, want 1", got)
	}
	if got := metricValue(t, v.records.WithLabelValues("deleted")); got != 1 {
		t.Fatalf("deleted records %v, want 1", got)
	}
	h.noRecords() // getTags writes nothing
}

func TestTagViewConfig(t *testing.T) {
	c := TagViewConfig{}
	if err := c.Validate(); err != nil || c.CacheBytes != defaultTagViewBytes {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c = TagViewConfig{CacheBytes: -1}
	if err := c.Validate(); err == nil {
		t.Fatal("negative cache_bytes accepted")
	}
	// One view per registry: a second one is refused, not a panic.
	reg := prometheus.NewRegistry()
	h := newHarness(t, Config{})
	v, err := NewTagView(TagViewConfig{}, h.kc.Config, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := NewTagView(TagViewConfig{}, h.kc.Config, nil, reg); err == nil {
		t.Fatal("second view on one registry accepted")
	}
}
