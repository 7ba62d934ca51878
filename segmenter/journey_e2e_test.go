package segmenter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// TestJourneyDurable on kfake: a journey saved and started through the
// API; the segmenter is killed after producing the start batch's outputs
// and before committing it, and its successor neither sends again nor
// loses a run; then it stops while users wait, their timers come due
// while it is down, and a new segmenter restores the runs and the timers
// from the changelog and fires each once: late, not lost, not twice.
func TestJourneyDurable(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{{
		ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{testPNID}},
		Email: apps.Email{From: "shop@example.com", SMTP: apps.SMTP{Addr: "127.0.0.1:2525"}}, Push: apps.Push{FCM: apps.FCM{ProjectID: "shop-app", AccessToken: "token"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Second)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	hwid := func(i int) string { return fmt.Sprintf("whatsapp:+4790004%03d", i) }
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprint("r", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: start, HWID: hwid(i), DeviceType: schemas.DeviceWhatsApp, Email: fmt.Sprintf("u%d@example.com", i), PushToken: fmt.Sprintf("tok-%d", i),
		}))
	}
	produce(t, c, recs...)
	adm := kadm.NewClient(c.Client(t))
	run := func(crash func() error) (*Segmenter, func()) {
		s, err := New(Config{TickInterval: 20 * time.Millisecond}, c.Config, nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		s.now = func() time.Time { return time.Unix(0, clock.Load()).UTC() }
		if crash != nil {
			s.crashAfterProduce.Store(&crash)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				cancel()
				<-done
				s.Close()
			}
		}
		t.Cleanup(stop)
		return s, stop
	}
	call := func(s *Segmenter, path, body string) map[string]any {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		s.APIHandler(reg).ServeHTTP(rec, req)
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return m
	}
	count := func(channel schemas.Channel) int {
		n := 0
		seen := map[string]bool{}
		for _, r := range c.ReadAll(t, schemas.TopicDispatch, int(sum(endOffsets(t, adm, schemas.TopicDispatch)))) {
			d, err := schemas.DecodeDispatchRequest(r.Value)
			if err != nil || d.Channel != channel {
				continue
			}
			if seen[d.ID] {
				t.Fatalf("dispatch request %s produced twice", d.ID)
			}
			seen[d.ID] = true
			n++
		}
		return n
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	// The first segmenter is killed right after it produced the outputs
	// of the batch that completes the journey's start (the ten start
	// events may come in more than one batch), before that batch is
	// committed (kill -9 there).
	crashed := make(chan struct{})
	var armed atomic.Bool
	var s1 *Segmenter
	s1, stop1 := run(func() error {
		if !armed.Load() || testutil.ToFloat64(s1.m.dispatch.WithLabelValues(SourceJourney)) < 10 {
			return nil
		}
		close(crashed)
		return fmt.Errorf("killed")
	})
	waitCommitted(t, adm)
	journey := `{"request":{"application":"shop","journey":{"id":"welcome","entry":{"api":true},"steps":[
		{"id":"push","type":"send","channel":"push","push":{"title":"Hi","body":"Open me"},"next":"wait"},
		{"id":"wait","type":"wait_event","event":"PW_PushOpened","timeout":"1h","on_event":"end","on_timeout":"email"},
		{"id":"email","type":"send","channel":"email","email":{"subject":"Hi","text":"We miss you"},"next":"end"},
		{"id":"end","type":"exit"}]}}}`
	if m := call(s1, "/json/1.3/createJourney", journey); m["response"].(map[string]any)["version"] != 1.0 {
		t.Fatalf("createJourney: %v", m)
	}
	var devices []string
	for i := range 10 {
		devices = append(devices, fmt.Sprintf("%q", hwid(i)))
	}
	armed.Store(true)
	call(s1, "/json/1.3/startJourney", `{"request":{"application":"shop","id":"welcome","devices":[`+strings.Join(devices, ",")+`]}}`)
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("the start batch was not processed")
	}
	stop1()
	if n := count(schemas.ChannelPush); n != 10 {
		t.Fatalf("%d pushes before the crash, want 10", n)
	}
	// A new segmenter restores the profiles, in the journey, and gets the
	// uncommitted start events again: nothing is sent twice.
	s2, stop2 := run(nil)
	waitCommitted(t, adm)
	// User 0 opens the push.
	produce(t, c, record(t, &schemas.Event{ID: "open0", App: testApp, Kind: schemas.KindEvent, Name: schemas.EventPushOpened, Time: start, HWID: hwid(0)}))
	wait("the open applied", func() bool {
		p, ok := s2.Profile(testApp, hwid(0))
		return ok && len(p.journeys) == 0
	})
	stop2()

	// Two hours pass while no segmenter runs.
	clock.Store(start.Add(2 * time.Hour).UnixNano())
	s3, _ := run(nil)
	wait("9 emails after the restart", func() bool { return count(schemas.ChannelEmail) == 9 })
	time.Sleep(200 * time.Millisecond) // ticks keep coming: none may fire again
	if n, p := count(schemas.ChannelEmail), count(schemas.ChannelPush); n != 9 || p != 10 {
		t.Fatalf("%d emails and %d pushes, want 9 and 10", n, p)
	}
	if n := s3.timers.size(); n != 0 {
		t.Fatalf("%d timers left", n)
	}
	for i := range 10 {
		if p, ok := s3.Profile(testApp, hwid(i)); !ok || len(p.journeys) != 0 {
			t.Fatalf("user %d still in a journey: %+v", i, p)
		}
	}
}

// TestJourneyAPI: definitions are refused with the step and field, saved
// as versions, archived, listed; only api journeys are started.
func TestJourneyAPI(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{testPNID}}}})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := runSegmenter(t, c, time.Now())
	h := s.APIHandler(reg)
	call := func(path, req string) (int, map[string]any) {
		t.Helper()
		r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(`{"request":`+req+`}`))
		r.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%q is not JSON", rec.Body)
		}
		return rec.Code, m
	}
	journey := func(steps string, entry string) string {
		return `{"application":"shop","journey":{"id":"j1","entry":` + entry + `,"steps":` + steps + `}}`
	}
	for _, tt := range []struct {
		name, body, field, msg string
	}{
		{"no journey", `{"application":"shop"}`, "request.journey", "is required"},
		{
			"cycle without a wait", journey(`[{"id":"a","type":"update_tags","tags":{"x":1},"next":"b"},{"id":"b","type":"update_tags","tags":{"y":1},"next":"a"}]`, `{"api":true}`),
			"request.journey", "cycle without a wait",
		},
		{
			"channel the app lacks", journey(`[{"id":"e","type":"send","channel":"email","email":{"subject":"s","text":"t"},"next":"x"},{"id":"x","type":"exit"}]`, `{"api":true}`),
			"request.journey.steps[0].channel", `application "shop" has no email settings`,
		},
		{
			"split not 100", journey(`[{"id":"ab","type":"split_ab","branches":[{"percent":70,"next":"x"},{"percent":20,"next":"x"}]},{"id":"x","type":"exit"}]`, `{"api":true}`),
			"request.journey", "percentages sum to 90",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, m := call("/json/1.3/createJourney", tt.body)
			if msg, _ := m["status_message"].(string); code != 400 || m["field"] != tt.field || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %d %v, want 400 %s %q", code, m, tt.field, tt.msg)
			}
		})
	}
	ok := journey(`[{"id":"w","type":"wait","duration":"1h","next":"x"},{"id":"x","type":"exit"}]`, `{"event":"Signup"}`)
	for v := 1; v <= 2; v++ {
		if code, m := call("/json/1.3/createJourney", ok); code != 200 || m["response"].(map[string]any)["version"] != float64(v) {
			t.Fatalf("save %d: %d %v", v, code, m)
		}
	}
	if code, m := call("/json/1.3/startJourney", `{"application":"shop","id":"j1","devices":["h1"]}`); code != 400 || !strings.Contains(m["status_message"].(string), "not entered through the API") {
		t.Fatalf("start of a non-api journey: %d %v", code, m)
	}
	if code, m := call("/json/1.3/archiveJourney", `{"application":"shop","id":"j1"}`); code != 200 || m["response"].(map[string]any)["version"] != 3.0 {
		t.Fatalf("archive: %d %v", code, m)
	}
	if code, m := call("/json/1.3/listJourneys", `{"application":"shop"}`); code != 200 {
		t.Fatalf("list: %d %v", code, m)
	} else if b, _ := json.Marshal(m["response"]); string(b) != `{"journeys":[{"archived":true,"id":"j1","version":3}]}` {
		t.Fatalf("list: %s", b)
	}
	if code, m := call("/json/1.3/getJourney", `{"application":"shop","id":"j1","version":1}`); code != 200 || m["response"].(map[string]any)["version"] != 1.0 {
		t.Fatalf("get v1: %d %v", code, m)
	}
	if code, _ := call("/json/1.3/getJourney", `{"application":"shop","id":"nope"}`); code != 404 {
		t.Fatalf("get unknown: %d", code)
	}
	// The versions are on the topic; a new segmenter knows them.
	s2, _, _ := runSegmenter(t, c, time.Now())
	select {
	case <-s2.journeys.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("journeys not read")
	}
	if j := s2.journeys.latest(testApp, "j1"); j == nil || j.def.Version != 3 || !j.def.Archived || len(s2.journeys.of(testApp)) != 0 {
		t.Fatalf("after a restart: %+v", j)
	}
}
