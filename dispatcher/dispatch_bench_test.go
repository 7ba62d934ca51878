package dispatcher

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// BenchmarkIntentCost measures sends per second of one dispatcher with the
// simulator's limits off (no throughput, pair or tier limit, no webhooks)
// and the dispatcher's own limits off, on kfake with 4 partitions: a
// backlog of 20,000 template requests to distinct recipients, from the
// start of Run to the last outcome counted (sends/s, group join and the
// ledger's load included), and from the first accepted send to the last
// (steady_sends/s), with the process's CPU per send (cpu_µs/send) and the
// connections the simulator accepted per run (conns/run: about the
// concurrency when the client keeps its connections). intents=on is the dispatcher
// as it runs (an acknowledged intent on herald.intents.v1 before each
// call); intents=off skips them, so the difference is what intents cost.
// Run it with
//
//	go test -run '^$' -bench BenchmarkIntentCost -benchtime 3x ./dispatcher/
func BenchmarkIntentCost(b *testing.B) {
	for _, concurrency := range []int{64, 256} {
		for _, intents := range []bool{true, false} {
			b.Run(fmt.Sprintf("concurrency=%d/intents=%v", concurrency, map[bool]string{true: "on", false: "off"}[intents]), func(b *testing.B) {
				var total, steady, cpu time.Duration
				var conns, allocs, bytes int64
				const n = 20000
				for range b.N {
					r := benchSends(b, n, concurrency, !intents)
					total += r.took
					steady += r.steady
					cpu += r.cpu
					conns += r.conns
					allocs += r.allocs
					bytes += r.bytes
				}
				b.ReportMetric(float64(n*b.N)/total.Seconds(), "sends/s")
				b.ReportMetric(float64((n-1)*b.N)/steady.Seconds(), "steady_sends/s")
				// The process's CPU (user and system) from Run to the last
				// send, per send: the dispatcher's, the simulator's and
				// kfake's together, less moved by the machine's load than
				// the wall-clock figures.
				b.ReportMetric(float64(cpu.Microseconds())/float64(n*b.N), "cpu_µs/send")
				// Connections the simulator accepted per run: about the
				// concurrency when the client keeps them alive, far more
				// when they churn.
				b.ReportMetric(float64(conns)/float64(b.N), "conns/run")
				// Heap allocations of the process per send, the
				// simulator's and kfake's included: what the GC's share
				// of cpu_µs/send follows, and steadier than it.
				b.ReportMetric(float64(allocs)/float64(n*b.N), "allocs/send")
				b.ReportMetric(float64(bytes)/float64(n*b.N), "B/send")
			})
		}
	}
}

// benchRun is what one benchSends run measured.
type benchRun struct {
	// took is the time from Run to the n-th accepted send, steady from
	// the first to the n-th, cpu the CPU the process used from Run to the
	// n-th.
	took, steady, cpu time.Duration
	// conns is the number of connections the simulator accepted.
	conns int64
	// allocs and bytes are the heap allocations of the process from Run
	// to the n-th accepted send.
	allocs, bytes int64
}

// benchSends sends n requests through a fresh dispatcher and measures it.
func benchSends(b *testing.B, n, concurrency int, skipIntents bool) benchRun {
	b.StopTimer()
	sim, err := wasim.New(wasim.Config{
		Numbers:      []wasim.Number{{PhoneNumberID: "1001", WABAID: shopWABA, AccessToken: "tok-shop", AppSecret: "secret-shop"}},
		Templates:    simTemplates(),
		Throughput:   -1,
		PairInterval: -1,
		StatusDelay:  -1,
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var conns atomic.Int64
	api := httptest.NewUnstartedServer(sim.Handler())
	api.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	api.Start()
	defer api.Close()
	reg, err := apps.New([]apps.App{{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
		PhoneNumberIDs: []string{"1001"}, AccessToken: "tok-shop",
	}}})
	if err != nil {
		b.Fatal(err)
	}
	c := kafkatest.New(b, 4)
	cl := c.Client(b)
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		r := &schemas.DispatchRequest{
			ID: fmt.Sprintf("b-%d", i), App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001",
			To: fmt.Sprintf("+1555%07d", i+1), Source: schemas.Source{Kind: "campaign", Name: "bench"}, Created: now, Deadline: now.Add(time.Hour),
			Template: &schemas.Template{Name: "order_confirmation", Language: "en_US", Category: "UTILITY", Body: []string{"A1", "today"}},
		}
		v, err := r.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicDispatch, Key: r.Key(), Value: v})
	}
	if err := cl.ProduceSync(b.Context(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	d, err := New(Config{
		WhatsAppBaseURL: api.URL, Concurrency: concurrency, PairInterval: -1,
		Limiter: LimiterConfig{Mode: LimiterNone}, Templates: TemplatesConfig{SyncInterval: -1},
	}, c.Config, reg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	d.skipIntents = skipIntents
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	b.StartTimer()
	cpu0 := processCPU(b)
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	go func() { done <- d.Run(ctx) }()
	deadline := start.Add(5 * time.Minute)
	var first time.Time
	for {
		got := testutil.ToFloat64(d.m.sends.WithLabelValues("whatsapp", "accepted"))
		if got > 0 && first.IsZero() {
			first = time.Now()
		}
		if got >= float64(n) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%v accepted after 5 minutes, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
	took, steady := time.Since(start), time.Since(first)
	used := processCPU(b) - cpu0
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if got := sim.Stats().Accepted; got != n {
		b.Fatalf("the simulator accepted %d, want %d", got, n)
	}
	return benchRun{
		took: took, steady: steady, cpu: used, conns: conns.Load(),
		allocs: int64(ms1.Mallocs - ms0.Mallocs), bytes: int64(ms1.TotalAlloc - ms0.TotalAlloc),
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
