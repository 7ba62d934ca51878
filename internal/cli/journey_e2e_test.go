package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/heraldhq/herald/internal/chtest"
)

// channelsStack is the dev stack with the email and push channels (the
// SMTP sink and the push simulator, tracking links signed), edit changing
// its config first; it returns the stack, a workload on its demo app and
// the test database.
func channelsStack(t *testing.T, edit func(*stackConfig)) (*stack, *workload, driver.Conn) {
	t.Helper()
	dsn, conn := chtest.DB(t)
	creds := &devCredentials{
		APIToken: "test-api-token-0123456789", SegmentWriteKey: "test-write-key",
		AccessToken: "EAAGtest", AppSecret: "test-app-secret", VerifyToken: "test-verify",
		SMTPPassword: "test-smtp-password", FCMToken: "ya29.test", TrackingKey: "test-tracking-key-0123456789abcdef",
	}
	app := creds.app()
	creds.devChannels(&app)
	cfg := stackConfig{
		DataDir: t.TempDir(), Partitions: 4, ClickHouseDSN: dsn,
		IngestAddr: "127.0.0.1:0", WasimAddr: "127.0.0.1:0", OpsAddr: "127.0.0.1:0",
		DevApp: &app, TrackingKeys: []string{creds.TrackingKey},
	}
	if edit != nil {
		edit(&cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := startStack(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, &workload{base: s.ingestSrv.URL(), token: creds.APIToken, app: devAppID}, conn
}

// journeyStack is channelsStack with a journey clock the test moves.
func journeyStack(t *testing.T) (*stack, *workload, *demoClock) {
	t.Helper()
	clock := new(demoClock)
	s, w, _ := channelsStack(t, func(cfg *stackConfig) {
		cfg.Segmenter.Clock = clock.now
		cfg.Segmenter.TickInterval = 20 * time.Millisecond
		cfg.Dispatcher.Email.RatePerSender = 1000
	})
	return s, w, clock
}

// TestSeedJourneyEndToEnd: the seed's journey through the whole pipeline:
// pushes through the push simulator, emails through the SMTP server over
// TCP with STARTTLS, opens through the app event and ingest's signed pixel,
// WhatsApp through the Meta simulator; a user who opens the push gets
// nothing more; ClickHouse counts the branches.
func TestSeedJourneyEndToEnd(t *testing.T) {
	s, w, clock := journeyStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	phones := make([]string, 30)
	for i := range phones {
		phones[i] = fmt.Sprintf("+9198123%05d", i)
	}
	if err := w.register(ctx, phones); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := runDemoJourney(ctx, &out, s, w, clock, phones, len(phones)); err != nil {
		t.Fatal(err)
	}
	want := "30 pushes, 10 opened; 20 emails (0 to users who opened the push), 10 opened; 10 WhatsApp templates"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("journey: %s\nwant %s", out.String(), want)
	}
	if err := s.waitDrained(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	br, err := journeyBranches(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if br["push"] != 30 || br["push_opened"] != 10 || br["email"] != 20 || br["email_opened"] != 10 || br["whatsapp"] != 10 {
		t.Fatalf("branches in ClickHouse: %v", br)
	}
}

// TestSupportJourneyEndToEnd: a keyword-started support journey (SUPPORT
// -> acknowledgement -> wait for a reply -> follow-up offer) through the
// signed webhook, the segmenter and the Meta simulator.
func TestSupportJourneyEndToEnd(t *testing.T) {
	s, w, _ := journeyStack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	phones := []string{"+919812399001", "+919812399002"}
	if err := w.register(ctx, phones); err != nil {
		t.Fatal(err)
	}
	if err := w.post(ctx, "createJourney", map[string]any{"journey": map[string]any{
		"id": "support", "entry": map[string]any{"keyword": "support"},
		"steps": []map[string]any{
			{"id": "ack", "type": "send", "channel": "whatsapp", "text": "Hi {{profile_name|there}}, tell us what happened", "next": "wait"},
			{"id": "wait", "type": "wait_event", "event": "whatsapp.reply", "timeout": "1h", "on_event": "offer", "on_timeout": "end"},
			{"id": "offer", "type": "send", "channel": "whatsapp", "template": map[string]any{"name": "welcome_back", "language": "en_US"}, "next": "end"},
			{"id": "end", "type": "exit"},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	before := s.sim.Stats().Accepted
	// Both write SUPPORT (through the simulator's signed webhook); only
	// the first replies.
	for _, p := range phones {
		if _, err := s.sim.SendInbound(ctx, devPhoneNumberID, p, "Support please"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := waitCount(ctx, "acknowledgements", 2, func() int { return s.sim.Stats().Accepted - before }); err != nil {
		t.Fatal(err)
	}
	if err := s.waitSegmenter(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sim.SendInbound(ctx, devPhoneNumberID, phones[0], "my order is late"); err != nil {
		t.Fatal(err)
	}
	if _, err := waitCount(ctx, "the follow-up offer", 3, func() int { return s.sim.Stats().Accepted - before }); err != nil {
		t.Fatal(err)
	}
	if err := s.waitDrained(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := s.sim.Stats().Accepted - before; n != 3 {
		t.Fatalf("%d WhatsApp messages, want 3 (two acknowledgements, one offer)", n)
	}
}
