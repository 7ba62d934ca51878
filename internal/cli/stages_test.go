package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/internal/wasim"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a goroutine-safe output for a command under test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStandaloneStages runs the broker, the simulator and every stage as the
// separate subcommands an operator starts, wired only by flags, an apps file
// with env: secrets and the environment, and sends PROMO through them.
func TestStandaloneStages(t *testing.T) {
	dsn, conn := chtest.DB(t)
	brokerAddr, ingestAddr, wasimAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, brokerPort, _ := net.SplitHostPort(brokerAddr)

	const (
		token, secret, accessToken = "standalone-api-token-0123", "standalone-app-secret", "EAAGstandalone"
		phoneNumberID, phone       = "106540352242922", "+5511987654321"
	)
	t.Setenv("T_API_TOKEN", token)
	t.Setenv("T_APP_SECRET", secret)
	t.Setenv("T_ACCESS_TOKEN", accessToken)
	t.Setenv("HERALD_KAFKA_BROKERS", brokerAddr)
	t.Setenv("HERALD_KAFKA_PARTITIONS", "3")
	appsFile := filepath.Join(t.TempDir(), "apps.yaml")
	err := os.WriteFile(appsFile, []byte(`apps:
  - id: shop
    api_token: env:T_API_TOKEN
    whatsapp:
      phone_number_ids: ["`+phoneNumberID+`"]
      waba_id: "102290129340398"
      access_token: env:T_ACCESS_TOKEN
      app_secret: env:T_APP_SECRET
      verify_token: verify-me
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	type proc struct {
		name string
		out  *syncBuffer
		err  error
	}
	var procs []*proc
	start := func(run func(context.Context, []string, io.Writer, io.Writer) error, name string, args ...string) {
		p := &proc{name: name, out: &syncBuffer{}}
		procs = append(procs, p)
		args = append(args, "-log.level", "warn")
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.err = run(ctx, args, p.out, p.out)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, p := range procs {
			if p.err != nil {
				t.Errorf("herald %s: %v\n%s", p.name, p.err, p.out)
			}
		}
	})

	start(runBroker, "broker", "-port", brokerPort, "-data-dir", t.TempDir())
	waitListening(t, brokerAddr)
	start(runWasim, "wasim", "-http.addr", wasimAddr, "-apps", appsFile, "-webhook.url", "http://"+ingestAddr+"/whatsapp/webhooks")
	start(runIngest, "ingest", "-http.addr", ingestAddr, "-apps", appsFile, "-ops.addr", "127.0.0.1:0")
	start(runSegmenter, "segmenter", "-ops.addr", "127.0.0.1:0")
	start(runDispatcher, "dispatcher", "-apps", appsFile, "-whatsapp.base-url", "http://"+wasimAddr, "-ops.addr", "127.0.0.1:0")
	start(runAnalytics, "analytics", "-clickhouse.dsn", dsn, "-ops.addr", "127.0.0.1:0")
	waitListening(t, ingestAddr)
	waitListening(t, wasimAddr)

	w := &workload{base: "http://" + ingestAddr, token: token, app: "shop"}
	if err := w.post(ctx, "registerDevice", map[string]any{"device_type": 21, "hwid": "whatsapp:" + phone}); err != nil {
		t.Fatal(err)
	}
	// The inbound message as Meta posts it, signed with the app secret.
	body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
		"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":%q},
		"contacts":[{"profile":{"name":"Lucas"},"wa_id":%q}],
		"messages":[{"from":%q,"id":"wamid.standalone1","timestamp":"%d","type":"text","text":{"body":"PROMO"}}]}}]}]}`,
		phoneNumberID, phone[1:], phone[1:], time.Now().Unix())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ingestAddr+"/whatsapp/webhooks", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", wasim.Sign(secret, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook: status %d", resp.StatusCode)
	}

	// register + inbound + sent/delivered/read statuses as events; one send.
	deadline := time.Now().Add(60 * time.Second)
	// The analytics stage creates its tables as it starts, maybe after
	// this point: until then a count would fail, not be zero.
	for _, table := range []string{"events", "messages", "statuses"} {
		for chtest.Count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("table %s not created after 60s", table)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for {
		// The analytics process may still be creating its tables: counting
		// a table that does not exist yet would fail the test.
		if chtest.Count(t, conn, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('events', 'statuses', 'messages')") < 3 {
			if time.Now().After(deadline) {
				t.Fatal("analytics did not create its tables in 60s")
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		events := chtest.Count(t, conn, "SELECT count() FROM events FINAL WHERE app = 'shop'")
		sends := chtest.Count(t, conn, "SELECT count() FROM messages FINAL WHERE app = 'shop' AND template = 'promo_offer' AND state = 'accepted' AND recipient = ?", phone)
		statuses := chtest.Count(t, conn, "SELECT count() FROM statuses FINAL WHERE app = 'shop'")
		if events == 5 && sends == 1 && statuses == 3 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range procs {
				t.Logf("%s output:\n%s", p.name, p.out)
			}
			t.Fatalf("after 60s: events %d (want 5), promo sends %d (want 1), statuses %d (want 3)", events, sends, statuses)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 20s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLoadKeywords(t *testing.T) {
	rules, err := loadKeywords("../../deploy/keywords.example.yaml")
	if err != nil {
		t.Fatalf("the example file: %v", err)
	}
	if len(rules) != 6 || rules[3].Name != "ORDER" || rules[5].OptOut == nil || !*rules[5].OptOut {
		t.Fatalf("example rules %+v", rules)
	}
	dir := t.TempDir()
	f := func(name, body, wantErr string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			rules, err := loadKeywords(path)
			switch {
			case wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
				t.Fatalf("err = %v, want it to mention %q", err, wantErr)
			case wantErr == "" && name == "empty" && rules != nil:
				t.Fatalf("an empty file gave %v, want the defaults (nil)", rules)
			case wantErr == "" && name == "off" && (rules == nil || len(rules) != 0):
				t.Fatalf("keywords: [] gave %v, want an empty list", rules)
			}
		})
	}
	f("empty", "", "")
	f("off", "keywords: []\n", "")
	f("misspelt key", "keywords:\n  - app: '*'\n    keywrd: x\n    text: hi\n", "keywrd")
	f("invalid rule", "keywords:\n  - app: '*'\n    keyword: x\n    text: hi\n    template: t\n", "keywords[0]")
	f("not yaml", "keywords: [", "parsing keyword rules")
}

func TestReportParams(t *testing.T) {
	f := func(campaign, journey, from, to, wantErr string) analytics.Params {
		t.Helper()
		p, err := reportParams("shop", campaign, journey, from, to)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("err = %v, want %q", err, wantErr)
			}
			return p
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := f("spring", "", "2025-03-01", "2025-03-31", ""); p.SourceKind != "campaign" || p.SourceName != "spring" ||
		p.From != time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC) || p.To != time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("campaign params %+v", p)
	}
	if p := f("", "onboarding", "", "", ""); p.SourceKind != "journey" || p.SourceName != "onboarding" || p.Journey != "onboarding" {
		t.Fatalf("journey params %+v", p)
	}
	f("a", "b", "", "", "exclude each other")
	f("", "", "2025-3-1", "", `-from "2025-3-1": want a day`)
	f("", "", "", "tomorrow", `-to "tomorrow"`)
	f("", "", "2025-03-02", "2025-03-01", "-to 2025-03-01 is before -from 2025-03-02")
}

func TestReportNeedsApp(t *testing.T) {
	var out, errb bytes.Buffer
	err := runReport(t.Context(), []string{"-campaign", "spring", "-clickhouse.dsn", "clickhouse://127.0.0.1:1/default"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "need -app") {
		t.Fatalf("err = %v", err)
	}
}

// TestPricingFlags: the stage's pricing flags fill segmenter.Config.Pricing.
func TestPricingFlags(t *testing.T) {
	fs := flag.NewFlagSet("segmenter", flag.ContinueOnError)
	var c pricing.Config
	pricingFlags(fs, &c)
	if err := fs.Parse(nil); err != nil || c != (pricing.Config{Rules: pricing.RulesJuly2025}) {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	if err := fs.Parse([]string{"-pricing.file", "rates.csv", "-pricing.rules", "2026-10", "-pricing.business-country", "GB"}); err != nil {
		t.Fatal(err)
	}
	if want := (pricing.Config{File: "rates.csv", Rules: pricing.RulesOctober2026, BusinessCountry: "GB"}); c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}
