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
				{
					"from": "16505551234", "id": "wamid.T1", "timestamp": "1749416383", "type": "text",
					"text": obj{"body": "Promo please"}, "context": obj{"from": "15550783881", "id": "wamid.CTX"},
				},
				{
					"from": "16505551234", "id": "wamid.B1", "timestamp": 1750091045, "type": "button",
					"button": obj{"payload": "STOP", "text": "Unsubscribe"}, "context": obj{"from": "15550783881", "id": "wamid.TPL"},
				},
			}, []obj{
				{
					"id": "wamid.S1", "status": "delivered", "timestamp": "1750000100", "recipient_id": "4915123456789",
					"biz_opaque_callback_data": "disp-1", "conversation": obj{"id": "c1", "origin": obj{"type": "marketing"}},
					"pricing": obj{"billable": true, "pricing_model": "PMP", "category": "marketing"},
				},
				{
					"id": "wamid.S2", "status": "failed", "timestamp": "1750000200", "recipient_id": "442079460958",
					"errors": []obj{{"code": 131026, "title": "Message undeliverable", "message": "x"}, {"code": 1, "title": "second"}},
				},
			})),
			change(value(newsPhone, []obj{contact("919876543210", "Ravi")}, []obj{
				{
					"from": "919876543210", "id": "wamid.L1", "timestamp": "1749854575", "type": "interactive",
					"context":     obj{"from": "15550783881", "id": "wamid.MENU"},
					"interactive": obj{"type": "list_reply", "list_reply": obj{"id": "priority_express", "title": "Priority Mail Express", "description": "Next Day"}},
				},
			}, nil)),
		),
		entry("waba-2",
			change(value(otherPhone, []obj{contact("16505551234", "X")}, []obj{
				{"from": "16505551234", "id": "wamid.FOREIGN1", "timestamp": "1749416383", "type": "text", "text": obj{"body": "hi"}},
			}, nil)),
			change(value("9999", nil, []obj{
				{"from": "16505551234", "id": "wamid.FOREIGN2", "timestamp": "1749416383", "type": "text", "text": obj{"body": "hi"}},
			}, nil)),
			obj{"field": "group_lifecycle_update", "value": obj{
				"messaging_product": "whatsapp",
				"metadata":          obj{"phone_number_id": shopPhone1}, "groups": []obj{{"timestamp": "1750269342", "group_id": "g", "type": "group_create"}},
			}},
			change(value(shopPhone2, []obj{contact("5511987654321", "Ana")}, []obj{
				{
					"from": "5511987654321", "id": "wamid.BR1", "timestamp": "1750025136", "type": "interactive",
					"interactive": obj{"type": "button_reply", "button_reply": obj{"id": "cancel-button", "title": "Cancel"}},
				},
				{
					"from": "5511987654321", "id": "wamid.IMG1", "timestamp": "1744344496", "type": "image",
					"image": obj{"caption": "Taj Mahal", "mime_type": "image/jpeg", "sha256": "x", "id": "1003383421387256"},
				},
			}, []obj{
				{"id": "wamid.S1", "status": "read", "timestamp": "1750000300", "recipient_id": "4915123456789"},
			})),
		),
	)
}

func bigDeliveryWant() []*schemas.Event {
	in := func(app, pnid, from, country, wamid, typ, text, profile, ctx string, ts int64, attrs map[string]any) *schemas.Event {
		return &schemas.Event{
			ID: sha("in|" + wamid), App: app, Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived,
			Time: time.Unix(ts, 0).UTC(), HWID: "whatsapp:" + from, DeviceType: 21, Country: country, Attributes: attrs,
			Inbound: &schemas.Inbound{PhoneNumberID: pnid, From: from, WAMID: wamid, Type: typ, Text: text, ProfileName: profile, ContextID: ctx},
		}
	}
	st := func(pnid, to, country, wamid, status string, ts int64, s schemas.Status) *schemas.Event {
		s.PhoneNumberID, s.WAMID, s.Status, s.Recipient = pnid, wamid, status, to
		return &schemas.Event{
			ID: sha("st|" + wamid + "|" + status), App: "shop", Kind: schemas.KindStatus, Name: schemas.EventWhatsAppStatus,
			Time: time.Unix(ts, 0).UTC(), HWID: "whatsapp:" + to, DeviceType: 21, Country: country, Status: &s,
		}
	}
	evs := []*schemas.Event{
		in("shop", shopPhone1, "+16505551234", "US", "wamid.T1", "text", "Promo please", "Sheena Nelson", "wamid.CTX", 1749416383, nil),
		in("shop", shopPhone1, "+16505551234", "US", "wamid.B1", "button", "STOP", "Sheena Nelson", "wamid.TPL", 1750091045,
			map[string]any{"button_payload": "STOP", "button_text": "Unsubscribe"}),
		st(shopPhone1, "+4915123456789", "DE", "wamid.S1", "delivered", 1750000100,
			schemas.Status{
				DispatchID: "disp-1", PricingCategory: "marketing", Billable: true, PricingModel: "PMP",
				ConversationID: "c1", ConversationOrigin: "marketing",
			}),
		st(shopPhone1, "+442079460958", "GB", "wamid.S2", "failed", 1750000200,
			schemas.Status{ErrorCode: 131026, ErrorTitle: "Message undeliverable", ErrorMessage: "x"}),
		in("news", newsPhone, "+919876543210", "IN", "wamid.L1", "interactive", "Priority Mail Express", "Ravi", "wamid.MENU", 1749854575,
			map[string]any{"interactive_type": "list_reply", "reply_id": "priority_express", "reply_title": "Priority Mail Express", "reply_description": "Next Day"}),
		in("shop", shopPhone2, "+5511987654321", "BR", "wamid.BR1", "interactive", "Cancel", "Ana", "", 1750025136,
			map[string]any{"interactive_type": "button_reply", "reply_id": "cancel-button", "reply_title": "Cancel"}),
		in("shop", shopPhone2, "+5511987654321", "BR", "wamid.IMG1", "image", "Taj Mahal", "Ana", "", 1744344496,
			map[string]any{"media_id": "1003383421387256", "mime_type": "image/jpeg"}),
		st(shopPhone2, "+4915123456789", "DE", "wamid.S1", "read", 1750000300, schemas.Status{}),
	}
	// Typed parts of the inbound messages.
	evs[1].Inbound.Payload = "STOP"
	evs[4].Inbound.Payload = "priority_express"
	evs[5].Inbound.Payload = "cancel-button"
	evs[6].Inbound.Media = &schemas.Media{ID: "1003383421387256", MimeType: "image/jpeg", SHA256: "x", Caption: "Taj Mahal"}
	return evs
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
	// The one status with a dispatch id is also a delivery mark, keyed
	// like the dispatch request, for the dispatcher's reconciliation.
	marks := h.records(schemas.TopicIntents, 1)
	m, err := schemas.DecodeDeliveryMark(marks[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != schemas.MarkStatus || m.DispatchID != "disp-1" || m.App != "shop" || m.To != "+4915123456789" ||
		m.WAMID != "wamid.S1" || m.Status != "delivered" || !m.Time.Equal(time.Unix(1750000100, 0)) {
		t.Fatalf("delivery mark %+v", m)
	}
	if string(marks[0].Key) != string(schemas.RecipientKey("shop", "+4915123456789")) {
		t.Fatalf("delivery mark key %q", marks[0].Key)
	}

	// Meta retries the same delivery: 200, and nothing new reaches Kafka.
	resp = wantOK(t, h.webhook(secretA, body))
	if resp["events"] != float64(0) || resp["duplicates"] != float64(len(want)) {
		t.Fatalf("retry answered %v, want 0 events and %d duplicates", resp, len(want))
	}
	if n := h.endOffset(schemas.TopicEvents); n != int64(len(want)) {
		t.Fatalf("%d records after the retry, want %d", n, len(want))
	}
	if n := metricValue(t, h.srv.m.duplicates.WithLabelValues(apiWebhook)); n != float64(len(want)) {
		t.Fatalf("duplicates metric %v, want %d", n, len(want))
	}
	// A new ingest replica (or a restart) forgets the window: the same ids
	// come out again, so consumers deduplicate them.
	h2 := newHarness(t, Config{})
	wantOK(t, h2.webhook(secretA, body))
	for _, e := range h2.events(len(want)) {
		if e.ID != want[0].ID && byID[e.ID] == nil {
			t.Fatalf("event %s of the redelivery has a new id", e.ID)
		}
	}
	h.noDeadLetters()
}

// TestWebhookDuplicateInOneDelivery: Meta may put the same status twice in
// one POST; it becomes one event.
func TestWebhookDuplicateInOneDelivery(t *testing.T) {
	h := newHarness(t, Config{})
	st := obj{"id": "wamid.D", "status": "read", "timestamp": "1750000300", "recipient_id": "4915123456789"}
	body := payload(entry("waba", change(value(shopPhone1, nil, nil, []obj{st, st})), change(value(shopPhone1, nil, nil, []obj{st}))))
	resp := wantOK(t, h.webhook(secretA, body))
	if resp["events"] != float64(1) || resp["duplicates"] != float64(2) {
		t.Fatalf("answered %v, want 1 event and 2 duplicates", resp)
	}
	if n := h.endOffset(schemas.TopicEvents); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	// Another status of the same message is another event.
	st2 := obj{"id": "wamid.D", "status": "delivered", "timestamp": "1750000200", "recipient_id": "4915123456789"}
	wantOK(t, h.webhook(secretA, payload(entry("waba", change(value(shopPhone1, nil, nil, []obj{st2}))))))
	if n := h.endOffset(schemas.TopicEvents); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}

// TestWebhookRetryAfterFailure: a delivery that got 503 is not in the
// dedup window, so Meta's retry is produced.
func TestWebhookRetryAfterFailure(t *testing.T) {
	h := newHarness(t, Config{ProduceTimeout: 300 * time.Millisecond})
	body := textDelivery(shopPhone1, "16505551234", "wamid.R", "hi")
	h.kc.Broker.Close()
	wantError(t, h.webhook(secretA, body), http.StatusServiceUnavailable, "")
	h2 := newHarness(t, Config{})
	h2.srv.seen = h.srv.seen // the same replica, Kafka back
	resp := wantOK(t, h2.webhook(secretA, body))
	if resp["events"] != float64(1) {
		t.Fatalf("retry after 503 answered %v, want 1 event", resp)
	}
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

// TestWebhookMessageTypes: every inbound type of the OpenAPI file becomes
// typed Inbound fields.
func TestWebhookMessageTypes(t *testing.T) {
	h := newHarness(t, Config{})
	const from = "16505551234"
	msg := func(id, typ string, part obj) obj {
		m := obj{"from": from, "id": id, "timestamp": "1750000000", "type": typ}
		for k, v := range part {
			m[k] = v
		}
		return m
	}
	media := obj{"id": "m1", "mime_type": "video/mp4", "sha256": "abc", "caption": "look"}
	msgs := []obj{
		msg("w.text", "text", obj{"text": obj{"body": "HELP"}}),
		msg("w.video", "video", obj{"video": media}),
		msg("w.doc", "document", obj{"document": obj{"id": "d1", "mime_type": "application/pdf", "filename": "invoice.pdf"}}),
		msg("w.audio", "audio", obj{"audio": obj{"id": "a1", "mime_type": "audio/ogg"}}),
		msg("w.sticker", "sticker", obj{"sticker": obj{"id": "s1", "mime_type": "image/webp"}}),
		msg("w.loc", "location", obj{"location": obj{"latitude": 52.52, "longitude": "13.405", "name": "Berlin HQ", "address": "Alexanderplatz", "url": "https://x.example"}}),
		msg("w.badloc", "location", obj{"location": obj{"latitude": 200, "longitude": "east"}}),
		msg("w.contacts", "contacts", obj{"contacts": []obj{{"name": obj{"formatted_name": "Ana Lima"}, "phones": []obj{{"phone": "+55 11 98765-4321"}, {"phone": ""}}}}}),
		msg("w.react", "reaction", obj{"reaction": obj{"message_id": "wamid.OUT", "emoji": "👍"}}),
		msg("w.unsup", "unsupported", obj{"errors": []obj{{"code": 131051, "title": "Message type unknown"}}}),
		msg("w.notype", "", obj{}),
	}
	wantOK(t, h.webhook(secretA, payload(entry(shopWABA, change(value(shopPhone1, []obj{contact(from, "Sheena")}, msgs, nil))))))
	byWAMID := map[string]*schemas.Inbound{}
	for _, e := range h.events(len(msgs)) {
		byWAMID[e.Inbound.WAMID] = e.Inbound
	}
	base := func(id, typ string) schemas.Inbound {
		return schemas.Inbound{PhoneNumberID: shopPhone1, From: "+" + from, WAMID: id, Type: typ, ProfileName: "Sheena"}
	}
	want := map[string]func(*schemas.Inbound){
		"w.text": func(in *schemas.Inbound) { in.Text = "HELP" },
		"w.video": func(in *schemas.Inbound) {
			in.Text, in.Media = "look", &schemas.Media{ID: "m1", MimeType: "video/mp4", SHA256: "abc", Caption: "look"}
		},
		"w.doc": func(in *schemas.Inbound) {
			in.Media = &schemas.Media{ID: "d1", MimeType: "application/pdf", Filename: "invoice.pdf"}
		},
		"w.audio":   func(in *schemas.Inbound) { in.Media = &schemas.Media{ID: "a1", MimeType: "audio/ogg"} },
		"w.sticker": func(in *schemas.Inbound) { in.Media = &schemas.Media{ID: "s1", MimeType: "image/webp"} },
		"w.loc": func(in *schemas.Inbound) {
			in.Location = &schemas.Location{Latitude: 52.52, Longitude: 13.405, Name: "Berlin HQ", Address: "Alexanderplatz", URL: "https://x.example"}
		},
		"w.badloc": func(in *schemas.Inbound) { in.Location = &schemas.Location{} },
		"w.contacts": func(in *schemas.Inbound) {
			in.Contacts = []schemas.Contact{{Name: "Ana Lima", Phones: []string{"+55 11 98765-4321"}}}
		},
		"w.react":  func(in *schemas.Inbound) { in.Reaction = &schemas.Reaction{MessageID: "wamid.OUT", Emoji: "👍"} },
		"w.unsup":  func(in *schemas.Inbound) { in.ErrorCode, in.ErrorTitle = 131051, "Message type unknown" },
		"w.notype": func(in *schemas.Inbound) { in.Type = "unknown" },
	}
	for _, m := range msgs {
		id, typ := m["id"].(string), m["type"].(string)
		w := base(id, typ)
		want[id](&w)
		got := byWAMID[id]
		if got == nil {
			t.Fatalf("no event for %s", id)
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(&w)
		if string(gj) != string(wj) {
			t.Errorf("%s:\n got %s\nwant %s", id, gj, wj)
		}
	}
}

// TestWebhookTemplateUpdates: template status, quality and category changes
// become template events keyed by template, for the app owning the WABA.
func TestWebhookTemplateUpdates(t *testing.T) {
	h := newHarness(t, Config{})
	tplChange := func(field string, v obj) obj { return obj{"field": field, "value": v} }
	body := payload(
		obj{"id": shopWABA, "time": 1750000000, "changes": []obj{
			tplChange("message_template_status_update", obj{
				"event": "APPROVED", "message_template_id": 594425479261596,
				"message_template_name": "order_update", "message_template_language": "en_US", "reason": "NONE",
			}),
			tplChange("message_template_quality_update", obj{
				"previous_quality_score": "GREEN", "new_quality_score": "YELLOW",
				"message_template_id": 594425479261596, "message_template_name": "order_update", "message_template_language": "en_US",
			}),
			tplChange("template_category_update", obj{
				"previous_category": "UTILITY", "new_category": "MARKETING",
				"message_template_id": 594425479261596, "message_template_name": "order_update", "message_template_language": "en_US",
			}),
			tplChange("message_template_status_update", obj{"event": "REJECTED"}), // no name or id: dead letter
		}},
		// Signed with secretA, but this account is other's (secretB).
		obj{"id": otherWABA, "changes": []obj{tplChange("message_template_status_update", obj{"event": "APPROVED", "message_template_name": "x"})}},
		obj{"id": "unknown-waba", "changes": []obj{tplChange("message_template_status_update", obj{"event": "APPROVED", "message_template_name": "x"})}},
	)
	resp := wantOK(t, h.webhook(secretA, body))
	if resp["events"] != float64(3) || resp["dead_letters"] != float64(1) {
		t.Fatalf("answered %v, want 3 events and 1 dead letter", resp)
	}
	recs := h.records(schemas.TopicEvents, 3)
	want := []schemas.TemplateUpdate{
		{Field: "message_template_status_update", Event: "APPROVED", Reason: "NONE"},
		{Field: "message_template_quality_update", Quality: "YELLOW"},
		{Field: "template_category_update", Category: "MARKETING"},
	}
	got := map[string]*schemas.Event{}
	for _, r := range recs {
		e, err := schemas.DecodeEvent(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != string(schemas.TemplateKey("shop", "order_update")) {
			t.Fatalf("key %q", r.Key)
		}
		got[e.Template.Field] = e
	}
	for _, w := range want {
		w.WABAID, w.TemplateID, w.Name, w.Language = shopWABA, "594425479261596", "order_update", "en_US"
		e := got[w.Field]
		if e == nil || e.Kind != schemas.KindTemplate || e.App != "shop" || !e.Time.Equal(time.Unix(1750000000, 0)) || e.HWID != "" || *e.Template != w {
			t.Fatalf("%s: got %+v (template %+v), want %+v", w.Field, e, e.Template, w)
		}
	}
	if n := metricValue(t, h.srv.m.foreign); n != 2 {
		t.Fatalf("foreign changes %v, want 2", n)
	}
	// Each change is also a signal to the dispatchers, on the templates
	// topic, marked by its header and keyed apart from the template.
	sigs := map[string]*schemas.TemplateSignal{}
	for _, r := range h.records(schemas.TopicTemplates, 3) {
		if len(r.Headers) != 1 || r.Headers[0].Key != schemas.HeaderRecord || string(r.Headers[0].Value) != schemas.RecordTemplateSignal {
			t.Fatalf("signal headers %+v", r.Headers)
		}
		s, err := schemas.DecodeTemplateSignal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != "shop|template-signal:order_update/en_US" || string(r.Key) != string(s.Key()) {
			t.Fatalf("signal key %q", r.Key)
		}
		sigs[s.Template.Field] = s
	}
	for field, e := range got {
		s := sigs[field]
		if s == nil || s.App != "shop" || s.EventID != e.ID || s.Template != *e.Template || !s.Received.Equal(e.Received) || !s.Time.Equal(e.Time) {
			t.Fatalf("%s: signal %+v, event %+v", field, s, e)
		}
	}
	// The retry is dropped, its signals too.
	resp = wantOK(t, h.webhook(secretA, body))
	if resp["events"] != float64(0) || resp["duplicates"] != float64(3) {
		t.Fatalf("retry answered %v", resp)
	}
	if n := h.endOffset(schemas.TopicTemplates); n != 3 {
		t.Fatalf("templates topic holds %d records after the retry, want 3", n)
	}
}

// TestFailedStatusMarkCarriesCode: a failed status with a dispatch id
// becomes a status mark with Meta's first error code, from which the
// dispatcher learns what Meta reports only there (131050, 131047).
func TestFailedStatusMarkCarriesCode(t *testing.T) {
	h := newHarness(t, Config{})
	body := payload(entry("waba-1", change(value(shopPhone1, nil, nil, []obj{
		{
			"id": "wamid.F1", "status": "failed", "timestamp": "1750000400", "recipient_id": "4915123456789",
			"biz_opaque_callback_data": "disp-7",
			"errors":                   []obj{{"code": 131050, "title": "Unable to deliver marketing message", "message": "x"}},
		},
	}))))
	wantOK(t, h.webhook(secretA, body))
	marks := h.records(schemas.TopicIntents, 1)
	m, err := schemas.DecodeDeliveryMark(marks[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != schemas.MarkStatus || m.DispatchID != "disp-7" || m.Status != "failed" || m.ErrorCode != 131050 || m.To != "+4915123456789" {
		t.Fatalf("delivery mark %+v, want a failed status of disp-7 with code 131050", m)
	}
}
