package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/wasim"
)

// buildHerald builds cmd/herald into a temporary directory.
func buildHerald(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, "./cmd/herald")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/herald: %v\n%s", err, out)
	}
	return bin
}

// proc is one herald process of the test, restartable.
type proc struct {
	t     *testing.T
	name  string
	bin   string
	args  []string
	log   string // output of every run, appended
	ready func(ctx context.Context) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	runs int
}

func (p *proc) start() {
	p.t.Helper()
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.runs++
	fmt.Fprintf(out, "=== run %d: herald %s %s\n", p.runs, p.name, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, append([]string{p.name}, p.args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "HERALD_LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); _ = out.Close() }()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.t.Context(), 60*time.Second)
	defer cancel()
	for {
		err := p.ready(ctx)
		if err == nil {
			return
		}
		select {
		case exit := <-done:
			p.t.Fatalf("%s exited while starting: %v\n%s", p.name, exit, tail(p.log, 30))
		case <-ctx.Done():
			p.t.Fatalf("%s not ready after 60s: %v\n%s", p.name, err, tail(p.log, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for the exit, which must be clean: the
// process drained and committed within its -shutdown.timeout.
func (p *proc) stop() {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case err := <-done:
		if err != nil {
			p.t.Fatalf("%s did not exit cleanly on SIGTERM: %v\n%s", p.name, err, tail(p.log, 30))
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		p.t.Fatalf("%s still running 90s after SIGTERM\n%s", p.name, tail(p.log, 30))
	}
}

// kill ends the process without a drain (cleanup).
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.cmd = nil
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// httpReady is a readiness probe: url answers 200.
func httpReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	}
}

// tcpReady is a readiness probe: addr accepts connections.
func tcpReady(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// TestRollingRestart runs the broker, the simulator and every stage as
// separate processes of the built binary, loads them with signed inbound
// webhooks (each PROMO is answered with a template, whose three statuses
// come back as webhooks) and Segment events, and while the load goes on
// stops each stage with SIGTERM and starts it again, one after the other.
// Then every event is in ClickHouse exactly once, every dispatch has its
// outcome and its statuses, no message was sent twice, and every stop was
// clean (exit 0 within -shutdown.timeout).
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs every stage as its own process")
	}
	bin := buildHerald(t)
	dsn, conn := chtest.DB(t)
	dir := t.TempDir()
	const (
		token, writeKey = "rolling-api-token-0123456789", "rolling-write-key"
		secret          = "rolling-app-secret"
		pnid, waba      = "106540352242922", "102290129340398"
		// minInbound and minTracks are the least load sent; it goes on
		// until every stage was restarted.
		minInbound, minTracks = 1200, 1200
	)
	appsFile := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(appsFile, []byte(`apps:
  - id: ABCDE-12345
    api_token: `+token+`
    segment_write_key: `+writeKey+`
    whatsapp:
      phone_number_ids: ["`+pnid+`"]
      waba_id: "`+waba+`"
      access_token: EAAGrolling
      app_secret: `+secret+`
      verify_token: rolling-verify
`), 0o600); err != nil {
		t.Fatal(err)
	}
	brokerAddr, ingestAddr, wasimAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, brokerPort, _ := net.SplitHostPort(brokerAddr)
	// One config file for every stage, as deploy/ has it.
	cfgFile := filepath.Join(dir, "herald.yaml")
	ops := map[string]string{}
	for _, s := range []string{"ingest", "segmenter", "dispatcher", "analytics"} {
		ops[s] = freeAddr(t)
	}
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`kafka:
  brokers: ${HERALD_T_BROKER}
  partitions: 4
apps: %s
shutdown.timeout: 60s
ingest:
  http.addr: %s
  ops.addr: %s
segmenter:
  ops.addr: %s
dispatcher:
  ops.addr: %s
  whatsapp: {base_url: "http://%s", rate: 80} # Meta's default: a backlog builds, so the stop interrupts sends
analytics:
  ops.addr: %s
  clickhouse.dsn: %s
  analytics.flush-interval: 200ms
`, appsFile, ingestAddr, ops["ingest"], ops["segmenter"], ops["dispatcher"], wasimAddr, ops["analytics"], dsn)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERALD_T_BROKER", brokerAddr)

	procs := map[string]*proc{}
	newProc := func(name string, ready func(context.Context) error, args ...string) *proc {
		p := &proc{t: t, name: name, bin: bin, args: args, log: filepath.Join(dir, name+".log"), ready: ready}
		procs[name] = p
		t.Cleanup(p.kill)
		return p
	}
	newProc("broker", tcpReady(brokerAddr), "-port", brokerPort, "-data-dir", filepath.Join(dir, "broker"), "-kafka.partitions", "4").start()
	newProc("wasim", tcpReady(wasimAddr), "-http.addr", wasimAddr, "-apps", appsFile,
		"-webhook.url", "http://"+ingestAddr+"/whatsapp/webhooks").start()
	stages := []string{"ingest", "segmenter", "dispatcher", "analytics"}
	for _, s := range stages {
		newProc(s, httpReady("http://"+ops[s]+"/readyz"), "-config", cfgFile).start()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range append([]string{"broker", "wasim"}, stages...) {
				t.Logf("--- %s.log (tail)\n%s", name, tail(procs[name].log, 40))
			}
		}
	})

	// The load: signed PROMO webhooks from distinct subscribers and
	// Segment track events, each retried until ingest answers 200 (it is
	// down while it restarts); retries carry the same ids.
	w := &workload{rnd: rand.New(rand.NewPCG(8, 8))}
	var phones []string
	for _, p := range w.phones(minInbound * 3) {
		if !strings.HasSuffix(p, wasim.UndeliverableSuffix) {
			phones = append(phones, p)
		}
	}
	var (
		inbound, tracks atomic.Int64
		restarted       atomic.Bool
		loadErr         = make(chan error, 1)
	)
	loadCtx, stopLoad := context.WithTimeout(t.Context(), 5*time.Minute)
	defer stopLoad()
	client := &http.Client{Timeout: 15 * time.Second}
	post := func(path string, body []byte, hdr map[string]string) error {
		for {
			req, err := http.NewRequestWithContext(loadCtx, http.MethodPost, "http://"+ingestAddr+path, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					return nil
				case resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
					return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
				}
			}
			select {
			case <-loadCtx.Done():
				return fmt.Errorf("%s: not accepted before the load's deadline (last error %v)", path, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(writeKey+":"))
	go func() {
		pace := time.NewTicker(4 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			if (restarted.Load() && inbound.Load() >= minInbound && tracks.Load() >= minTracks) || i >= len(phones) {
				loadErr <- nil
				return
			}
			<-pace.C
			from := strings.TrimPrefix(phones[i], "+")
			body := fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":%q,"changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":%q},"contacts":[{"profile":{"name":"User %s"},"wa_id":%q}],"messages":[{"from":%q,"id":"wamid.rolling%06d","timestamp":"%d","type":"text","text":{"body":"PROMO please"}}]}}]}]}`,
				waba, pnid, from[len(from)-4:], from, from, i, time.Now().Unix())
			if err := post("/whatsapp/webhooks", body, map[string]string{"X-Hub-Signature-256": wasim.Sign(secret, body)}); err != nil {
				loadErr <- err
				return
			}
			inbound.Add(1)
			track := fmt.Appendf(nil, `{"type":"track","messageId":"rolling-%06d","userId":"user-%d","event":"Order Completed","properties":{"revenue":%d}}`, i, i%500, i%90)
			if err := post("/v1/track", track, map[string]string{"Authorization": basic}); err != nil {
				loadErr <- err
				return
			}
			tracks.Add(1)
		}
	}()

	// Each stage in turn, while the load goes on: SIGTERM, a clean exit,
	// a start, ready again.
	for i, s := range stages {
		want := int64(minInbound * (i + 1) / (len(stages) + 1))
		for inbound.Load() < want {
			select {
			case err := <-loadErr:
				t.Fatalf("load ended before restarting %s: %v", s, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
		procs[s].stop()
		procs[s].start()
		t.Logf("restarted %s after %d inbound messages", s, inbound.Load())
	}
	restarted.Store(true)
	if err := <-loadErr; err != nil {
		t.Fatal(err)
	}
	nIn, nTr := uint64(inbound.Load()), uint64(tracks.Load())
	t.Logf("load: %d inbound PROMO messages, %d track events", nIn, nTr)

	// Wait until ClickHouse has everything (deadline), then check counts.
	count := func(q string) uint64 { return chtest.Count(t, conn, q) }
	deadline := time.Now().Add(3 * time.Minute)
	for count("SELECT count() FROM statuses FINAL WHERE status = 'read'") < nIn ||
		count("SELECT count() FROM events FINAL") < 5*nIn+nTr-nIn {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	got := map[string]uint64{
		"inbound events":                  count("SELECT count() FROM events FINAL WHERE kind = 'inbound'"),
		"distinct inbound wamids":         count("SELECT uniqExact(inbound_wamid) FROM events WHERE kind = 'inbound' AND startsWith(inbound_wamid, 'wamid.rolling')"),
		"track events":                    count("SELECT count() FROM events FINAL WHERE kind = 'event' AND name = 'Order Completed'"),
		"distinct track ids":              count("SELECT uniqExact(id) FROM events WHERE kind = 'event' AND name = 'Order Completed'"),
		"status events":                   count("SELECT count() FROM events FINAL WHERE kind = 'status'"),
		"all events":                      count("SELECT count() FROM events FINAL"),
		"dispatch outcomes":               count("SELECT count() FROM messages FINAL"),
		"accepted":                        count("SELECT count() FROM messages FINAL WHERE state = 'accepted' AND template = 'promo_offer' AND source_kind = 'keyword'"),
		"sent statuses":                   count("SELECT count() FROM statuses FINAL WHERE status = 'sent'"),
		"delivered statuses":              count("SELECT count() FROM statuses FINAL WHERE status = 'delivered'"),
		"read statuses":                   count("SELECT count() FROM statuses FINAL WHERE status = 'read'"),
		"dispatches with a read status":   count("SELECT uniqExact(dispatch_id) FROM statuses FINAL WHERE status = 'read'"),
		"statuses matching their outcome": count("SELECT count() FROM statuses FINAL WHERE (wamid, dispatch_id) IN (SELECT provider_id, dispatch_id FROM messages FINAL)"),
	}
	want := map[string]uint64{
		"inbound events": nIn, "distinct inbound wamids": nIn, "track events": nTr, "distinct track ids": nTr,
		"status events": 3 * nIn, "all events": nIn + nTr + 3*nIn,
		"dispatch outcomes": nIn, "accepted": nIn,
		"sent statuses": nIn, "delivered statuses": nIn, "read statuses": nIn,
		"dispatches with a read status": nIn, "statuses matching their outcome": 3 * nIn,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	raw := count("SELECT count() FROM events")
	t.Logf("events rows before deduplication: %d (%d after FINAL)", raw, got["all events"])

	// The clean stops are in the logs too: every stage drained and stopped.
	for _, s := range stages {
		if n := countLines(t, procs[s].log, "msg=stopped"); n < 1 {
			t.Errorf("%s never logged its clean stop", s)
		}
	}
	for _, s := range stages {
		procs[s].stop()
	}
}

// countLines counts the lines of a file that contain s.
func countLines(t *testing.T, path, s string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return n
}
