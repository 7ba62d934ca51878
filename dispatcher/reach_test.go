package dispatcher

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// reachEnv is a kfake cluster, the simulator (delivery errors answered at
// once, unless withStatuses) and app "shop" (WABA shopWABA, sender 1001)
// with a messaging tier.
type reachEnv struct {
	c   *kafkatest.Cluster
	sim *wasim.Sim
	api *httptest.Server
	reg *apps.Registry
	// relay turns the simulator's status webhooks into ingest's status
	// marks (withStatuses).
	relay *httptest.Server
}

// simOpt changes the simulator's config of a reachEnv.
type simOpt func(e *reachEnv, c *wasim.Config)

// withStatuses makes the simulator report delivery errors as Meta does, in
// failed status webhooks, and posts every status to the env's relay.
func withStatuses(e *reachEnv, c *wasim.Config) {
	c.SyncDeliveryErrors = false
	c.Numbers[0].WebhookURL = e.relay.URL + "/whatsapp/webhooks"
	c.StatusDelay = 10 * time.Millisecond
}

func newReachEnv(t *testing.T, tier string, opts ...simOpt) *reachEnv {
	t.Helper()
	e := &reachEnv{c: kafkatest.New(t, 4)}
	e.relay = statusRelay(t, e.c, "shop")
	cfg := wasim.Config{
		Numbers:            []wasim.Number{{PhoneNumberID: "1001", WABAID: shopWABA, AccessToken: "tok-shop", AppSecret: "secret-shop"}},
		Templates:          simTemplates(),
		Throughput:         -1,
		PairInterval:       -1,
		SyncDeliveryErrors: true,
	}
	for _, o := range opts {
		o(e, &cfg)
	}
	sim, err := wasim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.sim = sim
	e.api = httptest.NewServer(sim.Handler())
	t.Cleanup(e.api.Close)
	if cfg.Numbers[0].WebhookURL != "" {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = sim.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	e.reg, err = apps.New([]apps.App{{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
		PhoneNumberIDs: []string{"1001"}, WABAID: shopWABA, AccessToken: "tok-shop", MessagingTier: tier,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs a dispatcher on the env until the test ends or stop is called.
func (e *reachEnv) start(t *testing.T, edit ...func(*Config)) (*Dispatcher, func()) {
	t.Helper()
	cfg := Config{
		WhatsAppBaseURL: e.api.URL, RequestTimeout: 5 * time.Second, MaxAttempts: 2, PairInterval: -1,
		Limiter: LimiterConfig{Mode: LimiterNone}, Templates: TemplatesConfig{SyncInterval: -1},
	}
	for _, f := range edit {
		f(&cfg)
	}
	d, err := New(cfg, e.c.Config, e.reg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		d.Close()
	}
	t.Cleanup(stop)
	return d, stop
}

// outcomes produces reqs and returns the outcomes of their ids, read from
// the start of the outcomes topic.
func (e *reachEnv) outcomes(t *testing.T, reqs ...*schemas.DispatchRequest) map[string]*schemas.Outcome {
	t.Helper()
	recs := make([]*kgo.Record, len(reqs))
	want := make(map[string]bool, len(reqs))
	for i, r := range reqs {
		recs[i] = dispatchRecord(t, r)
		want[r.ID] = true
	}
	produce(t, e.c.Client(t), recs...)
	cl := e.c.Client(t, kgo.ConsumeTopics(schemas.TopicOutcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	out := make(map[string]*schemas.Outcome)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for len(out) < len(reqs) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d outcomes", len(out), len(reqs))
		}
		fs.EachRecord(func(r *kgo.Record) {
			o, err := schemas.DecodeOutcome(r.Value)
			if err != nil {
				t.Fatalf("outcome does not decode: %v", err)
			}
			if want[o.DispatchID] {
				out[o.DispatchID] = o
			}
		})
	}
	return out
}

func textRequest(id, to, body string) *schemas.DispatchRequest {
	now := time.Now().UTC()
	return &schemas.DispatchRequest{
		ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to,
		Text: &schemas.Text{Body: body}, Source: schemas.Source{Kind: "api"}, Created: now, Deadline: now.Add(time.Minute),
	}
}

func templateRequest(id, to, name, category string, body ...string) *schemas.DispatchRequest {
	r := textRequest(id, to, "")
	r.Text = nil
	r.Template = &schemas.Template{Name: name, Language: "en_US", Category: category, Body: body}
	return r
}

func wantOutcome(t *testing.T, o *schemas.Outcome, state schemas.OutcomeState, code int) {
	t.Helper()
	if o.State != state || o.ErrorCode != code {
		t.Fatalf("outcome %s: %s code %d (%s), want %s code %d", o.DispatchID, o.State, o.ErrorCode, o.ErrorMessage, state, code)
	}
}

// TestWindowRefusal: free-form text past its window_until fails before any
// call; after Meta's 131047 for a recipient, its later text without a newer
// window fails before the call too, and one with a newer window is sent.
func TestWindowRefusal(t *testing.T) {
	e := newReachEnv(t, "")
	d, _ := e.start(t)
	past := textRequest("w-past", "+15551230001", "hello")
	past.WindowUntil = time.Now().Add(-time.Minute)
	out := e.outcomes(t, past)
	wantOutcome(t, out["w-past"], schemas.OutcomeFailed, CodeWindowClosed)
	if n := e.sim.Stats().MessageRequests; n != 0 {
		t.Fatalf("%d calls reached the simulator, want none", n)
	}

	// The producer believes the window open; the simulator saw no inbound
	// message: 131047, learned.
	stale := textRequest("w-stale", "+15551230002", "hello")
	stale.WindowUntil = time.Now().Add(time.Hour)
	wantOutcome(t, e.outcomes(t, stale)["w-stale"], schemas.OutcomeFailed, codeReengagement)
	calls := e.sim.Stats().MessageRequests
	if calls != 1 {
		t.Fatalf("%d calls, want 1", calls)
	}
	again := textRequest("w-again", "+15551230002", "hello?")
	wantOutcome(t, e.outcomes(t, again)["w-again"], schemas.OutcomeFailed, CodeWindowClosed)
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("the text after 131047 reached the simulator (%d calls, want %d)", n, calls)
	}
	// A window_until after Meta's answer: the producer saw an inbound
	// message since, so the call is made (the simulator, which saw none,
	// answers 131047 again).
	fresh := textRequest("w-fresh", "+15551230002", "welcome back")
	fresh.WindowUntil = time.Now().Add(24 * time.Hour)
	wantOutcome(t, e.outcomes(t, fresh)["w-fresh"], schemas.OutcomeFailed, codeReengagement)
	if n := e.sim.Stats().MessageRequests; n != calls+1 {
		t.Fatalf("the text with a newer window did not reach the simulator (%d calls, want %d)", n, calls+1)
	}
	if got := testutil.ToFloat64(d.reach.m.refused.WithLabelValues("window")); got != 1 {
		t.Errorf("refusals{window} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.reach.m.refused.WithLabelValues("window_meta")); got != 1 {
		t.Errorf("refusals{window_meta} = %v, want 1", got)
	}
}

// TestOptOutLearned: Meta's 131050 is written to the suppressions topic;
// later marketing templates to the recipient fail before the call, also
// at a dispatcher started afterwards; utility templates still go.
func TestOptOutLearned(t *testing.T) {
	e := newReachEnv(t, "")
	e.sim.SetMarketingOptOut(shopWABA, "15551240001")
	_, stop := e.start(t)
	const to = "+15551240001"
	first := templateRequest("o-1", to, "promo_offer", "MARKETING", "10%")
	wantOutcome(t, e.outcomes(t, first)["o-1"], schemas.OutcomeFailed, codeMarketingOptOut)
	sups := e.c.ReadAll(t, schemas.TopicSuppressions, 1)
	s, err := schemas.DecodeSuppression(sups[0].Value)
	if err != nil || s.App != "shop" || s.To != to || s.Reason != schemas.SuppressMarketingOptOut || s.Code != codeMarketingOptOut {
		t.Fatalf("suppression record %+v, %v", s, err)
	}
	calls := e.sim.Stats().MessageRequests
	// Category unknown in the request: the synced template says MARKETING.
	second := templateRequest("o-2", to, "promo_offer", "", "20%")
	utility := templateRequest("o-3", to, "order_confirmation", "UTILITY", "A1", "today")
	out := e.outcomes(t, second, utility)
	wantOutcome(t, out["o-2"], schemas.OutcomeFailed, CodeOptedOut)
	wantOutcome(t, out["o-3"], schemas.OutcomeAccepted, 0)
	if n := e.sim.Stats().MessageRequests; n != calls+1 {
		t.Fatalf("%d calls after the opt-out was learned, want %d (the utility template only)", n, calls+1)
	}
	// A restarted dispatcher reads the opt-out back.
	stop()
	d2, _ := e.start(t)
	third := templateRequest("o-4", to, "promo_offer", "MARKETING", "30%")
	wantOutcome(t, e.outcomes(t, third)["o-4"], schemas.OutcomeFailed, CodeOptedOut)
	if n := e.sim.Stats().MessageRequests; n != calls+1 {
		t.Fatalf("the restarted dispatcher called the simulator (%d calls, want %d)", n, calls+1)
	}
	if got := testutil.ToFloat64(d2.reach.m.refused.WithLabelValues("opt_out")); got != 1 {
		t.Errorf("refusals{opt_out} = %v, want 1", got)
	}
}

// TestTierAcrossReplicas: two dispatcher replicas share the business's tier
// of 250: of 270 recipients outside the window exactly 250 are reached, the
// others fail with CodeTierExceeded before any call; a recipient reached
// already is reached again (it counts once), one inside the window does not
// count; the headroom metric says 0.
func TestTierAcrossReplicas(t *testing.T) {
	e := newReachEnv(t, "250")
	d1, _ := e.start(t)
	d2, _ := e.start(t)
	adm := kadm.NewClient(e.c.Client(t))
	deadline := time.Now().Add(60 * time.Second)
	for {
		gs, err := adm.DescribeGroups(t.Context(), "herald-dispatcher")
		if err == nil {
			g := gs["herald-dispatcher"]
			assigned := 0
			for _, m := range g.Members {
				if ca, ok := m.Assigned.AsConsumer(); ok && len(ca.Topics) > 0 && len(ca.Topics[0].Partitions) > 0 {
					assigned++
				}
			}
			if g.State == "Stable" && assigned == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two replicas did not share the partitions within a minute: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var reqs []*schemas.DispatchRequest
	for i := range 270 {
		reqs = append(reqs, templateRequest(fmt.Sprintf("t-%d", i), fmt.Sprintf("+1555125%04d", i+1), "order_confirmation", "UTILITY", "A1", "today"))
	}
	out := e.outcomes(t, reqs...)
	accepted, refused := 0, 0
	for _, o := range out {
		switch {
		case o.State == schemas.OutcomeAccepted:
			accepted++
		case o.State == schemas.OutcomeFailed && o.ErrorCode == CodeTierExceeded:
			refused++
		default:
			t.Fatalf("outcome %s: %s code %d (%s)", o.DispatchID, o.State, o.ErrorCode, o.ErrorMessage)
		}
	}
	if accepted != 250 || refused != 20 {
		t.Fatalf("accepted %d, refused %d: want 250 and 20", accepted, refused)
	}
	if n := e.sim.Stats().Accepted; n != 250 {
		t.Fatalf("the simulator accepted %d, want 250", n)
	}
	for i, d := range []*Dispatcher{d1, d2} {
		if n := testutil.ToFloat64(d.m.sends.WithLabelValues("whatsapp", "accepted")) + testutil.ToFloat64(d.m.sends.WithLabelValues("whatsapp", "failed")); n == 0 {
			t.Fatalf("replica %d decided no request: the test did not exercise two replicas", i+1)
		}
	}
	// A recipient reached already counts once; one inside its window does
	// not count at all.
	var granted string
	for _, r := range reqs {
		if out[r.ID].State == schemas.OutcomeAccepted {
			granted = r.To
			break
		}
	}
	renewal := templateRequest("t-renewal", granted, "order_confirmation", "UTILITY", "A2", "today")
	inWindow := templateRequest("t-window", "+15551269999", "order_confirmation", "UTILITY", "A3", "today")
	inWindow.WindowUntil = time.Now().Add(time.Hour)
	more := templateRequest("t-more", "+15551269998", "order_confirmation", "UTILITY", "A4", "today")
	out = e.outcomes(t, renewal, inWindow, more)
	wantOutcome(t, out["t-renewal"], schemas.OutcomeAccepted, 0)
	wantOutcome(t, out["t-window"], schemas.OutcomeAccepted, 0)
	wantOutcome(t, out["t-more"], schemas.OutcomeFailed, CodeTierExceeded)
	for i, d := range []*Dispatcher{d1, d2} {
		reg := prometheus.NewRegistry()
		reg.MustRegister(d.reach.m)
		if n, err := testutil.GatherAndCount(reg, "herald_dispatcher_tier_headroom"); err != nil || n != 1 {
			t.Fatalf("replica %d: %d headroom series, %v", i+1, n, err)
		}
		d.reach.mu.Lock()
		used := d.reach.ledger.Used(shopWABA, time.Now())
		d.reach.mu.Unlock()
		if used != 250 {
			t.Fatalf("replica %d: tier used %d, want 250", i+1, used)
		}
	}
}
