package wasim

import (
	"net/http"
	"strings"
	"testing"
)

// TestGraphErrors walks every refusal of the API: its HTTP status, Graph
// error code and body shape, and that it is counted and sends nothing.
func TestGraphErrors(t *testing.T) {
	const to = "+15551230001"
	tests := []struct {
		name   string
		mod    func(*Config)
		before func(t *testing.T, h *harness) // requests that must succeed first
		method string                         // default POST
		path   string                         // default /v23.0/1001/messages
		token  string
		body   string
		// want
		status    int
		code      int
		typ       string // default OAuthException
		subcode   int
		details   string // substring of error_data.details or message
		transient bool
	}{
		{name: "missing token", token: "", body: textBody(to, "hi"), status: 401, code: 104},
		{name: "unknown token", token: "nope", body: textBody(to, "hi"), status: 401, code: 190},
		{name: "token of another number", token: token3, body: textBody(to, "hi"), status: 400, code: 100, typ: "GraphMethodException", subcode: 33},
		{name: "unknown phone number id", path: "/v23.0/9999/messages", token: token1, body: textBody(to, "hi"), status: 400, code: 100, typ: "GraphMethodException", subcode: 33},
		{name: "GET on messages", method: http.MethodGet, token: token1, status: 400, code: 100, typ: "GraphMethodException", subcode: 33},
		{name: "bad version", path: "/23.0/1001/messages", token: token1, body: textBody(to, "hi"), status: 400, code: 2500},
		{name: "unknown path", path: "/v23.0/1001/nothing/here", token: token1, status: 400, code: 2500},
		{name: "malformed JSON", token: token1, body: `{"messaging_product":"whatsapp",`, status: 400, code: 100, details: "not valid JSON"},
		{name: "two JSON objects", token: token1, body: textBody(to, "hi") + "{}", status: 400, code: 100, details: "exactly one"},
		{name: "empty body", token: token1, body: "", status: 400, code: 100, details: "messaging_product"},
		{name: "missing messaging_product", token: token1, body: `{"to":"15551230001","type":"text","text":{"body":"hi"}}`, status: 400, code: 100, details: "messaging_product"},
		{name: "wrong messaging_product", token: token1, body: `{"messaging_product":"sms","to":"15551230001","type":"text","text":{"body":"hi"}}`, status: 400, code: 100, details: "messaging_product"},
		{name: "missing to", token: token1, body: `{"messaging_product":"whatsapp","type":"text","text":{"body":"hi"}}`, status: 400, code: 100, details: "to"},
		{name: "invalid to", token: token1, body: textBody("call-me-maybe", "hi"), status: 400, code: 100, details: "not a valid phone number"},
		{name: "to too short", token: token1, body: textBody("+1234", "hi"), status: 400, code: 100, details: "not a valid phone number"},
		{name: "to of wrong JSON type", token: token1, body: `{"messaging_product":"whatsapp","to":15551230001,"type":"text","text":{"body":"hi"}}`, status: 400, code: 100, details: "type string"},
		{name: "unknown key", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{"body":"hi","bold":true}}`, status: 400, code: 100, details: `"bold"`},
		{name: "unknown type", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"fax"}`, status: 400, code: 100, details: "type"},
		{name: "unsupported type", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"audio","audio":{"id":"1"}}`, status: 400, code: 100, details: "not supported"},
		{name: "object does not match type", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{"body":"x"},"image":{"id":"1"}}`, status: 400, code: 100, details: "image"},
		{name: "group recipient", token: token1, body: `{"messaging_product":"whatsapp","recipient_type":"group","to":"15551230001","type":"text","text":{"body":"x"}}`, status: 400, code: 100},
		{name: "text without body", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{}}`, status: 400, code: 100, details: "body"},
		{name: "text too long", token: token1, body: textBody(to, strings.Repeat("a", 4097)), status: 400, code: 100, details: "4096"},
		{
			name: "biz_opaque_callback_data too long", token: token1,
			body:   `{"messaging_product":"whatsapp","to":"15551230001","type":"text","text":{"body":"x"},"biz_opaque_callback_data":"` + strings.Repeat("d", 513) + `"}`,
			status: 400, code: 100, details: "512",
		},
		{name: "image without id or link", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"image","image":{}}`, status: 400, code: 100},
		{name: "interactive without action", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"interactive","interactive":{"type":"button"}}`, status: 400, code: 100, details: "action"},
		{name: "template without language", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"help_menu"}}`, status: 400, code: 100, details: "language"},
		{name: "template without name", token: token1, body: `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"language":{"code":"en_US"}}}`, status: 400, code: 100, details: "name"},
		{
			name: "template with bad component", token: token1,
			body:   `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"help_menu","language":{"code":"en_US"},"components":[{"type":"footer"}]}}`,
			status: 400, code: 100,
		},
		{
			name: "template parameter without text", token: token1,
			body:   `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"promo_offer","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text"}]}]}}`,
			status: 400, code: 100, details: "text",
		},
		{
			name: "button without index", token: token1,
			body:   `{"messaging_product":"whatsapp","to":"15551230001","type":"template","template":{"name":"help_menu","language":{"code":"en_US"},"components":[{"type":"button","sub_type":"quick_reply","parameters":[{"type":"payload","payload":"x"}]}]}}`,
			status: 400, code: 100, details: "index",
		},
		{name: "template does not exist", token: token1, body: templateBody(to, "no_such", "en_US"), status: 404, code: 132001, details: "no_such"},
		{name: "template not in that language", token: token1, body: templateBody(to, "promo_offer", "de_DE", "Ann"), status: 404, code: 132001, details: "de_DE"},
		{
			name: "template of another WABA", token: token3, path: "/v23.0/1003/messages", body: templateBody(to, "extra_only_waba1", "en_US"),
			status: 404, code: 132001,
			before: func(t *testing.T, h *harness) {
				tm := Template{Name: "extra_only_waba1", Language: "en_US", Category: CategoryUtility, Status: StatusApproved}
				if err := h.sim.SetTemplate(waba1, tm); err != nil {
					t.Fatal(err)
				}
				if r := h.send(t, phone1, token1, templateBody(to, "extra_only_waba1", "en_US")); r.status != 200 {
					t.Fatalf("send in its own WABA: %d %s", r.status, r.raw)
				}
			},
		},
		{name: "template pending", token: token1, body: templateBody(to, "summer_sale_draft", "en_US", "Ann"), status: 404, code: 132001, details: "PENDING"},
		{name: "template rejected", token: token1, body: templateBody(to, "crypto_giveaway", "en_US"), status: 404, code: 132001, details: "REJECTED"},
		{name: "template paused", token: token1, body: templateBody(to, "flash_sale", "en_US", "Ann"), status: 400, code: 132015},
		{name: "template disabled", token: token1, body: templateBody(to, "old_terms", "en_US"), status: 400, code: 132016},
		{name: "too few body params", token: token1, body: templateBody(to, "order_confirmation", "en_US", "Ann"), status: 400, code: 132000, details: "body: number of localizable_params (1) does not match the expected number of params (2)"},
		{name: "too many body params", token: token1, body: templateBody(to, "help_menu", "en_US", "x"), status: 400, code: 132000, details: "(0)"},
		{name: "missing header param", token: token1, body: templateBody(to, "ticket_update", "en_US", "T-1"), status: 400, code: 132000, details: "header"},
		{
			name: "throughput", token: token1, body: templateBody("+15551230002", "help_menu", "en_US"), status: 429, code: 130429,
			mod: func(c *Config) { c.Throughput = 1 },
			before: func(t *testing.T, h *harness) {
				if r := h.send(t, phone1, token1, templateBody(to, "help_menu", "en_US")); r.status != 200 {
					t.Fatalf("first send: %d %s", r.status, r.raw)
				}
			},
		},
		{
			name: "pair rate", token: token1, body: templateBody(to, "welcome_back", "en_US"), status: 429, code: 131056,
			before: func(t *testing.T, h *harness) {
				if r := h.send(t, phone1, token1, templateBody(to, "help_menu", "en_US")); r.status != 200 {
					t.Fatalf("first send: %d %s", r.status, r.raw)
				}
			},
		},
		{name: "sync re-engagement", mod: func(c *Config) { c.SyncDeliveryErrors = true }, token: token1, body: textBody(to, "hi"), status: 400, code: 131047, details: "24 hours"},
		{name: "sync undeliverable", mod: func(c *Config) { c.SyncDeliveryErrors = true }, token: token1, body: templateBody("+15550000000", "help_menu", "en_US"), status: 400, code: 131026},
		{name: "injected 500", mod: func(c *Config) { c.Faults.Error5xxRatio = 1 }, token: token1, body: textBody(to, "hi"), status: 500, code: 131000, transient: true},
		{
			name: "injected 503", mod: func(c *Config) { c.Faults.Error5xxRatio = 1 }, token: token1, body: textBody(to, "hi"), status: 503, code: 2, transient: true,
			before: func(t *testing.T, h *harness) {
				// The 5xx faults alternate by request: burn the first one.
				h.send(t, phone1, token1, textBody(to, "hi"))
			},
		},
		{
			name: "webhook queue full", mod: func(c *Config) { c.WebhookQueue = 1 }, token: token1, body: templateBody("+15551230003", "help_menu", "en_US"), status: 503, code: 2, transient: true,
			before: func(t *testing.T, h *harness) {
				// Run is not running: the first message's statuses fill the queue.
				if r := h.send(t, phone1, token1, templateBody(to, "help_menu", "en_US")); r.status != 200 {
					t.Fatalf("first send: %d %s", r.status, r.raw)
				}
			},
		},
		{name: "templates: unknown token", method: http.MethodGet, path: "/v23.0/2001/message_templates", token: "nope", status: 401, code: 190},
		{name: "templates: token of another WABA", method: http.MethodGet, path: "/v23.0/2001/message_templates", token: token3, status: 400, code: 100, typ: "GraphMethodException", subcode: 33},
		{name: "templates: unknown WABA", method: http.MethodGet, path: "/v23.0/2999/message_templates", token: token1, status: 400, code: 100, subcode: 33, typ: "GraphMethodException"},
		{name: "templates: bad cursor", method: http.MethodGet, path: "/v23.0/2001/message_templates?after=garbage", token: token1, status: 400, code: 100},
		{name: "templates: bad limit", method: http.MethodGet, path: "/v23.0/2001/message_templates?limit=-3", token: token1, status: 400, code: 100},
		{name: "templates: POST", method: http.MethodPost, path: "/v23.0/2001/message_templates", token: token1, status: 400, code: 100, subcode: 33, typ: "GraphMethodException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, hopts{mod: tt.mod})
			if tt.before != nil {
				tt.before(t, h)
			}
			before := h.sim.Stats()
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v23.0/1001/messages"
			}
			r := h.do(t, method, path, tt.token, tt.body)
			if r.status != tt.status || r.code() != tt.code {
				t.Fatalf("got HTTP %d code %d, want HTTP %d code %d: %s", r.status, r.code(), tt.status, tt.code, r.raw)
			}
			if len(r.body) != 1 {
				t.Errorf("error body has keys besides error: %s", r.raw)
			}
			e := r.body["error"].(map[string]any)
			typ := tt.typ
			if typ == "" {
				typ = "OAuthException"
			}
			if e["type"] != typ {
				t.Errorf("type = %v, want %s", e["type"], typ)
			}
			if tr, _ := e["fbtrace_id"].(string); tr == "" {
				t.Errorf("fbtrace_id missing: %s", r.raw)
			}
			msg, _ := e["message"].(string)
			if msg == "" {
				t.Errorf("message missing: %s", r.raw)
			}
			if sub, _ := e["error_subcode"].(float64); int(sub) != tt.subcode {
				t.Errorf("error_subcode = %v, want %d", e["error_subcode"], tt.subcode)
			}
			if tr, _ := e["is_transient"].(bool); tr != tt.transient {
				t.Errorf("is_transient = %v, want %v", e["is_transient"], tt.transient)
			}
			var details string
			if d, ok := e["error_data"].(map[string]any); ok {
				if d["messaging_product"] != "whatsapp" {
					t.Errorf("error_data.messaging_product = %v", d["messaging_product"])
				}
				details, _ = d["details"].(string)
				if !strings.HasPrefix(msg, "(#") {
					t.Errorf("WhatsApp error message %q does not start with (#code)", msg)
				}
			}
			if tt.details != "" && !strings.Contains(details+" "+msg, tt.details) {
				t.Errorf("details %q / message %q do not contain %q", details, msg, tt.details)
			}
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			after := h.sim.Stats()
			if got := after.Rejected[tt.code] - before.Rejected[tt.code]; got != 1 {
				t.Errorf("Rejected[%d] grew by %d, want 1", tt.code, got)
			}
			if after.Accepted != before.Accepted {
				t.Errorf("a refused request was counted as accepted")
			}
		})
	}
}
