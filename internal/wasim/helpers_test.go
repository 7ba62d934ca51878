package wasim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Test identities: numbers 1001 and 1002 share WABA 2001 and token tok-1;
// 1003 is alone in WABA 2002.
const (
	phone1  = "1001"
	phone2  = "1002"
	phone3  = "1003"
	waba1   = "2001"
	waba2   = "2002"
	token1  = "tok-1"
	token3  = "tok-3"
	secret1 = "secret-1"
	secret3 = "secret-3"
)

// The test side of the webhook payload, written from Meta's webhook
// reference independently of the simulator's own types.
type hookPayload struct {
	Object string      `json:"object"`
	Entry  []hookEntry `json:"entry"`
}

type hookEntry struct {
	ID string `json:"id"`
	// Time is set on template changes (Unix seconds).
	Time    int64        `json:"time"`
	Changes []hookChange `json:"changes"`
}

// hookChange is a change; its value is decoded strictly by field: Value
// for messages, Template for message_template_status_update.
type hookChange struct {
	Field    string          `json:"field"`
	Raw      json.RawMessage `json:"value"`
	Value    hookValue       `json:"-"`
	Template hookTemplate    `json:"-"`
}

// hookTemplate is the value of a message_template_status_update change.
type hookTemplate struct {
	Event    string      `json:"event"`
	ID       json.Number `json:"message_template_id"`
	Name     string      `json:"message_template_name"`
	Language string      `json:"message_template_language"`
	Reason   string      `json:"reason"`
}

type hookValue struct {
	MessagingProduct string `json:"messaging_product"`
	Metadata         struct {
		DisplayPhoneNumber string `json:"display_phone_number"`
		PhoneNumberID      string `json:"phone_number_id"`
	} `json:"metadata"`
	Contacts []struct {
		Profile struct {
			Name string `json:"name"`
		} `json:"profile"`
		WAID string `json:"wa_id"`
	} `json:"contacts"`
	Messages []struct {
		Context *struct {
			From string `json:"from"`
			ID   string `json:"id"`
		} `json:"context"`
		From      string `json:"from"`
		ID        string `json:"id"`
		Timestamp string `json:"timestamp"`
		Type      string `json:"type"`
		Text      *struct {
			Body string `json:"body"`
		} `json:"text"`
		Button *struct {
			Payload string `json:"payload"`
			Text    string `json:"text"`
		} `json:"button"`
	} `json:"messages"`
	Statuses []hookStatus `json:"statuses"`
}

type hookStatus struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Timestamp    string `json:"timestamp"`
	RecipientID  string `json:"recipient_id"`
	BizOpaque    string `json:"biz_opaque_callback_data"`
	Conversation *struct {
		ID                  string `json:"id"`
		ExpirationTimestamp string `json:"expiration_timestamp"`
		Origin              struct {
			Type string `json:"type"`
		} `json:"origin"`
	} `json:"conversation"`
	Pricing *struct {
		Billable     bool   `json:"billable"`
		PricingModel string `json:"pricing_model"`
		Category     string `json:"category"`
		Type         string `json:"type"`
	} `json:"pricing"`
	Errors []struct {
		Code      int    `json:"code"`
		Title     string `json:"title"`
		Message   string `json:"message"`
		ErrorData struct {
			Details string `json:"details"`
		} `json:"error_data"`
		Href string `json:"href"`
	} `json:"errors"`
}

// receiver is a webhook endpoint that checks every signature with its own
// HMAC and records what arrived.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string

	mu       sync.Mutex
	payloads []hookPayload
	statuses map[string][]hookStatus // by wamid, in arrival order
	badSig   int
	// fail answers 500 while it returns true (called per request).
	fail func(n int) bool
	n    int
}

func newReceiver(t *testing.T, secret string) *receiver {
	rc := &receiver{t: t, secret: secret, statuses: make(map[string][]hookStatus)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	m := hmac.New(sha256.New, []byte(rc.secret))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.n++
	if r.Method != http.MethodPost || r.Header.Get("X-Hub-Signature-256") != want || r.Header.Get("Content-Type") != "application/json" {
		rc.badSig++
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if rc.fail != nil && rc.fail(rc.n) {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	p, err := decodeHook(body)
	if err != nil {
		rc.t.Errorf("webhook body does not match Meta's shape: %v\n%s", err, body)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.payloads = append(rc.payloads, p)
	for _, e := range p.Entry {
		for _, c := range e.Changes {
			for _, s := range c.Value.Statuses {
				rc.statuses[s.ID] = append(rc.statuses[s.ID], s)
			}
		}
	}
	w.WriteHeader(http.StatusOK)
}

// decodeHook decodes a webhook body, refusing keys Meta's shape lacks.
func decodeHook(body []byte) (hookPayload, error) {
	strict := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	var p hookPayload
	if err := strict(body, &p); err != nil {
		return p, err
	}
	for i := range p.Entry {
		for j := range p.Entry[i].Changes {
			c := &p.Entry[i].Changes[j]
			var err error
			switch c.Field {
			case "messages":
				err = strict(c.Raw, &c.Value)
			case "message_template_status_update":
				err = strict(c.Raw, &c.Template)
			default:
				err = fmt.Errorf("unexpected field %q", c.Field)
			}
			if err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// templateChanges returns the template status changes received, in order.
func (rc *receiver) templateChanges() []hookTemplate {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hookTemplate
	for _, p := range rc.payloads {
		for _, e := range p.Entry {
			for _, c := range e.Changes {
				if c.Field == "message_template_status_update" {
					out = append(out, c.Template)
				}
			}
		}
	}
	return out
}

func (rc *receiver) setFail(f func(n int) bool) {
	rc.mu.Lock()
	rc.fail = f
	rc.mu.Unlock()
}

func (rc *receiver) statusesOf(wamid string) []hookStatus {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hookStatus(nil), rc.statuses[wamid]...)
}

func (rc *receiver) count() (payloads, badSig int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.payloads), rc.badSig
}

// inbound returns the webhook value that carried the inbound message wamid.
func (rc *receiver) inbound(wamid string) hookValue {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, p := range rc.payloads {
		for _, e := range p.Entry {
			for _, c := range e.Changes {
				for _, m := range c.Value.Messages {
					if m.ID == wamid {
						return c.Value
					}
				}
			}
		}
	}
	rc.t.Errorf("no inbound webhook for %s", wamid)
	return hookValue{}
}

func statusNames(ss []hookStatus) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Status)
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type harness struct {
	sim *Sim
	api *httptest.Server
	rc1 *receiver // webhooks of 1001 and 1002
	rc3 *receiver // webhooks of 1003
	// clock is set with hopts.frozen.
	clock *frozenClock
}

func testConfig(rc1, rc3 *receiver) Config {
	templates := append(DefaultTemplates(),
		Template{Name: "flash_sale", Language: "en_US", Category: CategoryMarketing, Status: StatusPaused, BodyParams: 1},
		Template{Name: "old_terms", Language: "en_US", Category: CategoryUtility, Status: StatusDisabled},
		Template{Name: "order_confirmation", Language: "pt_BR", Category: CategoryUtility, Status: StatusApproved, BodyParams: 2},
		Template{
			Name: "ticket_update", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, BodyParams: 1, HeaderParams: 1,
			Buttons: []Button{{Type: ButtonQuickReply, Text: "Stop"}, {Type: ButtonURL, Text: "Track", URL: "https://help.example/t/{{1}}"}},
		},
		Template{
			Name: "new_arrivals", Language: "en_US", Category: CategoryMarketing, Status: StatusApproved, BodyParams: 1, HeaderFormat: HeaderImage,
			Buttons: []Button{{Type: ButtonURL, Text: "Shop", URL: "https://shop.example/new"}, {Type: ButtonPhoneNumber, Text: "Call", PhoneNumber: "+15550100"}},
		},
		Template{Name: "store_visit", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, HeaderFormat: HeaderLocation},
		Template{
			Name: "login_code", Language: "en_US", Category: CategoryAuthentication, Status: StatusApproved, BodyParams: 1,
			Buttons: []Button{{Type: ButtonOTP, Text: "Copy code"}},
		},
	)
	return Config{
		Numbers: []Number{
			{PhoneNumberID: phone1, WABAID: waba1, AccessToken: token1, AppSecret: secret1, WebhookURL: rc1.srv.URL + "/hook"},
			{PhoneNumberID: phone2, WABAID: waba1, AccessToken: token1, AppSecret: secret1, WebhookURL: rc1.srv.URL + "/hook"},
			{PhoneNumberID: phone3, WABAID: waba2, AccessToken: token3, AppSecret: secret3, WebhookURL: rc3.srv.URL + "/hook"},
		},
		Templates:   templates,
		StatusDelay: time.Millisecond,
	}
}

// hopts are the options of newHarness.
type hopts struct {
	// run runs the webhook sender until the test ends.
	run bool
	// frozen replaces the simulator's clock with h.clock before serving.
	frozen bool
	// mod changes the test config.
	mod func(*Config)
}

// newHarness builds a simulator with the test numbers and serves its API.
func newHarness(t *testing.T, o hopts) *harness {
	t.Helper()
	h := &harness{rc1: newReceiver(t, secret1), rc3: newReceiver(t, secret3)}
	cfg := testConfig(h.rc1, h.rc3)
	if o.mod != nil {
		o.mod(&cfg)
	}
	sim, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sim = sim
	if o.frozen {
		h.clock = freeze(sim)
	}
	h.api = httptest.NewServer(sim.Handler())
	t.Cleanup(h.api.Close)
	if o.run {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sim.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	return h
}

type apiResult struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// code returns error.code of a Graph error body, 0 if none.
func (r apiResult) code() int {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(float64)
	return int(c)
}

func (r apiResult) wamid() string {
	ms, _ := r.body["messages"].([]any)
	if len(ms) != 1 {
		return ""
	}
	m, _ := ms[0].(map[string]any)
	id, _ := m["id"].(string)
	return id
}

func (h *harness) do(t *testing.T, method, path, token, body string) apiResult {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, h.api.URL+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.api.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	res := apiResult{status: resp.StatusCode, header: resp.Header, raw: raw}
	if err := json.Unmarshal(raw, &res.body); err != nil {
		t.Fatalf("%s %s: response is not a JSON object: %v: %s", method, path, err, raw)
	}
	return res
}

// send posts a message from phone with token.
func (h *harness) send(t *testing.T, phone, token, body string) apiResult {
	t.Helper()
	return h.do(t, http.MethodPost, "/v23.0/"+phone+"/messages", token, body)
}

func templateBody(to, name, lang string, bodyParams ...string) string {
	params := make([]map[string]string, 0, len(bodyParams))
	for _, p := range bodyParams {
		params = append(params, map[string]string{"type": "text", "text": p})
	}
	m := map[string]any{
		"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "template",
		"template": map[string]any{
			"name": name, "language": map[string]string{"code": lang},
			"components": []any{map[string]any{"type": "body", "parameters": params}},
		},
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func textBody(to, text string) string {
	b, _ := json.Marshal(map[string]any{
		"messaging_product": "whatsapp", "to": to, "type": "text", "text": map[string]any{"body": text},
	})
	return string(b)
}

// frozenClock replaces the simulator's clock with one the test moves.
type frozenClock struct {
	mu sync.Mutex
	t  time.Time
}

func freeze(s *Sim) *frozenClock {
	c := &frozenClock{t: time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)}
	s.now = c.now
	return c
}

func (c *frozenClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *frozenClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
