package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

type obj = map[string]any

func payload(entries ...obj) string {
	b, err := json.Marshal(obj{"object": "whatsapp_business_account", "entry": entries})
	if err != nil {
		panic(err)
	}
	return string(b)
}

func entry(id string, changes ...obj) obj { return obj{"id": id, "changes": changes} }

func change(value obj) obj { return obj{"field": "messages", "value": value} }

func value(pnid string, contacts, messages, statuses []obj) obj {
	v := obj{"messaging_product": "whatsapp", "metadata": obj{"display_phone_number": "15550783881", "phone_number_id": pnid}}
	if contacts != nil {
		v["contacts"] = contacts
	}
	if messages != nil {
		v["messages"] = messages
	}
	if statuses != nil {
		v["statuses"] = statuses
	}
	return v
}

func contact(waID, name string) obj { return obj{"profile": obj{"name": name}, "wa_id": waID} }

// textDelivery is Meta's text message example for one business number.
func textDelivery(pnid, from, wamid, text string) string {
	return payload(entry("waba", change(value(pnid, []obj{contact(from, "Sheena Nelson")}, []obj{{
		"from": from, "id": wamid, "timestamp": "1749416383", "type": "text", "text": obj{"body": text},
	}}, nil))))
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// bigDelivery has several entries and changes: five changes of apps whose
// Meta app secret is secretA (shop on two numbers, news), one of an app of
// secretB, one of an unknown number, one group update.
func bigDelivery() string {
	return payload(
		entry("waba-1",
			change(value(shopPhone1, []obj{contact("16505551234", "Sheena Nelson")}, []obj{
				{"from": "16505551234", "id": "wamid.T1", "timestamp": "1749416383", "type": "text",
					"text": obj{"body": "Promo please"}, "context": obj{"from": "15550783881", "id": "wamid.CTX"}},
				{"from": "16505551234", "id": "wamid.B1", "timestamp": 1750091045, "type": "button",
					"button": obj{"payload": "STOP", "text": "Unsubscribe"}, "context": obj{"from": "15550783881", "id": "wamid.TPL"}},
			}, []obj{
				{"id": "wamid.S1", "status": "delivered", "timestamp": "1750000100", "recipient_id": "4915123456789",
					"biz_opaque_callback_data": "disp-1", "conversation": obj{"id": "c1", "origin": obj{"type": "marketing"}},
					"pricing": obj{"billable": true, "pricing_model": "PMP", "category": "marketing"}},
				{"id": "wamid.S2", "status": "failed", "timestamp": "1750000200", "recipient_id": "442079460958",
					"errors": []obj{{"code": 131026, "title": "Message undeliverable", "message": "x"}, {"code": 1, "title": "second"}}},
			})),
			change(value(newsPhone, []obj{contact("919876543210", "Ravi")}, []obj{
				{"from": "919876543210", "id": "wamid.L1", "timestamp": "1749854575", "type": "interactive",
					"context":     obj{"from": "15550783881", "id": "wamid.MENU"},
					"interactive": obj{"type": "list_reply", "list_reply": obj{"id": "priority_express", "title": "Priority Mail Express", "description": "Next Day"}}},
			}, nil)),
		),
		entry("waba-2",
			change(value(otherPhone, []obj{contact("16505551234", "X")}, []obj{
				{"from": "16505551234", "id": "wamid.FOREIGN1", "timestamp": "1749416383", "type": "text", "text": obj{"body": "hi"}},
			}, nil)),
			change(value("9999", nil, []obj{
				{"from": "16505551234", "id": "wamid.FOREIGN2", "timestamp": "1749416383", "type": "text", "text": obj{"body": "hi"}},
			}, nil)),
			obj{"field": "group_lifecycle_update", "value": obj{"messaging_product": "whatsapp",
				"metadata": obj{"phone_number_id": shopPhone1}, "groups": []obj{{"timestamp": "1750269342", "group_id": "g", "type": "group_create"}}}},
			change(value(shopPhone2, []obj{contact("5511987654321", "Ana")}, []obj{
				{"from": "5511987654321", "id": "wamid.BR1", "timestamp": "1750025136", "type": "interactive",
					"interactive": obj{"type": "button_reply", "button_reply": obj{"id": "cancel-button", "title": "Cancel"}}},
				{"from": "5511987654321", "id": "wamid.IMG1", "timestamp": "1744344496", "type": "image",
					"image": obj{"caption": "Taj Mahal", "mime_type": "image/jpeg", "sha256": "x", "id": "1003383421387256"}},
			}, []obj{
				{"id": "wamid.S1", "status": "read", "timestamp": "1750000300", "recipient_id": "4915123456789"},
			})),
		),
	)
}

func bigDeliveryWant() []*schemas.Event {
	in := func(app, pnid, from, country, wamid, typ, text, profile, ctx string, ts int64, attrs map[string]any) *schemas.Event {
		return &schemas.Event{ID: sha("in|" + wamid), App: app, Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived,
			Time: time.Unix(ts, 0).UTC(), HWID: "whatsapp:" + from, DeviceType: 21, Country: country, Attributes: attrs,
			Inbound: &schemas.Inbound{PhoneNumberID: pnid, From: from, WAMID: wamid, Type: typ, Text: text, ProfileName: profile, ContextID: ctx}}
	}
	st := func(pnid, to, country, wamid, status string, ts int64, s schemas.Status) *schemas.Event {
		s.PhoneNumberID, s.WAMID, s.Status, s.Recipient = pnid, wamid, status, to
		return &schemas.Event{ID: sha("st|" + wamid + "|" + status), App: "shop", Kind: schemas.KindStatus, Name: schemas.EventWhatsAppStatus,
			Time: time.Unix(ts, 0).UTC(), HWID: "whatsapp:" + to, DeviceType: 21, Country: country, Status: &s}
	}
	return []*schemas.Event{
		in("shop", shopPhone1, "+16505551234", "US", "wamid.T1", "text", "Promo please", "Sheena Nelson", "wamid.CTX", 1749416383, nil),
		in("shop", shopPhone1, "+16505551234", "US", "wamid.B1", "button", "STOP", "Sheena Nelson", "wamid.TPL", 1750091045,
			map[string]any{"button_payload": "STOP", "button_text": "Unsubscribe"}),
		st(shopPhone1, "+4915123456789", "DE", "wamid.S1", "delivered", 1750000100,
			schemas.Status{DispatchID: "disp-1", PricingCategory: "marketing", Billable: true}),
		st(shopPhone1, "+442079460958", "GB", "wamid.S2", "failed", 1750000200,
			schemas.Status{ErrorCode: 131026, ErrorTitle: "Message undeliverable"}),
		in("news", newsPhone, "+919876543210", "IN", "wamid.L1", "interactive", "Priority Mail Express", "Ravi", "wamid.MENU", 1749854575,
			map[string]any{"interactive_type": "list_reply", "reply_id": "priority_express", "reply_title": "Priority Mail Express", "reply_description": "Next Day"}),
		in("shop", shopPhone2, "+5511987654321", "BR", "wamid.BR1", "interactive", "Cancel", "Ana", "", 1750025136,
			map[string]any{"interactive_type": "button_reply", "reply_id": "cancel-button", "reply_title": "Cancel"}),
		in("shop", shopPhone2, "+5511987654321", "BR", "wamid.IMG1", "image", "Taj Mahal", "Ana", "", 1744344496,
			map[string]any{"media_id": "1003383421387256", "mime_type": "image/jpeg"}),
		st(shopPhone2, "+4915123456789", "DE", "wamid.S1", "read", 1750000300, schemas.Status{}),
	}
}

func TestWebhookDelivery(t *testing.T) {
	h := newHarness(t, Config{})
	body := bigDelivery()
	want := bigDeliveryWant()

	from := time.Now()
	resp := wantOK(t, h.webhook(secretA, body))
	to := time.Now()
	if resp["events"] != float64(len(want)) || resp["dead_letters"] != float64(0) {
		t.Fatalf("answer %v, want %d events and no dead letters", resp, len(want))
	}
	got := h.events(len(want))
	byID := map[string]*schemas.Event{}
	for _, e := range got {
		if byID[e.ID] != nil {
			t.Fatalf("event id %s twice", e.ID)
		}
		byID[e.ID] = e
	}
	for _, w := range want {
		g := byID[w.ID]
		if g == nil {
			t.Fatalf("no event %s (%s %s)", w.ID, w.Kind, w.Name)
		}
		sameEvent(t, g, w, from, to)
	}
	if n := metricValue(t, h.srv.m.foreign); n != 2 {
		t.Fatalf("foreign changes %v, want 2", n)
	}
	if n := metricValue(t, h.srv.m.skipped.WithLabelValues(skipField)); n != 1 {
		t.Fatalf("skipped fields %v, want 1", n)
	}
	if n := metricValue(t, h.srv.m.produced.WithLabelValues(string(schemas.KindInbound))); n != 5 {
		t.Fatalf("inbound records produced %v, want 5", n)
	}

	// Meta retries the same delivery: the same ids come out again, so
	// consumers deduplicate them.
	wantOK(t, h.webhook(secretA, body))
	count := map[string]int{}
	for _, e := range h.events(2 * len(want)) {
		count[e.ID]++
	}
	for _, w := range want {
		if count[w.ID] != 2 {
			t.Fatalf("event %s appears %d times after the retry, want 2", w.ID, count[w.ID])
		}
	}
	h.noDeadLetters()
}

func (h *harness) noDeadLetters() {
	h.t.Helper()
	if n := h.endOffset(schemas.TopicDeadLetter); n != 0 {
		h.t.Fatalf("%d dead letters", n)
	}
}

// TestWebhookSecretDecidesApp: a body signed with one app's secret carries
// data for that app's numbers only, whatever numbers it names.
func TestWebhookSecretDecidesApp(t *testing.T) {
	h := newHarness(t, Config{})
	msg := func(id string) []obj {
		return []obj{{"from": "16505551234", "id": id, "timestamp": "1749416383", "type": "text", "text": obj{"body": "hi"}}}
	}
	body := payload(entry("w", change(value(otherPhone, nil, msg("wamid.O"), nil)), change(value(shopPhone1, nil, msg("wamid.S"), nil))))
	resp := wantOK(t, h.webhook(secretB, body))
	if resp["events"] != float64(1) {
		t.Fatalf("answer %v, want 1 event", resp)
	}
	ev := h.events(1)[0]
	if ev.App != "other" || ev.Inbound.WAMID != "wamid.O" {
		t.Fatalf("event of app %s wamid %s, want other's wamid.O", ev.App, ev.Inbound.WAMID)
	}
	if n := metricValue(t, h.srv.m.foreign); n != 1 {
		t.Fatalf("foreign changes %v, want 1", n)
	}
}

func TestWebhookRejects(t *testing.T) {
	good := textDelivery(shopPhone1, "16505551234", "wamid.1", "hi")
	tests := []struct {
		name  string
		sig   string // X-Hub-Signature-256; "-" for none
		body  string
		code  int
		field string
	}{
		{"missing signature", "-", good, 401, "X-Hub-Signature-256"},
		{"empty signature", "", good, 401, "X-Hub-Signature-256"},
		{"sha1 signature", "sha1=" + strings.Repeat("ab", 20), good, 401, "X-Hub-Signature-256"},
		{"signature not hex", "sha256=" + strings.Repeat("zz", 32), good, 401, "X-Hub-Signature-256"},
		{"signature too short", "sha256=abcd", good, 401, "X-Hub-Signature-256"},
		{"unknown secret", sign("not-a-secret", good), good, 401, "X-Hub-Signature-256"},
		{"signature of another body", sign(secretA, good+" "), good, 401, "X-Hub-Signature-256"},
		{"uppercase prefix", strings.Replace(sign(secretA, good), "sha256=", "SHA256=", 1), good, 401, "X-Hub-Signature-256"},
		{"malformed json", sign(secretA, `{"object":`), `{"object":`, 400, "body"},
		{"not an object", sign(secretA, `"x"`), `"x"`, 400, "body"},
		{"entry is a string", sign(secretA, `{"object":"whatsapp_business_account","entry":"x"}`), `{"object":"whatsapp_business_account","entry":"x"}`, 400, "entry"},
		{"changes is an object", sign(secretA, `{"entry":[{"changes":{}}]}`), `{"entry":[{"changes":{}}]}`, 400, "entry.changes"},
		{"empty body", sign(secretA, ``), ``, 400, "body"},
		{"data after the object", sign(secretA, good+`{}`), good + `{}`, 400, "body"},
	}
	h := newHarness(t, Config{})
	sigFailures := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.sig != "-" {
				hdr = []string{"X-Hub-Signature-256", tc.sig}
			}
			wantError(t, h.do(http.MethodPost, "/whatsapp/webhooks", tc.body, hdr...), tc.code, tc.field)
			h.noRecords()
		})
		if tc.code == 401 {
			sigFailures++
		}
	}
	if n := metricValue(t, h.srv.m.sigFailures); n != float64(sigFailures) {
		t.Fatalf("signature failures %v, want %d", n, sigFailures)
	}
}

// TestWebhookIgnored: valid deliveries with nothing for Herald answer 200
// (Meta would otherwise retry them for days) and produce nothing.
func TestWebhookIgnored(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		reason string
	}{
		{"another object", `{"object":"page","entry":[{"id":"1","changes":[]}]}`, skipObject},
		{"group update", payload(entry("w", obj{"field": "group_lifecycle_update", "value": obj{"groups": []obj{}}})), skipField},
		{"no metadata", payload(entry("w", change(obj{"messages": []obj{{"from": "1", "id": "x"}}}))), skipMalformed},
		{"metadata is a string", payload(entry("w", change(obj{"metadata": "x"}))), skipMalformed},
		{"no entries", `{"object":"whatsapp_business_account","entry":[]}`, ""},
	}
	h := newHarness(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := metricValue(t, h.srv.m.skipped.WithLabelValues(tc.reason))
			resp := wantOK(t, h.webhook(secretA, tc.body))
			if resp["events"] != float64(0) {
				t.Fatalf("answer %v, want no events", resp)
			}
			h.noRecords()
			if after := metricValue(t, h.srv.m.skipped.WithLabelValues(tc.reason)); tc.reason != "" && after != before+1 {
				t.Fatalf("skipped{%s} went from %v to %v, want +1", tc.reason, before, after)
			}
		})
	}
}

// TestWebhookDeadLetter: messages and statuses Herald cannot map are kept
// on the dead-letter topic, whole, with the reason; the rest of the
// delivery goes through.
func TestWebhookDeadLetter(t *testing.T) {
	h := newHarness(t, Config{})
	bad := []obj{
		{"id": "wamid.nofrom", "timestamp": "1749416383", "type": "text", "text": obj{"body": "x"}},
		{"from": "16505551234", "id": "wamid.badts", "timestamp": "soon", "type": "text"},
		{"from": "16505551234", "id": "wamid.badtext", "timestamp": "1749416383", "type": "text", "text": "not an object"},
	}
	badStatuses := []obj{
		{"id": "wamid.x", "timestamp": "1750000100", "recipient_id": "16505551234"},
		{"id": "wamid.y", "status": "sent", "timestamp": "1750000100", "recipient_id": "120363@g.us"},
	}
	good := obj{"from": "16505551234", "id": "wamid.ok", "timestamp": "1749416383", "type": "text", "text": obj{"body": "ok"}}
	body := payload(entry("w", change(value(shopPhone1, nil, append([]obj{good}, bad...), badStatuses))))
	resp := wantOK(t, h.webhook(secretA, body))
	if resp["events"] != float64(1) || resp["dead_letters"] != float64(5) {
		t.Fatalf("answer %v, want 1 event and 5 dead letters", resp)
	}
	if ev := h.events(1)[0]; ev.Inbound.WAMID != "wamid.ok" || ev.Inbound.Text != "ok" {
		t.Fatalf("event %+v, want wamid.ok", ev.Inbound)
	}
	wantReasons := map[string]string{
		"entry[0].changes[0].value.messages[1]": "wamid.nofrom",
		"entry[0].changes[0].value.messages[2]": "wamid.badts",
		"entry[0].changes[0].value.messages[3]": "wamid.badtext",
		"entry[0].changes[0].value.statuses[0]": "wamid.x",
		"entry[0].changes[0].value.statuses[1]": "wamid.y",
	}
	for _, r := range h.records(schemas.TopicDeadLetter, 5) {
		dl, err := schemas.DecodeDeadLetter(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Stage != "ingest" || dl.Topic != schemas.TopicEvents || string(dl.Key) != "shop" || string(r.Key) != "shop" {
			t.Fatalf("dead letter %+v", dl)
		}
		found := false
		for where, wamid := range wantReasons {
			if strings.Contains(dl.Reason, where) {
				found = true
				if !strings.Contains(string(dl.Value), `"`+wamid+`"`) {
					t.Fatalf("dead letter for %s holds %s", where, dl.Value)
				}
				delete(wantReasons, where)
			}
		}
		if !found {
			t.Fatalf("unexpected dead letter reason %q", dl.Reason)
		}
	}
	if n := metricValue(t, h.srv.m.produced.WithLabelValues("deadletter")); n != 5 {
		t.Fatalf("dead letters counted %v, want 5", n)
	}
}

func TestWebhookVerify(t *testing.T) {
	tests := []struct {
		name  string
		query string
		code  int
		field string
	}{
		{"shop token", "hub.mode=subscribe&hub.verify_token=verify-shop&hub.challenge=1158201444", 200, ""},
		{"news token", "hub.mode=subscribe&hub.verify_token=verify-news&hub.challenge=abc", 200, ""},
		{"wrong token", "hub.mode=subscribe&hub.verify_token=verify-nope&hub.challenge=1", 403, "hub.verify_token"},
		{"no token", "hub.mode=subscribe&hub.challenge=1", 403, "hub.verify_token"},
		{"wrong mode", "hub.mode=unsubscribe&hub.verify_token=verify-shop&hub.challenge=1", 403, "hub.mode"},
		{"no challenge", "hub.mode=subscribe&hub.verify_token=verify-shop", 400, "hub.challenge"},
	}
	h := newHarness(t, Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.do(http.MethodGet, "/whatsapp/webhooks?"+tc.query, "")
			if tc.code != 200 {
				wantError(t, rec, tc.code, tc.field)
				return
			}
			if rec.Code != 200 || rec.Body.String() != strings.Split(tc.query, "hub.challenge=")[1] {
				t.Fatalf("status %d body %q", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Fatalf("Content-Type %q, want text/plain", ct)
			}
		})
	}
	h.noRecords()
}
