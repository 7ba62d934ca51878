package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/internal/kafkatest"
)

// BenchmarkLimitOverhead measures what the limiter and the breaker add to
// one send when neither holds it back (issue 5 asks for under 2 µs): the
// limiter's Wait (the sender's pacer found, a token taken) and Observe of
// the answer, the breaker's allow and the report of the call's result. The
// rate is high enough that no call waits, so what is timed is the
// bookkeeping, not pacing. "global" is the limiter the dispatcher runs by
// default (its client on kfake, not running: each sender's pacer is given
// the grant a running coordinator would have, and nothing on a send waits
// for Kafka), "local" the per-replica one; "parallel" runs the
// sends from GOMAXPROCS goroutines over 100 senders, as a busy dispatcher
// does.
//
//	go test -run '^$' -bench BenchmarkLimitOverhead -benchmem ./dispatcher/
func BenchmarkLimitOverhead(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	rate := func(string) float64 { return 1e12 }
	c := kafkatest.New(b, 1)
	cfg := Config{}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	global, err := newGlobalLimiter(cfg.Limiter, 1<<20, rate, c.Config.Opts(nil), slog.New(slog.DiscardHandler), m)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(global.close)
	limiters := []struct {
		name string
		l    Limiter
	}{{"global", global}, {"local", newLocalLimiter(rate, 1<<20)}}
	senders := make([]string, 100)
	for i := range senders {
		senders[i] = fmt.Sprintf("10987654%02d", i)
		// The grant a running coordinator would have given: without Run
		// the global limiter grants nothing (it waits to see its peers).
		global.pacers[senders[i]] = newPacer(1e12, 1<<20)
	}
	send := func(ctx context.Context, l Limiter, bs *breakers, sender string) {
		if err := l.Wait(ctx, sender); err != nil {
			b.Fatal(err)
		}
		done, err := bs.get("whatsapp", sender).allow(ctx)
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
		l.Observe(sender, nil)
	}
	for _, lim := range limiters {
		b.Run(lim.name+"/one", func(b *testing.B) {
			bs := newBreakers(cfg.Breaker, m)
			b.ReportAllocs()
			for b.Loop() {
				send(b.Context(), lim.l, bs, senders[0])
			}
		})
		b.Run(lim.name+"/parallel", func(b *testing.B) {
			bs := newBreakers(cfg.Breaker, m)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					send(context.Background(), lim.l, bs, senders[i%len(senders)])
					i++
				}
			})
		})
	}
}
