package dispatcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// productCode is one Graph error code PRODUCT.md ("Meta WhatsApp Cloud
// API facts a dispatcher must respect", "Error handling" and the limits
// above it) names, and how it must be handled.
type productCode struct {
	name   string
	status int
	code   int
	// retry: retried with backoff (then accepted, or expired at the
	// request's deadline); else a failed outcome with the code.
	retry bool
	// lowers: lowers the sender's adaptive rate (130429, 80007, 4).
	lowers bool
	// pair: delays that recipient only, by at least the pair interval.
	pair bool
	// reauth: the app needs a new token (190), logged once.
	reauth bool
}

// productCodes lists every code of PRODUCT.md: "retry 4, 80007, 130429,
// 131000, 2, 131056 (that recipient only) with backoff; never retry
// 131026, 131047, 131048, 131049, 131050, 132000, 132001, 368; 190 needs
// a new token"; 130429 past the throughput, 131056 past the pair rate,
// 131047 outside the window, 131050 for a marketing opt-out. Each is
// answered once with is_transient false and once with true: the listed
// codes are handled the same either way.
var productCodes = []productCode{
	{name: "4 application request limit", status: 400, code: 4, retry: true, lowers: true},
	{name: "80007 WABA rate limit", status: 400, code: 80007, retry: true, lowers: true},
	{name: "130429 throughput", status: 429, code: 130429, retry: true, lowers: true},
	{name: "131000 something went wrong", status: 500, code: 131000, retry: true},
	{name: "2 API service", status: 503, code: 2, retry: true},
	{name: "131056 pair rate", status: 429, code: 131056, retry: true, pair: true},
	{name: "131026 undeliverable", status: 400, code: 131026},
	{name: "131047 re-engagement", status: 400, code: 131047},
	{name: "131048 spam rate limit", status: 400, code: 131048},
	{name: "131049 ecosystem engagement", status: 400, code: 131049},
	{name: "131050 marketing opt-out", status: 400, code: 131050},
	{name: "132000 parameter count", status: 400, code: 132000},
	{name: "132001 template missing", status: 404, code: 132001},
	{name: "368 blocked for policy", status: 400, code: 368},
	{name: "190 access token", status: 401, code: 190, reauth: true},
}

// TestEveryProductCodeClassified checks each code of PRODUCT.md against
// the classifiers (retry, rate lowering, breaker, pair delay, outcome
// code), with is_transient both ways, and then drives a dispatcher through
// each against a scripted Graph endpoint on kfake: retried codes end
// accepted on the second call, or expired when the retry's wait passes the
// deadline; the others fail at the first call with the code.
func TestEveryProductCodeClassified(t *testing.T) {
	d := &Dispatcher{cfg: Config{PairInterval: 6 * time.Second}, backoffBase: time.Millisecond, backoffMax: 2 * time.Millisecond}
	for _, pc := range productCodes {
		for _, transient := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/transient=%v", pc.name, transient), func(t *testing.T) {
				err := fmt.Errorf("sending: %w", &GraphError{Status: pc.status, Code: pc.code, Transient: transient, Message: "m"})
				if got := IsRetryable(err); got != pc.retry {
					t.Errorf("IsRetryable = %v, want %v", got, pc.retry)
				}
				if got := lowersRate(errorCode(err)); got != pc.lowers {
					t.Errorf("lowers the sender's rate = %v, want %v", got, pc.lowers)
				}
				// Meta asking to slow down is no provider failure.
				if got := breakerExcluded(err); got != (pc.lowers || pc.pair) {
					t.Errorf("excluded from the breaker = %v, want %v", got, pc.lowers || pc.pair)
				}
				if pc.pair {
					if b := d.backoff(1, err); b < d.cfg.PairInterval {
						t.Errorf("backoff after %d is %v, want at least the pair interval %v", pc.code, b, d.cfg.PairInterval)
					}
				} else if b := d.backoff(1, err); b > d.backoffMax {
					t.Errorf("backoff after %d is %v, want at most %v", pc.code, b, d.backoffMax)
				}
				if got := errorCode(err); got != pc.code {
					t.Errorf("outcome error code %d, want %d", got, pc.code)
				}
				if got := errorCode(err) == codeAccessToken; got != pc.reauth {
					t.Errorf("needs a new token = %v, want %v", got, pc.reauth)
				}
			})
		}
	}

	c := kafkatest.New(t, 4)
	meta := newFakeMeta(t)
	now := time.Now().UTC()
	type want struct {
		state    schemas.OutcomeState
		code     int
		attempts int
	}
	wants := map[string]want{}
	var recs []*kgo.Record
	for i, pc := range productCodes {
		to := fmt.Sprintf("+1555700%04d", i)
		id := fmt.Sprintf("code-%d", pc.code)
		req := &schemas.DispatchRequest{
			ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to,
			Template: &schemas.Template{Name: "promo", Language: "en_US", Category: "MARKETING", Body: []string{"Ann"}},
			Source:   schemas.Source{Kind: "api"}, Created: now, Deadline: now.Add(time.Minute),
		}
		meta.script(to, graphErr(pc.status, pc.code, 0, false))
		switch {
		case pc.pair:
			// The retry's wait (the pair interval, 6 s) passes the
			// deadline: expired after one call, with the code.
			req.Deadline = now.Add(2 * time.Second)
			wants[id] = want{schemas.OutcomeExpired, pc.code, 1}
		case pc.retry:
			wants[id] = want{schemas.OutcomeAccepted, 0, 2}
		default:
			wants[id] = want{schemas.OutcomeFailed, pc.code, 1}
		}
		recs = append(recs, dispatchRecord(t, req))
	}
	produce(t, c.Client(t), recs...)
	_, stop := startDispatcher(t, c, meta, Config{
		RequestTimeout: 2 * time.Second, MaxAttempts: 3, Concurrency: 4,
		PairInterval: -1, Breaker: BreakerConfig{ConsecutiveFailures: 50},
	})
	outs := readOutcomes(t, c, len(wants))
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, o := range outs {
		w := wants[o.DispatchID]
		if o.State != w.state || o.ErrorCode != w.code || o.Attempts != w.attempts {
			t.Errorf("%s: %s code %d attempts %d (%s), want %s code %d attempts %d",
				o.DispatchID, o.State, o.ErrorCode, o.Attempts, o.ErrorMessage, w.state, w.code, w.attempts)
		}
	}
}
