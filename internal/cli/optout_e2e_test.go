package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/chtest"
)

// TestOptOutLearnedAndLiftedEndToEnd: a subscriber who stopped marketing
// messages in WhatsApp writes PROMO; Meta (the simulator) accepts the
// MARKETING template and reports 131050 in a failed status webhook; ingest
// writes the status mark, the dispatcher learns the opt-out from it, and
// the next PROMO's template is refused before the call (-14). The user
// writes START (the segmenter's built-in keyword): the opt-out is lifted
// on the suppressions topic, and the next PROMO's template is sent and
// delivered.
func TestOptOutLearnedAndLiftedEndToEnd(t *testing.T) {
	s, creds, conn := testStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	const phone = "+919812341234"
	metric := func(name string, labels ...string) float64 {
		mfs, err := s.ops.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for i := 0; i+1 < len(labels); i += 2 {
					if have[labels[i]] != labels[i+1] {
						continue next
					}
				}
				sum += m.GetCounter().GetValue()
			}
		}
		return sum
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	promos := func(state string, code int) uint64 {
		return chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE template = 'promo_offer' AND recipient = ? AND state = ? AND error_code = ?", phone, state, code)
	}
	inbound := func(text string) {
		t.Helper()
		if _, err := s.sim.SendInbound(ctx, devPhoneNumberID, phone, text); err != nil {
			t.Fatal(err)
		}
	}

	w := &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID}
	if err := w.post(ctx, "registerDevice", map[string]any{"device_type": 21, "hwid": "whatsapp:" + phone}); err != nil {
		t.Fatal(err)
	}
	s.sim.SetMarketingOptOut(devWABAID, strings.TrimPrefix(phone, "+"))

	inbound("promo")
	waitFor("131050 learned from the failed status", func() bool {
		return metric("herald_dispatcher_learned_total", "what", "opt_out", "from", "status") == 1
	})
	if n := chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE recipient = ? AND status = 'failed' AND error_code = 131050", phone); n > 1 {
		t.Fatalf("%d failed statuses", n)
	}
	calls := s.sim.Stats().MessageRequests

	inbound("promo")
	waitFor("the second PROMO refused with -14", func() bool { return promos("failed", -14) == 1 })
	if n := s.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("the refused template reached the simulator (%d calls, want %d)", n, calls)
	}

	// The user opts in again in WhatsApp and writes START.
	s.sim.ClearMarketingOptOut(devWABAID, strings.TrimPrefix(phone, "+"))
	inbound("START")
	waitFor("the opt-out lifted at the dispatcher", func() bool {
		return metric("herald_dispatcher_reach_records_total", "result", "lifted") >= 1
	})
	inbound("promo")
	waitFor("the third PROMO sent and delivered", func() bool {
		return chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE recipient = ? AND status = 'delivered' AND dispatch_id IN (SELECT dispatch_id FROM messages FINAL WHERE template = 'promo_offer')", phone) == 1
	})
	if n := metric("herald_dispatcher_refusals_total", "reason", "opt_out"); n != 1 {
		t.Errorf("refusals{opt_out} = %v, want 1", n)
	}
}
