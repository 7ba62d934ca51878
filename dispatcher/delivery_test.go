package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// crashingDispatcher runs a dispatcher that "crashes" right after its first
// provider call for dispatch id crashID: the call's outcome is dropped,
// Run's context ends, and the dispatcher leaves the group. It returns once
// Run returned and the dispatcher was closed.
func crashingDispatcher(t *testing.T, c *kafkatest.Cluster, meta *fakeMeta, cfg Config, crashID string) {
	t.Helper()
	cfg.WhatsAppBaseURL = meta.srv.URL
	d, err := New(cfg, c.Config, testRegistry(t), testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	crashed := make(chan struct{})
	d.crashAfterCall = func(req *schemas.DispatchRequest) bool {
		if req.ID != crashID {
			return false
		}
		close(crashed)
		cancel()
		return true
	}
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	select {
	case <-crashed:
	case <-time.After(20 * time.Second):
		t.Fatal("the dispatcher made no call for " + crashID)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the crash")
	}
	d.Close()
}

// endOffset is the sum of topic's end offsets.
func endOffset(t *testing.T, c *kafkatest.Cluster, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(c.Client(t)).ListEndOffsets(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func markRecord(t *testing.T, m *schemas.DeliveryMark) *kgo.Record {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicIntents, Key: m.Key(), Value: b}
}

// TestCrashBetweenIntentAndOutcome: a dispatcher writes its intent, makes
// the call, and stops before the outcome. The request is redelivered to a
// new dispatcher, which must not send it blindly: it holds and reports it
// in doubt, or reports it accepted when a status webhook proves Meta got
// it, or (policy resend) sends it again once resend_after passed, or
// defers it until then.
func TestCrashBetweenIntentAndOutcome(t *testing.T) {
	tests := []struct {
		name        string
		delivery    DeliveryConfig
		status      bool
		wantState   schemas.OutcomeState
		wantCalls   int
		wantMetric  string
		wantDeferal bool
	}{
		{
			name: "hold", delivery: DeliveryConfig{InDoubt: InDoubtHold},
			wantState: schemas.OutcomeInDoubt, wantCalls: 1, wantMetric: inDoubtCrash,
		},
		{
			name: "hold with status", delivery: DeliveryConfig{InDoubt: InDoubtHold}, status: true,
			wantState: schemas.OutcomeAccepted, wantCalls: 1, wantMetric: "reconciled",
		},
		{
			name: "resend with status", delivery: DeliveryConfig{InDoubt: InDoubtResend, ResendAfter: time.Millisecond}, status: true,
			wantState: schemas.OutcomeAccepted, wantCalls: 1, wantMetric: "reconciled",
		},
		{
			name: "resend after the grace", delivery: DeliveryConfig{InDoubt: InDoubtResend, ResendAfter: time.Millisecond},
			wantState: schemas.OutcomeAccepted, wantCalls: 2, wantMetric: inDoubtResent,
		},
		{
			name: "resend within the grace", delivery: DeliveryConfig{InDoubt: InDoubtResend, ResendAfter: time.Hour},
			wantCalls: 1, wantDeferal: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := kafkatest.New(t, 2)
			meta := newFakeMeta(t)
			now := time.Now().UTC()
			req := &schemas.DispatchRequest{
				ID: "crash-1", App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+15550000001",
				Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
			}
			produce(t, c.Client(t), dispatchRecord(t, req))
			cfg := Config{PairInterval: -1, Delivery: tt.delivery}
			crashingDispatcher(t, c, meta, cfg, req.ID)

			if n := len(meta.callsTo(req.To)); n != 1 {
				t.Fatalf("%d calls before the crash, want 1", n)
			}
			if n := endOffset(t, c, schemas.TopicOutcomes); n != 0 {
				t.Fatalf("%d outcomes after the crash, want none", n)
			}
			intents := c.ReadAll(t, schemas.TopicIntents, 1)
			m, err := schemas.DecodeDeliveryMark(intents[0].Value)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != schemas.MarkIntent || m.DispatchID != req.ID || m.Attempt != 1 || string(intents[0].Key) != string(req.Key()) {
				t.Fatalf("intent %+v key %q", m, intents[0].Key)
			}
			if tt.status {
				// What ingest writes for Meta's status webhook.
				produce(t, c.Client(t), markRecord(t, &schemas.DeliveryMark{
					Kind: schemas.MarkStatus, DispatchID: req.ID,
					App: req.App, To: req.To, WAMID: "wamid." + req.ID, Status: "sent", Time: time.Now().UTC(),
				}))
			}

			d, stop := startDispatcher(t, c, meta, cfg)
			if tt.wantDeferal {
				recs := c.ReadAll(t, schemas.TopicScheduled, 1)
				r, err := schemas.DecodeDispatchRequest(recs[0].Value)
				if err != nil {
					t.Fatal(err)
				}
				if want := m.Time.Add(time.Hour); r.ID != req.ID || !r.SendAt.Equal(want) {
					t.Fatalf("deferred %s to %v, want %s to %v", r.ID, r.SendAt, req.ID, want)
				}
			} else {
				o := readOutcomes(t, c, 1)[0]
				if o.DispatchID != req.ID || o.State != tt.wantState {
					t.Fatalf("outcome %+v, want %s", o, tt.wantState)
				}
				if tt.status && o.ProviderID != "wamid."+req.ID {
					t.Fatalf("reconciled outcome's provider id %q, want the status's wamid", o.ProviderID)
				}
				if o.State == schemas.OutcomeInDoubt && o.ErrorMessage == "" {
					t.Fatal("in_doubt outcome without a message")
				}
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if n := len(meta.callsTo(req.To)); n != tt.wantCalls {
				t.Fatalf("%d calls in all, want %d", n, tt.wantCalls)
			}
			switch tt.wantMetric {
			case "reconciled":
				if v := value(d.m.reconciled); v != 1 {
					t.Fatalf("reconciled_total %v, want 1", v)
				}
			case "":
			default:
				if v := value(d.m.inDoubt.WithLabelValues(tt.wantMetric)); v != 1 {
					t.Fatalf("in_doubt_total{reason=%s} %v, want 1", tt.wantMetric, v)
				}
			}
			got, end := committed(t, c, "herald-dispatcher")
			for p, e := range end {
				if got[p] != e {
					t.Fatalf("partition %d committed %d, want its end %d", p, got[p], e)
				}
			}
		})
	}
}

// TestRedeliveredRequestSentOnce: a request produced twice, and the whole
// topic delivered again to a new dispatcher (committed offsets rewound),
// is sent once.
func TestRedeliveredRequestSentOnce(t *testing.T) {
	c := kafkatest.New(t, 2)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	req := func(id, to string) *schemas.DispatchRequest {
		return &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to,
			Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
		}
	}
	cfg := Config{PairInterval: -1}
	once := req("once", "+15550000001")
	produce(t, c.Client(t), dispatchRecord(t, once))
	d, stop := startDispatcher(t, c, meta, cfg)
	readOutcomes(t, c, 1)
	// The same request again, then another one to the same recipient (same
	// partition): once its outcome is there, the duplicate was handled.
	produce(t, c.Client(t), dispatchRecord(t, once), dispatchRecord(t, req("next", "+15550000001")))
	outs := readOutcomes(t, c, 2)
	if outs[1].DispatchID != "next" {
		t.Fatalf("second outcome %+v, want next's", outs[1])
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if v := value(d.m.duplicates); v != 1 {
		t.Fatalf("duplicates_total %v, want 1", v)
	}
	d.Close()

	// Rewind the group: everything is delivered again.
	adm := kadm.NewClient(c.Client(t))
	rewind := make(kadm.Offsets)
	_, end := committed(t, c, "herald-dispatcher")
	for p := range end {
		rewind.Add(kadm.Offset{Topic: schemas.TopicDispatch, Partition: p, At: 0, LeaderEpoch: -1})
	}
	if err := adm.CommitAllOffsets(t.Context(), "herald-dispatcher", rewind); err != nil {
		t.Fatal(err)
	}
	d2, stop2 := startDispatcher(t, c, meta, cfg)
	produce(t, c.Client(t), dispatchRecord(t, req("last", "+15550000001")))
	outs = readOutcomes(t, c, 3)
	if outs[2].DispatchID != "last" {
		t.Fatalf("third outcome %+v, want last's", outs[2])
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if ids := meta.callsTo("+15550000001"); !slices.Equal(ids, []string{"once", "next", "last"}) {
		t.Fatalf("calls %v, want each request once", ids)
	}
	if v := value(d2.m.duplicates); v != 3 {
		t.Fatalf("duplicates_total after the rewind %v, want 3 (once twice, next)", v)
	}
}

// TestAnsweredCallNotInDoubt: a call answered with a retryable error
// before the dispatcher stopped is not in doubt (its intent is matched by
// an answered mark): the next dispatcher sends the request.
func TestAnsweredCallNotInDoubt(t *testing.T) {
	c := kafkatest.New(t, 1)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	req := &schemas.DispatchRequest{
		ID: "retry-1", App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+15550000001",
		Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
	}
	// The first call fails with a 5xx, to be retried; the dispatcher stops
	// while the retry waits for its backoff.
	meta.script(req.To, graphErr(500, 0, 0, false))
	produce(t, c.Client(t), dispatchRecord(t, req))
	cfg := Config{PairInterval: -1}
	cfg.WhatsAppBaseURL = meta.srv.URL
	d, err := New(cfg, c.Config, testRegistry(t), testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// A backoff within the batch time (max_batch_time, 2s by default).
	d.backoffBase, d.backoffMax = 500*time.Millisecond, 500*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	d.crashAfterCall = func(*schemas.DispatchRequest) bool {
		cancel()
		return false
	}
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	d.Close()
	var kinds []string
	for _, r := range c.ReadAll(t, schemas.TopicIntents, 2) {
		m, err := schemas.DecodeDeliveryMark(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, fmt.Sprintf("%s-%d", m.Kind, m.Attempt))
	}
	if !slices.Equal(kinds, []string{"intent-1", "answered-1"}) {
		t.Fatalf("marks %v, want intent-1 answered-1", kinds)
	}
	if n := endOffset(t, c, schemas.TopicOutcomes); n != 0 {
		t.Fatalf("%d outcomes before the restart, want none", n)
	}

	d2, stop := startDispatcher(t, c, meta, cfg)
	o := readOutcomes(t, c, 1)[0]
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if o.State != schemas.OutcomeAccepted {
		t.Fatalf("outcome %+v, want accepted", o)
	}
	if n := len(meta.callsTo(req.To)); n != 2 {
		t.Fatalf("%d calls, want 2 (the 5xx, then the send)", n)
	}
	if v := value(d2.m.inDoubt.WithLabelValues(inDoubtCrash)); v != 0 {
		t.Fatalf("in_doubt_total{crash} %v, want 0", v)
	}
}

// TestLedgerBounds: the ledger forgets the oldest ids past max_ids and
// those older than the window.
func TestLedgerBounds(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLedger(DeliveryConfig{Window: time.Hour, MaxIDs: 3}, nil, nil, m)
	l.now = func() time.Time { return now }
	l.parts[0] = &partLedger{ids: make(map[string]*idState)}
	pl := l.parts[0]
	pl.outcome("old", schemas.OutcomeAccepted, now.Add(-2*time.Hour))
	l.decided(0, []*schemas.Outcome{{DispatchID: "a", State: schemas.OutcomeAccepted}})
	if l.state(0, "old") != nil || l.state(0, "a") == nil {
		t.Fatal("an id older than the window is kept, or a new one forgotten")
	}
	l.decided(0, []*schemas.Outcome{
		{DispatchID: "b", State: schemas.OutcomeFailed},
		{DispatchID: "c", State: schemas.OutcomeInDoubt},
		{DispatchID: "d", State: schemas.OutcomeAccepted},
	})
	if l.state(0, "a") != nil {
		t.Fatal("the oldest id is kept past max_ids")
	}
	for _, id := range []string{"b", "c", "d"} {
		if l.state(0, id) == nil {
			t.Fatalf("%s forgotten", id)
		}
	}
	if v := value(m.ledgerIDs); v != 3 {
		t.Fatalf("ledger_ids %v, want 3", v)
	}
	// An accepted outcome outranks an in_doubt one in either order.
	l.decided(0, []*schemas.Outcome{{DispatchID: "d", State: schemas.OutcomeInDoubt}})
	if s := l.state(0, "d"); s.outcome != schemas.OutcomeAccepted {
		t.Fatalf("d is %s", s.outcome)
	}
	l.drop(map[string][]int32{schemas.TopicDispatch: {0}})
	if l.state(0, "b") != nil || value(m.ledgerIDs) != 0 {
		t.Fatal("a revoked partition is kept")
	}
}

// TestStatusWithoutIntent: a status webhook for a dispatch id proves Meta
// got the message even when no intent is known (older than the window, or
// sent before intents): the request is reported accepted, not sent.
func TestStatusWithoutIntent(t *testing.T) {
	c := kafkatest.New(t, 2)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	req := &schemas.DispatchRequest{
		ID: "seen-1", App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+15550000003",
		Text: &schemas.Text{Body: "hi"}, Source: schemas.Source{Kind: "api"}, Created: now,
	}
	produce(t, c.Client(t),
		markRecord(t, &schemas.DeliveryMark{
			Kind: schemas.MarkStatus, DispatchID: req.ID, App: req.App, To: req.To,
			WAMID: "wamid.seen", Status: "delivered", Time: now,
		}),
		dispatchRecord(t, req))
	d, stop := startDispatcher(t, c, meta, Config{PairInterval: -1})
	o := readOutcomes(t, c, 1)[0]
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if o.State != schemas.OutcomeAccepted || o.ProviderID != "wamid.seen" {
		t.Fatalf("outcome %+v, want accepted with the status's wamid", o)
	}
	if n := len(meta.allCalls()); n != 0 {
		t.Fatalf("%d calls, want none", n)
	}
	if v := value(d.m.reconciled); v != 1 {
		t.Fatalf("reconciled_total %v", v)
	}
}
