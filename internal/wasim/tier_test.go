package wasim

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMessagingTier: a WABA with a tier of 3 reaches 3 users outside the
// window with templates; a fourth fails with a failed status 131048 (the
// send itself accepted, as Meta reports it); the users reached already,
// users inside the window and free-form messages there do not count; the
// other WABA is not limited; 24 h later the room is back.
func TestMessagingTier(t *testing.T) {
	h := newHarness(t, hopts{run: true, frozen: true, mod: func(c *Config) {
		c.MessagingTier = 3
		c.PairInterval = -1
	}})
	h.sim.SetMessagingTier(waba2, 0)
	send := func(phone, token, to string) string {
		t.Helper()
		res := h.send(t, phone, token, templateBody(to, "order_confirmation", "en_US", "Ann", "A1"))
		if res.status != http.StatusOK || res.wamid() == "" {
			t.Fatalf("template to %s: %d %s", to, res.status, res.raw)
		}
		return res.wamid()
	}
	final := func(wamid string) hookStatus {
		t.Helper()
		var last hookStatus
		waitFor(t, "the statuses of "+wamid, func() bool {
			ss := h.rc1.statusesOf(wamid)
			if len(ss) == 0 {
				return false
			}
			last = ss[len(ss)-1]
			return last.Status == "failed" || last.Status == "read"
		})
		return last
	}
	for i := range 3 {
		if st := final(send(phone1, token1, fmt.Sprintf("+155512310%02d", i))); st.Status != "read" {
			t.Fatalf("user %d within the tier: %s", i, st.Status)
		}
	}
	if n := h.sim.TierUsed(waba1); n != 3 {
		t.Fatalf("TierUsed = %d, want 3", n)
	}
	over := final(send(phone2, token1, "+15551230009")) // another number of the same WABA
	if over.Status != "failed" || len(over.Errors) != 1 || over.Errors[0].Code != CodeSpamRateLimit {
		t.Fatalf("fourth user: status %s errors %+v, want failed 131048", over.Status, over.Errors)
	}
	// Reached already: counts once.
	if st := final(send(phone1, token1, "+15551231001")); st.Status != "read" {
		t.Fatalf("a user reached already: %s", st.Status)
	}
	// Inside the window (the user wrote): not business-initiated.
	if _, err := h.sim.SendInbound(t.Context(), phone1, "+15551230011", "hi"); err != nil {
		t.Fatal(err)
	}
	if st := final(send(phone1, token1, "+15551230011")); st.Status != "read" {
		t.Fatalf("a user inside the window: %s", st.Status)
	}
	// The other WABA is unlimited.
	for i := range 5 {
		to := fmt.Sprintf("+155512410%02d", i)
		res := h.send(t, phone3, token3, templateBody(to, "order_confirmation", "en_US", "Ann", "A1"))
		waitFor(t, "the statuses of "+to, func() bool {
			ss := h.rc3.statusesOf(res.wamid())
			return len(ss) > 0 && ss[len(ss)-1].Status == "read"
		})
	}
	if st := h.sim.Stats(); st.TierRefused != 1 {
		t.Errorf("TierRefused = %d, want 1", st.TierRefused)
	}
	h.clock.advance(24*time.Hour + time.Second)
	if st := final(send(phone1, token1, "+15551230009")); st.Status != "read" {
		t.Fatalf("after 24 h: %s", st.Status)
	}
}

// TestMessagingTierSync: with SyncDeliveryErrors the send over the tier is
// answered 131048 at once.
func TestMessagingTierSync(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) {
		c.MessagingTier = 1
		c.PairInterval = -1
		c.SyncDeliveryErrors = true
	}})
	if res := h.send(t, phone1, token1, templateBody("+15551230001", "order_confirmation", "en_US", "Ann", "A1")); res.status != http.StatusOK {
		t.Fatalf("first user: %d %s", res.status, res.raw)
	}
	res := h.send(t, phone1, token1, templateBody("+15551230002", "order_confirmation", "en_US", "Ann", "A1"))
	if res.status != http.StatusBadRequest || res.code() != CodeSpamRateLimit {
		t.Fatalf("second user: %d %s, want 400 with 131048", res.status, res.raw)
	}
}

// TestAnswerDelay: a message answered after the sender gave up was sent
// all the same: its statuses arrive, with the sender's callback data.
func TestAnswerDelay(t *testing.T) {
	h := newHarness(t, hopts{run: true, mod: func(c *Config) {
		c.Faults.AnswerDelay = time.Minute
	}})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.api.URL+"/v23.0/"+phone1+"/messages",
		strings.NewReader(`{"messaging_product":"whatsapp","to":"+15551239999","type":"template","biz_opaque_callback_data":"d-1",`+
			`"template":{"name":"help_menu","language":{"code":"en_US"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token1)
	cl := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := cl.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d before the delay", resp.StatusCode)
	}
	waitFor(t, "a status with the callback data", func() bool {
		for _, ss := range h.rc1.all() {
			if ss.BizOpaque == "d-1" && ss.Status == "sent" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the message counted accepted", func() bool { return h.sim.Stats().Accepted == 1 })
}

// all returns every status received, in no particular order.
func (rc *receiver) all() []hookStatus {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hookStatus
	for _, ss := range rc.statuses {
		out = append(out, ss...)
	}
	return out
}
