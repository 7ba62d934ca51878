package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// Test tenants. shop and news share one Meta app (secretA), other has its
// own (secretB).
const (
	shopToken  = "shop-token-0123456789"
	newsToken  = "news-token-0123456789"
	otherToken = "other-token-0123456789"
	shopToken2 = "shop-token2-0123456789" // shop's second API token
	shopKey    = "shop-segment-write-key" // Segment write keys
	otherKey   = "other-segment-write-key"
	secretA    = "meta-app-secret-A"
	secretB    = "meta-app-secret-B"

	shopPhone1 = "1001" // phone-number ids
	shopPhone2 = "1002"
	newsPhone  = "2001"
	otherPhone = "3001"
	shopWABA   = "102290129340398" // WhatsApp Business account ids
	otherWABA  = "302290129340398"
)

func testRegistry(t testing.TB) *apps.Registry {
	t.Helper()
	reg, err := apps.New([]apps.App{
		{ID: "shop", APIToken: shopToken, APITokens: []string{shopToken2}, SegmentWriteKey: shopKey, WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{shopPhone1, shopPhone2}, WABAID: shopWABA, AppSecret: secretA, VerifyToken: "verify-shop",
		}},
		{ID: "news", APIToken: newsToken, WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{newsPhone}, AppSecret: secretA, VerifyToken: "verify-news",
		}},
		{ID: "other", APIToken: otherToken, SegmentWriteKey: otherKey, WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{otherPhone}, WABAID: otherWABA, AppSecret: secretB, VerifyToken: "verify-other",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// harness is a Server producing to a real kfake broker.
type harness struct {
	t    *testing.T
	kc   *kafkatest.Cluster
	srv  *Server
	h    http.Handler
	prom *prometheus.Registry
	adm  *kadm.Client
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	kc := kafkatest.New(t, 4)
	cl := kc.Client(t)
	prom := prometheus.NewRegistry()
	srv, err := New(cfg, testRegistry(t), cl, slog.New(slog.NewTextHandler(t.Output(), nil)), prom)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, kc: kc, srv: srv, h: srv.Handler(), prom: prom, adm: kadm.NewClient(kc.Client(t))}
}

// do serves one request; hdr are header name, value pairs.
func (h *harness) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequestWithContext(h.t.Context(), method, path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, req)
	return rec
}

// post sends a Pushwoosh call authorized by token (header), "" for none.
func (h *harness) post(path, token, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	if token == "" {
		return h.do(http.MethodPost, path, body)
	}
	return h.do(http.MethodPost, path, body, "Authorization", "Token "+token)
}

// webhook sends a delivery signed with secret.
func (h *harness) webhook(secret, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.do(http.MethodPost, "/whatsapp/webhooks", body, "X-Hub-Signature-256", sign(secret, body))
}

func sign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// endOffset is the sum of the end offsets of topic's partitions: the
// number of records ever written to it.
func (h *harness) endOffset(topic string) int64 {
	h.t.Helper()
	offs, err := h.adm.ListEndOffsets(h.t.Context(), topic)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := offs.Error(); err != nil {
		h.t.Fatal(err)
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// records reads every record of topic, checking there are exactly n.
func (h *harness) records(topic string, n int) []*kgo.Record {
	h.t.Helper()
	if got := h.endOffset(topic); got != int64(n) {
		h.t.Fatalf("%s holds %d records, want %d", topic, got, n)
	}
	recs := h.kc.ReadAll(h.t, topic, n)
	if len(recs) != n {
		h.t.Fatalf("read %d records from %s, want %d", len(recs), topic, n)
	}
	return recs
}

// events reads and decodes every record of TopicEvents, checking there are
// exactly n and each is keyed by its event's Key.
func (h *harness) events(n int) []*schemas.Event {
	h.t.Helper()
	var out []*schemas.Event
	for _, r := range h.records(schemas.TopicEvents, n) {
		ev, err := schemas.DecodeEvent(r.Value)
		if err != nil {
			h.t.Fatalf("decoding %s: %v", r.Value, err)
		}
		if string(r.Key) != string(ev.Key()) {
			h.t.Fatalf("record key %q, want %q", r.Key, ev.Key())
		}
		out = append(out, ev)
	}
	return out
}

// noRecords checks that nothing was ever produced.
func (h *harness) noRecords() {
	h.t.Helper()
	for _, topic := range []string{schemas.TopicEvents, schemas.TopicDeadLetter} {
		if n := h.endOffset(topic); n != 0 {
			h.t.Fatalf("%s holds %d records, want none", topic, n)
		}
	}
}

// wantOK checks a 200 Pushwoosh answer and returns its response object.
func wantOK(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
	}
	var body struct {
		StatusCode    int            `json:"status_code"`
		StatusMessage string         `json:"status_message"`
		Response      map[string]any `json:"response"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("decoding answer %s: %v", rec.Body, err)
	}
	if body.StatusCode != 200 || body.StatusMessage != "OK" {
		t.Fatalf("answer %s, want status_code 200 and OK", rec.Body)
	}
	return body.Response
}

// wantError checks an error answer: the status, a JSON body repeating it,
// and the field named both in "field" and at the start of the message.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, code int, field string) errBody {
	t.Helper()
	if rec.Code != code {
		t.Fatalf("status %d, want %d; body %s", rec.Code, code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want JSON", ct)
	}
	var body errBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("decoding error body %s: %v", rec.Body, err)
	}
	if body.StatusCode != code {
		t.Fatalf("status_code %d, want %d", body.StatusCode, code)
	}
	if body.Field != field {
		t.Fatalf("field %q, want %q; message %q", body.Field, field, body.StatusMessage)
	}
	if field != "" && !strings.HasPrefix(body.StatusMessage, field+": ") {
		t.Fatalf("message %q does not start with the field %q", body.StatusMessage, field)
	}
	if len(body.StatusMessage) < len(field)+5 {
		t.Fatalf("message %q says nothing", body.StatusMessage)
	}
	return body
}

var randomID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// sameEvent compares got with want field by field (through their JSON, so
// tag numbers compare as they travel). want.ID, Time and Received are taken
// from got when zero, after checking them: a 128-bit hex id, and times
// within [from, to].
func sameEvent(t *testing.T, got, want *schemas.Event, from, to time.Time) {
	t.Helper()
	if !randomID.MatchString(got.ID) {
		t.Fatalf("event id %q is not 128 bits of hex", got.ID)
	}
	if want.ID == "" {
		want.ID = got.ID
	}
	for _, tm := range []struct {
		name string
		got  time.Time
		want *time.Time
	}{{"time", got.Time, &want.Time}, {"received", got.Received, &want.Received}} {
		if !tm.want.IsZero() {
			continue
		}
		if tm.got.Before(from) || tm.got.After(to) {
			t.Fatalf("%s %s is outside [%s, %s]", tm.name, tm.got, from, to)
		}
		*tm.want = tm.got
	}
	want.V = schemas.V1
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("event\n got %s\nwant %s", g, w)
	}
}

// metricValue is the value of a counter (or the sample count of a
// histogram) c collects, summed over its series.
func metricValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		switch {
		case pb.Counter != nil:
			sum += pb.Counter.GetValue()
		case pb.Histogram != nil:
			sum += float64(pb.Histogram.GetSampleCount())
		}
	}
	return sum
}

// seriesCount is how many series c collects.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}
