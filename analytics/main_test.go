package analytics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

func TestMain(m *testing.M) { chtest.Main(m) }

// base is the time of the test data set.
var base = time.Date(2025, 3, 10, 12, 0, 0, 123_000_000, time.UTC)

// migratedDB returns a fresh, migrated database.
func migratedDB(t testing.TB) (string, driver.Conn) {
	t.Helper()
	dsn, conn := chtest.DB(t)
	if _, err := Migrate(context.Background(), conn, nil); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return dsn, conn
}

// newSink builds a sink on a fresh kfake cluster and its own registry.
func newSink(t testing.TB, cfg Config, conn driver.Conn) (*Sink, *kafkatest.Cluster, *prometheus.Registry) {
	t.Helper()
	c := kafkatest.New(t, 2)
	reg := prometheus.NewRegistry()
	s, err := New(cfg, c.Config, conn, nil, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s, c, reg
}

// offsets numbers records per topic as a broker would.
type offsets map[string]int64

func (o offsets) rec(t testing.TB, topic string, key []byte, v interface{ Marshal() ([]byte, error) }) *kgo.Record {
	t.Helper()
	b, err := v.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return o.raw(topic, key, b)
}

func (o offsets) raw(topic string, key, value []byte) *kgo.Record {
	off := o[topic]
	o[topic]++
	return &kgo.Record{Topic: topic, Key: key, Value: value, Offset: off}
}

func inbound(id, app, from, text string, at time.Time) *schemas.Event {
	typ := "text"
	if text == "" {
		typ = "image"
	}
	return &schemas.Event{
		ID: id, App: app, Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived,
		Time: at, Received: at.Add(time.Second), HWID: "whatsapp:" + from, DeviceType: schemas.DeviceWhatsApp, Country: "BD",
		Inbound: &schemas.Inbound{PhoneNumberID: "1001", From: from, WAMID: "wamid.in." + id, Type: typ, Text: text, ProfileName: "Rahim"},
	}
}

func status(id, app, wamid, st, dispatchID string, at time.Time) *schemas.Event {
	return &schemas.Event{
		ID: id, App: app, Kind: schemas.KindStatus, Name: schemas.EventWhatsAppStatus,
		Time: at, Received: at, HWID: "whatsapp:+8801711000001",
		Status: &schemas.Status{
			PhoneNumberID: "1001", WAMID: wamid, Status: st, Recipient: "+8801711000001",
			DispatchID: dispatchID, PricingCategory: "marketing", Billable: true,
		},
	}
}

func outcome(id, app string, state schemas.OutcomeState, template string, at time.Time) *schemas.Outcome {
	o := &schemas.Outcome{
		DispatchID: id, App: app, Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+8801711000001",
		Country: "BD", State: state, Template: template, Source: schemas.Source{Kind: "keyword", Name: "hi", EventID: "ev-" + id},
		Attempts: 1, Requested: at.Add(-time.Second), Time: at,
	}
	if template != "" {
		o.Category = "MARKETING"
	}
	if state == schemas.OutcomeAccepted {
		o.ProviderID = "wamid." + id
	}
	if state == schemas.OutcomeFailed {
		o.ErrorCode, o.ErrorMessage = 131026, "Message undeliverable"
	}
	return o
}

// dataset is the known data of the summary tests.
//
//	app demo, 2025-03-10: 1 register, 1 custom event, 5 inbound (first words
//	hi, hi, stop, hello, and one image), 6 statuses (3 sent, 2 delivered,
//	1 read), 4 sends (3 accepted: welcome x2 and one text; 1 failed: promo)
//	app demo, 2025-01-15: 1 inbound "old"
//	app other: 1 register, 1 accepted send
func dataset(t testing.TB) []*kgo.Record {
	t.Helper()
	o := offsets{}
	ev := func(e *schemas.Event) *kgo.Record { return o.rec(t, schemas.TopicEvents, e.Key(), e) }
	out := func(x *schemas.Outcome) *kgo.Record { return o.rec(t, schemas.TopicOutcomes, x.Key(), x) }
	return []*kgo.Record{
		ev(&schemas.Event{
			ID: "reg-1", App: "demo", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: base, Received: base, HWID: "whatsapp:+8801711000001", DeviceType: schemas.DeviceWhatsApp,
			Language: "bn", Timezone: "Asia/Dhaka", Country: "BD", Tags: map[string]any{"City": "Dhaka", "Age": 31.0},
		}),
		ev(&schemas.Event{
			ID: "ev-1", App: "demo", Kind: schemas.KindEvent, Name: "Purchase", Time: base, UserID: "u1",
			Attributes: map[string]any{"sku": "A-1", "price": 12.5, "gift": true, "items": []any{"a", "b"}, "note": nil},
		}),
		ev(inbound("in-1", "demo", "+8801711000001", "Hi there", base.Add(time.Minute))),
		ev(inbound("in-2", "demo", "+8801711000002", "hi", base.Add(2*time.Minute))),
		ev(inbound("in-3", "demo", "+8801711000003", "STOP", base.Add(3*time.Minute))),
		ev(inbound("in-4", "demo", "+8801711000004", "  hello world", base.Add(4*time.Minute))),
		ev(inbound("in-5", "demo", "+8801711000005", "", base.Add(5*time.Minute))),
		out(outcome("d1", "demo", schemas.OutcomeAccepted, "welcome", base.Add(time.Minute))),
		out(outcome("d2", "demo", schemas.OutcomeAccepted, "welcome", base.Add(2*time.Minute))),
		out(outcome("d3", "demo", schemas.OutcomeAccepted, "", base.Add(3*time.Minute))),
		out(outcome("d4", "demo", schemas.OutcomeFailed, "promo", base.Add(4*time.Minute))),
		ev(status("st-1", "demo", "wamid.d1", "sent", "d1", base.Add(61*time.Second))),
		ev(status("st-2", "demo", "wamid.d2", "sent", "d2", base.Add(121*time.Second))),
		ev(status("st-3", "demo", "wamid.d3", "sent", "d3", base.Add(181*time.Second))),
		ev(status("st-4", "demo", "wamid.d1", "delivered", "d1", base.Add(62*time.Second))),
		ev(status("st-5", "demo", "wamid.d2", "delivered", "d2", base.Add(122*time.Second))),
		ev(status("st-6", "demo", "wamid.d1", "read", "d1", base.Add(90*time.Second))),
		ev(inbound("in-old", "demo", "+8801711000009", "old", time.Date(2025, 1, 15, 9, 0, 0, 0, time.UTC))),
		ev(&schemas.Event{ID: "reg-o", App: "other", Kind: schemas.KindRegister, Time: base, HWID: "whatsapp:+8801711000077"}),
		out(outcome("o1", "other", schemas.OutcomeAccepted, "welcome", base)),
	}
}

// count runs a count query or fails the test.
func count(t testing.TB, conn driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	return chtest.Count(t, conn, query, args...)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("must: %v", err))
	}
	return v
}

// topicLag is group's committed offsets' distance from the end of topic's
// partitions, summed.
func topicLag(t testing.TB, adm *kadm.Client, group, topic string) int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(context.Background(), group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		at := int64(0)
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil {
			at = c.At
		}
		n += o.Offset - max(at, 0)
	})
	return n
}

// runCounter runs a fact counter of cfg's facts group on cluster c until
// the returned stop is called or the test ends; stop returns Run's result.
func runCounter(t testing.TB, c *kafkatest.Cluster, conn driver.Conn, cfg Config) (*Counter, func() error) {
	t.Helper()
	return runCounterWith(t, c, conn, cfg, nil)
}

// runCounterWith is runCounter calling setup (when not nil) on the counter
// before it runs.
func runCounterWith(t testing.TB, c *kafkatest.Cluster, conn driver.Conn, cfg Config, setup func(*Counter)) (*Counter, func() error) {
	t.Helper()
	cn, err := NewCounter(cfg, c.Config, conn, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(cn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- cn.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return cn, stop
}

// countFacts runs a fact counter on c until it committed every record of
// herald.facts.v1, then stops it.
func countFacts(t testing.TB, c *kafkatest.Cluster, conn driver.Conn, cfg Config) {
	t.Helper()
	_, stop := runCounter(t, c, conn, cfg)
	adm := kadm.NewClient(c.Client(t))
	group := cfg.FactsGroup
	if group == "" {
		group = DefaultFactsGroup
	}
	waitFor(t, 30*time.Second, "every fact counted", func() bool { return topicLag(t, adm, group, schemas.TopicFacts) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
