package analytics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// attributionRecords are one dispatch's request, accepted outcome, read
// status and an inbound reply to it.
func attributionRecords(t testing.TB, o offsets) (req, out, read, reply *kgo.Record) {
	t.Helper()
	d := &schemas.DispatchRequest{
		ID: "a1", App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: "+8801711000001", Country: "BD",
		Template: &schemas.Template{Name: "spring_sale", Language: "en_US", Category: "MARKETING"},
		Source:   schemas.Source{Kind: "campaign", Name: "spring"}, Created: base,
	}
	x := &schemas.Outcome{
		DispatchID: "a1", App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: d.To, Country: "BD",
		State: schemas.OutcomeAccepted, ProviderID: "wa1", Template: "spring_sale", Category: "MARKETING", Source: d.Source,
		Attempts: 1, Requested: base, Time: base.Add(time.Second),
	}
	st := status("st-a1", "shop", "wa1", "read", "a1", base.Add(2*time.Minute))
	in := inbound("in-a1", "shop", d.To, "thanks", base.Add(3*time.Minute))
	in.Inbound.ContextID = "wa1"
	return o.rec(t, schemas.TopicDispatch, d.Key(), d), o.rec(t, schemas.TopicOutcomes, x.Key(), x),
		o.rec(t, schemas.TopicEvents, st.Key(), st), o.rec(t, schemas.TopicEvents, in.Key(), in)
}

// TestAttributionInAnyOrder writes a dispatch's records one batch each, in
// every order that matters: the funnel is the same, and nothing is left
// pending.
func TestAttributionInAnyOrder(t *testing.T) {
	orders := []struct {
		name  string
		order []int // indexes into req, out, read, reply
	}{
		{"in order", []int{0, 1, 2, 3}},
		{"status before the request", []int{2, 0, 1, 3}},
		{"reply first, then the status, then the request", []int{3, 2, 0, 1}},
		{"reply before the outcome", []int{0, 3, 2, 1}},
		{"everything before the request", []int{3, 2, 1, 0}},
		{"all in one batch, reversed", nil},
	}
	for _, tt := range orders {
		t.Run(tt.name, func(t *testing.T) {
			_, conn := migratedDB(t)
			s, c, _ := newSink(t, Config{}, conn)
			req, out, read, reply := attributionRecords(t, offsets{})
			recs := []*kgo.Record{req, out, read, reply}
			if tt.order == nil {
				if _, err := s.Write(t.Context(), []*kgo.Record{reply, read, out, req}); err != nil {
					t.Fatal(err)
				}
			}
			for _, i := range tt.order {
				if _, err := s.Write(t.Context(), []*kgo.Record{recs[i]}); err != nil {
					t.Fatal(err)
				}
			}
			countFacts(t, c, conn, Config{})
			q, _ := QueryByName("funnel")
			res, err := q.Run(t.Context(), conn, Params{App: "shop"})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(format(res), "|"); got != "campaign spring 1 1 1 1 1" {
				t.Fatalf("funnel %q, want campaign spring 1 1 1 1 1", got)
			}
			ttr, _ := QueryByName("time_to_read")
			res, err = ttr.Run(t.Context(), conn, Params{App: "shop"})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(format(res), "|"); got != "1-5 min 1" {
				t.Fatalf("time to read %q", got)
			}
			if n := count(t, conn, "SELECT count() FROM (SELECT * FROM pending_facts FINAL) WHERE resolved = 0"); n != 0 {
				t.Fatalf("%d facts left pending", n)
			}
			if parked, resolved := testutil.ToFloat64(s.m.factsPending), testutil.ToFloat64(s.m.factsResolved); parked != resolved {
				t.Fatalf("%v facts parked, %v resolved", parked, resolved)
			}
		})
	}
}

// TestAttributionAcrossSinks: the status's sink misses the dispatch, and
// before it parks the fact another sink stores the request and finds
// nothing pending; the status's second look finds the dispatch.
func TestAttributionAcrossSinks(t *testing.T) {
	_, conn := migratedDB(t)
	a, ca, _ := newSink(t, Config{}, conn)
	b, cb, _ := newSink(t, Config{}, conn)
	req, out, read, _ := attributionRecords(t, offsets{})
	hook := func() {
		if _, err := b.Write(t.Context(), []*kgo.Record{req, out}); err != nil {
			t.Error(err)
		}
	}
	a.beforePark.Store(&hook)
	if _, err := a.Write(t.Context(), []*kgo.Record{read}); err != nil {
		t.Fatal(err)
	}
	// Each sink has a cluster of its own here: count one's facts, then
	// the other's (the second counter finds the first's facts in
	// fact_log, so the sent both imply counts once).
	countFacts(t, cb, conn, Config{})
	countFacts(t, ca, conn, Config{})
	q, _ := QueryByName("funnel")
	res, err := q.Run(t.Context(), conn, Params{App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(format(res), "|"); got != "campaign spring 1 1 1 1 0" {
		t.Fatalf("funnel %q", got)
	}
	if n := count(t, conn, "SELECT count() FROM (SELECT * FROM pending_facts FINAL) WHERE resolved = 0"); n != 0 {
		t.Fatalf("%d facts left pending", n)
	}
}

// TestUnknownDispatchStaysPending: a status of a dispatch never seen stays
// pending (and out of the funnel) rather than counted under no source.
func TestUnknownDispatchStaysPending(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	st := status("st-x", "shop", "wx", "delivered", "nope", base)
	if _, err := s.Write(t.Context(), []*kgo.Record{o.rec(t, schemas.TopicEvents, st.Key(), st)}); err != nil {
		t.Fatal(err)
	}
	// sent, delivered, billed
	if n := count(t, conn, "SELECT count() FROM (SELECT * FROM pending_facts FINAL) WHERE resolved = 0 AND ref = 'd:nope'"); n != 3 {
		t.Fatalf("%d pending facts, want 3", n)
	}
	if n := count(t, conn, "SELECT count() FROM message_facts"); n != 0 {
		t.Fatalf("%d facts without a dispatch", n)
	}
}
