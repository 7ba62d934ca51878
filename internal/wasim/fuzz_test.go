package wasim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var sendSeeds = []string{
	templateBody("+15551234567", "order_confirmation", "en_US", "Ann", "A-1"),
	templateBody("15550000000", "help_menu", "en_US"),
	textBody("+15551234567", "hi"),
	`{"messaging_product":"whatsapp","to":"1555123","type":"template","template":{"name":"ticket_update","language":{"code":"en_US","policy":"deterministic"},"components":[{"type":"header","parameters":[{"type":"image","image":{"link":"https://x"}}]},{"type":"body","parameters":[{"type":"date_time","date_time":{"fallback_value":"May 1"}},{"type":"currency","currency":{"fallback_value":"$1","code":"USD","amount_1000":1000}}]},{"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"x"}]}]}}`,
	`{"messaging_product":"whatsapp","to":"1555123","type":"interactive","interactive":{"type":"list","action":{"sections":[]}}}`,
	`{"messaging_product":"whatsapp","to":"1555123","type":"image","image":{"id":"1","caption":"c"}}`,
	`{"messaging_product":"whatsapp","status":"read","message_id":"wamid.x"}`,
	`{"messaging_product":"whatsapp","to":"1555123","type":"template","template":{"name":"a","language":{"code":"en"},"components":[{"type":"button","sub_type":"quick_reply","index":99,"parameters":[]}]}}`,
	`{"to":null,"type":[],"text":{"body":1}}`,
	`[]`, `null`, `"x"`, `{`, ``,
}

// FuzzDecodeSend feeds arbitrary bodies to the send decoder: it never
// panics, and what it accepts is a well-formed message.
func FuzzDecodeSend(f *testing.F) {
	for _, s := range sendSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, gerr := decodeSend(body)
		if (r == nil) == (gerr == nil) {
			t.Fatalf("decodeSend returned %v and %v", r, gerr)
		}
		if gerr != nil {
			if gerr.Code != CodeInvalidParameter || gerr.status != http.StatusBadRequest {
				t.Fatalf("decoder error with code %d, HTTP %d", gerr.Code, gerr.status)
			}
			return
		}
		if r.markRead {
			return
		}
		if _, ok := normalizeWAID(r.waID); !ok || r.waID == "" {
			t.Fatalf("accepted recipient %q", r.waID)
		}
		switch r.Type {
		case "template":
			if r.Template == nil || r.Template.Name == "" || r.Template.Language == nil || r.Template.Language.Code == "" {
				t.Fatalf("accepted template %+v", r.Template)
			}
		case "text":
			if r.Text == nil || r.Text.Body == "" {
				t.Fatalf("accepted text %+v", r.Text)
			}
		case "image", "interactive":
		default:
			t.Fatalf("accepted type %q", r.Type)
		}
	})
}

// FuzzSendHandler runs arbitrary bodies through the whole send endpoint:
// every answer is a 200 with a wamid or a Graph error body.
func FuzzSendHandler(f *testing.F) {
	for _, s := range sendSeeds {
		f.Add([]byte(s))
	}
	cfg := Config{
		Numbers:      []Number{{PhoneNumberID: "1001", WABAID: "2001", AccessToken: "tok", AppSecret: "s"}},
		Templates:    append(DefaultTemplates(), Template{Name: "ticket_update", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, BodyParams: 2, HeaderParams: 1}),
		Throughput:   -1,
		PairInterval: -1,
	}
	sim, err := New(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := sim.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v23.0/1001/messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var resp map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatalf("HTTP %d with a non-JSON body: %q", w.Code, w.Body.String())
		}
		if w.Code == http.StatusOK {
			if _, ok := resp["success"]; ok {
				return
			}
			ms, _ := resp["messages"].([]any)
			if len(ms) != 1 {
				t.Fatalf("200 without one message: %s", w.Body.String())
			}
			return
		}
		e, ok := resp["error"].(map[string]any)
		if !ok || e["code"] == nil || e["message"] == nil || e["type"] == nil {
			t.Fatalf("HTTP %d without a Graph error: %s", w.Code, w.Body.String())
		}
	})
}

// FuzzDecodeCursor checks that no cursor panics and that cursors round-trip.
func FuzzDecodeCursor(f *testing.F) {
	for _, s := range []string{encodeCursor(0), encodeCursor(12), "garbage", "", "dHBsOi0x", strings.Repeat("A", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		i, ok := decodeCursor(c)
		if ok {
			if i < 0 {
				t.Fatalf("negative index %d from %q", i, c)
			}
			if j, ok2 := decodeCursor(encodeCursor(i)); !ok2 || j != i {
				t.Fatalf("cursor %d does not round-trip", i)
			}
		}
	})
}
