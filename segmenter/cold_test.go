package segmenter

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestColdProfiles: a profile fastcache evicted is read back from the
// changelog, for an event of the user (its tags are kept, not reset) and
// for a sweep over every profile, instead of starting empty.
func TestColdProfiles(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	hwid := func(i int) string { return fmt.Sprintf("whatsapp:+4790002%03d", i) }
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprint("r", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: now, HWID: hwid(i), DeviceType: schemas.DeviceWhatsApp, Tags: map[string]any{"City": "Oslo", "Points": float64(i)},
		}))
	}
	produce(t, c, recs...)
	s, err := New(Config{}, c.Config, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return now }
	done := make(chan error, 1)
	go func() { done <- s.Run(t.Context()) }()
	t.Cleanup(func() { s.cl.Close(); <-done; s.Close() })
	adm := kadm.NewClient(c.Client(t))
	waitCommitted(t, adm)

	// Evict the even users, as a full fastcache would.
	s.mu.Lock()
	s.clearHot()
	for i := 0; i < 20; i += 2 {
		s.cache.Del(schemas.EventKey(testApp, hwid(i), ""))
	}
	s.mu.Unlock()
	if _, ok := s.Profile(testApp, hwid(0)); ok {
		t.Fatal("profile still cached after eviction")
	}
	// An event of an evicted user: applied to the profile it had.
	produce(t, c, record(t, &schemas.Event{
		ID: "t0", App: testApp, Kind: schemas.KindTags, Time: now.Add(time.Second), HWID: hwid(0),
		Tags: map[string]any{"Plan": "gold"},
	}))
	waitCommitted(t, adm)
	p, ok := s.Profile(testApp, hwid(0))
	if !ok || p.Tags()["City"].Str != "Oslo" || p.Tags()["Plan"].Str != "gold" || !p.Registered {
		t.Fatalf("evicted profile after an event: %+v (cached %v)", p, ok)
	}
	if n := testutil.ToFloat64(s.m.coldLoads); n != 1 {
		t.Fatalf("%v cold loads, want 1", n)
	}

	// A new segment: its sweep visits the 9 profiles still evicted too.
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/createFilter",
		strings.NewReader(`{"request":{"application":"shop","name":"oslo","filter_expression":"T(\"City\", EQ, \"Oslo\") * T(\"Points\", GTE, 0)"}}`))
	req.Header.Set("Authorization", "Token shop-token-0123456789")
	rec := httptest.NewRecorder()
	s.APIHandler(reg).ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("createFilter: %d %s", rec.Code, rec.Body)
	}
	entered := 0
	for deadline := time.Now().Add(20 * time.Second); entered < 20 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entered = 0
		for _, r := range c.ReadAll(t, schemas.TopicEvents, int(sum(endOffsets(t, adm, schemas.TopicEvents)))) {
			if e, err := schemas.DecodeEvent(r.Value); err == nil && e.Name == schemas.EventSegmentEntered {
				entered++
			}
		}
	}
	if entered != 20 {
		t.Fatalf("%d users entered the segment, want all 20 (9 of them evicted)", entered)
	}
	if n := testutil.ToFloat64(s.m.coldLoads); n != 10 {
		t.Fatalf("%v cold loads, want 10 (1 event, 9 in the sweep)", n)
	}
}
