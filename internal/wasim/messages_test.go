package wasim

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

var wamidRE = regexp.MustCompile(`^wamid\.[A-Za-z0-9+/]+=*$`)

// TestSendResponseShape checks the exact JSON of accepted sends.
func TestSendResponseShape(t *testing.T) {
	tests := []struct {
		name   string
		inWin  bool // open the window of the recipient first
		to     string
		body   func(to string) string
		want   string // with the wamid replaced by WAMID
		header string // facebook-api-version
	}{
		{
			name: "template", to: "+1 (555) 123-4567",
			body: func(to string) string { return templateBody(to, "order_confirmation", "en_US", "Ann", "A-1001") },
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"+1 (555) 123-4567","wa_id":"15551234567"}],"messages":[{"id":"WAMID","message_status":"accepted"}]}`,
		},
		{
			name: "template with header, currency and buttons", to: "15551234568",
			body: func(to string) string {
				return `{"messaging_product":"whatsapp","recipient_type":"individual","to":"` + to + `","type":"template",
				"biz_opaque_callback_data":"dispatch-42",
				"template":{"name":"ticket_update","language":{"policy":"deterministic","code":"en_US"},"components":[
				{"type":"header","parameters":[{"type":"text","text":"T-1"}]},
				{"type":"body","parameters":[{"type":"currency","currency":{"fallback_value":"$10","code":"USD","amount_1000":10000}}]},
				{"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"STOP"}]},
				{"type":"button","sub_type":"url","index":1,"parameters":[{"type":"text","text":"abc"}]}]}}`
			},
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"15551234568","wa_id":"15551234568"}],"messages":[{"id":"WAMID","message_status":"accepted"}]}`,
		},
		{
			name: "text in the window", inWin: true, to: "+15551234569",
			body: func(to string) string { return textBody(to, "Your order has shipped") },
			// Meta sends message_status for template messages only.
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"+15551234569","wa_id":"15551234569"}],"messages":[{"id":"WAMID"}]}`,
		},
		{
			name: "text outside the window is accepted (fails by webhook)", to: "+15551234570",
			body: func(to string) string { return textBody(to, "hello?") },
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"+15551234570","wa_id":"15551234570"}],"messages":[{"id":"WAMID"}]}`,
		},
		{
			name: "image", inWin: true, to: "+15551234571",
			body: func(to string) string {
				return `{"messaging_product":"whatsapp","to":"` + to + `","type":"image","image":{"link":"https://example.com/a.jpg","caption":"hi"}}`
			},
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"+15551234571","wa_id":"15551234571"}],"messages":[{"id":"WAMID"}]}`,
		},
		{
			name: "interactive", inWin: true, to: "+15551234572",
			body: func(to string) string {
				return `{"messaging_product":"whatsapp","to":"` + to + `","type":"interactive","interactive":{"type":"button","body":{"text":"Pick"},"action":{"buttons":[{"type":"reply","reply":{"id":"a","title":"A"}}]}}}`
			},
			want: `{"messaging_product":"whatsapp","contacts":[{"input":"+15551234572","wa_id":"15551234572"}],"messages":[{"id":"WAMID"}]}`,
		},
		{
			name: "mark as read", to: "15551234573",
			body: func(string) string {
				return `{"messaging_product":"whatsapp","status":"read","message_id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}`
			},
			want: `{"success":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, hopts{run: true})
			if tt.inWin {
				if _, err := h.sim.SendInbound(t.Context(), phone1, tt.to, "hi"); err != nil {
					t.Fatal(err)
				}
			}
			r := h.send(t, phone1, token1, tt.body(tt.to))
			if r.status != 200 {
				t.Fatalf("HTTP %d: %s", r.status, r.raw)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if v := r.header.Get("facebook-api-version"); v != "v23.0" {
				t.Errorf("facebook-api-version = %q", v)
			}
			got := r.body
			if id := r.wamid(); id != "" {
				if !wamidRE.MatchString(id) {
					t.Errorf("wamid %q is not shaped like Meta's", id)
				}
				got["messages"].([]any)[0].(map[string]any)["id"] = "WAMID"
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				gb, _ := json.Marshal(got)
				t.Errorf("response\n got %s\nwant %s", gb, tt.want)
			}
		})
	}
}

// TestWAMIDsUnique checks that wamids differ across messages and simulators.
func TestWAMIDsUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 2 {
		h := newHarness(t, hopts{mod: func(c *Config) { c.PairInterval = -1; c.Throughput = -1 }})
		for i := range 50 {
			r := h.send(t, phone1, token1, templateBody("+1555123"+strconv.Itoa(1000+i), "help_menu", "en_US"))
			id := r.wamid()
			if id == "" || seen[id] {
				t.Fatalf("wamid %q is empty or repeated", id)
			}
			seen[id] = true
		}
	}
}

// TestStatusWebhooks checks the payload of every status of a template
// message: Meta's shape, signature, biz_opaque_callback_data echo, pricing.
func TestStatusWebhooks(t *testing.T) {
	h := newHarness(t, hopts{run: true})
	body := `{"messaging_product":"whatsapp","to":"+15551112222","type":"template","biz_opaque_callback_data":"dispatch-7",
		"template":{"name":"promo_offer","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"Ann"}]}]}}`
	start := time.Now().Unix()
	r := h.send(t, phone2, token1, body)
	if r.status != 200 {
		t.Fatalf("HTTP %d: %s", r.status, r.raw)
	}
	wamid := r.wamid()
	waitFor(t, "read status", func() bool { return len(h.rc1.statusesOf(wamid)) == 3 })
	got := h.rc1.statusesOf(wamid)
	if names := statusNames(got); !slices.Equal(names, []string{"sent", "delivered", "read"}) {
		t.Fatalf("statuses = %v", names)
	}
	for _, s := range got {
		ts, err := strconv.ParseInt(s.Timestamp, 10, 64)
		if err != nil || ts < start || ts > time.Now().Unix() {
			t.Errorf("%s: timestamp %q is not unix seconds of now", s.Status, s.Timestamp)
		}
		if s.RecipientID != "15551112222" || s.BizOpaque != "dispatch-7" || len(s.Errors) != 0 {
			t.Errorf("%s: recipient %q, biz_opaque %q, errors %v", s.Status, s.RecipientID, s.BizOpaque, s.Errors)
		}
		if s.Status == "read" {
			if s.Pricing != nil || s.Conversation != nil {
				t.Errorf("read carries pricing or conversation")
			}
			continue
		}
		if s.Pricing == nil || *s.Pricing != (struct {
			Billable     bool   `json:"billable"`
			PricingModel string `json:"pricing_model"`
			Category     string `json:"category"`
			Type         string `json:"type"`
		}{true, "PMP", "marketing", "regular"}) {
			t.Errorf("%s: pricing = %+v", s.Status, s.Pricing)
		}
		if s.Conversation == nil || s.Conversation.ID == "" || s.Conversation.Origin.Type != "marketing" {
			t.Errorf("%s: conversation = %+v", s.Status, s.Conversation)
		}
		if (s.Status == "sent") != (s.Conversation != nil && s.Conversation.ExpirationTimestamp != "") {
			t.Errorf("%s: expiration_timestamp %+v: want it on sent only", s.Status, s.Conversation)
		}
	}
	h.rc1.mu.Lock()
	p := h.rc1.payloads[0]
	h.rc1.mu.Unlock()
	if p.Object != "whatsapp_business_account" || len(p.Entry) != 1 || p.Entry[0].ID != waba1 ||
		len(p.Entry[0].Changes) != 1 || p.Entry[0].Changes[0].Field != "messages" {
		t.Errorf("envelope = %+v", p)
	}
	v := p.Entry[0].Changes[0].Value
	if v.MessagingProduct != "whatsapp" || v.Metadata.PhoneNumberID != phone2 || !regexp.MustCompile(`^1555[0-9]{7}$`).MatchString(v.Metadata.DisplayPhoneNumber) {
		t.Errorf("value = %+v", v)
	}
	if _, bad := h.rc1.count(); bad != 0 {
		t.Errorf("%d webhooks had a bad signature", bad)
	}
	// The simulator counts a webhook after the receiver answered it: wait
	// for the last count rather than race it.
	waitFor(t, "webhook counts", func() bool { st := h.sim.Stats(); return st.WebhooksSent == 3 && st.Pending == 0 })
	st := h.sim.Stats()
	if st.Accepted != 1 || st.WebhooksSent != 3 || st.Statuses["sent"] != 1 || st.Statuses["delivered"] != 1 || st.Statuses["read"] != 1 || st.Pending != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestPricing checks the pricing category and billability by message kind
// and service window.
func TestPricing(t *testing.T) {
	tests := []struct {
		name     string
		inWin    bool
		body     func(to string) string
		category string
		billable bool
		typ      string
	}{
		{"marketing template", false, func(to string) string { return templateBody(to, "welcome_back", "en_US") }, "marketing", true, "regular"},
		{"marketing template in window", true, func(to string) string { return templateBody(to, "welcome_back", "en_US") }, "marketing", true, "regular"},
		{"authentication template", false, func(to string) string { return templateBody(to, "otp_code", "en_US", "123456") }, "authentication", true, "regular"},
		{"utility template", false, func(to string) string { return templateBody(to, "help_menu", "en_US") }, "utility", true, "regular"},
		{"utility template in window", true, func(to string) string { return templateBody(to, "help_menu", "en_US") }, "utility", false, "free_customer_service"},
		{"text in window", true, func(to string) string { return textBody(to, "hi") }, "service", false, "free_customer_service"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.ReadRatio = -1 }})
			to := "+1555444" + strconv.Itoa(1000+i)
			if tt.inWin {
				if _, err := h.sim.SendInbound(t.Context(), phone1, to, "hello"); err != nil {
					t.Fatal(err)
				}
			}
			r := h.send(t, phone1, token1, tt.body(to))
			if r.status != 200 {
				t.Fatalf("HTTP %d: %s", r.status, r.raw)
			}
			waitFor(t, "delivered", func() bool { return len(h.rc1.statusesOf(r.wamid())) == 2 })
			for _, s := range h.rc1.statusesOf(r.wamid()) {
				p := s.Pricing
				if p == nil || p.Category != tt.category || p.Billable != tt.billable || p.Type != tt.typ || p.PricingModel != "PMP" {
					t.Errorf("%s: pricing %+v, want %s billable=%v %s", s.Status, p, tt.category, tt.billable, tt.typ)
				}
			}
		})
	}
}

// TestFailedStatuses checks the messages that are accepted and then fail
// by webhook, as graph.facebook.com does.
func TestFailedStatuses(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		body string
		code int
	}{
		{"text outside the window", nil, textBody("+15553330001", "hi"), 131047},
		{"image outside the window", nil, `{"messaging_product":"whatsapp","to":"15553330002","type":"image","image":{"id":"123"}}`, 131047},
		{"undeliverable recipient", nil, templateBody("+15553330000", "help_menu", "en_US"), 131026},
		{"fail ratio", func(c *Config) { c.Faults.FailRatio = 1 }, templateBody("+15553330003", "help_menu", "en_US"), 131026},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, hopts{run: true, mod: tt.mod})
			r := h.send(t, phone1, token1, tt.body)
			if r.status != 200 {
				t.Fatalf("HTTP %d: %s", r.status, r.raw)
			}
			waitFor(t, "failed status", func() bool { return h.sim.Stats().Pending == 0 })
			got := h.rc1.statusesOf(r.wamid())
			if len(got) != 1 || got[0].Status != "failed" {
				t.Fatalf("statuses = %v, want [failed]", statusNames(got))
			}
			s := got[0]
			if len(s.Errors) != 1 || s.Errors[0].Code != tt.code || s.Errors[0].Title == "" || s.Errors[0].Message == "" ||
				s.Errors[0].ErrorData.Details == "" || s.Errors[0].Href == "" {
				t.Errorf("errors = %+v", s.Errors)
			}
			if s.Pricing != nil || s.Conversation != nil {
				t.Errorf("failed status carries pricing or conversation")
			}
		})
	}
}

// TestFaults checks drop and lost-response faults and SetFaults.
func TestFaults(t *testing.T) {
	h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.Faults.DropRatio = 1 }})
	r := h.send(t, phone1, token1, templateBody("+15556660001", "help_menu", "en_US"))
	if r.status != 200 {
		t.Fatalf("HTTP %d: %s", r.status, r.raw)
	}
	if st := h.sim.Stats(); st.Dropped != 1 || st.Pending != 0 || st.Accepted != 1 {
		t.Errorf("after a dropped message: %+v", st)
	}

	h.sim.SetFaults(Faults{LostResponseRatio: 1})
	body := `{"messaging_product":"whatsapp","to":"15556660002","type":"template","biz_opaque_callback_data":"d-lost",
		"template":{"name":"help_menu","language":{"code":"en_US"}}}`
	r = h.send(t, phone1, token1, body)
	if r.status != 500 || r.code() != CodeUnknownError {
		t.Fatalf("lost response: HTTP %d: %s", r.status, r.raw)
	}
	// The message went out all the same: its statuses arrive.
	waitFor(t, "statuses of the lost response", func() bool { return h.sim.Stats().Pending == 0 })
	h.rc1.mu.Lock()
	var found []string
	for _, ss := range h.rc1.statuses {
		for _, s := range ss {
			if s.BizOpaque == "d-lost" {
				found = append(found, s.Status)
			}
		}
	}
	h.rc1.mu.Unlock()
	if !slices.Equal(found, []string{"sent", "delivered", "read"}) {
		t.Errorf("statuses of the lost-response message = %v", found)
	}
	if st := h.sim.Stats(); st.LostResponses != 1 || st.Accepted != 2 || st.Rejected[CodeUnknownError] != 0 {
		t.Errorf("stats = %+v", st)
	}

	h.sim.SetFaults(Faults{Error5xxRatio: 7, DropRatio: -1}) // clamped to 1 and 0
	if r := h.send(t, phone1, token1, templateBody("+15556660003", "help_menu", "en_US")); r.status < 500 {
		t.Errorf("Error5xxRatio clamped to 1 still answered %d", r.status)
	}
	h.sim.SetFaults(Faults{})
	if r := h.send(t, phone1, token1, templateBody("+15556660003", "help_menu", "en_US")); r.status != 200 {
		t.Errorf("without faults: HTTP %d: %s", r.status, r.raw)
	}
}

func TestLatencyFault(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.Faults.Latency = 30 * time.Millisecond }})
	start := time.Now()
	if r := h.send(t, phone1, token1, templateBody("+15556660004", "help_menu", "en_US")); r.status != 200 {
		t.Fatalf("HTTP %d", r.status)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Errorf("answered after %v, want at least the 30ms latency", el)
	}
}

// TestStatusOrder sends many messages at once through several workers and
// a slow receiver: statuses of one message stay in order.
func TestStatusOrder(t *testing.T) {
	h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.WebhookWorkers = 4; c.Throughput = -1 }})
	// Slow some requests down so that messages interleave.
	h.rc1.setFail(func(n int) bool { time.Sleep(time.Duration(n%3) * time.Millisecond); return false })
	var ids []string
	for i := range 40 {
		r := h.send(t, phone1, token1, templateBody("+1555777"+strconv.Itoa(1000+i), "help_menu", "en_US"))
		if r.status != 200 {
			t.Fatalf("HTTP %d: %s", r.status, r.raw)
		}
		ids = append(ids, r.wamid())
	}
	waitFor(t, "all statuses", func() bool { return h.sim.Stats().Pending == 0 })
	interleaved := false
	h.rc1.mu.Lock()
	for i := 1; i < len(h.rc1.payloads); i++ {
		a := h.rc1.payloads[i-1].Entry[0].Changes[0].Value.Statuses[0].ID
		b := h.rc1.payloads[i].Entry[0].Changes[0].Value.Statuses[0].ID
		if a != b && h.rc1.payloads[i].Entry[0].Changes[0].Value.Statuses[0].Status != "sent" {
			interleaved = true
		}
	}
	h.rc1.mu.Unlock()
	for _, id := range ids {
		if got := statusNames(h.rc1.statusesOf(id)); !slices.Equal(got, []string{"sent", "delivered", "read"}) {
			t.Errorf("%s: statuses %v", id, got)
		}
	}
	if !interleaved {
		t.Logf("messages did not interleave this run")
	}
}

// TestWebhookRetries makes the receiver fail and checks that statuses are
// retried in order, then abandoned after WebhookRetryFor.
func TestWebhookRetries(t *testing.T) {
	t.Run("retried until accepted", func(t *testing.T) {
		h := newHarness(t, hopts{run: true})
		h.rc1.setFail(func(n int) bool { return n <= 3 })
		r := h.send(t, phone1, token1, templateBody("+15558880001", "help_menu", "en_US"))
		waitFor(t, "statuses", func() bool { return h.sim.Stats().Pending == 0 })
		if got := statusNames(h.rc1.statusesOf(r.wamid())); !slices.Equal(got, []string{"sent", "delivered", "read"}) {
			t.Errorf("statuses %v", got)
		}
		if st := h.sim.Stats(); st.WebhooksFailed != 3 || st.WebhooksSent != 3 || st.WebhooksAbandoned != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.WebhookRetryFor = 30 * time.Millisecond }})
		h.rc1.setFail(func(int) bool { return true })
		h.send(t, phone1, token1, templateBody("+15558880002", "help_menu", "en_US"))
		waitFor(t, "abandon", func() bool { return h.sim.Stats().Pending == 0 })
		st := h.sim.Stats()
		if st.WebhooksAbandoned != 3 || st.WebhooksSent != 0 || st.WebhooksFailed < 3 {
			t.Errorf("stats = %+v", st)
		}
	})
	t.Run("receiver down", func(t *testing.T) {
		h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.WebhookRetryFor = 30 * time.Millisecond; c.ReadRatio = -1 }})
		h.rc1.srv.Close()
		h.send(t, phone1, token1, templateBody("+15558880003", "help_menu", "en_US"))
		waitFor(t, "abandon", func() bool { return h.sim.Stats().Pending == 0 })
		if st := h.sim.Stats(); st.WebhooksAbandoned != 2 {
			t.Errorf("stats = %+v", st)
		}
	})
}

// TestReadRatio checks that reads follow the wamid hash.
func TestReadRatio(t *testing.T) {
	tests := []struct {
		name  string
		ratio float64
	}{{"none", -1}, {"half", 0.5}, {"all", 1}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.ReadRatio = tt.ratio; c.Throughput = -1 }})
			var ids []string
			for i := range 60 {
				r := h.send(t, phone1, token1, templateBody("+1555999"+strconv.Itoa(1000+i), "help_menu", "en_US"))
				ids = append(ids, r.wamid())
			}
			waitFor(t, "statuses", func() bool { return h.sim.Stats().Pending == 0 })
			reads := 0
			for _, id := range ids {
				got := statusNames(h.rc1.statusesOf(id))
				read := len(got) == 3
				if read {
					reads++
				}
				if read != hit(id, "read", tt.ratio) || !slices.Equal(got[:2], []string{"sent", "delivered"}) {
					t.Errorf("%s: statuses %v, hash says read=%v", id, got, hit(id, "read", tt.ratio))
				}
			}
			switch {
			case tt.ratio < 0 && reads != 0, tt.ratio == 1 && reads != 60, tt.ratio == 0.5 && (reads < 10 || reads > 50):
				t.Errorf("%d of 60 read with ratio %v", reads, tt.ratio)
			}
		})
	}
}

// TestInbound checks the inbound webhooks and that they open the window.
func TestInbound(t *testing.T) {
	h := newHarness(t, hopts{run: true, mod: func(c *Config) { c.SyncDeliveryErrors = true }})
	if r := h.send(t, phone3, token3, textBody("+15552220001", "hi")); r.code() != CodeReEngagement {
		t.Fatalf("text before any inbound: HTTP %d %s", r.status, r.raw)
	}
	start := time.Now().Unix()
	wamid, err := h.sim.SendInbound(t.Context(), phone3, "+15552220001", "HELP")
	if err != nil {
		t.Fatal(err)
	}
	if !wamidRE.MatchString(wamid) {
		t.Errorf("inbound wamid %q", wamid)
	}
	h.rc3.mu.Lock()
	p := h.rc3.payloads[len(h.rc3.payloads)-1]
	h.rc3.mu.Unlock()
	v := h.rc3.inbound(wamid)
	if p.Object != "whatsapp_business_account" || p.Entry[0].ID != waba2 || p.Entry[0].Changes[0].Field != "messages" ||
		v.MessagingProduct != "whatsapp" || v.Metadata.PhoneNumberID != phone3 || len(v.Statuses) != 0 {
		t.Errorf("envelope = %+v", p)
	}
	if len(v.Contacts) != 1 || v.Contacts[0].WAID != "15552220001" || v.Contacts[0].Profile.Name == "" {
		t.Errorf("contacts = %+v", v.Contacts)
	}
	m := v.Messages
	if len(m) != 1 || m[0].From != "15552220001" || m[0].ID != wamid || m[0].Type != "text" || m[0].Text == nil || m[0].Text.Body != "HELP" {
		t.Fatalf("messages = %+v", m)
	}
	if ts, _ := strconv.ParseInt(m[0].Timestamp, 10, 64); ts < start {
		t.Errorf("timestamp %q", m[0].Timestamp)
	}
	// The window is open now, for that number only.
	if r := h.send(t, phone3, token3, textBody("+15552220001", "How can we help?")); r.status != 200 {
		t.Errorf("text in the window: HTTP %d %s", r.status, r.raw)
	}
	if r := h.send(t, phone1, token1, textBody("+15552220001", "hi")); r.code() != CodeReEngagement {
		t.Errorf("text from another number: HTTP %d %s", r.status, r.raw)
	}

	bw, err := h.sim.SendInboundButton(t.Context(), phone3, "15552220001", "wamid.abc", "STOP", "Stop promotions")
	if err != nil {
		t.Fatal(err)
	}
	bm := h.rc3.inbound(bw).Messages
	if len(bm) != 1 || bm[0].ID != bw || bm[0].Type != "button" || bm[0].Button == nil || bm[0].Button.Payload != "STOP" ||
		bm[0].Button.Text != "Stop promotions" || bm[0].Context == nil || bm[0].Context.ID != "wamid.abc" {
		t.Errorf("button message = %+v", bm)
	}
	if _, bad := h.rc3.count(); bad != 0 {
		t.Errorf("%d bad signatures", bad)
	}
	if st := h.sim.Stats(); st.Inbound != 2 {
		t.Errorf("Inbound = %d", st.Inbound)
	}
}

func TestInboundErrors(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.Numbers[2].WebhookURL = "" }})
	h.rc1.setFail(func(int) bool { return true })
	tests := []struct {
		name  string
		phone string
		from  string
		text  string
		want  error
	}{
		{"webhook answers 500", phone1, "15552220002", "hi", ErrWebhookRejected},
		{"unknown number", "9999", "15552220002", "hi", ErrUnknownNumber},
		{"no webhook url", phone3, "15552220002", "hi", ErrNoWebhook},
		{"bad from", phone1, "not a number", "hi", nil},
		{"empty text", phone1, "15552220002", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.sim.SendInbound(t.Context(), tt.phone, tt.from, tt.text)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
