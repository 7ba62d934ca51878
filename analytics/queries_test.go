package analytics

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// testPricer prices marketing messages to BD at 0.01 USD and to IN at
// 0.015 USD; messages in the service window are free; other rates are
// unknown.
type testPricer struct{}

func (testPricer) Price(category, country string, inWindow bool) (int64, string, bool) {
	switch {
	case inWindow:
		return 0, "USD", true
	case category == "marketing" && country == "BD":
		return 10_000, "USD", true
	case category == "marketing" && country == "IN":
		return 15_000, "USD", true
	}
	return 0, "", false
}

// day1 and day2 are the days of the query data set.
var (
	day1 = time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	day2 = time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
)

// queryData is the known data of the query tests (app shop; app other has
// one send that no shop query may count):
//
//	campaign spring (spring_sale, MARKETING, BD), requested day1 10:00:
//	  c1 sent, delivered, read 30 s after sent, replied; c2 sent, read
//	  10 min after sent (delivered skipped); c3 sent, delivered; c4 failed
//	  131050; c5 requested only
//	keyword HELP (free-form, service window): k1 day1 sent, delivered, read
//	  2 h after sent; k2 day2 in doubt, then a sent and a delivered status
//	campaign restock (back_in_stock, UTILITY, BD) day2: r1 sent then a
//	  failed status 131026; r2 expired
//	journey onboarding (welcome_series, MARKETING, IN) day2: j1 sent,
//	  delivered, read 25 h after sent
//	inbound: a reply to c1, HELP, help, STOP and stop from one user,
//	  Unsubscribe, an image
//	journeys onboarding (3 users entered, steps, 1 exited at the goal, 1
//	  completed) and winback (1 entered); segment vip: +2 on day1-1, +1 -1 on day1, -1 on day2
func queryData(t testing.TB) []*kgo.Record {
	t.Helper()
	o := offsets{}
	var recs []*kgo.Record
	at := func(day time.Time, hh, mm, ss int) time.Time {
		return day.Add(time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute + time.Duration(ss)*time.Second)
	}
	type send struct {
		id, kind, name, template, category, to, country string
		requested                                       time.Time
	}
	sends := map[string]send{}
	req := func(s send) {
		sends[s.id] = s
		d := &schemas.DispatchRequest{
			ID: s.id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: s.to, Country: s.country,
			Source: schemas.Source{Kind: s.kind, Name: s.name}, Created: s.requested,
		}
		if s.template != "" {
			d.Template = &schemas.Template{Name: s.template, Language: "en_US", Category: s.category}
		} else {
			d.Text = &schemas.Text{Body: "How can we help?"}
		}
		recs = append(recs, o.rec(t, schemas.TopicDispatch, d.Key(), d))
	}
	out := func(id string, state schemas.OutcomeState, after time.Duration, code int) {
		s := sends[id]
		x := &schemas.Outcome{
			DispatchID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: s.to, Country: s.country,
			State: state, Template: s.template, Category: s.category, Source: schemas.Source{Kind: s.kind, Name: s.name},
			ErrorCode: code, Attempts: 1, Requested: s.requested, Time: s.requested.Add(after),
		}
		if state == schemas.OutcomeAccepted {
			x.ProviderID = "w" + id
		}
		recs = append(recs, o.rec(t, schemas.TopicOutcomes, x.Key(), x))
	}
	stat := func(id, st string, after time.Duration, category string, billable bool, code int) {
		s := sends[id]
		e := &schemas.Event{
			ID: "st-" + id + "-" + st, App: "shop", Kind: schemas.KindStatus, Name: schemas.EventWhatsAppStatus,
			Time: s.requested.Add(after), HWID: "whatsapp:" + s.to, Country: s.country,
			Status: &schemas.Status{
				PhoneNumberID: "1001", WAMID: "w" + id, Status: st, Recipient: s.to, DispatchID: id,
				PricingCategory: category, Billable: billable, ErrorCode: code,
			},
		}
		if category == "service" {
			e.Status.PricingType = "free_customer_service"
		}
		recs = append(recs, o.rec(t, schemas.TopicEvents, e.Key(), e))
	}
	inb := func(id, from, text, context string, when time.Time) {
		e := inbound(id, "shop", from, text, when)
		e.Inbound.ContextID = context
		recs = append(recs, o.rec(t, schemas.TopicEvents, e.Key(), e))
	}
	evt := func(id, user, name string, when time.Time, attrs map[string]any) {
		e := &schemas.Event{ID: id, App: "shop", Kind: schemas.KindEvent, Name: name, Time: when, UserID: user, Attributes: attrs}
		recs = append(recs, o.rec(t, schemas.TopicEvents, e.Key(), e))
	}
	sec := time.Second

	spring := func(id, to string) send {
		return send{id, "campaign", "spring", "spring_sale", "MARKETING", to, "BD", at(day1, 10, 0, 0)}
	}
	req(spring("c1", "+8801711000001"))
	req(spring("c2", "+8801711000002"))
	req(spring("c3", "+8801711000003"))
	req(spring("c4", "+8801711000004"))
	req(spring("c5", "+8801711000005"))
	out("c1", schemas.OutcomeAccepted, sec, 0)
	stat("c1", "sent", 2*sec, "marketing", true, 0)
	stat("c1", "delivered", 3*sec, "marketing", true, 0)
	stat("c1", "read", 31*sec, "marketing", true, 0)
	out("c2", schemas.OutcomeAccepted, sec, 0)
	stat("c2", "sent", 2*sec, "marketing", true, 0)
	stat("c2", "read", 10*time.Minute+sec, "marketing", true, 0)
	out("c3", schemas.OutcomeAccepted, sec, 0)
	stat("c3", "sent", 2*sec, "marketing", true, 0)
	stat("c3", "delivered", 5*sec, "marketing", true, 0)
	out("c4", schemas.OutcomeFailed, sec, 131050)

	req(send{"k1", "keyword", "HELP", "", "", "+8801711000006", "BD", at(day1, 9, 0, 1)})
	out("k1", schemas.OutcomeAccepted, sec, 0)
	stat("k1", "sent", 2*sec, "service", false, 0)
	stat("k1", "delivered", 3*sec, "service", false, 0)
	stat("k1", "read", 2*time.Hour+sec, "service", false, 0)
	req(send{"k2", "keyword", "HELP", "", "", "+8801711000007", "BD", at(day2, 14, 0, 1)})
	out("k2", schemas.OutcomeInDoubt, 30*sec, 0)
	stat("k2", "sent", 2*sec, "service", false, 0)
	stat("k2", "delivered", 3*sec, "service", false, 0)

	restock := func(id, to string) send {
		return send{id, "campaign", "restock", "back_in_stock", "UTILITY", to, "BD", at(day2, 9, 0, 0)}
	}
	req(restock("r1", "+8801711000001"))
	req(restock("r2", "+8801711000002"))
	out("r1", schemas.OutcomeAccepted, sec, 0)
	stat("r1", "sent", 2*sec, "utility", true, 0)
	stat("r1", "failed", 9*sec, "", false, 131026)
	out("r2", schemas.OutcomeExpired, time.Hour, 0)

	req(send{"j1", "journey", "onboarding", "welcome_series", "MARKETING", "+919812345678", "IN", at(day2, 8, 0, 0)})
	out("j1", schemas.OutcomeAccepted, sec, 0)
	stat("j1", "sent", 2*sec, "marketing", true, 0)
	stat("j1", "delivered", 3*sec, "marketing", true, 0)
	stat("j1", "read", 25*time.Hour+sec, "marketing", true, 0)

	inb("i1", "+8801711000001", "Thanks!", "wc1", at(day1, 10, 5, 0))
	inb("i2", "+8801711000006", "HELP me", "", at(day1, 9, 0, 0))
	inb("i3", "+8801711000007", "help", "", at(day2, 14, 0, 0))
	inb("i4", "+8801711000004", "STOP", "", at(day1, 11, 0, 0))
	inb("i5", "+8801711000004", "stop", "", at(day2, 11, 30, 0))
	inb("i6", "+8801711000009", "Unsubscribe", "", at(day2, 16, 0, 0))
	inb("i7", "+8801711000008", "", "", at(day2, 14, 30, 0))

	j := func(journey string, more ...string) map[string]any {
		m := map[string]any{"journey": journey}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}
	evt("je1", "u1", schemas.EventJourneyEntered, at(day2, 8, 0, 0), j("onboarding"))
	evt("je2", "u2", schemas.EventJourneyEntered, at(day2, 8, 0, 0), j("onboarding"))
	evt("je3", "u3", schemas.EventJourneyEntered, at(day2, 8, 0, 0), j("onboarding"))
	evt("js1", "u1", schemas.EventJourneyStep, at(day2, 9, 0, 0), j("onboarding", "step", "offer", "from", "event"))
	evt("js2", "u2", schemas.EventJourneyStep, at(day2, 9, 0, 0), j("onboarding", "step", "offer", "from", "event"))
	evt("js3", "u3", schemas.EventJourneyStep, at(day2, 9, 0, 0), j("onboarding", "step", "reminder", "from", "timeout"))
	evt("jx1", "u1", schemas.EventJourneyExited, at(day2, 12, 0, 0), j("onboarding", "reason", "goal"))
	evt("jx3", "u3", schemas.EventJourneyExited, at(day2, 13, 0, 0), j("onboarding", "reason", "completed"))
	evt("jw1", "u4", schemas.EventJourneyEntered, at(day2, 8, 0, 0), j("winback"))

	seg := func(id, user, name string, when time.Time) {
		evt(id, user, name, when, map[string]any{"segment": "vip"})
	}
	seg("s1", "u1", schemas.EventSegmentEntered, day1.Add(-12*time.Hour))
	seg("s2", "u2", schemas.EventSegmentEntered, day1.Add(-11*time.Hour))
	seg("s3", "u3", schemas.EventSegmentEntered, at(day1, 8, 0, 0))
	seg("s4", "u1", schemas.EventSegmentExited, at(day1, 9, 0, 0))
	seg("s5", "u2", schemas.EventSegmentExited, at(day2, 9, 0, 0))

	// Another app's send, on the same days.
	x := outcome("o1", "other", schemas.OutcomeAccepted, "spring_sale", at(day1, 10, 0, 0))
	x.Source = schemas.Source{Kind: "campaign", Name: "spring"}
	recs = append(recs, o.rec(t, schemas.TopicOutcomes, x.Key(), x))
	return recs
}

// loadQueryData writes queryData twice (a redelivery) into a fresh database.
func loadQueryData(t testing.TB) driver.Conn {
	t.Helper()
	_, conn := migratedDB(t)
	s, c, _ := newSink(t, Config{Pricer: testPricer{}}, conn)
	recs := queryData(t)
	for _, part := range [][]*kgo.Record{recs, recs[:len(recs)/2], recs[len(recs)/2:]} {
		dls, err := s.Write(t.Context(), part)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) != 0 {
			dl, _ := schemas.DecodeDeadLetter(dls[0].Value)
			t.Fatalf("%d dead letters: %s", len(dls), dl.Reason)
		}
	}
	// Every fact went to herald.facts.v1 three times (written twice, as
	// above): the counter counts each once.
	countFacts(t, c, conn, Config{})
	return conn
}

// format renders a result's rows as "a b c" lines for comparison.
func format(r *Result) []string {
	out := []string{}
	for _, row := range r.Rows {
		parts := make([]string, len(row))
		for i, v := range row {
			switch v := v.(type) {
			case time.Time:
				parts[i] = v.Format(time.DateOnly)
			case string:
				if v == "" {
					v = `""`
				}
				parts[i] = v
			default:
				parts[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

func TestQueries(t *testing.T) {
	conn := loadQueryData(t)
	all := Params{App: "shop"}
	onDay2 := Params{App: "shop", From: day2, To: day2}
	restock := Params{App: "shop", SourceKind: "campaign", SourceName: "restock"}
	tests := []struct {
		query string
		p     Params
		want  []string
	}{
		{"funnel", all, []string{
			"campaign spring 5 3 3 2 1",
			"campaign restock 2 1 0 0 0",
			"keyword HELP 2 2 2 1 0",
			"journey onboarding 1 1 1 1 0",
		}},
		{"funnel", onDay2, []string{
			"campaign restock 2 1 0 0 0",
			"journey onboarding 1 1 1 1 0",
			"keyword HELP 1 1 1 0 0",
		}},
		{"funnel", Params{App: "shop", SourceKind: "campaign", SourceName: "spring"}, []string{"campaign spring 5 3 3 2 1"}},
		{"funnel", Params{App: "shop", SourceKind: "journey"}, []string{"journey onboarding 1 1 1 1 0"}},
		{"read_rate_by_template", all, []string{
			"spring_sale MARKETING 3 3 2 0.6667",
			"back_in_stock UTILITY 1 0 0 0",
			"welcome_series MARKETING 1 1 1 1",
		}},
		{"cost_by_category_country", all, []string{
			"2025-03-10 marketing BD USD 3 0 30000",
			"2025-03-11 marketing IN USD 1 0 15000",
			`2025-03-11 utility BD "" 1 1 0`,
		}},
		{"cost_by_category_country", Params{App: "shop", From: day1, To: day1}, []string{"2025-03-10 marketing BD USD 3 0 30000"}},
		{"cost_by_category_country", Params{App: "shop", SourceKind: "journey"}, []string{"2025-03-11 marketing IN USD 1 0 15000"}},
		{"cost_by_source", all, []string{
			"campaign spring spring_sale 3 0 30000",
			"journey onboarding welcome_series 1 0 15000",
			"campaign restock back_in_stock 1 1 0",
		}},
		{"cost_by_source", restock, []string{"campaign restock back_in_stock 1 1 0"}},
		{"failures_by_error_code", all, []string{"131026 meta 1", "131050 dispatcher 1"}},
		{"failures_by_error_code", onDay2, []string{"131026 meta 1"}},
		{"keyword_triggers", all, []string{"HELP 2"}},
		{"keyword_triggers", Params{App: "shop", From: day1, To: day1}, []string{"HELP 1"}},
		{"inbound_keywords", all, []string{"help 2", "stop 2", `"" 1`, "thanks! 1", "unsubscribe 1"}},
		{"journey_steps", all, []string{
			`onboarding PW_JourneyEntered "" "" "" 3 3`,
			`onboarding PW_JourneyExited "" "" completed 1 1`,
			`onboarding PW_JourneyExited "" "" goal 1 1`,
			`onboarding PW_JourneyStep offer event "" 2 2`,
			`onboarding PW_JourneyStep reminder timeout "" 1 1`,
			`winback PW_JourneyEntered "" "" "" 1 1`,
		}},
		{"journey_steps", Params{App: "shop", Journey: "winback"}, []string{`winback PW_JourneyEntered "" "" "" 1 1`}},
		{"journey_conversion", all, []string{"onboarding 3 1 0.3333", "winback 1 0 0"}},
		{"journey_conversion", Params{App: "shop", Journey: "winback"}, []string{"winback 1 0 0"}},
		{"time_to_read", all, []string{"< 1 min 1", "5-60 min 1", "1-6 h 1", ">= 24 h 1"}},
		{"time_to_read", Params{App: "shop", SourceKind: "keyword"}, []string{"1-6 h 1"}},
		{"opt_out_rate", all, []string{"2 5 0.4 1"}},
		{"opt_out_rate", Params{App: "shop", From: day1, To: day1}, []string{"1 4 0.25 1"}},
		{"inbound_by_hour", all, []string{"9 1", "10 1", "11 2", "14 2", "16 1"}},
		{"segment_size", all, []string{"vip 2025-03-09 2 0 2", "vip 2025-03-10 1 1 2", "vip 2025-03-11 0 1 1"}},
		{"segment_size", onDay2, []string{"vip 2025-03-11 0 1 1"}},
		{"sends_by_day", restock, []string{
			"2025-03-11 campaign restock back_in_stock UTILITY BD accepted 1",
			"2025-03-11 campaign restock back_in_stock UTILITY BD expired 1",
		}},
		{"current_states", all, []string{"requested 1", "expired 1", "failed 2", "delivered 2", "read 4"}},
		{"current_states", restock, []string{"expired 1", "failed 1"}},
		{"events_by_name", Params{App: "shop", From: day1.Add(-24 * time.Hour), To: day1.Add(-24 * time.Hour)}, []string{
			"2025-03-09 event PW_SegmentEntered 2",
		}},
	}
	tested := map[string]bool{}
	for _, tt := range tests {
		tested[tt.query] = true
		t.Run(tt.query, func(t *testing.T) {
			q, ok := QueryByName(tt.query)
			if !ok {
				t.Fatalf("no query %s", tt.query)
			}
			res, err := q.Run(t.Context(), conn, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			got := format(res)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("%s %+v\n got %q\nwant %q", tt.query, tt.p, got, tt.want)
			}
		})
	}
	for _, q := range Queries {
		if !tested[q.Name] {
			t.Errorf("query %s has no test", q.Name)
		}
	}
}

// TestQueriesNeedAnApp: a query without an app is an error, not every
// app's data.
func TestQueriesNeedAnApp(t *testing.T) {
	if _, err := Queries[0].Run(t.Context(), nil, Params{}); err == nil || !strings.Contains(err.Error(), "app is required") {
		t.Fatalf("err = %v", err)
	}
}

// TestDocHasEveryQuery: docs/ANALYTICS.md holds each query's SQL verbatim
// under a heading with its name.
func TestDocHasEveryQuery(t *testing.T) {
	b, err := os.ReadFile("../docs/ANALYTICS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if len(Queries) < 10 {
		t.Fatalf("%d queries, the doc promises at least ten", len(Queries))
	}
	for _, q := range Queries {
		if !strings.Contains(doc, "```sql\n"+q.SQL+"\n```") {
			t.Errorf("docs/ANALYTICS.md lacks the SQL of %s verbatim (run go run ./analytics/gendoc or copy it)", q.Name)
		}
		if !strings.Contains(doc, "`"+q.Name+"`") {
			t.Errorf("docs/ANALYTICS.md does not name %s", q.Name)
		}
	}
}
