package dispatcher

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// FuzzDecodeResponse feeds arbitrary Graph answers to the decoder: it must
// not panic, and it returns either a message id or an error, a *GraphError for
// every non-2xx answer.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(200, []byte(`{"messaging_product":"whatsapp","contacts":[{"input":"+1555","wa_id":"1555"}],"messages":[{"id":"wamid.X"}]}`))
	f.Add(400, []byte(graphErr(400, 131047, 2494010, false).body))
	f.Add(500, []byte(`{"error":{"code":131000,"is_transient":true,"error_data":{"details":"x"}}}`))
	f.Add(200, []byte(`{"error":null,"messages":[{}]}`))
	f.Add(502, []byte(`<html>502</html>`))
	f.Add(200, []byte(`{"messages":[{"id":7}]}`))
	f.Add(429, []byte{})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		status = 100 + (status%500+500)%500
		id, err := decodeResponse(status, body)
		if (id == "") == (err == nil) {
			t.Fatalf("decodeResponse(%d, %q) = %q, %v: want exactly one of id and error", status, body, id, err)
		}
		var ge *GraphError
		if status/100 != 2 && !errors.As(err, &ge) {
			t.Fatalf("decodeResponse(%d, %q) = %v, want a *GraphError", status, body, err)
		}
		if err != nil {
			_ = err.Error()
			_ = IsRetryable(err)
			_ = errorCode(err)
			_ = errorLabel(err)
		}
	})
}

// FuzzEncodeMessage checks that any request the checks accept encodes to
// JSON that carries the recipient, the dispatch id and the content intact.
func FuzzEncodeMessage(f *testing.F) {
	f.Add("d-1", "+15551234567", "promo", "en_US", "Ann", "track/1", 0, "")
	f.Add("d-2", "15551234567", "", "", "", "", 3, "hello <b>&</b>")
	f.Add("\x00\xff", "+1", "n", "l", "\u2028", "x", 10, "")
	f.Fuzz(func(t *testing.T, id, to, name, lang, param, button string, index int, text string) {
		req := &schemas.DispatchRequest{ID: id, To: to}
		if text != "" {
			req.Text = &schemas.Text{Body: text}
		} else {
			req.Template = &schemas.Template{Name: name, Language: lang, Body: []string{param}, ButtonURL: map[int]string{index: button}}
		}
		b, err := encodeMessage(req)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("encodeMessage error %v does not wrap ErrInvalidRequest", err)
			}
			return
		}
		var got waMessage
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("encodeMessage produced invalid json %q: %v", b, err)
		}
		if got.To != to || got.MessagingProduct != "whatsapp" || got.RecipientType != "individual" {
			t.Fatalf("envelope %+v", got)
		}
		// JSON replaces invalid UTF-8; compare what survives the trip.
		rt := func(s string) string { var o string; bb, _ := json.Marshal(s); _ = json.Unmarshal(bb, &o); return o }
		if got.BizOpaque != rt(id) {
			t.Fatalf("biz_opaque_callback_data %q, want %q", got.BizOpaque, rt(id))
		}
		if text != "" {
			if got.Type != "text" || got.Text == nil || got.Text.Body != rt(text) {
				t.Fatalf("text message %+v", got)
			}
			return
		}
		if got.Type != "template" || got.Template == nil || got.Template.Name != rt(name) || len(got.Template.Components) != 2 ||
			got.Template.Components[0].Parameters[0].Text != rt(param) || got.Template.Components[1].Parameters[0].Text != rt(button) {
			t.Fatalf("template message %s", b)
		}
	})
}

// FuzzTemplatePage feeds arbitrary template listings (Meta's answer, outside
// input) to the decoder and the mapping: no panic, every template kept is a
// valid record, and the parameter checks judge any request against it.
func FuzzTemplatePage(f *testing.F) {
	f.Add([]byte(`{"data":[{"name":"n","language":"en_US","status":"APPROVED","category":"UTILITY","id":"1","components":[`+
		`{"type":"HEADER","format":"TEXT","text":"Hi {{1}}"},{"type":"BODY","text":"{{1}} {{2}}"},`+
		`{"type":"BUTTONS","buttons":[{"type":"URL","url":"https://x/{{1}}"},{"type":"OTP"}]}]}],"paging":{"cursors":{"after":"a"},"next":"x"}}`),
		uint8(2), uint8(1), "suffix")
	f.Add([]byte(`{"data":[{"name":"n","language":"en","status":"PAUSED","parameter_format":"NAMED","components":[{"type":"body","example":{"body_text":[[]],"body_text_named_params":[{}]}}]}]}`),
		uint8(0), uint8(0), "")
	f.Add([]byte(`{"data":[{"components":[{"type":"HEADER","format":"image"},{"type":"BUTTONS","buttons":null}]}]}`), uint8(1), uint8(1), "x")
	app := &apps.App{ID: "shop", WhatsApp: apps.WhatsApp{WABAID: "2001"}}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, nBody, nHeader uint8, button string) {
		var p graphTemplatePage
		if json.Unmarshal(body, &p) != nil {
			return
		}
		for i := range p.Data {
			d, err := templateDef(app, &p.Data[i], now)
			if err != nil {
				continue
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("templateDef kept an invalid record %+v: %v", d, err)
			}
			if d.BodyParams < 0 || (d.Header != nil && d.Header.Params < 0) {
				t.Fatalf("negative parameter counts %+v", d)
			}
			req := &schemas.Template{
				Name: d.Name, Language: d.Language, Body: make([]string, nBody%40), Header: make([]string, nHeader%3),
				ButtonURL: map[int]string{int(nBody % 12): button},
			}
			_ = d.ParamProblems(req)
		}
	})
}
