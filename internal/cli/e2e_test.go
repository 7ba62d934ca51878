package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/schemas"
)

func TestMain(m *testing.M) { chtest.Main(m) }

// testStack starts the whole pipeline in process: kfake, a fresh database
// on the test ClickHouse, the simulator and every stage, on free ports.
func testStack(t *testing.T) (*stack, *devCredentials, driver.Conn) {
	t.Helper()
	dsn, conn := chtest.DB(t)
	creds := &devCredentials{
		APIToken: "test-api-token-0123456789", SegmentWriteKey: "test-write-key",
		AccessToken: "EAAGtest", AppSecret: "test-app-secret", VerifyToken: "test-verify",
	}
	reg, err := apps.New([]apps.App{creds.app()})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := startStack(t.Context(), stackConfig{
		DataDir: t.TempDir(), Partitions: 4, ClickHouseDSN: dsn,
		IngestAddr: "127.0.0.1:0", WasimAddr: "127.0.0.1:0", OpsAddr: "127.0.0.1:0",
		Apps: reg,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, creds, conn
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestPromoEndToEnd: a registered subscriber sends PROMO through the signed
// webhook; the template reply reaches the simulator; its statuses come back;
// ClickHouse holds the inbound event, the send and its three statuses.
func TestPromoEndToEnd(t *testing.T) {
	s, creds, conn := testStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	const phone = "+919812345678"

	w := &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID}
	if err := w.post(ctx, "registerDevice", map[string]any{
		"device_type": 21, "hwid": "whatsapp:" + phone,
		"tags": map[string]any{"Name": "Asha"},
	}); err != nil {
		t.Fatal(err)
	}
	inboundWAMID, err := s.sim.SendInbound(ctx, devPhoneNumberID, phone, "promo!")
	if err != nil {
		t.Fatal(err)
	}

	// Wait until ClickHouse has the three statuses, then until nothing moves.
	deadline := time.Now().Add(60 * time.Second)
	for chtest.Count(t, conn, "SELECT count() FROM statuses FINAL") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("statuses in ClickHouse: %d after 60s, want 3", chtest.Count(t, conn, "SELECT count() FROM statuses FINAL"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.waitDrained(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	counts := map[string]uint64{
		"register events":  chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE kind = 'register' AND hwid = ?", "whatsapp:"+phone),
		"inbound events":   chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE kind = 'inbound' AND name = 'PW_WhatsAppReceived' AND inbound_wamid = ? AND inbound_text = 'promo!'", inboundWAMID),
		"status events":    chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE kind = 'status'"),
		"all events":       chtest.Count(t, conn, "SELECT count() FROM events FINAL"),
		"sends":            chtest.Count(t, conn, "SELECT count() FROM messages FINAL"),
		"promo sends":      chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE state = 'accepted' AND template = 'promo_offer' AND recipient = ? AND source_kind = 'keyword'", phone),
		"sent":             chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE status = 'sent'"),
		"delivered":        chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE status = 'delivered'"),
		"read":             chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE status = 'read'"),
		"statuses matched": chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE (wamid, dispatch_id) IN (SELECT provider_id, dispatch_id FROM messages FINAL)"),
	}
	want := map[string]uint64{
		"register events": 1, "inbound events": 1, "status events": 3, "all events": 5,
		"sends": 1, "promo sends": 1, "sent": 1, "delivered": 1, "read": 1, "statuses matched": 3,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %d, want %d", k, counts[k], v)
		}
	}
	st := s.sim.Stats()
	if st.Accepted != 1 {
		t.Errorf("simulator accepted %d messages, want 1", st.Accepted)
	}

	// The tags set at registration come back through getTags: ingest ->
	// segmenter -> the tags topic -> ingest's view.
	var got struct {
		Response struct {
			Result map[string]any `json:"result"`
		} `json:"response"`
	}
	body := `{"request":{"application":"` + devAppID + `","hwid":"whatsapp:` + phone + `"}}`
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.ingestSrv.URL()+"/json/1.3/getTags", strings.NewReader(body))
		req.Header.Set("Authorization", "Token "+creds.APIToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("getTags answered %d until the deadline", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got.Response.Result["Name"] != "Asha" || got.Response.Result["Country"] != "IN" {
		t.Errorf("getTags result %v, want Name Asha and Country IN", got.Response.Result)
	}
}

// TestBadInputReachesNoTopic: a bad signature is refused and nothing reaches
// Kafka or ClickHouse.
func TestBadSignatureRefused(t *testing.T) {
	s, _, conn := testStack(t)
	body := `{"object":"whatsapp_business_account","entry":[]}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.ingestSrv.URL()+"/whatsapp/webhooks", strings.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", "sha256=00")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	if err := s.waitDrained(t.Context(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM events"); n != 0 {
		t.Fatalf("events in ClickHouse: %d, want 0", n)
	}
}

// TestScheduledSendEndToEnd: a request produced to the dispatch topic ahead
// of its send_at is forwarded by the dispatcher, released by the stack's
// scheduler at send_at, and sent once.
func TestScheduledSendEndToEnd(t *testing.T) {
	s, _, conn := testStack(t)
	const phone = "+919812345679"
	sendAt := time.Now().UTC().Add(1500 * time.Millisecond)
	d := &schemas.DispatchRequest{
		ID: "scheduled-e2e", App: devAppID, Channel: schemas.ChannelWhatsApp, Sender: devPhoneNumberID, To: phone, Country: "IN",
		Template: &schemas.Template{Name: "promo_offer", Language: "en_US", Category: "MARKETING", Body: []string{"Asha"}},
		Source:   schemas.Source{Kind: "api", Name: "scheduled"},
		Created:  time.Now().UTC(), Deadline: sendAt.Add(time.Hour), SendAt: sendAt,
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.admin.ProduceSync(t.Context(), &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE dispatch_id = 'scheduled-e2e' AND state = 'accepted'") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("scheduled send not in ClickHouse after 30s (simulator accepted %d)", s.sim.Stats().Accepted)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if time.Now().Before(sendAt) {
		t.Fatal("sent before send_at")
	}
	if st := s.sim.Stats(); st.Accepted != 1 {
		t.Fatalf("simulator accepted %d messages, want 1", st.Accepted)
	}
}

// TestSushiSegmentEndToEnd: the seed's example. A segment of users whose
// latest order was Asian food, saved through the API; orders posted over
// the Pushwoosh API; ClickHouse holds exactly the entries and exits.
func TestSushiSegmentEndToEnd(t *testing.T) {
	s, creds, conn := testStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	w := &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID}
	if err := w.post(ctx, "createFilter", map[string]any{"name": demoSegment, "filter_expression": demoSegmentFilter}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	users := map[string][]string{ // number -> cuisines of its orders, oldest first
		"+919812345001": {"asian"},
		"+919812345002": {"italian"},
		"+919812345003": {"asian", "italian"},
		"+919812345004": {"italian", "asian"},
	}
	for phone, orders := range users {
		if err := w.post(ctx, "registerDevice", map[string]any{"device_type": 21, "hwid": "whatsapp:" + phone}); err != nil {
			t.Fatal(err)
		}
		for i, c := range orders {
			if err := w.post(ctx, "postEvent", map[string]any{
				"hwid": "whatsapp:" + phone, "event": "OrderPlaced",
				"attributes": map[string]any{"cuisine": c}, "timestampUTC": now.Add(time.Duration(i-10) * time.Minute).Unix(),
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A user of no order, and an unregistered one, are never members.
	if err := w.post(ctx, "postEvent", map[string]any{
		"hwid": "whatsapp:+919812345005", "event": "OrderPlaced",
		"attributes": map[string]any{"cuisine": "asian"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.waitDrained(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	members, err := segmentMembers(ctx, s, demoSegment)
	if err != nil {
		t.Fatal(err)
	}
	entered := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE name = 'PW_SegmentEntered'")
	exited := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE name = 'PW_SegmentExited' AND hwid = 'whatsapp:+919812345003'")
	in1 := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE name = 'PW_SegmentEntered' AND hwid IN ('whatsapp:+919812345001', 'whatsapp:+919812345004')")
	if members != 2 || entered != 3 || exited != 1 || in1 != 2 {
		t.Fatalf("members %d, entries %d, exits of +...003 %d, entries of +...001 and +...004 %d; want 2, 3, 1, 2", members, entered, exited, in1)
	}

	// The sushi campaign reaches exactly the two members.
	if err := w.post(ctx, "createTargetedMessage", map[string]any{
		"name": "sushi-week", "filter": demoSegment,
		"template": "sushi_promo", "content_variables": map[string]string{"1": "{{tag:Name|there}}"},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE template = 'sushi_promo' AND state = 'accepted'") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the campaign's sends did not reach ClickHouse")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.waitDrained(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	sends, outside, err := campaignReach(ctx, s, "sushi_promo", demoSegment)
	if err != nil {
		t.Fatal(err)
	}
	to := chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE template = 'sushi_promo' AND recipient IN ('+919812345001', '+919812345004')")
	if sends != 2 || outside != 0 || to != 2 {
		t.Fatalf("sushi sends %d, outside the segment %d, to the members %d; want 2, 0, 2", sends, outside, to)
	}
}

// TestTemplateStatusWebhookEndToEnd: Meta pauses a template; its signed
// status webhook goes through ingest to the templates topic, and the
// dispatcher refuses the template at once, without calling Meta; approved
// again, it sends. ClickHouse holds both outcomes and the template events.
func TestTemplateStatusWebhookEndToEnd(t *testing.T) {
	s, _, conn := testStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	metric := func(name, label, value string) float64 {
		mfs, err := s.ops.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == value {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	waitMetric := func(what, name, label, value string, atLeast float64) {
		t.Helper()
		for metric(name, label, value) < atLeast {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	send := func(id string) {
		t.Helper()
		d := &schemas.DispatchRequest{
			ID: id, App: devAppID, Channel: schemas.ChannelWhatsApp, Sender: devPhoneNumberID, To: "+919812345680", Country: "IN",
			Template: &schemas.Template{Name: "promo_offer", Language: "en_US", Category: "MARKETING", Body: []string{"Asha"}},
			Source:   schemas.Source{Kind: "api"}, Created: time.Now().UTC(), Deadline: time.Now().Add(time.Hour),
		}
		b, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.admin.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	outcome := func(id string) (state string, code int32) {
		t.Helper()
		for ctx.Err() == nil {
			rows, err := conn.Query(ctx, "SELECT state, error_code FROM messages FINAL WHERE dispatch_id = ?", id)
			if err != nil {
				t.Fatal(err)
			}
			found := rows.Next()
			if found {
				if err := rows.Scan(&state, &code); err != nil {
					t.Fatal(err)
				}
			}
			_ = rows.Close()
			if found {
				return state, code
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no outcome of %s in ClickHouse", id)
		return "", 0
	}

	waitMetric("the first template sync", "herald_dispatcher_template_syncs_total", "result", "ok", 1)
	if err := s.disp.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.sim.SetTemplateStatus(ctx, devWABAID, "promo_offer", "en_US", "PAUSED", ""); err != nil {
		t.Fatal(err)
	}
	waitMetric("the pause signal", "herald_dispatcher_template_records_total", "result", "signal", 1)
	calls := s.sim.Stats().MessageRequests
	send("tpl-paused")
	if state, code := outcome("tpl-paused"); state != "failed" || code != -8 {
		t.Fatalf("paused template: %s %d, want failed -8", state, code)
	}
	if n := s.sim.Stats().MessageRequests; n != calls {
		t.Fatalf("the paused template's request reached the simulator")
	}

	if err := s.sim.SetTemplateStatus(ctx, devWABAID, "promo_offer", "en_US", "APPROVED", ""); err != nil {
		t.Fatal(err)
	}
	waitMetric("the approval signal", "herald_dispatcher_template_records_total", "result", "signal", 2)
	send("tpl-approved")
	if state, code := outcome("tpl-approved"); state != "accepted" || code != 0 {
		t.Fatalf("approved template: %s %d, want accepted", state, code)
	}
	for chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE kind = 'template'") < 2 {
		if ctx.Err() != nil {
			t.Fatal("the two template events did not reach ClickHouse")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
