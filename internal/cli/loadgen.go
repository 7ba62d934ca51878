package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/ingest"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// Load kinds of herald loadgen.
const (
	loadPostEvent    = "post-event"
	loadSegmentBatch = "segment-batch"
	loadWebhook      = "webhook"
)

// loadTarget is where and how requests are sent.
type loadTarget struct {
	base                       string
	token, writeKey, appSecret string
	app, phoneNumberID         string
	kind                       string
	batch                      int
	users                      int
	seq                        atomic.Int64
	authBasic                  string
}

// startCPUProfile starts profiling the process's CPU into the file path
// (nothing when path is empty); stop ends the profile and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	return startToFile(path, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace starts an execution trace (runtime/trace) written to path, and
// returns the function that stops it; path "" traces nothing.
func startTrace(path string) (stop func(), err error) {
	return startToFile(path, trace.Start, trace.Stop)
}

// startToFile creates path and calls start with it; the stop it returns
// calls end and closes the file. An empty path does nothing.
func startToFile(path string, start func(io.Writer) error, end func()) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	fh, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(fh); err != nil {
		_ = fh.Close()
		return nil, err
	}
	return func() {
		end()
		_ = fh.Close()
	}, nil
}

// runLoadgen is `herald loadgen`: an open-loop HTTP load generator for
// ingest. Without -target it starts the embedded broker and an ingest
// server in process, on loopback, with the rate limit off.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("loadgen", stderr)
	kind := f.String("kind", loadPostEvent, "what to send: post-event (Pushwoosh postEvent), segment-batch (Segment /v1/batch), webhook (signed Meta status webhook)")
	rate := f.Int("rate", 0, "requests per second, open loop (latency counts from the scheduled start); 0: as fast as the connections go")
	dur := f.Duration("duration", 10*time.Second, "how long to send")
	conns := f.Int("connections", 64, "concurrent connections")
	batch := f.Int("batch", 500, "events per segment-batch request")
	users := f.Int("users", 100_000, "distinct users the events are spread over")
	target := f.String("target", "", "ingest base URL (default: an in-process ingest on the embedded broker)")
	token := f.String("token", "", "API token (Pushwoosh) for -target")
	writeKey := f.String("write-key", "", "Segment write key for -target")
	secret := f.String("app-secret", "", "Meta app secret that signs webhooks for -target (from HERALD_LOADGEN_APP_SECRET is better)")
	app := f.String("app", devAppID, "application id for -target")
	pnid := f.String("phone-number-id", devPhoneNumberID, "business phone number id of the app for -target webhooks")
	partitions := f.Int("kafka.partitions", 8, "partitions of the in-process broker's topics")
	serve := f.Bool("serve", false, "without -target: start the in-process ingest and broker, print its URL and credentials, and serve for -duration without sending (for an outside generator such as wrk, see scripts/wrk-post-event.lua)")
	dump := f.String("dump", "", "write -dump-count requests of -kind to this file, one per line (\"<X-Hub-Signature-256>\\t<body>\" for webhooks, the body otherwise), for an outside generator such as wrk (scripts/wrk-webhook.lua), and exit")
	dumpCount := f.Int("dump-count", 100_000, "requests -dump writes")
	listen := f.String("listen", "127.0.0.1:0", "address of the in-process ingest")
	cpuProfile := f.String("cpuprofile", "", "write a CPU profile of the whole process (generator, ingest, broker) to this file")
	f.logLevel = "warn"
	if err := f.parse(args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if !slices.Contains([]string{loadPostEvent, loadSegmentBatch, loadWebhook}, *kind) {
		return fmt.Errorf("-kind %q: want post-event, segment-batch or webhook", *kind)
	}
	if *conns < 1 || *dur <= 0 || *batch < 1 || *users < 1 || *rate < 0 {
		return errors.New("-connections, -duration, -batch and -users must be positive, -rate not negative")
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	t := &loadTarget{
		base: *target, token: *token, writeKey: *writeKey, appSecret: *secret, app: *app,
		phoneNumberID: *pnid, kind: *kind, batch: *batch, users: *users,
	}
	where := t.base
	if t.base == "" {
		b, err := broker.Start(broker.Config{Partitions: int32(*partitions), Topics: schemas.Topics}, log)
		if err != nil {
			return err
		}
		defer b.Close()
		kcfg := kafka.Config{Brokers: b.Addrs(), Partitions: int32(*partitions)}
		if err := kcfg.Validate(); err != nil {
			return err
		}
		cl, err := kgo.NewClient(kcfg.Opts(log)...)
		if err != nil {
			return err
		}
		defer cl.Close()
		t.token, t.writeKey, t.appSecret, t.app, t.phoneNumberID = "loadgen-token-0123456789", "loadgen-write-key", "loadgen-app-secret", devAppID, devPhoneNumberID
		reg, err := apps.New([]apps.App{{
			ID: t.app, APIToken: t.token, SegmentWriteKey: t.writeKey,
			WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{t.phoneNumberID}, AppSecret: t.appSecret, VerifyToken: "v"},
		}})
		if err != nil {
			return err
		}
		ing, err := ingest.New(ingest.Config{RatePerCredential: -1}, reg, cl, log, nil)
		if err != nil {
			return err
		}
		srv, err := service.Listen(*listen, ing.Handler(), log)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Shutdown(5 * time.Second) }()
		t.base = srv.URL()
		where = fmt.Sprintf("in-process ingest %s, embedded broker (%d partitions), acks=all", t.base, *partitions)
	} else if v := os.Getenv("HERALD_LOADGEN_APP_SECRET"); v != "" && t.appSecret == "" {
		t.appSecret = v
	}
	t.authBasic = "Basic " + base64.StdEncoding.EncodeToString([]byte(t.writeKey+":"))
	if *dump != "" {
		return dumpRequests(ctx, t, *dump, *dumpCount)
	}
	if *serve {
		if *target != "" {
			return errors.New("-serve starts its own ingest: leave -target out")
		}
		fmt.Fprintf(stdout, "herald loadgen: serving %s for %s\nURL=%s\nTOKEN=%s\nWRITE_KEY=%s\nAPP=%s\n", where, *dur, t.base, t.token, t.writeKey, t.app)
		select {
		case <-ctx.Done():
		case <-time.After(*dur):
		}
		return nil
	}

	res, err := generateLoad(ctx, t, *rate, *dur, *conns)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald loadgen: %s against %s; GOMAXPROCS %d, %s\n", *kind, where, runtime.GOMAXPROCS(0), runtime.Version())
	res.write(stdout, *rate, t.eventsPerRequest())
	if res.ok == 0 {
		return errors.New("no request succeeded")
	}
	return nil
}

func (t *loadTarget) eventsPerRequest() int {
	if t.kind == loadSegmentBatch {
		return t.batch
	}
	return 1
}

// request builds the next request; every one carries new event ids.
func (t *loadTarget) request(ctx context.Context) (*http.Request, error) {
	n := t.seq.Add(1)
	user := n % int64(t.users)
	var (
		path string
		body []byte
		hdr  = http.Header{"Content-Type": {"application/json"}}
	)
	switch t.kind {
	case loadPostEvent:
		path = "/json/1.3/postEvent"
		body = fmt.Appendf(nil, `{"request":{"application":%q,"hwid":"whatsapp:+9198%08d","event":"OrderPlaced","attributes":{"cuisine":"asian","amount":%d,"currency":"USD"}}}`,
			t.app, user, n%60)
		hdr.Set("Authorization", "Token "+t.token)
	case loadSegmentBatch:
		path = "/v1/batch"
		var b bytes.Buffer
		b.WriteString(`{"batch":[`)
		for i := range t.batch {
			if i > 0 {
				b.WriteByte(',')
			}
			u := (n*int64(t.batch) + int64(i)) % int64(t.users)
			fmt.Fprintf(&b, `{"type":"track","messageId":"lg-%d-%d","userId":"user-%d","event":"Order Completed","properties":{"cuisine":"asian","revenue":%d}}`, n, i, u, i%60)
		}
		b.WriteString(`],"context":{"library":{"name":"herald-loadgen"}}}`)
		body = b.Bytes()
		hdr.Set("Authorization", t.authBasic)
	case loadWebhook:
		path = "/whatsapp/webhooks"
		body = fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":%q},"statuses":[{"id":"wamid.loadgen%d","status":"delivered","timestamp":"%d","recipient_id":"9198%08d","pricing":{"billable":true,"pricing_model":"PMP","category":"marketing"}}]}}]}]}`,
			t.phoneNumberID, n, time.Now().Unix(), user)
		hdr.Set("X-Hub-Signature-256", wasim.Sign(t.appSecret, body))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = hdr
	return req, nil
}

// dumpRequests writes n requests of t's kind to path, one per line.
func dumpRequests(ctx context.Context, t *loadTarget, path string, n int) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(fh)
	for range n {
		req, err := t.request(ctx)
		if err != nil {
			_ = fh.Close() // the error returned is the one that matters
			return err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			_ = fh.Close()
			return err
		}
		if sig := req.Header.Get("X-Hub-Signature-256"); sig != "" {
			w.WriteString(sig)
			w.WriteByte('\t')
		}
		w.Write(body)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		_ = fh.Close()
		return err
	}
	return fh.Close()
}

// loadResult is what generateLoad measured.
type loadResult struct {
	elapsed   time.Duration
	ok        int64
	byStatus  map[int]int64
	transport int64 // requests that got no HTTP answer
	lat       []time.Duration
	firstErr  string
	late      int64 // scheduled requests never sent: the connections could not keep up
}

func generateLoad(ctx context.Context, t *loadTarget, rate int, dur time.Duration, conns int) (*loadResult, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = conns, conns, conns
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	// Warm up the connections and check the target answers at all.
	req, err := t.request(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("first request: %w", err)
	}
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("first request: HTTP %d: %s", resp.StatusCode, rb)
	}

	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	// Open loop: the pacer schedules, the connections take; a request's
	// latency counts from its scheduled time, so a stalled server is not
	// hidden by requests that were simply not sent (coordinated omission).
	sched := make(chan time.Time, max(rate, 1024))
	var late atomic.Int64
	go func() {
		defer close(sched)
		if rate == 0 {
			for ctx.Err() == nil {
				select {
				case sched <- time.Time{}:
				case <-ctx.Done():
				}
			}
			return
		}
		start := time.Now()
		interval := time.Second / time.Duration(rate)
		for i := int64(0); ; i++ {
			at := start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			select {
			case sched <- at:
			default:
				late.Add(1)
			}
		}
	}()

	type workerResult struct {
		ok, transport int64
		byStatus      map[int]int64
		lat           []time.Duration
		firstErr      string
	}
	results := make([]workerResult, conns)
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			r.byStatus = map[int]int64{}
			for at := range sched {
				if at.IsZero() {
					at = time.Now()
				}
				req, err := t.request(context.WithoutCancel(ctx))
				if err != nil {
					r.transport++
					continue
				}
				resp, err := client.Do(req)
				if err != nil {
					r.transport++
					if r.firstErr == "" {
						r.firstErr = err.Error()
					}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				r.lat = append(r.lat, time.Since(at))
				r.byStatus[resp.StatusCode]++
				if resp.StatusCode == http.StatusOK {
					r.ok++
				} else if r.firstErr == "" {
					r.firstErr = "HTTP " + strconv.Itoa(resp.StatusCode) + ": " + string(b)
				}
			}
		}()
	}
	wg.Wait()
	res := &loadResult{elapsed: time.Since(begin), byStatus: map[int]int64{}, late: late.Load()}
	for _, r := range results {
		res.ok += r.ok
		res.transport += r.transport
		res.lat = append(res.lat, r.lat...)
		for k, v := range r.byStatus {
			res.byStatus[k] += v
		}
		if res.firstErr == "" {
			res.firstErr = r.firstErr
		}
	}
	slices.Sort(res.lat)
	return res, nil
}

func (r *loadResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))]
}

func (r *loadResult) write(w io.Writer, rate, perReq int) {
	total := int64(len(r.lat)) + r.transport
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	target := "max"
	if rate > 0 {
		target = strconv.Itoa(rate) + "/s"
	}
	fmt.Fprintf(tw, "target rate\t%s\n", target)
	fmt.Fprintf(tw, "requests\t%d in %.2fs (%.0f/s)\n", total, r.elapsed.Seconds(), float64(total)/r.elapsed.Seconds())
	fmt.Fprintf(tw, "ok (200)\t%d (%.0f/s, %.0f events/s acknowledged by Kafka)\n", r.ok, float64(r.ok)/r.elapsed.Seconds(), float64(r.ok*int64(perReq))/r.elapsed.Seconds())
	codes := make([]int, 0, len(r.byStatus))
	for c := range r.byStatus {
		if c != http.StatusOK {
			codes = append(codes, c)
		}
	}
	sort.Ints(codes)
	for _, c := range codes {
		fmt.Fprintf(tw, "HTTP %d\t%d\n", c, r.byStatus[c])
	}
	if r.transport > 0 {
		fmt.Fprintf(tw, "no answer\t%d\n", r.transport)
	}
	if r.late > 0 {
		fmt.Fprintf(tw, "not sent\t%d (scheduled, but every connection was busy: raise -connections)\n", r.late)
	}
	fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(r.quantile(.5)), ms(r.quantile(.9)), ms(r.quantile(.99)), ms(r.quantile(.999)), ms(r.quantile(1)))
	if r.firstErr != "" {
		fmt.Fprintf(tw, "first error\t%.300s\n", r.firstErr)
	}
	_ = tw.Flush()
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + "ms"
}
