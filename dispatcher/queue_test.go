package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
)

// turnHarness is a simulator without limits, with a slow number (one
// message a second at the dispatcher) and a fast one (no limit of its
// own), and a registry whose app has both.
const (
	slowSender = "3001"
	fastSender = "3002"
)

func newTurnHarness(t *testing.T) (*limitHarness, *apps.Registry) {
	t.Helper()
	h := newLimitHarness(t, 1, func(c *wasim.Config) {
		c.Throughput, c.PairInterval = -1, -1
		c.Numbers = []wasim.Number{
			{PhoneNumberID: slowSender, WABAID: "2001", AccessToken: "tok-shop", AppSecret: "secret"},
			{PhoneNumberID: fastSender, WABAID: "2001", AccessToken: "tok-shop", AppSecret: "secret"},
		}
	})
	reg, err := apps.New([]apps.App{{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
		PhoneNumberIDs: []string{slowSender, fastSender}, AccessToken: "tok-shop",
		Throughput: map[string]float64{slowSender: 1},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// turnRecord is a request from sender to its own recipient n.
func turnRecord(t *testing.T, sender string, n int, deadline time.Time) *kgo.Record {
	t.Helper()
	now := time.Now().UTC()
	r := &schemas.DispatchRequest{
		ID: fmt.Sprintf("%s-%d", sender, n), App: "shop", Channel: schemas.ChannelWhatsApp, Sender: sender,
		To:       fmt.Sprintf("+1555%s%04d", sender, n),
		Template: &schemas.Template{Name: "help_menu", Language: "en_US", Category: "UTILITY"},
		Source:   schemas.Source{Kind: "campaign", Name: "turns"}, Created: now, Deadline: deadline,
	}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: schemas.TopicDispatch, Key: r.Key(), Value: b}
}

// runTurns runs a dispatcher of cfg against h until the test ends.
func runTurns(t *testing.T, h *limitHarness, reg *apps.Registry, cfg Config) {
	t.Helper()
	cfg.WhatsAppBaseURL = h.api.URL
	d, err := New(cfg, h.c.Config, reg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		d.Close()
	})
}

func acceptedOf(h *limitHarness, sender string) int {
	n := 0
	for _, c := range h.sim.AcceptedPerSecond(sender) {
		n += c
	}
	return n
}

// TestWaitingSenderHoldsNoCapacity: a sender waiting for its rate does not
// hold the calls another sender could make. With two concurrent calls, a
// backlog of 40 requests of a sender limited to one a second ahead of 60
// of a sender without a limit in one partition: the 60 are all sent while
// the slow sender has sent only a few. If a request waiting for its
// sender's turn held one of the two calls, both would wait on the slow
// sender's turns and the fast sender's requests would go only after the
// 40 slow ones (one a second). Count-based: the slow sender's own sends
// measure the time the fast one took.
func TestWaitingSenderHoldsNoCapacity(t *testing.T) {
	for _, mode := range []string{LimiterLocal, LimiterGlobal} {
		t.Run(mode, func(t *testing.T) {
			h, reg := newTurnHarness(t)
			deadline := time.Now().Add(10 * time.Minute)
			var recs []*kgo.Record
			for i := range 40 {
				recs = append(recs, turnRecord(t, slowSender, i, deadline))
			}
			for i := range 60 {
				recs = append(recs, turnRecord(t, fastSender, i, deadline))
			}
			produce(t, h.c.Client(t), recs...)
			runTurns(t, h, reg, Config{
				Concurrency: 2, PairInterval: -1, RatePerSender: 1000,
				Limiter: LimiterConfig{Mode: mode},
			})
			end := time.Now().Add(60 * time.Second)
			for acceptedOf(h, fastSender) < 60 {
				if time.Now().After(end) {
					t.Fatalf("the fast sender sent %d of 60 in 60 s (the slow one %d)", acceptedOf(h, fastSender), acceptedOf(h, slowSender))
				}
				time.Sleep(5 * time.Millisecond)
			}
			// At one a second, 20 slow sends are 19 s at least: the fast
			// sender's 60 took no worker from the slow one's waits.
			if n := acceptedOf(h, slowSender); n >= 20 {
				t.Errorf("the slow sender sent %d before the fast one's 60 were all sent: its waits held the calls", n)
			}
		})
	}
}

// TestTurnWaitExpires: requests waiting for their sender's turn, holding no
// worker, are expired at their deadline, not left waiting: of five to a
// sender at one a second with a deadline 1.5 s away, some are accepted,
// the others expired, and every one is decided within the batch or the
// next.
func TestTurnWaitExpires(t *testing.T) {
	h, reg := newTurnHarness(t)
	deadline := time.Now().Add(1500 * time.Millisecond)
	var recs []*kgo.Record
	for i := range 5 {
		recs = append(recs, turnRecord(t, slowSender, i, deadline))
	}
	produce(t, h.c.Client(t), recs...)
	runTurns(t, h, reg, Config{Concurrency: 4, PairInterval: -1, Limiter: LimiterConfig{Mode: LimiterLocal}})
	outs := readOutcomesFrom(t, h.c, 0, len(recs))
	states := map[schemas.OutcomeState]int{}
	for _, o := range outs {
		states[o.State]++
	}
	// Five sends at one a second need four seconds: at least three
	// cannot go before a deadline 1.5 s after they were written.
	if states[schemas.OutcomeExpired] < 3 || states[schemas.OutcomeAccepted]+states[schemas.OutcomeExpired] != len(recs) {
		t.Errorf("outcomes %v, want at least 3 expired and the rest accepted", states)
	}
	if got := acceptedOf(h, slowSender); got != states[schemas.OutcomeAccepted] {
		t.Errorf("the simulator accepted %d, the outcomes say %d", got, states[schemas.OutcomeAccepted])
	}
}
