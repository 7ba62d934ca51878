package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// Template test identities: app "shop" sends from 1001 in WABA 2001; app
// "plain" (3001, WABA 2003 in the simulator) has no waba_id in Herald, so
// its templates are neither synced nor checked.
const (
	shopWABA  = "2001"
	plainWABA = "2003"
)

// simTemplates is shop's registry: 12 templates, so that a page limit of 5
// makes three pages.
func simTemplates() []wasim.Template {
	return []wasim.Template{
		{Name: "promo_offer", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusApproved, BodyParams: 1},
		{Name: "promo_offer", Language: "de_DE", Category: wasim.CategoryMarketing, Status: wasim.StatusApproved, BodyParams: 1},
		{Name: "order_confirmation", Language: "en_US", Category: wasim.CategoryUtility, Status: wasim.StatusApproved, BodyParams: 2},
		{
			Name: "order_shipped", Language: "en_US", Category: wasim.CategoryUtility, Status: wasim.StatusApproved, BodyParams: 1, HeaderParams: 1,
			Buttons: []wasim.Button{{Type: wasim.ButtonQuickReply, Text: "Stop"}, {Type: wasim.ButtonURL, Text: "Track", URL: "https://shop.example/t/{{1}}"}},
		},
		{Name: "new_arrivals", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusApproved, BodyParams: 1, HeaderFormat: wasim.HeaderImage},
		{
			Name: "login_code", Language: "en_US", Category: wasim.CategoryAuthentication, Status: wasim.StatusApproved, BodyParams: 1,
			Buttons: []wasim.Button{{Type: wasim.ButtonOTP, Text: "Copy code"}},
		},
		{Name: "help_menu", Language: "en_US", Category: wasim.CategoryUtility, Status: wasim.StatusApproved},
		{Name: "summer_sale", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusPending, BodyParams: 1},
		{Name: "crypto_giveaway", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusRejected},
		{Name: "flash_sale", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusPaused, BodyParams: 1},
		{Name: "old_terms", Language: "en_US", Category: wasim.CategoryUtility, Status: wasim.StatusDisabled},
		{Name: "store_visit", Language: "en_US", Category: wasim.CategoryUtility, Status: wasim.StatusApproved, HeaderFormat: wasim.HeaderLocation},
	}
}

// tplEnv is a kfake cluster, the simulator and the app registry.
type tplEnv struct {
	c   *kafkatest.Cluster
	sim *wasim.Sim
	api *httptest.Server
	reg *apps.Registry
}

func newTplEnv(t *testing.T) *tplEnv {
	t.Helper()
	sim, err := wasim.New(wasim.Config{
		Numbers: []wasim.Number{
			{PhoneNumberID: "1001", WABAID: shopWABA, AccessToken: "tok-shop", AppSecret: "secret-shop"},
			{PhoneNumberID: "3001", WABAID: plainWABA, AccessToken: "tok-plain", AppSecret: "secret-plain"},
		},
		Templates:    simTemplates(),
		Throughput:   -1,
		PairInterval: -1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim.Handler())
	t.Cleanup(api.Close)
	reg, err := apps.New([]apps.App{
		{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{"1001"}, WABAID: shopWABA, AccessToken: "tok-shop",
		}},
		{ID: "plain", APIToken: "plain-api-token-0123456789", WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{"3001"}, AccessToken: "tok-plain",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &tplEnv{c: kafkatest.New(t, 2), sim: sim, api: api, reg: reg}
}

// start runs a dispatcher on the env until stop is called or the test ends.
func (e *tplEnv) start(t *testing.T, tc TemplatesConfig) (*Dispatcher, func()) {
	t.Helper()
	if tc.PageLimit == 0 {
		tc.PageLimit = 5
	}
	if tc.SyncInterval == 0 {
		tc.SyncInterval = -1
	}
	cfg := Config{WhatsAppBaseURL: e.api.URL, RequestTimeout: 2 * time.Second, MaxAttempts: 2, Templates: tc}
	d, err := New(cfg, e.c.Config, e.reg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	d.backoffBase, d.backoffMax = time.Millisecond, 5*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		d.Close()
	}
	t.Cleanup(stop)
	return d, stop
}

// syncs is how many listings of result the dispatcher finished.
func syncs(d *Dispatcher, result string) int {
	return int(testutil.ToFloat64(d.templates.store.m.syncs.WithLabelValues(result)))
}

// waitSynced waits until d finished n successful listings.
func waitSynced(t *testing.T, d *Dispatcher, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d template syncs", n), func() bool { return syncs(d, "ok") >= n })
}

// topicRecords is how many records TopicTemplates holds.
func topicRecords(t *testing.T, c *kafkatest.Cluster) int64 {
	t.Helper()
	ends, err := kadm.NewClient(c.Client(t)).ListEndOffsets(t.Context(), schemas.TopicTemplates)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// tplRequest is a template request of app shop (sender 1001) or plain
// (3001) to a fresh recipient.
func tplRequest(id, app string, tm *schemas.Template) *schemas.DispatchRequest {
	sender := map[string]string{"shop": "1001", "plain": "3001"}[app]
	now := time.Now().UTC()
	h := fnv.New32a()
	h.Write([]byte(id))
	return &schemas.DispatchRequest{
		ID: id, App: app, Channel: schemas.ChannelWhatsApp, Sender: sender, To: fmt.Sprintf("+1555%07d", h.Sum32()%10_000_000),
		Template: tm, Source: schemas.Source{Kind: "api"}, Created: now, Deadline: now.Add(time.Minute),
	}
}

// send produces reqs and returns their outcomes by dispatch id.
func (e *tplEnv) send(t *testing.T, reqs ...*schemas.DispatchRequest) map[string]*schemas.Outcome {
	t.Helper()
	recs := make([]*kgo.Record, len(reqs))
	for i, r := range reqs {
		recs[i] = dispatchRecord(t, r)
	}
	cl := e.c.Client(t, kgo.ConsumeTopics(schemas.TopicOutcomes), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
	// Make the consumer take its position before producing.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	cl.PollFetches(ctx)
	cancel()
	produce(t, e.c.Client(t), recs...)
	want := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		want[r.ID] = true
	}
	out := make(map[string]*schemas.Outcome)
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for len(out) < len(reqs) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d outcomes", len(out), len(reqs))
		}
		fs.EachRecord(func(r *kgo.Record) {
			o, err := schemas.DecodeOutcome(r.Value)
			if err != nil {
				t.Fatalf("outcome does not decode: %v", err)
			}
			if want[o.DispatchID] {
				out[o.DispatchID] = o
			}
		})
	}
	return out
}

// TestTemplateSyncPages: the sync lists every page and writes one record a
// template, shaped after its components; a second replica's sync of the
// same listing writes nothing.
func TestTemplateSyncPages(t *testing.T) {
	e := newTplEnv(t)
	d, _ := e.start(t, TemplatesConfig{})
	waitSynced(t, d, 1)
	if err := d.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after a sync: %v", err)
	}
	if n := e.sim.Stats().TemplateRequests; n != 3 {
		t.Errorf("the sync made %d listing requests, want 3 (12 templates, 5 a page); app plain has no waba_id", n)
	}
	recs := e.c.ReadAll(t, schemas.TopicTemplates, 12)
	if len(recs) != 12 {
		t.Fatalf("read %d template records, want 12", len(recs))
	}
	got := make(map[string]*schemas.TemplateDef)
	for _, r := range recs {
		def, err := schemas.DecodeTemplateDef(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != string(def.Key()) || len(r.Headers) != 0 {
			t.Fatalf("record key %q headers %v for %s", r.Key, r.Headers, def.Key())
		}
		if def.App != "shop" || def.WABAID != shopWABA || def.ID == "" || def.Synced.IsZero() {
			t.Errorf("template %+v", def)
		}
		got[templateRef(def.Name, def.Language)] = def
	}
	for _, st := range simTemplates() {
		def := got[templateRef(st.Name, st.Language)]
		if def == nil {
			t.Errorf("%s/%s not synced", st.Name, st.Language)
			continue
		}
		if def.Status != st.Status || def.Category != st.Category || def.BodyParams != st.BodyParams {
			t.Errorf("%s: synced %+v from %+v", st.Name, def, st)
		}
	}
	shipped := got["order_shipped/en_US"]
	if h := shipped.Header; h == nil || *h != (schemas.TemplateHeader{Format: "TEXT", Params: 1}) ||
		!slices.Equal(shipped.Buttons, []schemas.TemplateButton{{Type: "QUICK_REPLY"}, {Type: "URL", URLParam: true}}) {
		t.Errorf("order_shipped header %+v buttons %+v", shipped.Header, shipped.Buttons)
	}
	if h := got["new_arrivals/en_US"].Header; h == nil || h.Format != "IMAGE" || h.Params != 0 {
		t.Errorf("new_arrivals header %+v", h)
	}
	if b := got["login_code/en_US"].Buttons; len(b) != 1 || !b[0].URLParam {
		t.Errorf("login_code buttons %+v", b)
	}
	gauge := func(status string) float64 {
		return testutil.ToFloat64(d.templates.store.m.templates.WithLabelValues(status))
	}
	if gauge("APPROVED") != 8 || gauge("PENDING") != 1 || gauge("PAUSED") != 1 {
		t.Errorf("templates gauge APPROVED %v PENDING %v PAUSED %v", gauge("APPROVED"), gauge("PENDING"), gauge("PAUSED"))
	}

	// A second replica reads the records, lists the same templates and
	// writes nothing.
	d2, _ := e.start(t, TemplatesConfig{})
	waitSynced(t, d2, 1)
	if n := topicRecords(t, e.c); n != 12 {
		t.Fatalf("the topic holds %d records after the second replica's sync, want 12", n)
	}
	// A sync of this replica again writes nothing either.
	d.templates.sync.requestAll()
	waitSynced(t, d, 2)
	if n := topicRecords(t, e.c); n != 12 {
		t.Fatalf("the topic holds %d records after a sync without changes, want 12", n)
	}
}

// TestTemplateChecks: requests whose template is unknown, not approved or
// does not fit fail with a Herald code naming what is wrong, and no call of
// theirs reaches the simulator; fitting requests are sent; an app without a
// WABA id is not checked (Meta decides).
func TestTemplateChecks(t *testing.T) {
	e := newTplEnv(t)
	d, _ := e.start(t, TemplatesConfig{})
	waitSynced(t, d, 1)
	tm := func(name, lang string, body ...string) *schemas.Template {
		return &schemas.Template{Name: name, Language: lang, Body: body}
	}
	with := func(t *schemas.Template, f func(*schemas.Template)) *schemas.Template { f(t); return t }
	tests := []struct {
		id   string
		app  string
		tmpl *schemas.Template
		code int
		msg  []string // substrings of the error message
	}{
		{"ok-promo", "shop", tm("promo_offer", "en_US", "Ann"), 0, nil},
		{"ok-promo-de", "shop", tm("promo_offer", "de_DE", "Anna"), 0, nil},
		{"ok-shipped", "shop", with(tm("order_shipped", "en_US", "A-1"), func(t *schemas.Template) {
			t.Header, t.ButtonURL = []string{"Ann"}, map[int]string{1: "A-1"}
		}), 0, nil},
		{"ok-otp", "shop", with(tm("login_code", "en_US", "123456"), func(t *schemas.Template) { t.ButtonURL = map[int]string{0: "123456"} }), 0, nil},
		{"ok-static", "shop", tm("help_menu", "en_US"), 0, nil},
		{"unknown", "shop", tm("no_such", "en_US"), CodeTemplateUnknown, []string{`"no_such" in en_US is not in`}},
		{"other-language", "shop", tm("promo_offer", "fr_FR", "Ann"), CodeTemplateUnknown, []string{"exists in de_DE, en_US"}},
		{"pending", "shop", tm("summer_sale", "en_US", "Ann"), CodeTemplateNotApproved, []string{"is PENDING"}},
		{"rejected", "shop", tm("crypto_giveaway", "en_US"), CodeTemplateNotApproved, []string{"is REJECTED"}},
		{"paused", "shop", tm("flash_sale", "en_US", "Ann"), CodeTemplateNotApproved, []string{"is PAUSED"}},
		{"disabled", "shop", tm("old_terms", "en_US"), CodeTemplateNotApproved, []string{"is DISABLED"}},
		{"body-short", "shop", tm("order_confirmation", "en_US", "Ann"), CodeTemplateParams, []string{"template.body has 1 parameter, the template's body takes 2"}},
		{"body-long", "shop", tm("help_menu", "en_US", "x"), CodeTemplateParams, []string{"template.body has 1 parameter, the template's body takes 0"}},
		{"body-empty", "shop", tm("order_confirmation", "en_US", "Ann", ""), CodeTemplateParams, []string{"template.body[1] is empty"}},
		{
			"header-missing", "shop", with(tm("order_shipped", "en_US", "A-1"), func(t *schemas.Template) { t.ButtonURL = map[int]string{1: "A-1"} }),
			CodeTemplateParams,
			[]string{"template.header has 0 parameters, the template's TEXT header takes 1"},
		},
		{
			"header-none", "shop", with(tm("promo_offer", "en_US", "Ann"), func(t *schemas.Template) { t.Header = []string{"x"} }),
			CodeTemplateParams,
			[]string{"template.header has 1 parameter, the template has no header"},
		},
		{"image-header", "shop", tm("new_arrivals", "en_US", "Ann"), CodeTemplateParams, []string{"header is IMAGE"}},
		{"location-header", "shop", tm("store_visit", "en_US"), CodeTemplateParams, []string{"header is LOCATION"}},
		{
			"url-missing", "shop", with(tm("order_shipped", "en_US", "A-1"), func(t *schemas.Template) { t.Header = []string{"Ann"} }),
			CodeTemplateParams,
			[]string{"template.button_url[1] is missing: button 1 (URL)"},
		},
		{"url-needless", "shop", with(tm("order_shipped", "en_US", "A-1"), func(t *schemas.Template) {
			t.Header, t.ButtonURL = []string{"Ann"}, map[int]string{0: "x", 1: "A-1"}
		}), CodeTemplateParams, []string{"template.button_url[0] is given, but button 0 (QUICK_REPLY) takes no URL parameter"}},
		{
			"url-beyond", "shop", with(tm("promo_offer", "en_US", "Ann"), func(t *schemas.Template) { t.ButtonURL = map[int]string{3: "x"} }),
			CodeTemplateParams,
			[]string{"template.button_url[3] is given, but the template has 0 buttons"},
		},
		{"otp-missing", "shop", tm("login_code", "en_US", "123456"), CodeTemplateParams, []string{"template.button_url[0] is missing: button 0 (OTP)"}},
		{
			"two-problems", "shop", with(tm("order_shipped", "en_US"), func(t *schemas.Template) { t.Header = []string{"Ann"} }),
			CodeTemplateParams,
			[]string{"template.body has 0 parameters", "; template.button_url[1] is missing"},
		},
		// Not synced: sent, and Meta (the simulator) refuses it.
		{"plain-unknown", "plain", tm("no_such", "en_US"), 132001, nil},
	}
	var reqs []*schemas.DispatchRequest
	for _, tt := range tests {
		reqs = append(reqs, tplRequest(tt.id, tt.app, tt.tmpl))
	}
	got := e.send(t, reqs...)
	calls := 0
	for _, tt := range tests {
		o := got[tt.id]
		wantState := schemas.OutcomeFailed
		if tt.code == 0 {
			wantState = schemas.OutcomeAccepted
		}
		if tt.code == 0 || tt.code > 0 {
			calls++
		}
		if o.State != wantState || o.ErrorCode != tt.code {
			t.Errorf("%s: state %s code %d (%s), want %s %d", tt.id, o.State, o.ErrorCode, o.ErrorMessage, wantState, tt.code)
			continue
		}
		if tt.code < 0 && o.Attempts != 0 {
			t.Errorf("%s: refused after %d attempts, want 0", tt.id, o.Attempts)
		}
		for _, m := range tt.msg {
			if !strings.Contains(o.ErrorMessage, m) {
				t.Errorf("%s: message %q lacks %q", tt.id, o.ErrorMessage, m)
			}
		}
	}
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Errorf("%d send calls reached the simulator, want %d (refused requests must not call)", n, calls)
	}
	checks := func(r string) int { return int(testutil.ToFloat64(d.templates.store.m.checks.WithLabelValues(r))) }
	if checks(checkPassed) != 5 || checks(checkUnknown) != 2 || checks(checkNotApproved) != 4 || checks(checkParams) != 12 || checks(checkUnchecked) != 1 {
		t.Errorf("checks passed %d unknown %d not_approved %d params %d unchecked %d", checks(checkPassed), checks(checkUnknown),
			checks(checkNotApproved), checks(checkParams), checks(checkUnchecked))
	}
}

// signalRecord is the TopicTemplates record ingest writes for a template
// status webhook.
func signalRecord(t *testing.T, name, lang, event string) *kgo.Record {
	t.Helper()
	s := &schemas.TemplateSignal{App: "shop", EventID: "ev-" + name + event, Time: time.Now().UTC(), Received: time.Now().UTC(), Template: schemas.TemplateUpdate{
		Field: "message_template_status_update", WABAID: shopWABA, Name: name, Language: lang, Event: event, Reason: "NONE",
	}}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicTemplates, Key: s.Key(), Value: b, Headers: signalHeaders()}
}

// statusOf is the store's status of one of shop's templates.
func statusOf(d *Dispatcher, ref string) string {
	e, ok := d.templates.store.snapshot("shop")[ref]
	if !ok {
		return ""
	}
	return e.status()
}

// TestTemplateSignals: a status webhook (as ingest writes it) takes effect
// at once, before any sync: an approval lets the template send, a pause
// stops it with no call. The resync it triggers writes Meta's new listing.
func TestTemplateSignals(t *testing.T) {
	e := newTplEnv(t)
	d, _ := e.start(t, TemplatesConfig{ResyncDelay: time.Hour}) // no resync in this test's lifetime
	waitSynced(t, d, 1)
	cl := e.c.Client(t)
	req := func(id string) *schemas.DispatchRequest {
		return tplRequest(id, "shop", &schemas.Template{Name: "summer_sale", Language: "en_US", Body: []string{"Ann"}})
	}
	if o := e.send(t, req("before"))["before"]; o.ErrorCode != CodeTemplateNotApproved {
		t.Fatalf("pending template: %+v", o)
	}

	// Meta approves it.
	if err := e.sim.SetTemplateStatus(t.Context(), shopWABA, "summer_sale", "en_US", wasim.StatusApproved, ""); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, signalRecord(t, "summer_sale", "en_US", "APPROVED"))
	waitFor(t, "the approval to apply", func() bool { return statusOf(d, "summer_sale/en_US") == "APPROVED" })
	if o := e.send(t, req("approved"))["approved"]; o.State != schemas.OutcomeAccepted {
		t.Fatalf("approved template: %+v", o)
	}
	calls := e.sim.Stats().MessageRequests

	// Meta pauses it: refused at once, no call.
	if err := e.sim.SetTemplateStatus(t.Context(), shopWABA, "summer_sale", "en_US", wasim.StatusPaused, ""); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, signalRecord(t, "summer_sale", "en_US", "PAUSED"))
	waitFor(t, "the pause to apply", func() bool { return statusOf(d, "summer_sale/en_US") == "PAUSED" })
	o := e.send(t, req("paused"))["paused"]
	if o.ErrorCode != CodeTemplateNotApproved || !strings.Contains(o.ErrorMessage, "is PAUSED") {
		t.Fatalf("paused template: %+v", o)
	}
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("a paused template's request reached the simulator (%d calls, want %d)", n, calls)
	}
	if syncs(d, "ok") != 1 {
		t.Fatalf("the signals were applied by a sync (%d syncs), not at once", syncs(d, "ok"))
	}

	// A sync writes the listing's PAUSED: the template's record changes.
	before := topicRecords(t, e.c)
	d.templates.sync.request("shop")
	waitSynced(t, d, 2)
	if n := topicRecords(t, e.c); n != before+1 {
		t.Fatalf("the sync wrote %d records, want 1 (summer_sale is PAUSED now)", n-before)
	}
	if st := statusOf(d, "summer_sale/en_US"); st != "PAUSED" {
		t.Fatalf("after the sync: %s", st)
	}
}

// TestTemplateSignalResync: a template webhook makes the dispatcher list the
// app's templates again after ResyncDelay; a template approved and listed
// for the first time then sends.
func TestTemplateSignalResync(t *testing.T) {
	e := newTplEnv(t)
	d, _ := e.start(t, TemplatesConfig{ResyncDelay: 10 * time.Millisecond})
	waitSynced(t, d, 1)
	nt := wasim.Template{Name: "black_friday", Language: "en_US", Category: wasim.CategoryMarketing, Status: wasim.StatusApproved, BodyParams: 2}
	if err := e.sim.SetTemplate(shopWABA, nt); err != nil {
		t.Fatal(err)
	}
	req := tplRequest("new", "shop", &schemas.Template{Name: "black_friday", Language: "en_US", Body: []string{"Ann"}})
	if o := e.send(t, req)["new"]; o.ErrorCode != CodeTemplateUnknown {
		t.Fatalf("before the webhook: %+v", o)
	}
	produce(t, e.c.Client(t), signalRecord(t, "black_friday", "en_US", "APPROVED"))
	waitSynced(t, d, 2)
	req = tplRequest("new-bad", "shop", &schemas.Template{Name: "black_friday", Language: "en_US", Body: []string{"Ann"}})
	if o := e.send(t, req)["new-bad"]; o.ErrorCode != CodeTemplateParams {
		t.Fatalf("listed after the webhook, one parameter short: %+v", o)
	}
	req = tplRequest("new-ok", "shop", &schemas.Template{Name: "black_friday", Language: "en_US", Body: []string{"Ann", "30%"}})
	if o := e.send(t, req)["new-ok"]; o.State != schemas.OutcomeAccepted {
		t.Fatalf("listed after the webhook: %+v", o)
	}
}

// TestTemplateSyncMetaDown: a listing that fails keeps the store as it was
// (requests are still checked, none reaches Meta); a template Meta no
// longer lists is deleted with a tombstone.
func TestTemplateSyncMetaDown(t *testing.T) {
	e := newTplEnv(t)
	d, _ := e.start(t, TemplatesConfig{})
	waitSynced(t, d, 1)
	before := topicRecords(t, e.c)

	e.sim.SetFaults(wasim.Faults{Error5xxRatio: 1})
	d.templates.sync.requestAll()
	waitFor(t, "a failed sync", func() bool { return syncs(d, "error") >= 1 })
	if n := len(d.templates.store.snapshot("shop")); n != 12 {
		t.Fatalf("the store holds %d templates after a failed sync, want 12", n)
	}
	if n := topicRecords(t, e.c); n != before {
		t.Fatalf("a failed sync wrote %d records", n-before)
	}
	calls := e.sim.Stats().MessageRequests
	o := e.send(t, tplRequest("down", "shop", &schemas.Template{Name: "order_confirmation", Language: "en_US", Body: []string{"Ann"}}))["down"]
	if o.ErrorCode != CodeTemplateParams {
		t.Fatalf("with Meta down: %+v", o)
	}
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("a refused request reached the simulator")
	}

	// Meta is back, without order_confirmation.
	e.sim.SetFaults(wasim.Faults{})
	if err := e.sim.DeleteTemplate(shopWABA, "order_confirmation", "en_US"); err != nil {
		t.Fatal(err)
	}
	d.templates.sync.requestAll()
	waitSynced(t, d, 2)
	if n := topicRecords(t, e.c); n != before+1 {
		t.Fatalf("the sync wrote %d records, want 1 tombstone", n-before)
	}
	if _, ok := d.templates.store.snapshot("shop")["order_confirmation/en_US"]; ok {
		t.Fatal("the deleted template is still in the store")
	}
	o = e.send(t, tplRequest("gone", "shop", &schemas.Template{Name: "order_confirmation", Language: "en_US", Body: []string{"Ann", "A-1"}}))["gone"]
	if o.ErrorCode != CodeTemplateUnknown {
		t.Fatalf("deleted template: %+v", o)
	}
}

// TestTemplateStoreRestart: a dispatcher started while Meta is down reads
// the templates, and the statuses webhooks gave them, from the topic: it is
// ready and checks requests without a listing.
func TestTemplateStoreRestart(t *testing.T) {
	e := newTplEnv(t)
	d, stop := e.start(t, TemplatesConfig{ResyncDelay: time.Hour})
	waitSynced(t, d, 1)
	produce(t, e.c.Client(t), signalRecord(t, "promo_offer", "de_DE", "PAUSED"))
	waitFor(t, "the pause to apply", func() bool { return statusOf(d, "promo_offer/de_DE") == "PAUSED" })
	stop()

	e.sim.SetFaults(wasim.Faults{Error5xxRatio: 1})
	listings := e.sim.Stats().TemplateRequests
	d2, _ := e.start(t, TemplatesConfig{ResyncDelay: time.Hour})
	waitFor(t, "the restarted dispatcher's failed sync", func() bool { return syncs(d2, "error") >= 1 })
	if err := d2.Ready(t.Context()); err != nil {
		t.Fatalf("not ready with the templates on the topic: %v", err)
	}
	if e.sim.Stats().TemplateRequests == listings {
		t.Fatal("the restarted dispatcher did not try to list")
	}
	calls := e.sim.Stats().MessageRequests
	got := e.send(t,
		tplRequest("r-params", "shop", &schemas.Template{Name: "promo_offer", Language: "en_US"}),
		tplRequest("r-paused", "shop", &schemas.Template{Name: "promo_offer", Language: "de_DE", Body: []string{"Anna"}}),
		tplRequest("r-unknown", "shop", &schemas.Template{Name: "no_such", Language: "en_US"}),
	)
	for id, code := range map[string]int{"r-params": CodeTemplateParams, "r-paused": CodeTemplateNotApproved, "r-unknown": CodeTemplateUnknown} {
		if got[id].ErrorCode != code {
			t.Errorf("%s: %+v, want code %d", id, got[id], code)
		}
	}
	if n := e.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("refused requests reached the simulator")
	}
}

// TestTemplateNotReady: a dispatcher whose store has not caught up is not
// ready (Kafka is not reachable here).
func TestTemplateNotReady(t *testing.T) {
	e := newTplEnv(t)
	d, err := New(Config{WhatsAppBaseURL: e.api.URL}, e.c.Config, e.reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), schemas.TopicTemplates) {
		t.Fatalf("Ready before Run = %v", err)
	}
}

// TestTemplateDef maps Meta's listing to the record, from a page shaped
// like the OpenAPI's examples.
func TestTemplateDef(t *testing.T) {
	page := `{"data":[
	 {"name":"limited_offer","language":"en_US","status":"APPROVED","category":"MARKETING","id":"1","components":[
	  {"type":"HEADER","format":"IMAGE","example":{"header_handle":["4::aW1h"]}},
	  {"type":"BODY","text":"Hi {{1}}! Get our {{2}} for as low as {{3}}, {{1}}.","example":{"body_text":[["Mark","Tuscan Getaway","800"]]}},
	  {"type":"FOOTER","text":"Offer valid until May 31"},
	  {"type":"BUTTONS","buttons":[{"type":"PHONE_NUMBER","text":"Call","phone_number":"16467043595"},
	   {"type":"URL","text":"Shop Now","url":"https://x.example/shop?promo={{1}}","example":["summer2023"]}]}]},
	 {"name":"auth","language":"en","status":"APPROVED","category":"AUTHENTICATION","id":"2","components":[
	  {"type":"BODY","text":"*{{1}}* is your verification code."},
	  {"type":"BUTTONS","buttons":[{"type":"URL","text":"Copy code","url":"https://www.whatsapp.com/otp/code/?otp_type=COPY_CODE&code=otp{{1}}"}]}]},
	 {"name":"named","language":"en_US","status":"PAUSED","category":"UTILITY","id":"3","parameter_format":"NAMED","components":[
	  {"type":"HEADER","format":"TEXT","text":"Order {{order_id}}"},
	  {"type":"BODY","text":"Thanks {{first_name}}, order {{ order_id }} ships today."}]},
	 {"name":"example_only","language":"pt_BR","status":"APPROVED","category":"UTILITY","id":"4","components":[
	  {"type":"BODY","example":{"body_text":[["a","b"]]}}]}
	],"paging":{"cursors":{"before":"MAZDZD","after":"MjQZD"}}}`
	var p graphTemplatePage
	if err := json.Unmarshal([]byte(page), &p); err != nil {
		t.Fatal(err)
	}
	app := &apps.App{ID: "shop", WhatsApp: apps.WhatsApp{WABAID: shopWABA}}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	want := []schemas.TemplateDef{
		{
			App: "shop", WABAID: shopWABA, ID: "1", Name: "limited_offer", Language: "en_US", Category: "MARKETING", Status: "APPROVED",
			Header: &schemas.TemplateHeader{Format: "IMAGE"}, BodyParams: 3,
			Buttons: []schemas.TemplateButton{{Type: "PHONE_NUMBER"}, {Type: "URL", URLParam: true}},
		},
		{
			App: "shop", WABAID: shopWABA, ID: "2", Name: "auth", Language: "en", Category: "AUTHENTICATION", Status: "APPROVED",
			BodyParams: 1, Buttons: []schemas.TemplateButton{{Type: "URL", URLParam: true}},
		},
		{
			App: "shop", WABAID: shopWABA, ID: "3", Name: "named", Language: "en_US", Category: "UTILITY", Status: "PAUSED",
			ParameterFormat: "NAMED", Header: &schemas.TemplateHeader{Format: "TEXT", Params: 1}, BodyParams: 2,
		},
		{App: "shop", WABAID: shopWABA, ID: "4", Name: "example_only", Language: "pt_BR", Category: "UTILITY", Status: "APPROVED", BodyParams: 2},
	}
	for i, w := range want {
		got, err := templateDef(app, &p.Data[i], now)
		if err != nil {
			t.Fatal(err)
		}
		w.V, w.Synced = schemas.V1, now
		if !sameTemplate(got, &w) || !got.Synced.Equal(now) {
			t.Errorf("%s:\n got %+v\nwant %+v", w.Name, got, &w)
		}
	}
	if _, err := templateDef(app, &graphTemplate{Name: "x", Status: "APPROVED"}, now); err == nil {
		t.Error("a template without a language was accepted")
	}
}

// TestParamProblems checks the parameter rules on their own, one template
// at a time (f-tests).
func TestParamProblems(t *testing.T) {
	f := func(def schemas.TemplateDef, tm schemas.Template, want ...string) {
		t.Helper()
		got := def.ParamProblems(&tm)
		if !slices.Equal(got, want) {
			t.Errorf("ParamProblems(%+v, %+v)\n got %q\nwant %q", def, tm, got, want)
		}
	}
	f(schemas.TemplateDef{BodyParams: 2}, schemas.Template{Body: []string{"a", "b"}})
	f(schemas.TemplateDef{BodyParams: 1}, schemas.Template{Body: []string{strings.Repeat("x", maxParamChars+1)}},
		fmt.Sprintf("template.body[0] is %d characters, at most %d", maxParamChars+1, maxParamChars))
	f(schemas.TemplateDef{Header: &schemas.TemplateHeader{Format: "TEXT"}}, schemas.Template{})
	f(schemas.TemplateDef{Header: &schemas.TemplateHeader{Format: "TEXT", Params: 1}}, schemas.Template{Header: []string{""}},
		"template.header[0] is empty")
	f(schemas.TemplateDef{Header: &schemas.TemplateHeader{Format: "VIDEO"}}, schemas.Template{Header: []string{"https://x/v.mp4"}},
		"the template's header is VIDEO: its media or location parameter cannot be given in a dispatch request")
	f(schemas.TemplateDef{ParameterFormat: "NAMED", BodyParams: 1}, schemas.Template{Body: []string{"a"}},
		"it uses named parameters ({{name}}), dispatch requests carry positional ones")
	f(schemas.TemplateDef{ParameterFormat: "NAMED"}, schemas.Template{}) // no variables: fine
	f(schemas.TemplateDef{Buttons: []schemas.TemplateButton{{Type: "URL", URLParam: true}}}, schemas.Template{ButtonURL: map[int]string{0: ""}},
		"template.button_url[0] is empty")
	f(schemas.TemplateDef{}, schemas.Template{ButtonURL: map[int]string{5: "a", -1: "b"}},
		"template.button_url[-1] is given, but the template has 0 buttons", "template.button_url[5] is given, but the template has 0 buttons")
}

// TestTemplateStatus: a webhook's status outranks the listed one until a
// listing started signalGrace after it; FLAGGED changes nothing.
func TestTemplateStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	def := func(status string, synced time.Time) *schemas.TemplateDef {
		return &schemas.TemplateDef{Status: status, Synced: synced}
	}
	sig := func(event string, at time.Time) *schemas.TemplateSignal {
		return &schemas.TemplateSignal{Time: at, Received: at, Template: schemas.TemplateUpdate{Field: fieldStatusUpdate, Event: event}}
	}
	tests := []struct {
		name string
		e    templateEntry
		want string
	}{
		{"listed", templateEntry{def: def("APPROVED", t0)}, "APPROVED"},
		{"paused after listing", templateEntry{def: def("APPROVED", t0), sig: sig("PAUSED", t0.Add(time.Second))}, "PAUSED"},
		{"listing soon after the pause lags", templateEntry{def: def("APPROVED", t0.Add(30*time.Second)), sig: sig("PAUSED", t0)}, "PAUSED"},
		{"listing long after the pause", templateEntry{def: def("APPROVED", t0.Add(2*signalGrace)), sig: sig("PAUSED", t0)}, "APPROVED"},
		{"reinstated", templateEntry{def: def("PAUSED", t0), sig: sig("REINSTATED", t0.Add(time.Second))}, "APPROVED"},
		{"flagged", templateEntry{def: def("APPROVED", t0), sig: sig("FLAGGED", t0.Add(time.Second))}, "APPROVED"},
		{"quality update", templateEntry{def: def("APPROVED", t0), sig: &schemas.TemplateSignal{
			Time:     t0.Add(time.Second),
			Template: schemas.TemplateUpdate{Field: "message_template_quality_update", Quality: "RED"},
		}}, "APPROVED"},
		{"signal only", templateEntry{sig: sig("APPROVED", t0)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.status(); got != tt.want {
				t.Fatalf("status %q, want %q", got, tt.want)
			}
		})
	}
}

// TestDiffTemplates: only what changed is written; templates and signals
// that are gone get tombstones, unless they are newer than the listing.
func TestDiffTemplates(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	start := t0.Add(time.Hour)
	mk := func(name, status string, body int, synced time.Time) *schemas.TemplateDef {
		return &schemas.TemplateDef{V: 1, App: "shop", WABAID: shopWABA, ID: name, Name: name, Language: "en_US", Status: status, BodyParams: body, Synced: synced}
	}
	sig := func(name, event string, at time.Time) *schemas.TemplateSignal {
		return &schemas.TemplateSignal{App: "shop", Time: at, Received: at, Template: schemas.TemplateUpdate{Field: fieldStatusUpdate, Name: name, Language: "en_US", Event: event}}
	}
	have := map[string]templateEntry{
		"same/en_US":    {def: mk("same", "APPROVED", 1, t0)},
		"changed/en_US": {def: mk("changed", "APPROVED", 1, t0)},
		"gone/en_US":    {def: mk("gone", "APPROVED", 0, t0), sig: sig("gone", "PAUSED", t0)},
		"newer/en_US":   {def: mk("newer", "APPROVED", 0, start.Add(time.Second))},
		// Paused by webhook long ago; the listing says APPROVED again.
		"unpaused/en_US": {def: mk("unpaused", "APPROVED", 0, t0), sig: sig("unpaused", "PAUSED", t0)},
		// Paused by webhook just now; the listing still says APPROVED.
		"lagging/en_US": {def: mk("lagging", "APPROVED", 0, t0), sig: sig("lagging", "PAUSED", start.Add(-time.Second))},
	}
	listed := []*schemas.TemplateDef{
		mk("same", "APPROVED", 1, start), mk("changed", "APPROVED", 2, start), mk("added", "PENDING", 0, start),
		mk("unpaused", "APPROVED", 0, start), mk("lagging", "APPROVED", 0, start),
	}
	var got []string
	for _, r := range diffTemplates(have, listed, start) {
		kind := "write"
		if r.Value == nil {
			kind = "delete"
		}
		if isSignalRecord(r) {
			kind += "-signal"
		}
		got = append(got, kind+" "+string(r.Key))
	}
	slices.Sort(got)
	want := []string{
		"delete shop|template:gone/en_US",
		"delete-signal shop|template-signal:gone/en_US",
		"write shop|template:added/en_US",
		"write shop|template:changed/en_US",
		"write shop|template:unpaused/en_US",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records\n got %q\nwant %q", got, want)
	}
}

// BenchmarkTemplateCheck is the cost the check adds to each template send:
// a store of 100 apps with 100 templates each, a request that passes.
//
//	go test -run '^$' -bench BenchmarkTemplateCheck -benchmem ./dispatcher
func BenchmarkTemplateCheck(b *testing.B) {
	m, err := newTemplateMetrics(nil, func() bool { return true })
	if err != nil {
		b.Fatal(err)
	}
	s := newTemplateStore(slog.New(slog.DiscardHandler), m)
	now := time.Now().UTC()
	for a := range 100 {
		app := fmt.Sprintf("app%d", a)
		for i := range 100 {
			d := &schemas.TemplateDef{
				V: 1, App: app, WABAID: "w" + app, ID: strconv.Itoa(i), Name: fmt.Sprintf("tpl_%d", i), Language: "en_US",
				Status: schemas.TemplateApproved, Header: &schemas.TemplateHeader{Format: schemas.HeaderText, Params: 1}, BodyParams: 3,
				Buttons: []schemas.TemplateButton{{Type: "QUICK_REPLY"}, {Type: "URL", URLParam: true}}, Synced: now,
			}
			s.setDef(string(d.Key()), d)
		}
		s.markKnown(app, "w"+app)
	}
	app := &apps.App{ID: "app42", WhatsApp: apps.WhatsApp{WABAID: "wapp42"}}
	tm := &schemas.Template{
		Name: "tpl_42", Language: "en_US", Header: []string{"Ann"}, Body: []string{"Ann", "A-1001", "tomorrow"},
		ButtonURL: map[int]string{1: "A-1001"},
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.check(app, tm); err != nil {
			b.Fatal(err)
		}
	}
}
