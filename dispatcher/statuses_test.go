package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/reach"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// statusRelay stands in for ingest's webhook (a stage the dispatcher's
// tests do not import): it turns each status of a Meta webhook that echoes
// a dispatch id into the status mark ingest writes to the intents topic
// (schemas.MarkStatus, keyed by app and recipient, with the error code of
// a failed status).
func statusRelay(t *testing.T, c *kafkatest.Cluster, app string) *httptest.Server {
	t.Helper()
	cl := c.Client(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var p struct {
			Entry []struct {
				Changes []struct {
					Value struct {
						Statuses []struct {
							ID        string `json:"id"`
							Status    string `json:"status"`
							Timestamp string `json:"timestamp"`
							Recipient string `json:"recipient_id"`
							Biz       string `json:"biz_opaque_callback_data"`
							Errors    []struct {
								Code int `json:"code"`
							} `json:"errors"`
						} `json:"statuses"`
					} `json:"value"`
				} `json:"changes"`
			} `json:"entry"`
		}
		if err != nil || json.Unmarshal(body, &p) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var recs []*kgo.Record
		for _, e := range p.Entry {
			for _, ch := range e.Changes {
				for _, st := range ch.Value.Statuses {
					if st.Biz == "" {
						continue
					}
					sec, _ := strconv.ParseInt(st.Timestamp, 10, 64)
					m := &schemas.DeliveryMark{
						Kind: schemas.MarkStatus, DispatchID: st.Biz, App: app, To: "+" + st.Recipient,
						WAMID: st.ID, Status: st.Status, Time: time.Unix(sec, 0).UTC(),
					}
					if len(st.Errors) > 0 {
						m.ErrorCode = st.Errors[0].Code
					}
					b, err := m.Marshal()
					if err != nil {
						w.WriteHeader(http.StatusInternalServerError)
						return
					}
					recs = append(recs, &kgo.Record{Topic: schemas.TopicIntents, Key: m.Key(), Value: b})
				}
			}
		}
		if err := cl.ProduceSync(r.Context(), recs...).FirstErr(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestOptOutLearnedFromStatus: Meta accepts a marketing template to a user
// who stopped marketing messages and reports 131050 in a failed status
// webhook; the dispatcher learns it from the status (a suppression on the
// topic) and refuses the next marketing template to the user before the
// call, with CodeOptedOut. A failed status 131047 closes the recipient's
// window for its next text likewise.
func TestOptOutLearnedFromStatus(t *testing.T) {
	e := newReachEnv(t, "", withStatuses)
	e.sim.SetMarketingOptOut(shopWABA, "15551270001")
	d, _ := e.start(t)
	const to = "+15551270001"
	wantOutcome(t, e.outcomes(t, templateRequest("s-1", to, "promo_offer", "MARKETING", "10%"))["s-1"], schemas.OutcomeAccepted, 0)
	sups := e.c.ReadAll(t, schemas.TopicSuppressions, 1)
	s, err := schemas.DecodeSuppression(sups[0].Value)
	if err != nil || s.App != "shop" || s.To != to || s.Code != codeMarketingOptOut || s.DispatchID != "s-1" || s.Lifted {
		t.Fatalf("suppression record %+v, %v", s, err)
	}
	calls := e.sim.Stats().MessageRequests
	wantOutcome(t, e.outcomes(t, templateRequest("s-2", to, "promo_offer", "MARKETING", "20%"))["s-2"], schemas.OutcomeFailed, CodeOptedOut)
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("the marketing template after the failed status reached the simulator (%d calls, want %d)", n, calls)
	}
	if got := testutil.ToFloat64(d.reach.m.learned.WithLabelValues("opt_out", learnedStatus)); got != 1 {
		t.Errorf("learned{opt_out,status} = %v, want 1", got)
	}

	// The producer believes the window open; the simulator saw no inbound
	// message: accepted, then failed 131047.
	text := textRequest("s-3", "+15551270002", "hello")
	text.WindowUntil = time.Now().Add(time.Hour)
	wantOutcome(t, e.outcomes(t, text)["s-3"], schemas.OutcomeAccepted, 0)
	waitLong(t, "131047 learned from the failed status", func() bool {
		return testutil.ToFloat64(d.reach.m.learned.WithLabelValues("window_closed", learnedStatus)) == 1
	})
	again := textRequest("s-4", "+15551270002", "hello?")
	again.WindowUntil = text.WindowUntil
	wantOutcome(t, e.outcomes(t, again)["s-4"], schemas.OutcomeFailed, CodeWindowClosed)
	if got := testutil.ToFloat64(d.reach.m.failedStatuses.WithLabelValues("131050")); got != 1 {
		t.Errorf("failed_statuses{131050} = %v, want 1", got)
	}
}

// TestLateStatusReconcilesInDoubt: the simulator accepts a message and
// answers after the dispatcher's request timeout, so its outcome is
// in_doubt; when the message's status webhook arrives, the dispatcher
// produces an accepted outcome with the status's wamid superseding it (no
// second call, no redelivery of the request). A replica started later
// finds the pair decided and neither sends nor reconciles again.
func TestLateStatusReconcilesInDoubt(t *testing.T) {
	e := newReachEnv(t, "", withStatuses, func(_ *reachEnv, c *wasim.Config) { c.Faults.AnswerDelay = 3 * time.Second })
	d, stop := e.start(t, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	req := templateRequest("late-1", "+15551280001", "order_confirmation", "UTILITY", "A1", "today")
	req.Source = schemas.Source{Kind: "campaign", Name: "spring"}
	produce(t, e.c.Client(t), dispatchRecord(t, req))
	outs := outcomesOf(t, e.c, "late-1", 2)
	doubt, rec := outs[0], outs[1]
	if doubt.State != schemas.OutcomeInDoubt {
		t.Fatalf("first outcome %s (%s), want in_doubt", doubt.State, doubt.ErrorMessage)
	}
	if rec.State != schemas.OutcomeAccepted || !rec.Reconciled || rec.ProviderID == "" || rec.ErrorCode != 0 {
		t.Fatalf("second outcome %+v, want accepted, reconciled, with the wamid", rec)
	}
	if rec.Template != "order_confirmation" || rec.Source.Name != "spring" || rec.Attempts != doubt.Attempts || !rec.Requested.Equal(doubt.Requested) {
		t.Errorf("reconciled outcome lost the request's fields: %+v", rec)
	}
	if !rec.Time.After(doubt.Time) || rec.Time.Truncate(time.Second).Equal(doubt.Time.Truncate(time.Second)) {
		t.Errorf("reconciled at %v, in doubt at %v: want a later second", rec.Time, doubt.Time)
	}
	if n := e.sim.Stats().MessageRequests; n != 1 {
		t.Fatalf("%d calls, want 1", n)
	}
	// Counted once the outcome is acknowledged (the test may read it
	// first).
	waitLong(t, "the reconciliation counted", func() bool { return testutil.ToFloat64(d.m.reconciled) >= 1 })
	// More statuses (delivered, read) change nothing: one reconciliation.
	waitLong(t, "the read status", func() bool { return e.sim.Stats().Statuses["read"] == 1 })
	stop()
	if got := testutil.ToFloat64(d.m.reconciled); got != 1 {
		t.Errorf("reconciled = %v, want 1", got)
	}
	// The request delivered again to a new replica: a duplicate.
	d2, _ := e.start(t)
	produce(t, e.c.Client(t), dispatchRecord(t, req))
	waitLong(t, "the redelivered request skipped", func() bool { return testutil.ToFloat64(d2.m.duplicates) == 1 })
	if n := len(readAllOutcomes(t, e.c, "late-1")); n != 2 {
		t.Errorf("%d outcomes of late-1, want 2", n)
	}
	if n := e.sim.Stats().MessageRequests; n != 1 {
		t.Fatalf("%d calls after the redelivery, want 1", n)
	}
}

// TestSimTierAgainstDispatcher: the simulator enforces a messaging tier of
// 250 for the WABA. With the dispatcher's own tier pre-flight (the app's
// messaging_tier), a campaign to 270 recipients outside the window never
// reaches the simulator's limit: 250 accepted, 20 refused before the call
// with CodeTierExceeded. With the pre-flight off (no messaging_tier), the
// simulator refuses the 20 itself (131048).
func TestSimTierAgainstDispatcher(t *testing.T) {
	simTier := func(_ *reachEnv, c *wasim.Config) { c.MessagingTier = 250 }
	campaign := func(prefix string) []*schemas.DispatchRequest {
		var reqs []*schemas.DispatchRequest
		for i := range 270 {
			reqs = append(reqs, templateRequest(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("+1555129%04d", i+1), "order_confirmation", "UTILITY", "A1", "today"))
		}
		return reqs
	}
	count := func(out map[string]*schemas.Outcome) map[int]int {
		codes := make(map[int]int)
		for _, o := range out {
			if o.State != schemas.OutcomeAccepted && o.State != schemas.OutcomeFailed {
				t.Fatalf("outcome %s: %s (%s)", o.DispatchID, o.State, o.ErrorMessage)
			}
			codes[o.ErrorCode]++
		}
		return codes
	}
	t.Run("pre-flight on", func(t *testing.T) {
		e := newReachEnv(t, "250", simTier)
		e.start(t)
		codes := count(e.outcomes(t, campaign("on")...))
		if codes[0] != 250 || codes[CodeTierExceeded] != 20 || len(codes) != 2 {
			t.Fatalf("outcomes by code %v, want 250 accepted and 20 refused with %d", codes, CodeTierExceeded)
		}
		if st := e.sim.Stats(); st.TierRefused != 0 || st.Accepted != 250 {
			t.Fatalf("the simulator accepted %d and refused %d for the tier, want 250 and 0", st.Accepted, st.TierRefused)
		}
	})
	t.Run("pre-flight off", func(t *testing.T) {
		e := newReachEnv(t, "", simTier)
		e.start(t)
		codes := count(e.outcomes(t, campaign("off")...))
		if codes[0] != 250 || codes[wasim.CodeSpamRateLimit] != 20 || len(codes) != 2 {
			t.Fatalf("outcomes by code %v, want 250 accepted and 20 failed with %d", codes, wasim.CodeSpamRateLimit)
		}
		if st := e.sim.Stats(); st.TierRefused != 20 || e.sim.TierUsed(shopWABA) != 250 {
			t.Fatalf("the simulator refused %d for the tier (used %d), want 20 (250)", st.TierRefused, e.sim.TierUsed(shopWABA))
		}
	})
}

// readAllOutcomes returns the outcomes of id on the topic now, in order.
func readAllOutcomes(t *testing.T, c *kafkatest.Cluster, id string) []*schemas.Outcome {
	t.Helper()
	end := endOffsets(t, kadm.NewClient(c.Client(t)), schemas.TopicOutcomes)
	cl := c.Client(t, kgo.ConsumeTopics(schemas.TopicOutcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out []*schemas.Outcome
	next := map[int32]int64{}
	done := func() bool {
		for p, e := range end {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("reading the outcomes topic timed out")
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if o, err := schemas.DecodeOutcome(r.Value); err == nil && o.DispatchID == id {
				out = append(out, o)
			}
		})
	}
	return out
}

// outcomesOf waits for n outcomes of id and returns them in order.
func outcomesOf(t *testing.T, c *kafkatest.Cluster, id string, n int) []*schemas.Outcome {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(schemas.TopicOutcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out []*schemas.Outcome
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d outcomes of %s", len(out), n, id)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if o, err := schemas.DecodeOutcome(r.Value); err == nil && o.DispatchID == id {
				out = append(out, o)
			}
		})
	}
	return out
}

// TestSuppressionLatestWins: per recipient the suppression record of the
// latest time decides, whatever order the records are read in: a START
// (lifted) after a 131050 lifts it, a 131050 status older than the START
// (Meta retried the webhook) does not bring it back, a newer one does.
func TestSuppressionLatestWins(t *testing.T) {
	g := &reachGate{suppressed: reach.NewSuppressions()}
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := func(on bool, at time.Time, changed, want bool) {
		t.Helper()
		if got := g.setSuppressed("shop|+1", on, at); got != changed {
			t.Errorf("set(%v, %v) changed = %v, want %v", on, at, got, changed)
		}
		if got := g.suppressed.On("shop|+1"); got != want {
			t.Errorf("after set(%v, %v): suppressed %v, want %v", on, at, got, want)
		}
	}
	f(true, t0, true, true)                       // 131050 learned
	f(true, t0.Add(time.Second), false, true)     // learned again: nothing to write
	f(false, t0.Add(time.Minute), true, false)    // START
	f(true, t0.Add(30*time.Second), false, false) // an older failed status, retried by Meta
	f(true, t0.Add(2*time.Minute), true, true)    // Meta says it again after the START
	f(false, t0.Add(90*time.Second), false, true) // an older START read late
}
