package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// BenchmarkManySenders is issue 5's "100 senders at 80 msg/s each held at
// once": one dispatcher with a backlog for each of 100 numbers, against the
// simulator limited to exactly 80 a second per number (130429 past it).
// After a warm-up it judges 10 s of the simulator's clock per sender:
//
//	reach_min, reach_median  accepted / (80 · 10) of the lowest and the median sender
//	max_1s                   the busiest second of any sender / 80
//	throttled                130429 answers over the whole run
//	cpu_cores, cpu_µs/send   the process's CPU while judged, and per accepted send
//
//	go test -run '^$' -bench BenchmarkManySenders -benchtime 1x -timeout 20m ./dispatcher/
func BenchmarkManySenders(b *testing.B) {
	const senders, rate, backlogSecs = 100, 80, 45
	for _, concurrency := range []int{0, 256} { // 0: the default
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			for range b.N {
				benchManySenders(b, senders, rate, backlogSecs, concurrency)
			}
		})
	}
}

// warmup is how long BenchmarkManySenders lets the dispatcher run before
// it judges: the group join and the global limiter's shares of every
// sender, which climb to the rate over several heartbeats.
const warmup = 20 * time.Second

func benchManySenders(b *testing.B, senders, rate, backlogSecs, concurrency int) {
	{
		numbers := make([]wasim.Number, senders)
		ids := make([]string, senders)
		for i := range numbers {
			ids[i] = fmt.Sprint(3000 + i)
			numbers[i] = wasim.Number{PhoneNumberID: ids[i], WABAID: "2001", AccessToken: "tok-shop", AppSecret: "secret"}
		}
		h := newLimitHarness(b, 8, func(c *wasim.Config) { c.Numbers, c.Throughput = numbers, rate })
		reg, err := apps.New([]apps.App{{
			ID: "shop", APIToken: "shop-api-token-0123456789",
			WhatsApp: apps.WhatsApp{PhoneNumberIDs: ids, AccessToken: "tok-shop"},
		}})
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now().UTC()
		recs := make([]*kgo.Record, 0, senders*rate*backlogSecs)
		for j := range rate * backlogSecs {
			for i, id := range ids {
				r := &schemas.DispatchRequest{
					ID: fmt.Sprintf("m-%s-%d", id, j), App: "shop", Channel: schemas.ChannelWhatsApp, Sender: id,
					To:       fmt.Sprintf("+1555%03d%04d", i, j),
					Template: &schemas.Template{Name: "help_menu", Language: "en_US", Category: "UTILITY"},
					Source:   schemas.Source{Kind: "campaign", Name: "senders"}, Created: now, Deadline: now.Add(10 * time.Minute),
				}
				v, err := r.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				recs = append(recs, &kgo.Record{Topic: schemas.TopicDispatch, Key: r.Key(), Value: v})
			}
		}
		if err := h.c.Client(b, kgo.MaxBufferedRecords(len(recs))).ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		d, err := New(Config{WhatsAppBaseURL: h.api.URL, RatePerSender: float64(rate), Concurrency: concurrency}, h.c.Config, reg, testLogger(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		time.Sleep(warmup) // group join, the limiter's first heartbeats, every sender's shares
		cpu0 := processCPU(b)
		from, to := steady(10)
		cpu := processCPU(b) - cpu0
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		d.Close()
		var reach []float64
		max1, accepted := 0, 0
		for _, id := range ids {
			per := h.sim.AcceptedPerSecond(id)
			total := 0
			for s := from; s < to; s++ {
				total += per[s]
				max1 = max(max1, per[s])
			}
			accepted += total
			reach = append(reach, float64(total)/float64(int64(rate)*(to-from)))
		}
		slices.Sort(reach)
		b.ReportMetric(reach[0], "reach_min")
		b.ReportMetric(reach[len(reach)/2], "reach_median")
		b.ReportMetric(float64(max1)/float64(rate), "max_1s")
		b.ReportMetric(float64(h.sim.Stats().Rejected[wasim.CodeThroughput]), "throttled")
		// The process's CPU (dispatcher, simulator and kfake) over the
		// judged seconds (they start within a second of the measure):
		// cores used, and per accepted send.
		b.ReportMetric(cpu.Seconds()/(float64(to-from)+1), "cpu_cores")
		if accepted > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(accepted), "cpu_µs/send")
		}
	}
}
