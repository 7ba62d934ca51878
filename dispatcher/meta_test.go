package dispatcher

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/apps"
)

// metaReply is one scripted answer of fakeMeta.
type metaReply struct {
	status int
	// body is the raw answer; empty answers success with wamid.<dispatch id>.
	body string
	// hang reads the request, then answers nothing until the client gives up.
	hang bool
	// delay answers (success unless body is set) after this long.
	delay time.Duration
}

// graphErr is a Graph error answer shaped like Meta's.
func graphErr(status, code, subcode int, transient bool) metaReply {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message":       fmt.Sprintf("(#%d) error %d", code, code),
		"type":          "OAuthException",
		"code":          code,
		"error_subcode": subcode,
		"is_transient":  transient,
		"error_data":    map[string]any{"messaging_product": "whatsapp", "details": fmt.Sprintf("details of %d", code)},
		"fbtrace_id":    fmt.Sprintf("trace-%d", code),
	}})
	return metaReply{status: status, body: string(b)}
}

// metaCall is one request fakeMeta received.
type metaCall struct {
	Method, Path, Auth, ContentType string
	Raw                             []byte
	To, ID                          string
	Time                            time.Time
}

// fakeMeta answers like the WhatsApp Cloud API messages endpoint, following a
// script per recipient ("to"); unscripted calls succeed.
type fakeMeta struct {
	srv *httptest.Server

	mu      sync.Mutex
	scripts map[string][]metaReply
	calls   []metaCall
}

func newFakeMeta(t *testing.T) *fakeMeta {
	t.Helper()
	f := &fakeMeta{scripts: make(map[string][]metaReply)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeMeta) script(to string, replies ...metaReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts[to] = append(f.scripts[to], replies...)
}

func (f *fakeMeta) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var m struct {
		To  string `json:"to"`
		Biz string `json:"biz_opaque_callback_data"`
	}
	_ = json.Unmarshal(raw, &m)
	f.mu.Lock()
	f.calls = append(f.calls, metaCall{
		Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"),
		ContentType: r.Header.Get("Content-Type"), Raw: raw, To: m.To, ID: m.Biz, Time: time.Now(),
	})
	var rep metaReply
	if s := f.scripts[m.To]; len(s) > 0 {
		rep, f.scripts[m.To] = s[0], s[1:]
	}
	f.mu.Unlock()
	if rep.hang {
		<-r.Context().Done()
		return
	}
	if rep.delay > 0 {
		time.Sleep(rep.delay)
	}
	if rep.body == "" {
		rep.status = http.StatusOK
		rep.body = fmt.Sprintf(`{"messaging_product":"whatsapp","contacts":[{"input":%q,"wa_id":%q}],"messages":[{"id":"wamid.%s","message_status":"accepted"}]}`,
			m.To, strings.TrimPrefix(m.To, "+"), m.Biz)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// callsTo returns the dispatch ids of the calls to a recipient, in arrival order.
func (f *fakeMeta) callsTo(to string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, c := range f.calls {
		if c.To == to {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

func (f *fakeMeta) allCalls() []metaCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]metaCall(nil), f.calls...)
}

// testRegistry has app "shop" (senders 1001, 1002) and app "other" (2001).
func testRegistry(t testing.TB) *apps.Registry {
	t.Helper()
	reg, err := apps.New([]apps.App{
		{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{"1001", "1002"}, AccessToken: "tok-shop",
		}, Webhooks: apps.Webhooks{Secret: "whsec-test"}},
		{ID: "other", APIToken: "other-api-token-0123456789", WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{"2001"}, AccessToken: "tok-other",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}
