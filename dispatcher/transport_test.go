package dispatcher

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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

// TestConnectionsKeptAlive sends a backlog at a Concurrency above
// net/http's default of 100 idle connections and checks that the calls
// reuse their connections instead of dialing anew (at 256 the default
// made about 7,000 connections for 20,000 sends).
func TestConnectionsKeptAlive(t *testing.T) {
	const concurrency, n = 160, 3000
	sim, err := wasim.New(wasim.Config{
		Numbers:      []wasim.Number{{PhoneNumberID: "1001", WABAID: shopWABA, AccessToken: "tok-shop", AppSecret: "secret-shop"}},
		Templates:    simTemplates(),
		Throughput:   -1,
		PairInterval: -1,
		StatusDelay:  -1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	api := httptest.NewUnstartedServer(sim.Handler())
	api.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	api.Start()
	t.Cleanup(api.Close)
	reg, err := apps.New([]apps.App{{ID: "shop", APIToken: "shop-api-token-0123456789", WhatsApp: apps.WhatsApp{
		PhoneNumberIDs: []string{"1001"}, AccessToken: "tok-shop",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	c := kafkatest.New(t, 4)
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		recs = append(recs, dispatchRecord(t, &schemas.DispatchRequest{
			ID: fmt.Sprintf("k-%d", i), App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001",
			To: fmt.Sprintf("+1555%07d", i+1), Source: schemas.Source{Kind: "campaign", Name: "keepalive"}, Created: now, Deadline: now.Add(time.Hour),
			Template: &schemas.Template{Name: "order_confirmation", Language: "en_US", Category: "UTILITY", Body: []string{"A1", "today"}},
		}))
	}
	produce(t, c.Client(t), recs...)
	d, err := New(Config{
		WhatsAppBaseURL: api.URL, Concurrency: concurrency, PairInterval: -1,
		Limiter: LimiterConfig{Mode: LimiterNone}, Templates: TemplatesConfig{SyncInterval: -1},
	}, c.Config, reg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Minute)
	for testutil.ToFloat64(d.m.sends.WithLabelValues("whatsapp", "accepted")) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v of %d accepted after 2 minutes", testutil.ToFloat64(d.m.sends.WithLabelValues("whatsapp", "accepted")), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A call may dial while the connection of the call before it is on
	// its way back to the pool: some slack over the concurrency, far
	// below a connection per call.
	t.Logf("%d connections", conns.Load())
	if got := conns.Load(); got > 2*concurrency {
		t.Errorf("%d connections for %d sends at concurrency %d, want at most %d", got, n, concurrency, 2*concurrency)
	}
}
