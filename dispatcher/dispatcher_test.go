package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// testLogger logs warnings and errors to stderr when -v is given.
func testLogger() *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startDispatcher builds a dispatcher on cluster c calling meta, with fast
// backoff, and runs it until the returned stop is called (stop returns Run's
// error).
func startDispatcher(t *testing.T, c *kafkatest.Cluster, meta *fakeMeta, cfg Config) (*Dispatcher, func() error) {
	t.Helper()
	cfg.WhatsAppBaseURL = meta.srv.URL
	d, err := New(cfg, c.Config, testRegistry(t), testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	d.backoffBase, d.backoffMax = 5*time.Millisecond, 20*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	return d, func() error {
		cancel()
		select {
		case err := <-res:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}
}

func produce(t *testing.T, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func dispatchRecord(t *testing.T, r *schemas.DispatchRequest) *kgo.Record {
	t.Helper()
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicDispatch, Key: r.Key(), Value: b}
}

func readOutcomes(t *testing.T, c *kafkatest.Cluster, n int) []*schemas.Outcome {
	t.Helper()
	var out []*schemas.Outcome
	for _, rec := range c.ReadAll(t, schemas.TopicOutcomes, n) {
		o, err := schemas.DecodeOutcome(rec.Value)
		if err != nil {
			t.Fatalf("outcome record does not decode: %v", err)
		}
		if string(rec.Key) != string(o.Key()) {
			t.Errorf("outcome %s key %q, want %q", o.DispatchID, rec.Key, o.Key())
		}
		out = append(out, o)
	}
	if len(out) != n {
		t.Fatalf("read %d outcomes, want %d", len(out), n)
	}
	return out
}

// committed returns the group's committed offset per partition of the
// dispatch topic, and the topic's end offsets.
func committed(t *testing.T, c *kafkatest.Cluster, group string) (got, end map[int32]int64) {
	t.Helper()
	adm := kadm.NewClient(c.Client(t))
	offs, err := adm.FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(t.Context(), schemas.TopicDispatch)
	if err != nil {
		t.Fatal(err)
	}
	got, end = make(map[int32]int64), make(map[int32]int64)
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == schemas.TopicDispatch {
			got[o.Partition] = o.At
		}
	})
	ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
	return got, end
}

func TestDispatcherEndToEnd(t *testing.T) {
	c := kafkatest.New(t, 4)
	meta := newFakeMeta(t)
	now := time.Now().UTC().Truncate(time.Millisecond)

	req := func(id, to string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to, Country: "US",
			Template: &schemas.Template{Name: "promo", Language: "en_US", Category: "MARKETING", Body: []string{"Ann"}},
			Source:   schemas.Source{Kind: "campaign", Name: "sushi"},
			Created:  now, Deadline: now.Add(time.Minute),
		}
	}
	type want struct {
		state    schemas.OutcomeState
		code     int
		attempts int
		wamid    bool
	}
	var recs []*kgo.Record
	wants := map[string]want{}
	add := func(r *schemas.DispatchRequest, w want) {
		recs = append(recs, dispatchRecord(t, r))
		wants[r.ID] = w
	}

	add(req("ok", "+15550000001"), want{schemas.OutcomeAccepted, 0, 1, true})

	meta.script("+15550000002", graphErr(400, 131047, 2494010, false))
	add(req("reengage", "+15550000002"), want{schemas.OutcomeFailed, 131047, 1, false})

	meta.script("+15550000003", graphErr(400, 130429, 0, true))
	add(req("throttled", "+15550000003"), want{schemas.OutcomeAccepted, 0, 2, true})

	late := req("late", "+15550000004")
	late.Deadline = now.Add(-time.Second)
	add(late, want{schemas.OutcomeExpired, 0, 0, false})

	meta.script("+15550000005", metaReply{hang: true})
	add(req("doubt", "+15550000005"), want{schemas.OutcomeInDoubt, 0, 1, false})

	meta.script("+15550000007", graphErr(500, 131000, 0, true), graphErr(500, 131000, 0, true), graphErr(500, 131000, 0, true))
	add(req("exhausted", "+15550000007"), want{schemas.OutcomeFailed, 131000, 3, false})

	foreign := req("foreign", "+15550000008")
	foreign.Sender = "2001" // app other's number
	add(foreign, want{schemas.OutcomeFailed, CodeForeignSender, 0, false})

	ghost := req("ghost", "+15550000009")
	ghost.App = "ghost"
	add(ghost, want{schemas.OutcomeFailed, CodeUnknownApp, 0, false})

	email := req("email", "ann@example.com")
	email.Channel, email.Sender = schemas.ChannelEmail, ""
	email.Email = &schemas.Email{Subject: "Hi", Text: "Hello"} // app shop has no email settings
	add(email, want{schemas.OutcomeFailed, CodeUnsupportedChannel, 0, false})

	text := req("text", "+15550000010")
	text.Template, text.Text = nil, &schemas.Text{Body: "Thanks for your order"}
	add(text, want{schemas.OutcomeAccepted, 0, 1, true})

	// Five requests to one recipient; the first is throttled once, so a
	// dispatcher that did not keep them in order would send #2 before #1's
	// retry.
	const ordered = "+15550000006"
	meta.script(ordered, graphErr(400, 130429, 0, true))
	var order []string
	for i := range 5 {
		id := fmt.Sprintf("seq-%d", i)
		order = append(order, id)
		add(req(id, ordered), want{schemas.OutcomeAccepted, 0, map[bool]int{true: 2, false: 1}[i == 0], true})
	}

	poison := []*kgo.Record{
		{Topic: schemas.TopicDispatch, Key: []byte("shop|x"), Value: []byte("{not json")},
		{Topic: schemas.TopicDispatch, Key: []byte("shop|y"), Value: []byte(`{"v":1,"app":"shop","channel":"whatsapp"}`)},
		{Topic: schemas.TopicDispatch, Key: []byte("shop|z"), Value: []byte(`{"v":9,"id":"x"}`)},
	}
	recs = append(recs, poison...)

	produce(t, c.Client(t), recs...)
	_, stop := startDispatcher(t, c, meta, Config{
		RequestTimeout: 300 * time.Millisecond,
		MaxAttempts:    3,
		Concurrency:    4,
		Breaker:        BreakerConfig{ConsecutiveFailures: 50},
		// fakeMeta has no pair rate: the five requests to one recipient
		// go one after the other (TestPairRate covers the planning).
		PairInterval: -1,
	})

	outs := readOutcomes(t, c, len(wants))
	dls := c.ReadAll(t, schemas.TopicDeadLetter, len(poison))
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	seen := map[string]bool{}
	var orderedOut []string
	for _, o := range outs {
		w, ok := wants[o.DispatchID]
		if !ok || seen[o.DispatchID] {
			t.Errorf("unexpected or duplicate outcome %+v", o)
			continue
		}
		seen[o.DispatchID] = true
		if o.State != w.state || o.ErrorCode != w.code || o.Attempts != w.attempts {
			t.Errorf("%s: state %s code %d attempts %d (%s), want %s code %d attempts %d",
				o.DispatchID, o.State, o.ErrorCode, o.Attempts, o.ErrorMessage, w.state, w.code, w.attempts)
		}
		if w.wamid != (o.ProviderID == "wamid."+o.DispatchID) {
			t.Errorf("%s: provider id %q", o.DispatchID, o.ProviderID)
		}
		if w.state != schemas.OutcomeAccepted && o.ErrorMessage == "" {
			t.Errorf("%s: no error message", o.DispatchID)
		}
		if !o.Requested.Equal(now) || o.Time.Before(now) || o.Source.Name != "sushi" {
			t.Errorf("%s: requested %v time %v source %+v", o.DispatchID, o.Requested, o.Time, o.Source)
		}
		if o.DispatchID == "text" {
			if o.Template != "" || o.Category != "" {
				t.Errorf("text outcome has template %q/%q", o.Template, o.Category)
			}
		} else if o.Template != "promo" || o.Category != "MARKETING" || o.Country != "US" || o.Channel == "" {
			t.Errorf("%s: template %q category %q country %q channel %q", o.DispatchID, o.Template, o.Category, o.Country, o.Channel)
		}
		if o.To == ordered {
			orderedOut = append(orderedOut, o.DispatchID)
		}
	}
	if !slices.Equal(orderedOut, order) {
		t.Errorf("outcomes of one recipient in order %v, want %v", orderedOut, order)
	}
	if got, want := meta.callsTo(ordered), append([]string{"seq-0"}, order...); !slices.Equal(got, want) {
		t.Errorf("calls to one recipient in order %v, want %v", got, want)
	}
	for _, to := range []string{"+15550000004", "+15550000008", "+15550000009"} {
		if n := len(meta.callsTo(to)); n != 0 {
			t.Errorf("%s: %d calls, want none", to, n)
		}
	}
	if n := len(meta.callsTo("+15550000005")); n != 1 {
		t.Errorf("in-doubt request called %d times, want exactly 1 (never retried)", n)
	}
	for _, call := range meta.allCalls() {
		if call.Path != "/v23.0/1001/messages" || call.Auth != "Bearer tok-shop" {
			t.Errorf("call %s with %q", call.Path, call.Auth)
		}
	}

	if len(dls) != len(poison) {
		t.Fatalf("read %d dead letters, want %d", len(dls), len(poison))
	}
	for _, rec := range dls {
		dl, err := schemas.DecodeDeadLetter(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Stage != "dispatcher" || dl.Topic != schemas.TopicDispatch || !strings.HasPrefix(dl.Reason, "decoding dispatch request: ") {
			t.Errorf("dead letter %+v", dl)
		}
		if !slices.ContainsFunc(poison, func(p *kgo.Record) bool {
			return string(p.Value) == string(dl.Value) && string(p.Key) == string(dl.Key)
		}) {
			t.Errorf("dead letter carries %q / %q, not a poison record", dl.Key, dl.Value)
		}
	}

	// Everything was decided and acknowledged: the group committed the
	// whole topic.
	got, end := committed(t, c, "herald-dispatcher")
	for p, e := range end {
		if got[p] != e {
			t.Errorf("partition %d: committed %d, end %d", p, got[p], e)
		}
	}
}

func TestDispatcherWaitsForOpenBreaker(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	r := func(id, to string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1002", To: to,
			Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"},
			Created: now, Deadline: now.Add(time.Minute),
		}
	}
	// Two 5xx open the breaker of sender 1002 and fail "broken"; "after",
	// to another recipient, waits for the breaker instead of being dropped
	// or sent while open, then goes through as the probe.
	meta.script("+15550000001", graphErr(500, 0, 0, false), graphErr(502, 0, 0, false))
	produce(t, c.Client(t), dispatchRecord(t, r("broken", "+15550000001")))
	d, stop := startDispatcher(t, c, meta, Config{
		MaxAttempts: 2, Concurrency: 1,
		Breaker: BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 500 * time.Millisecond},
	})
	first := readOutcomes(t, c, 1)[0]
	if first.State != schemas.OutcomeFailed || first.ErrorCode != CodeHTTP || first.Attempts != 2 {
		t.Fatalf("broken: %+v", first)
	}
	b := d.breakers.get("whatsapp", "1002")
	if s := value(d.m.breakerState.WithLabelValues("1002")); s != 2 {
		t.Fatalf("breaker state %v, want 2 (open)", s)
	}
	b.mu.Lock()
	openUntil := b.openUntil
	b.mu.Unlock()
	// Every sender this replica used has its breaker open: not ready.
	if err := d.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "breakers of all 1 senders are open") {
		t.Fatalf("Ready with the only breaker open: %v", err)
	}
	produce(t, c.Client(t), dispatchRecord(t, r("after", "+15550000002")))
	outs := readOutcomes(t, c, 2)
	if err := d.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after the probe closed the breaker: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if o := outs[1]; o.DispatchID != "after" || o.State != schemas.OutcomeAccepted || o.Attempts != 1 {
		t.Fatalf("after: %+v", o)
	}
	calls := meta.allCalls()
	if last := calls[len(calls)-1]; last.ID != "after" || last.Time.Before(openUntil) {
		t.Fatalf("last call %s at %v, want after at or after the open timeout %v", last.ID, last.Time, openUntil)
	}
	if s := b.cb.State().String(); s != "closed" {
		t.Fatalf("breaker %s after a good probe, want closed", s)
	}
	if got := value(d.m.sends.WithLabelValues("whatsapp", "accepted")); got != 1 {
		t.Errorf("sends_total accepted = %v", got)
	}
	if got := value(d.m.providerErrors.WithLabelValues("http_502")); got != 1 {
		t.Errorf("provider_errors_total http_502 = %v", got)
	}
}

func TestDispatcherShutdownKeepsFinishedSends(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	r := func(id string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+15550000001",
			Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
		}
	}
	// The first call is slow; shutdown starts while it is in flight. It
	// must finish and get its outcome and commit; the second request, not
	// started, must be left for redelivery.
	meta.script("+15550000001", metaReply{delay: 300 * time.Millisecond})
	produce(t, c.Client(t), dispatchRecord(t, r("slow")), dispatchRecord(t, r("next")))
	// Without pair planning, which would defer "next" (same recipient) to
	// the scheduler, a durable end: here it must be left undecided.
	_, stop := startDispatcher(t, c, meta, Config{PairInterval: -1})
	deadline := time.Now().Add(10 * time.Second)
	for len(meta.allCalls()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no call reached meta")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	outs := readOutcomes(t, c, 1)
	if o := outs[0]; o.DispatchID != "slow" || o.State != schemas.OutcomeAccepted {
		t.Fatalf("outcome %+v", o)
	}
	if ids := meta.callsTo("+15550000001"); !slices.Equal(ids, []string{"slow"}) {
		t.Fatalf("calls %v, want [slow]", ids)
	}
	got, _ := committed(t, c, "herald-dispatcher")
	if got[0] != 1 {
		t.Fatalf("committed offset %d, want 1 (slow done, next not)", got[0])
	}
}

func TestDonePrefix(t *testing.T) {
	rec := func(p int32, off int64) *kgo.Record {
		return &kgo.Record{Topic: schemas.TopicDispatch, Partition: p, Offset: off}
	}
	recs := []*kgo.Record{rec(0, 10), rec(0, 11), rec(0, 12), rec(1, 5), rec(1, 6), rec(2, 0)}
	done := &kgo.Record{}
	results := []*kgo.Record{done, done, nil, nil, done, done}
	got := donePrefix(recs, results)
	if len(got) != 2 || got[0] != recs[1] || got[1] != recs[5] {
		t.Fatalf("donePrefix = %v, want partition 0 up to offset 11 and partition 2 up to 0", got)
	}
}

func TestNewValidates(t *testing.T) {
	c := kafkatest.New(t, 1)
	reg := testRegistry(t)
	if _, err := New(Config{GraphVersion: "23"}, c.Config, reg, nil, nil); err == nil {
		t.Error("New accepted a bad graph version")
	}
	if _, err := New(Config{}, c.Config, nil, nil, nil); err == nil {
		t.Error("New accepted a nil registry")
	}
	prom := prometheus.NewRegistry()
	d, err := New(Config{}, c.Config, reg, nil, prom)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d.Close() // idempotent
	if _, err := New(Config{}, c.Config, reg, nil, prom); err == nil {
		t.Error("New registered its metrics twice on one registry without an error")
	}
}

// recordHandler keeps the records logged at error level.
type recordHandler struct {
	mu     sync.Mutex
	errors []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.mu.Lock()
		h.errors = append(h.errors, r.Message)
		h.mu.Unlock()
	}
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestDispatchBadTokenLoggedOnce(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	h := &recordHandler{}
	// dispatch is called without Run: the global limiter would not run.
	d, err := New(Config{WhatsAppBaseURL: meta.srv.URL, Limiter: LimiterConfig{Mode: LimiterLocal}}, c.Config, testRegistry(t), slog.New(h), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	meta.script("+15550000001", graphErr(401, 190, 463, false), graphErr(401, 190, 463, false))
	for _, id := range []string{"a", "b"} {
		o := d.dispatch(t.Context(), waRequest(id, "+15550000001"))
		if o.State != schemas.OutcomeFailed || o.ErrorCode != 190 || o.Attempts != 1 {
			t.Fatalf("%s: %+v", id, o)
		}
	}
	if len(h.errors) != 1 || !strings.Contains(h.errors[0], "190") {
		t.Fatalf("error logs %q, want one about code 190", h.errors)
	}
	// Once the token works again, a later 190 is logged again.
	if o := d.dispatch(t.Context(), waRequest("c", "+15550000001")); o.State != schemas.OutcomeAccepted {
		t.Fatalf("c: %+v", o)
	}
	meta.script("+15550000001", graphErr(401, 190, 463, false))
	d.dispatch(t.Context(), waRequest("d", "+15550000001"))
	if len(h.errors) != 2 {
		t.Fatalf("error logs %q, want two", h.errors)
	}
}

func TestBackoff(t *testing.T) {
	d := &Dispatcher{backoffBase: 100 * time.Millisecond, backoffMax: time.Second}
	throttled := &GraphError{Status: 400, Code: 130429}
	for attempt, upper := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		for range 100 {
			if b := d.backoff(attempt, throttled); b < upper/2 || b > upper {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, b, upper/2, upper)
			}
		}
	}
	if b := d.backoff(1, &GraphError{Status: 400, Code: 131056}); b < pairRateWait {
		t.Fatalf("backoff after 131056 = %v, want at least %v", b, pairRateWait)
	}
}

// TestBreakerPausesWithoutWorker: while a sender's breaker is open, its
// requests wait without holding a worker (the only one here): a request of
// another sender behind them goes first, and the paused one goes by itself
// once the breaker half-opens, even though it has no deadline and waits
// longer than the batch would allow a blocked call. Nothing is dropped.
func TestBreakerPausesWithoutWorker(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	r := func(id, sender, to string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: sender, To: to,
			Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
		}
	}
	meta.script("+15550000001", graphErr(500, 0, 0, false), graphErr(502, 0, 0, false))
	produce(t, c.Client(t), dispatchRecord(t, r("broken", "1002", "+15550000001")))
	d, stop := startDispatcher(t, c, meta, Config{
		MaxAttempts: 2, Concurrency: 1, PairInterval: -1,
		MaxHold: time.Minute, MaxBatchTime: time.Minute,
		// Long enough that "other" is read and sent well inside the pause
		// even on a loaded CI machine under -race (1 s was not).
		Breaker: BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 5 * time.Second},
	})
	if o := readOutcomes(t, c, 1)[0]; o.State != schemas.OutcomeFailed {
		t.Fatalf("broken: %+v", o)
	}
	b := d.breakers.get("whatsapp", "1002")
	until := b.pausedUntil()
	if until.IsZero() {
		t.Fatal("breaker of 1002 not open")
	}
	// In record order: paused (open breaker) first, then other (1001).
	produce(t, c.Client(t), dispatchRecord(t, r("paused", "1002", "+15550000002")), dispatchRecord(t, r("other", "1001", "+15550000003")))
	if produced := time.Now(); !produced.Before(until) {
		t.Fatalf("produced at %v, after the pause ended at %v: the test cannot tell waiting from holding", produced, until)
	}
	outs := readOutcomes(t, c, 3)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, o := range outs[1:] {
		if o.State != schemas.OutcomeAccepted || o.Attempts != 1 {
			t.Fatalf("outcome %+v, want accepted at the first call", o)
		}
	}
	var ids []string
	calls := meta.allCalls()
	for _, c := range calls {
		ids = append(ids, c.ID)
	}
	if !slices.Equal(ids, []string{"broken", "broken", "other", "paused"}) {
		t.Fatalf("calls %v, want other's before paused's (paused must not hold the worker)", ids)
	}
	if other, paused := calls[2].Time, calls[3].Time; !other.Before(until) || paused.Before(until.Add(-10*time.Millisecond)) {
		t.Fatalf("other sent at %v, paused at %v; want other during the pause and paused at its end %v", other, paused, until)
	}
	if s := b.cb.State().String(); s != "closed" {
		t.Fatalf("breaker %s after the probe, want closed", s)
	}
}

// TestBreakerPauseDefers: a pause longer than max_hold defers the sender's
// queued requests to the scheduler until the breaker's next probe, like a
// pair-rate wait: not expired, not dropped.
func TestBreakerPauseDefers(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	r := func(id, to string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1002", To: to,
			Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
		}
	}
	meta.script("+15550000001", graphErr(500, 0, 0, false), graphErr(502, 0, 0, false))
	produce(t, c.Client(t), dispatchRecord(t, r("broken", "+15550000001")))
	d, stop := startDispatcher(t, c, meta, Config{
		MaxAttempts: 2, PairInterval: -1,
		Breaker: BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: time.Hour},
	})
	readOutcomes(t, c, 1)
	until := d.breakers.get("whatsapp", "1002").pausedUntil()
	produce(t, c.Client(t), dispatchRecord(t, r("later", "+15550000002")))
	recs := c.ReadAll(t, schemas.TopicScheduled, 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, err := schemas.DecodeDispatchRequest(recs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "later" || got.SendAt.Before(until.Add(-time.Millisecond).Truncate(time.Millisecond)) {
		t.Fatalf("deferred %s to %v, want later at the breaker's probe %v", got.ID, got.SendAt, until)
	}
	if v := value(d.m.deferred.WithLabelValues("breaker")); v != 1 {
		t.Fatalf("deferred_total{breaker} %v, want 1", v)
	}
	if n := len(meta.allCalls()); n != 2 {
		t.Fatalf("%d calls, want the 2 that opened the breaker", n)
	}
}
