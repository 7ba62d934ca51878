package analytics

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// diffSummary describes how b differs from a, "" when equal.
func diffSummary(a, b *Summary) string {
	if reflect.DeepEqual(a, b) {
		return ""
	}
	return fmt.Sprintf("\n got %+v\nwant %+v", b, a)
}

func TestSummarize(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	if _, err := s.Write(t.Context(), dataset(t)); err != nil {
		t.Fatal(err)
	}
	march := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	demoSince := &Summary{
		App: "demo", Since: march, Apps: 1,
		Events: 13, EventsByKind: map[string]uint64{"register": 1, "event": 1, "inbound": 5, "status": 6}, Inbound: 5,
		Keywords: []Count{{"hi", 2}, {"", 1}, {"hello", 1}, {"stop", 1}},
		Sends:    4, SendsByState: map[string]uint64{"accepted": 3, "failed": 1},
		Templates: []TemplateSends{{"welcome", 2, 2, 0, "whatsapp"}, {"", 1, 1, 0, "whatsapp"}, {"promo", 1, 0, 1, "whatsapp"}},
		Statuses:  6, Sent: 3, Delivered: 2, Read: 1,
	}
	tests := []struct {
		name  string
		app   string
		since time.Time
		want  *Summary
	}{
		{name: "one app since march", app: "demo", since: march, want: demoSince},
		{
			name: "one app all time", app: "demo",
			want: func() *Summary {
				w := *demoSince
				w.Since = time.Time{}
				w.Events, w.Inbound = 14, 6
				w.EventsByKind = map[string]uint64{"register": 1, "event": 1, "inbound": 6, "status": 6}
				w.Keywords = []Count{{"hi", 2}, {"", 1}, {"hello", 1}, {"old", 1}, {"stop", 1}}
				return &w
			}(),
		},
		{
			name: "all apps since march", since: march,
			want: func() *Summary {
				w := *demoSince
				w.App, w.Apps = "", 2
				w.Events = 14
				w.EventsByKind = map[string]uint64{"register": 2, "event": 1, "inbound": 5, "status": 6}
				w.Sends, w.SendsByState = 5, map[string]uint64{"accepted": 4, "failed": 1}
				w.Templates = []TemplateSends{{"welcome", 3, 3, 0, "whatsapp"}, {"", 1, 1, 0, "whatsapp"}, {"promo", 1, 0, 1, "whatsapp"}}
				return &w
			}(),
		},
		{
			name: "other app", app: "other", since: march,
			want: &Summary{
				App: "other", Since: march, Apps: 1,
				Events: 1, EventsByKind: map[string]uint64{"register": 1},
				Sends: 1, SendsByState: map[string]uint64{"accepted": 1},
				Templates: []TemplateSends{{"welcome", 1, 1, 0, "whatsapp"}},
			},
		},
		{
			name: "within the day: since cuts by time, not only by date", app: "demo", since: base.Add(150 * time.Second),
			want: &Summary{
				App: "demo", Since: base.Add(150 * time.Second), Apps: 1,
				Events: 4, EventsByKind: map[string]uint64{"inbound": 3, "status": 1}, Inbound: 3,
				Keywords: []Count{{"", 1}, {"hello", 1}, {"stop", 1}},
				// d3 and d4 were requested at base+2m59s and base+3m59s.
				Sends: 2, SendsByState: map[string]uint64{"accepted": 1, "failed": 1},
				Templates: []TemplateSends{{"", 1, 1, 0, "whatsapp"}, {"promo", 1, 0, 1, "whatsapp"}},
				Statuses:  1, Sent: 1,
			},
		},
		{
			name: "since before 1970 is all time", app: "other", since: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
			want: &Summary{
				App: "other", Since: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), Apps: 1,
				Events: 1, EventsByKind: map[string]uint64{"register": 1},
				Sends: 1, SendsByState: map[string]uint64{"accepted": 1},
				Templates: []TemplateSends{{"welcome", 1, 1, 0, "whatsapp"}},
			},
		},
		{
			name: "since beyond DateTime is empty", since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
			want: &Summary{Since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), EventsByKind: map[string]uint64{}, SendsByState: map[string]uint64{}},
		},
		{
			name: "unknown app", app: "nobody",
			want: &Summary{App: "nobody", EventsByKind: map[string]uint64{}, SendsByState: map[string]uint64{}},
		},
		{
			name: "quoting in the app is bound, not spliced", app: "x' OR 1=1 --",
			want: &Summary{App: "x' OR 1=1 --", EventsByKind: map[string]uint64{}, SendsByState: map[string]uint64{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Summarize(t.Context(), conn, tt.app, tt.since)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffSummary(tt.want, got); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

func TestSummaryRates(t *testing.T) {
	f := func(s Summary, delivery, read float64) {
		t.Helper()
		if got := s.DeliveryRate(); got != delivery {
			t.Errorf("DeliveryRate = %v, want %v", got, delivery)
		}
		if got := s.ReadRate(); got != read {
			t.Errorf("ReadRate = %v, want %v", got, read)
		}
	}
	f(Summary{}, 0, 0)
	f(Summary{Sent: 4, Delivered: 2, Read: 1}, 0.5, 0.5)
	f(Summary{Sent: 0, Delivered: 2, Read: 2}, 0, 1)
}

func TestWriteText(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	recs := dataset(t)
	// Inbound text is anyone's: a terminal escape must not reach the report.
	evil := inbound("in-evil", "demo", "+8801711000066", "\x1b[2Jboom now", base)
	recs = append(recs, o.rec(t, schemas.TopicEvents, evil.Key(), evil))
	if _, err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	sum, err := Summarize(t.Context(), conn, "demo", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sum.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("report:\n%s", out)
	for _, line := range []string{
		`Herald analytics: app demo, since 2025-03-01 00:00 UTC`,
		`apps +1`,
		`events +14`,
		`  inbound +6`,
		`  status +6`,
		`inbound messages +6`,
		`    hi +2`,
		`    \(no text\) +1`,
		`    \?\[2jboom +1`,
		`sends +4`,
		`  accepted +3`,
		`  failed +1`,
		`    welcome +2 +2 +0`,
		`    \(free-form text\) +1 +1 +0`,
		`    promo +1 +0 +1`,
		`statuses +6`,
		`  sent +3`,
		`  delivered +2   66\.7% of sent`,
		`  read +1   50\.0% of delivered`,
		`  failed +0`,
	} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(out) {
			t.Errorf("report lacks a line matching %q", line)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("report holds an escape character")
	}
	// Fixed width: every number column ends at the same place.
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if l != "" && !strings.HasPrefix(l, "  top") && !strings.HasPrefix(l, "  by template") && len(l) < 36 {
			t.Errorf("short line %q", l)
		}
	}
}

func TestWriteTextEmpty(t *testing.T) {
	_, conn := migratedDB(t)
	sum, err := Summarize(t.Context(), conn, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sum.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`all apps, all time`, `(?m)^  delivered +0     n/a of sent$`, `(?m)^  read +0     n/a of delivered$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("empty report lacks %q:\n%s", want, out)
		}
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("disk full")
	}
	w.n--
	return len(p), nil
}

func TestWriteTextReturnsWriteError(t *testing.T) {
	sum := &Summary{EventsByKind: map[string]uint64{"inbound": 1}}
	if err := sum.WriteText(&failWriter{n: 3}); err == nil || err.Error() != "disk full" {
		t.Fatalf("WriteText = %v, want the writer's error", err)
	}
}

func TestReportText(t *testing.T) {
	conn := loadQueryData(t)
	rep, err := RunReport(t.Context(), conn, Params{App: "shop", SourceKind: "campaign", SourceName: "spring"}, []string{"funnel", "read_rate_by_template", "journey_steps"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	want := `Herald analytics report: app shop, campaign spring, all days

Delivery funnel per campaign (requested → sent → delivered → read → replied)
  source_kind source_name requested sent delivered read replied
  campaign    spring              5    3         3    2       1

Read rate by template
  template    category  sent delivered read read_rate
  spring_sale MARKETING    3         3    2    0.6667

Journey branch counts
`
	got := buf.String()
	// The journey queries do not follow -campaign: check the head exactly,
	// the rest by its lines.
	if !strings.HasPrefix(got, want[:strings.Index(want, "Journey branch counts")]) {
		t.Fatalf("report:\n%s\nwant it to start with:\n%s", got, want)
	}
	if !strings.Contains(got, "PW_JourneyStep") || !strings.Contains(got, "reminder") {
		t.Fatalf("journey steps missing:\n%s", got)
	}
}

func TestReportJSON(t *testing.T) {
	conn := loadQueryData(t)
	rep, err := RunReport(t.Context(), conn, Params{App: "shop", From: day1, To: day2}, []string{"cost_by_category_country", "opt_out_rate"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		App     string `json:"app"`
		From    string `json:"from"`
		To      string `json:"to"`
		Results []struct {
			Query   string   `json:"query"`
			Columns []string `json:"columns"`
			Rows    [][]any  `json:"rows"`
		} `json:"results"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v:\n%s", err, buf.String())
	}
	if got.App != "shop" || got.From != "2025-03-10" || got.To != "2025-03-11" || len(got.Results) != 2 {
		t.Fatalf("report %+v", got)
	}
	costs := got.Results[0]
	if costs.Query != "cost_by_category_country" || len(costs.Rows) != 3 || costs.Rows[0][0] != "2025-03-10" || costs.Rows[0][6] != 30000.0 {
		t.Fatalf("costs %+v", costs)
	}
	opt := got.Results[1]
	if len(opt.Rows) != 1 || opt.Rows[0][0] != 2.0 || opt.Rows[0][1] != 5.0 || opt.Rows[0][2] != 0.4 {
		t.Fatalf("opt-out %+v", opt)
	}
}

func TestReportUnknownQuery(t *testing.T) {
	if _, err := RunReport(t.Context(), nil, Params{App: "a"}, []string{"nope"}); err == nil || !strings.Contains(err.Error(), `unknown query "nope"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestSummaryLabelsChannels: sends without a template are named by their
// channel in the text report (free-form WhatsApp text, emails, pushes), and
// a template of another channel than WhatsApp says its channel.
func TestSummaryLabelsChannels(t *testing.T) {
	s := &Summary{Sends: 7, Templates: []TemplateSends{
		{"", 3, 3, 0, "push"}, {"", 2, 2, 0, "whatsapp"}, {"", 1, 1, 0, "email"}, {"welcome", 1, 1, 0, "email"},
	}}
	var b strings.Builder
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^    \(push\) +3 +3 +0$`, `(?m)^    \(free-form text\) +2 +2 +0$`,
		`(?m)^    \(email\) +1 +1 +0$`, `(?m)^    welcome \(email\) +1 +1 +0$`,
	} {
		if !regexp.MustCompile(want).MatchString(b.String()) {
			t.Errorf("report lacks %s:\n%s", want, b.String())
		}
	}
}

// TestSummarizeOtherTemplates: past the five most used templates the
// summary sums the rest in one row, so that the rows add up to the sends
// (the demo's campaign template was missing from its report's table).
func TestSummarizeOtherTemplates(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	var recs []*kgo.Record
	// a: 7 sends, b: 6, ... e: 3, then f: 2 accepted, g: 1 failed.
	n := 0
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		for range 7 - i {
			n++
			state := schemas.OutcomeAccepted
			if name == "g" {
				state = schemas.OutcomeFailed
			}
			x := outcome(fmt.Sprintf("d%d", n), "demo", state, name, base.Add(time.Duration(n)*time.Second))
			recs = append(recs, o.rec(t, schemas.TopicOutcomes, x.Key(), x))
		}
	}
	if _, err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	got, err := Summarize(t.Context(), conn, "demo", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := []TemplateSends{
		{"a", 7, 7, 0, "whatsapp"},
		{"b", 6, 6, 0, "whatsapp"},
		{"c", 5, 5, 0, "whatsapp"},
		{"d", 4, 4, 0, "whatsapp"},
		{"e", 3, 3, 0, "whatsapp"},
	}
	if !reflect.DeepEqual(got.Templates, want) || got.OtherTemplateCount != 2 ||
		got.OtherTemplates != (TemplateSends{Sends: 3, Accepted: 2, Failed: 1}) || got.Sends != 28 {
		t.Fatalf("templates %+v, %d others %+v, sends %d", got.Templates, got.OtherTemplateCount, got.OtherTemplates, got.Sends)
	}
	var b strings.Builder
	if err := got.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^    \(2 others\) +3 +2 +1$`).MatchString(b.String()) {
		t.Fatalf("report lacks the others row:\n%s", b.String())
	}
}
