package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

const pathWhatsApp = "/json/1.3/createWhatsAppMessage"

func TestCreateWhatsAppMessage(t *testing.T) {
	h := newHarness(t, Config{})
	past := time.Now().UTC().Add(-time.Hour).Format("2006-01-02 15:04")
	body := `{"request":{"application":"shop","notifications":[
		{"send_date":"now","content_id":"order_update","language":"de","campaign":"spring",
		 "devices":["whatsapp:+4915123456789","+49 151 23456789","+16505551234"],
		 "content_variables":{"2":"#1234","1":"John"},"header_variables":["Sale"],"button_url_variables":{"0":"order/1234"}},
		{"send_date":"` + past + `","content":"Your parcel is here.\nReply HELP for help.","devices":["whatsapp:+16505551234"]}
	]}}`
	from := time.Now().UTC()
	resp := wantOK(t, h.post(pathWhatsApp, shopToken2, body))
	to := time.Now().UTC()
	codes, _ := resp["Messages"].([]any)
	if len(codes) != 2 || resp["dispatch_requests"] != float64(3) {
		t.Fatalf("answer %v, want 2 message codes and 3 dispatch requests", resp)
	}
	if at, _ := resp["send_at"].([]any); len(at) != 2 || at[0] != nil || at[1] != nil {
		t.Fatalf("send_at %v, want [null null]: nothing is scheduled", resp["send_at"])
	}
	id := func(code any, to string) string {
		sum := sha256.Sum256([]byte("shop|" + code.(string) + "|" + to))
		return hex.EncodeToString(sum[:16])
	}
	tpl := &schemas.Template{Name: "order_update", Language: "de", Body: []string{"John", "#1234"}, Header: []string{"Sale"}, ButtonURL: map[int]string{0: "order/1234"}}
	want := map[string]*schemas.DispatchRequest{
		id(codes[0], "+4915123456789"): {To: "+4915123456789", Country: "DE", Template: tpl, Source: schemas.Source{Kind: "api", Name: "spring"}},
		id(codes[0], "+16505551234"):   {To: "+16505551234", Country: "US", Template: tpl, Source: schemas.Source{Kind: "api", Name: "spring"}},
		id(codes[1], "+16505551234"): {
			To: "+16505551234", Country: "US", Text: &schemas.Text{Body: "Your parcel is here.\nReply HELP for help."},
			Source: schemas.Source{Kind: "api", Name: "createWhatsAppMessage"},
		},
	}
	for _, r := range h.records(schemas.TopicDispatch, 3) {
		d, err := schemas.DecodeDispatchRequest(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		w := want[d.ID]
		if w == nil {
			t.Fatalf("unexpected dispatch request %s to %s", d.ID, d.To)
		}
		if d.Created.Before(from) || d.Created.After(to) || d.Deadline.Sub(d.Created) != 24*time.Hour {
			t.Fatalf("created %s deadline %s", d.Created, d.Deadline)
		}
		w.V, w.ID, w.App, w.Channel, w.Sender, w.HWID, w.Created, w.Deadline = schemas.V1, d.ID, "shop", schemas.ChannelWhatsApp, shopPhone1, "whatsapp:"+w.To, d.Created, d.Deadline
		g, _ := json.Marshal(d)
		wj, _ := json.Marshal(w)
		if string(g) != string(wj) {
			t.Fatalf("dispatch request\n got %s\nwant %s", g, wj)
		}
		if string(r.Key) != string(schemas.RecipientKey("shop", d.To)) {
			t.Fatalf("key %q", r.Key)
		}
		delete(want, d.ID)
	}
	if n := h.endOffset(schemas.TopicEvents); n != 0 {
		t.Fatalf("%d events, want none", n)
	}
	if n := h.endOffset(schemas.TopicScheduled); n != 0 {
		t.Fatalf("%d scheduled requests, want none: no send_date is in the future", n)
	}
}

// TestCreateWhatsAppMessageScheduled: a send_date in the future puts the
// requests on TopicScheduled with send_at and a deadline a day after it;
// one within scheduleTolerance sends now.
func TestCreateWhatsAppMessageScheduled(t *testing.T) {
	h := newHarness(t, Config{})
	at := time.Now().UTC().Add(3 * time.Hour).Truncate(time.Minute)
	soon := time.Now().UTC().Add(30 * time.Second).Format("2006-01-02 15:04") // within scheduleTolerance
	body := `{"request":{"application":"shop","notifications":[
		{"send_date":"` + at.Format("2006-01-02 15:04") + `","content_id":"order_update","devices":["+4915123456789","+16505551234"]},
		{"send_date":"` + soon + `","content_id":"order_update","devices":["+16505551234"]}
	]}}`
	before := time.Now().UTC()
	resp := wantOK(t, h.post(pathWhatsApp, shopToken, body))
	codes, _ := resp["Messages"].([]any)
	sendAt, _ := resp["send_at"].([]any)
	if len(codes) != 2 || resp["dispatch_requests"] != float64(3) || len(sendAt) != 2 {
		t.Fatalf("answer %v, want 2 codes, 3 dispatch requests, 2 send_at", resp)
	}
	if sendAt[0] != at.Format(time.RFC3339) || sendAt[1] != nil {
		t.Fatalf("send_at %v, want [%s null]", sendAt, at.Format(time.RFC3339))
	}
	got := map[string]bool{}
	for _, r := range h.records(schemas.TopicScheduled, 2) {
		d, err := schemas.DecodeDispatchRequest(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.ValidateScheduled(); err != nil {
			t.Fatal(err)
		}
		if !d.SendAt.Equal(at) || !d.Deadline.Equal(at.Add(24*time.Hour)) || d.Created.Before(before) {
			t.Fatalf("send_at %s deadline %s created %s, want %s, %s, after %s", d.SendAt, d.Deadline, d.Created, at, at.Add(24*time.Hour), before)
		}
		if string(r.Key) != string(schemas.RecipientKey("shop", d.To)) {
			t.Fatalf("key %q", r.Key)
		}
		got[d.To] = true
	}
	if !got["+4915123456789"] || !got["+16505551234"] {
		t.Fatalf("scheduled recipients %v", got)
	}
	now := h.records(schemas.TopicDispatch, 1)
	d, err := schemas.DecodeDispatchRequest(now[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if !d.SendAt.IsZero() || d.To != "+16505551234" || d.Deadline.Sub(d.Created) != 24*time.Hour {
		t.Fatalf("sent-now request: send_at %s to %s created %s deadline %s", d.SendAt, d.To, d.Created, d.Deadline)
	}
	if v := metricValue(t, h.srv.m.produced.WithLabelValues("scheduled")); v != 2 {
		t.Fatalf("herald_ingest_records_produced_total{kind=scheduled} = %v, want 2", v)
	}
}

func TestCreateWhatsAppMessageRejects(t *testing.T) {
	h := newHarness(t, Config{})
	tooFar := time.Now().UTC().Add(schemas.MaxScheduleAhead + 2*time.Minute).Format("2006-01-02 15:04")
	call := func(n string) string {
		return `{"request":{"application":"shop","notifications":[` + n + `]}}`
	}
	dev := `"devices":["+16505551234"]`
	tests := []struct {
		name, body string
		token      string
		code       int
		field      string
	}{
		{"no notifications", `{"request":{"application":"shop","notifications":[]}}`, shopToken, 400, "request.notifications"},
		{"no request", `{}`, shopToken, 400, "request"},
		{"other app's token", call(`{"content_id":"t",` + dev + `}`), newsToken, 403, "request.application"},
		{"both contents", call(`{"content":"x","content_id":"t",` + dev + `}`), shopToken, 400, "request.notifications[0].content"},
		{"no content", call(`{` + dev + `}`), shopToken, 400, "request.notifications[0].content_id"},
		{"bad template name", call(`{"content_id":"Order Update",` + dev + `}`), shopToken, 400, "request.notifications[0].content_id"},
		{"bad language", call(`{"content_id":"t","language":"!!",` + dev + `}`), shopToken, 400, "request.notifications[0].language"},
		{"variable gap", call(`{"content_id":"t","content_variables":{"1":"a","3":"c"},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables"},
		{"variable zero", call(`{"content_id":"t","content_variables":{"0":"a"},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables.0"},
		{"variable object", call(`{"content_id":"t","content_variables":{"1":{"x":1}},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables.1"},
		{"variable empty", call(`{"content_id":"t","content_variables":{"1":""},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables.1"},
		{"variable with newline", call(`{"content_id":"t","content_variables":{"1":"a\nb"},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables.1"},
		{"button index", call(`{"content_id":"t","button_url_variables":{"12":"x"},` + dev + `}`), shopToken, 400, "request.notifications[0].button_url_variables.12"},
		{"variables on text", call(`{"content":"hi","content_variables":{"1":"a"},` + dev + `}`), shopToken, 400, "request.notifications[0].content_variables"},
		{"no devices", call(`{"content_id":"t"}`), shopToken, 400, "request.notifications[0].devices"},
		{"empty devices", call(`{"content_id":"t","devices":[]}`), shopToken, 400, "request.notifications[0].devices"},
		{"devices not strings", call(`{"content_id":"t","devices":[1]}`), shopToken, 400, "request.notifications[0].devices"},
		{"sms device", call(`{"content_id":"t","devices":["+16505551234","sms:+16505551234"]}`), shopToken, 400, "request.notifications[0].devices[1]"},
		{"invalid number", call(`{"content_id":"t","devices":["+15550000000"]}`), shopToken, 400, "request.notifications[0].devices[0]"},
		{"send date too far ahead", call(`{"content_id":"t","send_date":"` + tooFar + `",` + dev + `}`), shopToken, 400, "request.notifications[0].send_date"},
		{"second send date too far ahead", call(`{"content_id":"t",` + dev + `},{"content_id":"t","send_date":"` + tooFar + `",` + dev + `}`), shopToken, 400, "request.notifications[1].send_date"},
		{"bad send date", call(`{"content_id":"t","send_date":"tomorrow",` + dev + `}`), shopToken, 400, "request.notifications[0].send_date"},
		{"second notification bad", call(`{"content_id":"t",` + dev + `},{"content_id":"t"}`), shopToken, 400, "request.notifications[1].devices"},
		{"notification not an object", call(`7`), shopToken, 400, "request.notifications[0]"},
		{"text too long", call(`{"content":"` + string(make([]byte, 0)) + longText(4097) + `",` + dev + `}`), shopToken, 400, "request.notifications[0].content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.post(pathWhatsApp, tc.token, tc.body), tc.code, tc.field)
		})
	}
	for _, topic := range []string{schemas.TopicDispatch, schemas.TopicScheduled} {
		if n := h.endOffset(topic); n != 0 {
			t.Fatalf("%s: %d dispatch requests after refused calls", topic, n)
		}
	}
}

func longText(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

func TestUnregisterAndRegisterUser(t *testing.T) {
	h := newHarness(t, Config{})
	from := time.Now()
	wantOK(t, h.post("/json/1.3/unregisterDevice", shopToken, `{"request":{"application":"shop","hwid":"whatsapp:+1 650 555 1234"}}`))
	wantOK(t, h.post("/json/1.3/registerUser", shopToken, `{"request":{"application":"shop","userId":"u-9","hwid":"whatsapp:+16505551234","device_type":21}}`))
	to := time.Now()
	evs := h.events(2)
	sameEvent(t, evs[0], &schemas.Event{
		App: "shop", Kind: schemas.KindUnregister, Name: schemas.EventDeviceUnregistered,
		HWID: "whatsapp:+16505551234", Country: "US",
	}, from, to)
	sameEvent(t, evs[1], &schemas.Event{
		App: "shop", Kind: schemas.KindEvent, Name: schemas.EventUserRegistered,
		HWID: "whatsapp:+16505551234", UserID: "u-9", Country: "US", DeviceType: 21,
	}, from, to)
	wantError(t, h.post("/json/1.3/unregisterDevice", shopToken, `{"request":{"application":"shop"}}`), http.StatusBadRequest, "request.hwid")
	wantError(t, h.post("/json/1.3/registerUser", shopToken, `{"request":{"application":"shop","hwid":"x"}}`), http.StatusBadRequest, "request.userId")
	wantError(t, h.post("/json/1.3/registerUser", shopToken, `{"request":{"application":"shop","userId":"u","device_type":5}}`), http.StatusBadRequest, "request.device_type")
	wantError(t, h.post("/json/1.3/unregisterDevice", otherToken, `{"request":{"application":"shop","hwid":"x"}}`), http.StatusForbidden, "request.application")
	if n := h.endOffset(schemas.TopicEvents); n != 2 {
		t.Fatalf("%d records, want 2", n)
	}
}
