package dispatcher

import (
	"context"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http/httptest"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/fcmsim"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/smtpsim"
	"github.com/heraldhq/herald/internal/track"
	"github.com/heraldhq/herald/schemas"
)

const (
	trackingKey  = "tracking-key-0123456789abcdef"
	trackingURL  = "https://t.shop.example"
	smtpUser     = "shop-mailer"
	smtpPassword = "smtp-secret-password"
	fcmProject   = "shop-app"
	fcmToken     = "fcm-access-token-shop"
)

// channelApps are the apps of the email and push tests: "mail" sends email
// through srv (STARTTLS, AUTH) and push through project shop-app;
// "bare" has neither.
func channelApps(t *testing.T, srv *smtpsim.Server, mut func(*apps.SMTP)) *apps.Registry {
	t.Helper()
	smtpCfg := apps.SMTP{Addr: "127.0.0.1:1", Username: smtpUser, Password: smtpPassword, ServerName: "localhost"}
	if srv != nil {
		smtpCfg.Addr, smtpCfg.CAPEM = srv.Addr(), srv.CertPEM()
	}
	if mut != nil {
		mut(&smtpCfg)
	}
	reg, err := apps.New([]apps.App{
		{
			ID: "mail", APIToken: "mail-api-token-0123456789",
			Email: apps.Email{
				From: "news@shop.example", FromName: "Shop Ünited", Senders: []string{"orders@shop.example"},
				ReplyTo: "help@shop.example", UnsubscribeMailto: "unsubscribe@shop.example", SMTP: smtpCfg,
			},
			Push: apps.Push{FCM: apps.FCM{ProjectID: fcmProject, AccessToken: fcmToken}},
		},
		{ID: "bare", APIToken: "bare-api-token-0123456789"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// startChannels runs a dispatcher on c with the given registry, fast
// backoff, until the test ends.
func startChannels(t *testing.T, c *kafkatest.Cluster, reg *apps.Registry, cfg Config) *Dispatcher {
	t.Helper()
	cfg.WhatsAppBaseURL = "http://127.0.0.1:1" // unused
	d, err := New(cfg, c.Config, reg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	d.backoffBase, d.backoffMax = 5*time.Millisecond, 20*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-res:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
		d.Close()
	})
	return d
}

func emailReq(id, to string, now time.Time) *schemas.DispatchRequest {
	return &schemas.DispatchRequest{
		ID: id, App: "mail", Channel: schemas.ChannelEmail, To: to, HWID: "hw-" + id,
		Email: &schemas.Email{
			Subject:  "Sushi 🍣 -20% tonight",
			Text:     "Hello Ann,\nsushi is 20% off tonight: https://shop.example/sushi\n",
			HTML:     `<html><body><p>Hello Ann,</p><a href="https://shop.example/sushi?utm=a&amp;b=1">Order</a> <a class=x href='mailto:help@shop.example'>Help</a> <A HREF=http://shop.example/plain>Plain</A> <a data-href="https://shop.example/data" href="#top">Top</a></body></html>`,
			Template: "sushi_promo",
		},
		Source:  schemas.Source{Kind: "journey", Name: "omni"},
		Created: now, Deadline: now.Add(time.Minute),
	}
}

// outcomesByID reads n outcomes and indexes them by dispatch id.
func outcomesByID(t *testing.T, c *kafkatest.Cluster, n int) map[string]*schemas.Outcome {
	t.Helper()
	out := map[string]*schemas.Outcome{}
	for _, o := range readOutcomes(t, c, n) {
		if _, dup := out[o.DispatchID]; dup {
			t.Fatalf("two outcomes for %s", o.DispatchID)
		}
		out[o.DispatchID] = o
	}
	return out
}

func TestEmailEndToEnd(t *testing.T) {
	srv, err := smtpsim.Start(smtpsim.Config{Users: map[string]string{smtpUser: smtpPassword}}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.Script("retry@example.com", smtpsim.Fault{Stage: smtpsim.StageData, Code: 451, Text: "4.3.0 Try again"})
	srv.Script("bounce@example.com", smtpsim.Fault{Stage: smtpsim.StageRcpt, Code: 550, Text: "5.1.1 No such user"})
	srv.Script("policy@example.com", smtpsim.Fault{Stage: smtpsim.StageData, Code: 554, Text: "5.7.1 Message refused"})
	srv.Script("dropped@example.com", smtpsim.Fault{Stage: smtpsim.StageRcpt, Drop: true})
	srv.Script("doubt@example.com", smtpsim.Fault{Stage: smtpsim.StageData, Drop: true})

	c := kafkatest.New(t, 4)
	now := time.Now().UTC().Truncate(time.Millisecond)
	type want struct {
		state    schemas.OutcomeState
		code     int
		attempts int
		invalid  bool
	}
	wants := map[string]want{}
	var reqs []*schemas.DispatchRequest
	add := func(r *schemas.DispatchRequest, w want) {
		reqs = append(reqs, r)
		wants[r.ID] = w
	}
	add(emailReq("ok", "ann@example.com", now), want{schemas.OutcomeAccepted, 0, 1, false})
	second := emailReq("second", "bob@example.com", now)
	second.Sender, second.Email.HTML = "orders@shop.example", "" // text only, another sender of the app
	add(second, want{schemas.OutcomeAccepted, 0, 1, false})
	add(emailReq("retry", "retry@example.com", now), want{schemas.OutcomeAccepted, 0, 2, false})
	add(emailReq("bounce", "bounce@example.com", now), want{schemas.OutcomeFailed, 550, 1, true})
	add(emailReq("policy", "policy@example.com", now), want{schemas.OutcomeFailed, 554, 1, false})
	add(emailReq("dropped", "dropped@example.com", now), want{schemas.OutcomeAccepted, 0, 2, false})
	add(emailReq("doubt", "doubt@example.com", now), want{schemas.OutcomeInDoubt, 0, 1, false})
	foreign := emailReq("foreign", "cy@example.com", now)
	foreign.Sender = "ceo@other.example"
	add(foreign, want{schemas.OutcomeFailed, CodeForeignSender, 0, false})
	add(emailReq("badto", "Ann <ann@example.com>", now), want{schemas.OutcomeFailed, CodeInvalidRequest, 0, false})
	bare := emailReq("bare", "dee@example.com", now)
	bare.App = "bare"
	add(bare, want{schemas.OutcomeFailed, CodeUnsupportedChannel, 0, false})

	cl := c.Client(t)
	for _, r := range reqs {
		produce(t, cl, dispatchRecord(t, r))
	}
	startChannels(t, c, channelApps(t, srv, nil), Config{
		RequestTimeout: 5 * time.Second, MaxAttempts: 3, Concurrency: 4,
		Breaker: BreakerConfig{ConsecutiveFailures: 50},
		Email:   EmailConfig{TrackingURL: trackingURL, TrackingKeys: []string{trackingKey}, PoolSize: 2, RatePerSender: 1000},
	})

	outs := outcomesByID(t, c, len(reqs))
	for id, w := range wants {
		o := outs[id]
		if o == nil {
			t.Fatalf("no outcome for %s", id)
		}
		if o.State != w.state || o.ErrorCode != w.code || o.Attempts != w.attempts || o.InvalidRecipient != w.invalid {
			t.Errorf("%s: state %s code %d attempts %d invalid %v (%s); want %s %d %d %v",
				id, o.State, o.ErrorCode, o.Attempts, o.InvalidRecipient, o.ErrorMessage, w.state, w.code, w.attempts, w.invalid)
		}
		if o.Channel != schemas.ChannelEmail {
			t.Errorf("%s: channel %q", id, o.Channel)
		}
	}
	if o := outs["ok"]; o.Sender != "news@shop.example" || o.Template != "sushi_promo" || o.Source.Name != "omni" {
		t.Errorf("ok: sender %q template %q source %+v", o.Sender, o.Template, o.Source)
	}
	if o := outs["second"]; o.Sender != "orders@shop.example" {
		t.Errorf("second: sender %q", o.Sender)
	}

	msgs, err := srv.WaitMessages(t.Context(), 4) // ok, second, retry, dropped (doubt's was refused by the drop)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("%d messages stored, want 4", len(msgs))
	}
	byTo := map[string]smtpsim.Message{}
	for _, m := range msgs {
		if !m.TLS || m.User != smtpUser {
			t.Errorf("message to %v: tls %v user %q", m.To, m.TLS, m.User)
		}
		byTo[m.To[0]] = m
	}
	checkTrackedMail(t, byTo["ann@example.com"], outs["ok"])
	bob := byTo["bob@example.com"]
	if pm, err := bob.Parse(); err != nil || !strings.HasPrefix(pm.Header.Get("Content-Type"), "text/plain") || bob.From != "orders@shop.example" {
		t.Fatalf("text-only mail: %v %v from %q", pm, err, bob.From)
	}
	// Pooled: at most PoolSize connections plus one per dropped one.
	if st := srv.Stats(); st.Connections > 2+st.Dropped {
		t.Errorf("%d connections for %d messages (%d dropped): the pool was not reused", st.Connections, len(reqs), st.Dropped)
	}
}

// checkTrackedMail checks the headers, both parts and the tracking links
// of the "ok" email.
func checkTrackedMail(t *testing.T, m smtpsim.Message, o *schemas.Outcome) {
	t.Helper()
	if m.From != "news@shop.example" {
		t.Fatalf("MAIL FROM %q", m.From)
	}
	pm, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	h := pm.Header
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(h.Get("Subject"))
	if err != nil || subject != "Sushi 🍣 -20% tonight" {
		t.Errorf("Subject %q (%v)", subject, err)
	}
	from, err := mail.ParseAddress(h.Get("From"))
	if err != nil || from.Name != "Shop Ünited" || from.Address != "news@shop.example" {
		t.Errorf("From %q: %+v %v", h.Get("From"), from, err)
	}
	for k, want := range map[string]string{
		"To": "<ann@example.com>", "Reply-To": "<help@shop.example>",
		"Message-ID": o.ProviderID, "X-Herald-Dispatch-ID": "ok", "MIME-Version": "1.0",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if !regexp.MustCompile(`^<[0-9a-f]{32}@shop\.example>$`).MatchString(o.ProviderID) {
		t.Errorf("Message-ID %q", o.ProviderID)
	}
	if o.ProviderID != messageID("mail", "ok", "news@shop.example") {
		t.Error("Message-ID is not derived from the dispatch id")
	}
	if d, err := h.Date(); err != nil || time.Since(d) > time.Hour {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	signer, _ := track.NewSigner([]string{trackingKey})
	link := track.Link{App: "mail", DispatchID: "ok", HWID: "hw-ok", SourceKind: "journey", SourceName: "omni"}
	unsub := h.Get("List-Unsubscribe")
	um := regexp.MustCompile(`^<` + regexp.QuoteMeta(trackingURL+track.UnsubscribePath) + `([^>]+)>, <mailto:unsubscribe@shop\.example\?subject=unsubscribe>$`).FindStringSubmatch(unsub)
	if um == nil {
		t.Fatalf("List-Unsubscribe %q", unsub)
	}
	if l, err := signer.Verify(track.KindUnsubscribe, um[1]); err != nil || *l != withKind(link, track.KindUnsubscribe) {
		t.Errorf("unsubscribe token: %+v %v", l, err)
	}

	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q", h.Get("Content-Type"))
	}
	mr := multipart.NewReader(pm.Body, params["boundary"])
	var parts []string
	var types []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
			t.Errorf("part encoding %q", p.Header.Get("Content-Transfer-Encoding"))
		}
		b, err := io.ReadAll(quotedprintable.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, p.Header.Get("Content-Type"))
		parts = append(parts, string(b))
	}
	if len(parts) != 2 || types[0] != "text/plain; charset=utf-8" || types[1] != "text/html; charset=utf-8" {
		t.Fatalf("parts %q", types)
	}
	if want := "Hello Ann,\r\nsushi is 20% off tonight: https://shop.example/sushi\r\n\r\n"; parts[0] != want {
		t.Errorf("text part %q, want %q", parts[0], want)
	}
	htmlPart := parts[1]
	if !strings.Contains(htmlPart, `data-href="https://shop.example/data"`) {
		t.Errorf("data-href was rewritten: %s", htmlPart)
	}
	hrefs := regexp.MustCompile(`(?i)\shref=["']([^"']*)["']`).FindAllStringSubmatch(htmlPart, -1)
	var targets []string
	for _, m := range hrefs {
		u := strings.ReplaceAll(m[1], "&amp;", "&")
		tok, ok := strings.CutPrefix(u, trackingURL+track.ClickPath)
		if !ok {
			targets = append(targets, "untracked:"+u)
			continue
		}
		l, err := signer.Verify(track.KindClick, tok)
		if err != nil {
			t.Fatalf("click token of %q: %v", u, err)
		}
		want := withKind(link, track.KindClick)
		want.URL = l.URL
		if *l != want {
			t.Errorf("click link %+v, want %+v", *l, want)
		}
		targets = append(targets, l.URL)
	}
	wantTargets := []string{"https://shop.example/sushi?utm=a&b=1", "untracked:mailto:help@shop.example", "http://shop.example/plain", "untracked:#top"}
	if strings.Join(targets, " ") != strings.Join(wantTargets, " ") {
		t.Errorf("link targets %q, want %q", targets, wantTargets)
	}
	pm2 := regexp.MustCompile(`<img src="` + regexp.QuoteMeta(trackingURL+track.OpenPath) + `([^"]+)\.gif"[^>]*></body>`).FindStringSubmatch(htmlPart)
	if pm2 == nil {
		t.Fatalf("no open pixel before </body> in %s", htmlPart)
	}
	if l, err := signer.Verify(track.KindOpen, pm2[1]); err != nil || *l != withKind(link, track.KindOpen) {
		t.Errorf("open token: %+v %v", l, err)
	}
}

func withKind(l track.Link, k track.Kind) track.Link {
	l.Kind = k
	return l
}

func TestEmailServerRefusals(t *testing.T) {
	noTLS, err := smtpsim.Start(smtpsim.Config{DisableSTARTTLS: true, AllowPlain: true, Users: map[string]string{smtpUser: smtpPassword}}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(noTLS.Close)
	wrongPW, err := smtpsim.Start(smtpsim.Config{Users: map[string]string{smtpUser: "another"}}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wrongPW.Close)
	now := time.Now().UTC()
	f := func(name string, srv *smtpsim.Server, mut func(*apps.SMTP), state schemas.OutcomeState, code int) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			c := kafkatest.New(t, 1)
			produce(t, c.Client(t), dispatchRecord(t, emailReq("e", "ann@example.com", now)))
			startChannels(t, c, channelApps(t, srv, mut), Config{RequestTimeout: 5 * time.Second, MaxAttempts: 2})
			o := readOutcomes(t, c, 1)[0]
			if o.State != state || o.ErrorCode != code {
				t.Fatalf("outcome %s %d (%s), want %s %d", o.State, o.ErrorCode, o.ErrorMessage, state, code)
			}
		})
	}
	// A server without STARTTLS is refused: the password is never sent
	// in clear text.
	f("no starttls", noTLS, nil, schemas.OutcomeFailed, CodeSMTPConfig)
	if st := noTLS.Stats(); st.AuthOK+st.AuthFailed != 0 || st.Messages != 0 {
		t.Fatalf("credentials or mail sent to a server without TLS: %+v", st)
	}
	f("plain allowed", noTLS, func(s *apps.SMTP) { s.TLS = apps.TLSNone }, schemas.OutcomeAccepted, 0)
	f("wrong password", wrongPW, nil, schemas.OutcomeFailed, 535)
	f("untrusted certificate", wrongPW, func(s *apps.SMTP) { s.CAPEM = noTLS.CertPEM() }, schemas.OutcomeFailed, CodeUnreachable)
}

// TestEmailReconnectsAfterIdleClose: a pooled connection the server closed
// while idle is replaced at once, within the same attempt.
func TestEmailReconnectsAfterIdleClose(t *testing.T) {
	srv, err := smtpsim.Start(smtpsim.Config{Users: map[string]string{smtpUser: smtpPassword}}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c := kafkatest.New(t, 1)
	cl := c.Client(t)
	now := time.Now().UTC()
	startChannels(t, c, channelApps(t, srv, nil), Config{RequestTimeout: 5 * time.Second, MaxAttempts: 1})
	produce(t, cl, dispatchRecord(t, emailReq("first", "ann@example.com", now)))
	if o := readOutcomes(t, c, 1)[0]; o.State != schemas.OutcomeAccepted {
		t.Fatalf("first: %+v", o)
	}
	srv.CloseConnections()
	produce(t, cl, dispatchRecord(t, emailReq("second", "ann@example.com", now)))
	outs := outcomesByID(t, c, 2)
	if o := outs["second"]; o.State != schemas.OutcomeAccepted || o.Attempts != 1 {
		t.Fatalf("second after the idle connection was closed: %s attempts %d (%s)", o.State, o.Attempts, o.ErrorMessage)
	}
	if st := srv.Stats(); st.Connections != 2 || st.Messages != 2 {
		t.Fatalf("stats %+v, want 2 connections and 2 messages", st)
	}
}

func pushReq(id, token string, now time.Time) *schemas.DispatchRequest {
	return &schemas.DispatchRequest{
		ID: id, App: "mail", Channel: schemas.ChannelPush, To: token,
		Push:   &schemas.Push{Title: "Sushi tonight", Body: "20% off until 10 pm", Data: map[string]string{"deeplink": "shop://sushi"}, Template: "sushi_push"},
		Source: schemas.Source{Kind: "journey", Name: "omni"}, Created: now, Deadline: now.Add(time.Minute),
	}
}

func TestPushEndToEnd(t *testing.T) {
	sim, err := fcmsim.New(fcmsim.Config{Projects: []fcmsim.Project{{ID: fcmProject, AccessToken: fcmToken}}})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim.Handler())
	t.Cleanup(api.Close)
	sim.Unregister("token-gone")
	sim.Script("token-quota", fcmsim.Fault{ErrorCode: fcmsim.ErrQuotaExceeded, RetryAfter: 1})
	sim.Script("token-unavailable", fcmsim.Fault{ErrorCode: fcmsim.ErrUnavailable})
	sim.Script("token-internal", fcmsim.Fault{ErrorCode: fcmsim.ErrInternal}, fcmsim.Fault{ErrorCode: fcmsim.ErrInternal}, fcmsim.Fault{ErrorCode: fcmsim.ErrInternal})

	c := kafkatest.New(t, 4)
	now := time.Now().UTC()
	type want struct {
		state    schemas.OutcomeState
		code     int
		attempts int
		invalid  bool
	}
	wants := map[string]want{}
	var reqs []*schemas.DispatchRequest
	add := func(r *schemas.DispatchRequest, w want) {
		reqs = append(reqs, r)
		wants[r.ID] = w
	}
	add(pushReq("ok", "token-ok", now), want{schemas.OutcomeAccepted, 0, 1, false})
	add(pushReq("gone", "token-gone", now), want{schemas.OutcomeFailed, 404, 1, true})
	add(pushReq("quota", "token-quota", now), want{schemas.OutcomeAccepted, 0, 2, false})
	add(pushReq("unavailable", "token-unavailable", now), want{schemas.OutcomeAccepted, 0, 2, false})
	add(pushReq("internal", "token-internal", now), want{schemas.OutcomeFailed, 500, 3, false})
	reserved := pushReq("reserved", "token-r", now)
	reserved.Push.Data = map[string]string{"google.sent_time": "1"}
	add(reserved, want{schemas.OutcomeFailed, CodeInvalidRequest, 0, false})
	foreign := pushReq("foreign", "token-f", now)
	foreign.Sender = "another-project"
	add(foreign, want{schemas.OutcomeFailed, CodeForeignSender, 0, false})
	bare := pushReq("bare", "token-b", now)
	bare.App = "bare"
	add(bare, want{schemas.OutcomeFailed, CodeUnsupportedChannel, 0, false})

	cl := c.Client(t)
	for _, r := range reqs {
		produce(t, cl, dispatchRecord(t, r))
	}
	startChannels(t, c, channelApps(t, nil, nil), Config{
		RequestTimeout: 5 * time.Second, MaxAttempts: 3, Concurrency: 4,
		Breaker: BreakerConfig{ConsecutiveFailures: 50},
		Push:    PushConfig{FCMBaseURL: api.URL},
	})
	outs := outcomesByID(t, c, len(reqs))
	for id, w := range wants {
		o := outs[id]
		if o == nil {
			t.Fatalf("no outcome for %s", id)
		}
		if o.State != w.state || o.ErrorCode != w.code || o.Attempts != w.attempts || o.InvalidRecipient != w.invalid {
			t.Errorf("%s: state %s code %d attempts %d invalid %v (%s); want %s %d %d %v",
				id, o.State, o.ErrorCode, o.Attempts, o.InvalidRecipient, o.ErrorMessage, w.state, w.code, w.attempts, w.invalid)
		}
	}
	if o := outs["gone"]; !strings.Contains(o.ErrorMessage, "UNREGISTERED") {
		t.Errorf("gone: message %q does not name UNREGISTERED", o.ErrorMessage)
	}
	ok := outs["ok"]
	if ok.Sender != fcmProject || ok.Template != "sushi_push" || !strings.HasPrefix(ok.ProviderID, "projects/shop-app/messages/") {
		t.Errorf("ok: %+v", ok)
	}
	var got *fcmsim.Message
	for _, m := range sim.Messages() {
		if m.Token == "token-ok" {
			got = &m
		}
	}
	if got == nil || got.Name != ok.ProviderID || got.Title != "Sushi tonight" || got.Body != "20% off until 10 pm" ||
		got.Data["deeplink"] != "shop://sushi" || got.Data[PushDataDispatchID] != "ok" || len(got.Data) != 2 {
		t.Fatalf("simulator got %+v", got)
	}
	if n := len(sim.Messages()); n != 3 {
		t.Errorf("simulator accepted %d pushes, want 3 (ok, quota, unavailable)", n)
	}
}

func TestBackoffHonoursRetryAfter(t *testing.T) {
	d := &Dispatcher{backoffBase: time.Millisecond, backoffMax: 10 * time.Millisecond}
	if b := d.backoff(1, &FCMError{Status: 429, Code: fcmQuotaExceeded, RetryAfter: 3 * time.Second}); b < 3*time.Second {
		t.Fatalf("backoff %v below Retry-After 3s", b)
	}
	if b := d.backoff(1, &FCMError{Status: 503}); b > 10*time.Millisecond {
		t.Fatalf("backoff %v without Retry-After above the max", b)
	}
	now := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "7": 7 * time.Second, "-1": 0, "soon": 0, "99999999999": maxRetryAfter,
		"Sun, 01 Nov 2026 10:00:30 GMT": 30 * time.Second, "Sun, 01 Nov 2026 09:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestChannelErrorClassification(t *testing.T) {
	f := func(name string, err error, retry, breaker, rate, invalid bool, code int) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			if IsRetryable(err) != retry || breakerFailure(err) != breaker || isRateLimit(err) != rate ||
				invalidRecipient(err) != invalid || errorCode(err) != code {
				t.Fatalf("retry %v breaker %v rate %v invalid %v code %d; want %v %v %v %v %d", IsRetryable(err), breakerFailure(err),
					isRateLimit(err), invalidRecipient(err), errorCode(err), retry, breaker, rate, invalid, code)
			}
		})
	}
	f("smtp 451", &SMTPError{Stage: stageMessage, Code: 451}, true, false, false, false, 451)
	f("smtp 421", &SMTPError{Stage: stageMail, Code: 421}, true, true, false, false, 421)
	f("smtp 450 4.7.0 throttle", &SMTPError{Stage: stageRcpt, Code: 450, Enhanced: "4.7.0"}, true, false, true, false, 450)
	f("smtp 550 5.1.1", &SMTPError{Stage: stageRcpt, Code: 550, Enhanced: "5.1.1"}, false, false, false, true, 550)
	f("smtp 550 5.7.1 policy", &SMTPError{Stage: stageRcpt, Code: 550, Enhanced: "5.7.1"}, false, false, false, false, 550)
	f("smtp 535 auth", &SMTPError{Stage: stageAuth, Code: 535}, false, false, false, false, 535)
	f("smtp 554 greeting", &SMTPError{Stage: stageGreeting, Code: 554}, false, true, false, false, 554)
	f("smtp config", ErrSMTPConfig, false, true, false, false, CodeSMTPConfig)
	f("fcm unregistered", &FCMError{Status: 404, Code: fcmUnregistered}, false, false, false, true, 404)
	f("fcm quota", &FCMError{Status: 429, Code: fcmQuotaExceeded}, true, false, true, false, 429)
	f("fcm unavailable", &FCMError{Status: 503, Code: fcmUnavailable}, true, true, false, false, 503)
	f("fcm internal", &FCMError{Status: 500, Code: fcmInternal}, true, true, false, false, 500)
	f("fcm invalid argument", &FCMError{Status: 400, Code: "INVALID_ARGUMENT"}, false, false, false, false, 400)
	f("fcm bad gateway page", &FCMError{Status: 502}, true, true, false, false, 502)
}
