package analytics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/heraldhq/herald/schemas"
)

// topN is how many keywords and templates the summary lists.
const topN = 5

// Summary is what the analytics tables say about one app (or all) since a
// time: the numbers of the demo's report. Every number is exact: the tables
// are read with FINAL, so rows delivered twice count once.
type Summary struct {
	// App is the app summarized, "" for all; Since the start of the window,
	// zero for all time.
	App   string
	Since time.Time
	// Apps is the number of apps with events or sends in the window.
	Apps int

	// Events counts events by id; EventsByKind splits them by kind
	// (register, tags, event, inbound, status, ...). Inbound is
	// EventsByKind["inbound"].
	Events       uint64
	EventsByKind map[string]uint64
	Inbound      uint64
	// Keywords are the most frequent first words of inbound messages,
	// lowercased, most frequent first (at most 5; "" for messages without
	// text such as images).
	Keywords []Count

	// Sends counts dispatch requests by their latest outcome; SendsByState
	// splits them by state (accepted, failed, expired, in_doubt).
	Sends        uint64
	SendsByState map[string]uint64
	// Templates are the most used templates by channel ("" for messages
	// without one: WhatsApp free-form text, emails and pushes of their own
	// content), most sends first (at most 5). OtherTemplates sums the
	// sends of the OtherTemplateCount others (its Template and Channel
	// empty), so that the rows add up to Sends.
	Templates          []TemplateSends
	OtherTemplates     TemplateSends
	OtherTemplateCount int

	// Statuses counts WhatsApp statuses by (wamid, status), so Meta's
	// webhook retries count once; Sent, Delivered, Read and FailedStatuses
	// split it (other statuses count in Statuses only).
	Statuses                              uint64
	Sent, Delivered, Read, FailedStatuses uint64
}

// Count is a name and how often it occurred.
type Count struct {
	Name string
	N    uint64
}

// TemplateSends are the sends of one template.
type TemplateSends struct {
	Template                string
	Sends, Accepted, Failed uint64
	// Channel is whatsapp, email, push or webhook.
	Channel string
}

// DeliveryRate is Delivered / Sent, 0 when nothing was sent.
func (s *Summary) DeliveryRate() float64 { return ratio(s.Delivered, s.Sent) }

// ReadRate is Read / Delivered, 0 when nothing was delivered.
func (s *Summary) ReadRate() float64 { return ratio(s.Read, s.Delivered) }

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// filter is the WHERE clause of a summary query on one table.
type filter struct {
	conds []string
	args  []any
}

func (f filter) and(cond string, args ...any) filter {
	return filter{conds: append(slices.Clone(f.conds), cond), args: append(slices.Clone(f.args), args...)}
}

func (f filter) String() string {
	if len(f.conds) == 0 {
		return "1"
	}
	return strings.Join(f.conds, " AND ")
}

// window returns the filter of app and since on a table whose row time is
// timeExpr. Only columns equal in every copy of a row are used, so the
// result is the same whether ClickHouse filters before or after FINAL.
func window(app string, since time.Time, timeExpr string) filter {
	var f filter
	if app != "" {
		f = f.and("app = ?", app)
	}
	if !since.IsZero() {
		// Clamped into DateTime's range: ClickHouse would wrap it around.
		since = since.UTC()
		if since.Before(minTime) {
			since = minTime
		}
		if since.After(maxTime) {
			since = maxTime
		}
		// date first: it prunes partitions and the primary key.
		f = f.and("date >= toDate(?)", since.Format(time.DateOnly))
		f = f.and(timeExpr+" >= toDateTime(?)", since.Unix())
	}
	return f
}

// Summarize reads the summary of app ("" for all apps) since since (zero for
// all time) from the analytics tables.
func Summarize(ctx context.Context, conn driver.Conn, app string, since time.Time) (*Summary, error) {
	s := &Summary{App: app, Since: since, EventsByKind: map[string]uint64{}, SendsByState: map[string]uint64{}}
	events := window(app, since, "time")
	statuses := window(app, since, "time")
	// requested is the same in every outcome of one dispatch; time is the
	// fallback for outcomes that do not know it.
	messages := window(app, since, "if(toUInt32(requested) = 0, time, requested)")

	err := queryEach(ctx, conn, "counting events",
		"SELECT kind, count() FROM events FINAL WHERE "+events.String()+" GROUP BY kind", events.args,
		func(scan func(...any) error) error {
			var kind string
			var n uint64
			if err := scan(&kind, &n); err != nil {
				return err
			}
			s.EventsByKind[kind] = n
			s.Events += n
			return nil
		})
	if err != nil {
		return nil, err
	}
	s.Inbound = s.EventsByKind[string(schemas.KindInbound)]

	inbound := events.and("kind = 'inbound'")
	err = queryEach(ctx, conn, "counting inbound keywords",
		`SELECT lowerUTF8(extract(inbound_text, '^\\s*(\\S+)')) AS keyword, count() AS n
		FROM events FINAL WHERE `+inbound.String()+`
		GROUP BY keyword ORDER BY n DESC, keyword LIMIT `+fmt.Sprint(topN), inbound.args,
		func(scan func(...any) error) error {
			var c Count
			if err := scan(&c.Name, &c.N); err != nil {
				return err
			}
			s.Keywords = append(s.Keywords, c)
			return nil
		})
	if err != nil {
		return nil, err
	}

	err = queryEach(ctx, conn, "counting sends",
		"SELECT state, count() FROM messages FINAL WHERE "+messages.String()+" GROUP BY state", messages.args,
		func(scan func(...any) error) error {
			var state string
			var n uint64
			if err := scan(&state, &n); err != nil {
				return err
			}
			s.SendsByState[state] = n
			s.Sends += n
			return nil
		})
	if err != nil {
		return nil, err
	}

	err = queryEach(ctx, conn, "counting sends by template",
		`SELECT template, channel, count() AS n, countIf(state = 'accepted'), countIf(state = 'failed')
		FROM messages FINAL WHERE `+messages.String()+`
		GROUP BY template, channel ORDER BY n DESC, template, channel`, messages.args,
		func(scan func(...any) error) error {
			var t TemplateSends
			if err := scan(&t.Template, &t.Channel, &t.Sends, &t.Accepted, &t.Failed); err != nil {
				return err
			}
			if len(s.Templates) < topN {
				s.Templates = append(s.Templates, t)
				return nil
			}
			s.OtherTemplates.Sends += t.Sends
			s.OtherTemplates.Accepted += t.Accepted
			s.OtherTemplates.Failed += t.Failed
			s.OtherTemplateCount++
			return nil
		})
	if err != nil {
		return nil, err
	}

	err = queryEach(ctx, conn, "counting statuses",
		"SELECT status, count() FROM statuses FINAL WHERE "+statuses.String()+" GROUP BY status", statuses.args,
		func(scan func(...any) error) error {
			var status string
			var n uint64
			if err := scan(&status, &n); err != nil {
				return err
			}
			s.Statuses += n
			switch status {
			case "sent":
				s.Sent = n
			case "delivered":
				s.Delivered = n
			case "read":
				s.Read = n
			case "failed":
				s.FailedStatuses = n
			}
			return nil
		})
	if err != nil {
		return nil, err
	}

	var apps uint64
	err = queryEach(ctx, conn, "counting apps",
		"SELECT uniqExact(app) FROM (SELECT app FROM events WHERE "+events.String()+
			" UNION ALL SELECT app FROM messages WHERE "+messages.String()+")",
		append(slices.Clone(events.args), messages.args...),
		func(scan func(...any) error) error { return scan(&apps) })
	if err != nil {
		return nil, err
	}
	s.Apps = int(apps)
	return s, nil
}

// queryEach runs query and calls row for each result row.
func queryEach(ctx context.Context, conn driver.Conn, what, query string, args []any, row func(scan func(...any) error) error) error {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Known kinds, states and statuses in report order; others follow sorted.
var (
	kindOrder  = []string{"register", "unregister", "tags", "event", "inbound", "status"}
	stateOrder = []string{"accepted", "failed", "expired", "in_doubt"}
)

// WriteText writes the summary as a short fixed-width text report.
func (s *Summary) WriteText(w io.Writer) error {
	p := &printer{w: w}
	scope := "all apps"
	if s.App != "" {
		scope = "app " + s.App
	}
	window := "all time"
	if !s.Since.IsZero() {
		window = "since " + s.Since.UTC().Format("2006-01-02 15:04 MST")
	}
	p.f("Herald analytics: %s, %s\n", clip(scope, 80), window)
	p.line("apps", uint64(s.Apps), "")

	p.f("\n")
	p.line("events", s.Events, "")
	for _, k := range ordered(s.EventsByKind, kindOrder) {
		p.line("  "+k, s.EventsByKind[k], "")
	}

	p.f("\n")
	p.line("inbound messages", s.Inbound, "")
	if len(s.Keywords) > 0 {
		p.f("  top first words\n")
	}
	for _, k := range s.Keywords {
		name := k.Name
		if name == "" {
			name = "(no text)"
		}
		p.line("    "+name, k.N, "")
	}

	p.f("\n")
	p.line("sends", s.Sends, "")
	for _, st := range ordered(s.SendsByState, stateOrder) {
		p.line("  "+st, s.SendsByState[st], "")
	}
	if len(s.Templates) > 0 {
		p.f("  %-24s %9s %9s %9s\n", "by template", "sends", "accepted", "failed")
	}
	for _, t := range s.Templates {
		name := t.Template
		switch {
		case name == "" && (t.Channel == "whatsapp" || t.Channel == ""):
			name = "(free-form text)"
		case name == "":
			name = "(" + t.Channel + ")"
		case t.Channel != "whatsapp" && t.Channel != "":
			name += " (" + t.Channel + ")"
		}
		p.f("    %-22s %9d %9d %9d\n", clip(name, 22), t.Sends, t.Accepted, t.Failed)
	}
	if o := s.OtherTemplates; s.OtherTemplateCount > 0 {
		p.f("    %-22s %9d %9d %9d\n", clip(fmt.Sprintf("(%d others)", s.OtherTemplateCount), 22), o.Sends, o.Accepted, o.Failed)
	}

	p.f("\n")
	p.line("statuses", s.Statuses, "")
	p.line("  sent", s.Sent, "")
	p.line("  delivered", s.Delivered, rate(s.Delivered, s.Sent, "of sent"))
	p.line("  read", s.Read, rate(s.Read, s.Delivered, "of delivered"))
	p.line("  failed", s.FailedStatuses, "")
	return p.err
}

// printer writes formatted lines and keeps the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// line writes "label  number  note" with the number right-aligned.
func (p *printer) line(label string, n uint64, note string) {
	if note != "" {
		note = "  " + note
	}
	p.f("%-26s %9d%s\n", clip(label, 26), n, note)
}

func rate(a, b uint64, of string) string {
	if b == 0 {
		return fmt.Sprintf("%6s %s", "n/a", of)
	}
	return fmt.Sprintf("%5.1f%% %s", 100*ratio(a, b), of)
}

// ordered returns the keys of m with a non-zero count: those in first in
// that order, then the others sorted.
func ordered(m map[string]uint64, first []string) []string {
	var out, rest []string
	for _, k := range first {
		if m[k] > 0 {
			out = append(out, k)
		}
	}
	for k, n := range m {
		if n > 0 && !slices.Contains(first, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// clip makes s safe for a terminal (control characters, which inbound text
// from anyone may hold, become '?') and shortens it to n runes, marking the
// cut with "~".
func clip(s string, n int) string {
	r := []rune(s)
	for i, c := range r {
		if unicode.IsControl(c) || c == utf8.RuneError {
			r[i] = '?'
		}
	}
	if len(r) > n {
		r = append(r[:n-1], '~')
	}
	return string(r)
}

// ReportQueries are the queries `herald report -app` prints, in order.
var ReportQueries = []string{
	"funnel", "current_states", "read_rate_by_template", "failures_by_error_code",
	"cost_by_category_country", "cost_by_source", "keyword_triggers", "inbound_keywords",
	"inbound_by_hour", "time_to_read", "opt_out_rate", "journey_conversion", "journey_steps", "segment_size",
}

// Report is the result of the report queries for one set of parameters.
type Report struct {
	Params  Params
	Results []*Result
}

// RunReport runs the named queries (ReportQueries when names is empty)
// with p.
func RunReport(ctx context.Context, conn driver.Conn, p Params, names []string) (*Report, error) {
	if len(names) == 0 {
		names = ReportQueries
	}
	r := &Report{Params: p}
	for _, name := range names {
		q, ok := QueryByName(name)
		if !ok {
			return nil, fmt.Errorf("report: unknown query %q", name)
		}
		res, err := q.Run(ctx, conn, p)
		if err != nil {
			return nil, err
		}
		r.Results = append(r.Results, res)
	}
	return r, nil
}

// scope describes the report's parameters in one line.
func (r *Report) scope() string {
	p := r.Params
	parts := []string{"app " + p.App}
	switch {
	case p.SourceKind != "" && p.SourceName != "":
		parts = append(parts, p.SourceKind+" "+p.SourceName)
	case p.SourceKind != "":
		parts = append(parts, "source "+p.SourceKind)
	}
	switch {
	case p.From.IsZero() && p.To.IsZero():
		parts = append(parts, "all days")
	default:
		parts = append(parts, "days "+dateArg(p.From, minTime)+" to "+dateArg(p.To, maxTime))
	}
	return strings.Join(parts, ", ")
}

// WriteText writes each result as a titled fixed-width table: text columns
// left-aligned, numbers right-aligned, every value made safe for a
// terminal and cut at 40 characters.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	p.f("Herald analytics report: %s\n", clip(r.scope(), 100))
	for _, res := range r.Results {
		p.f("\n%s\n", res.Title)
		if len(res.Rows) == 0 {
			p.f("  (no rows)\n")
			continue
		}
		cells := make([][]string, len(res.Rows))
		widths := make([]int, len(res.Columns))
		numeric := make([]bool, len(res.Columns))
		for i, c := range res.Columns {
			widths[i] = utf8.RuneCountInString(c)
			numeric[i] = true
		}
		for i, row := range res.Rows {
			cells[i] = make([]string, len(row))
			for j, v := range row {
				s := clip(cell(v), 40)
				if _, isString := v.(string); isString {
					numeric[j] = false
				}
				if _, isTime := v.(time.Time); isTime {
					numeric[j] = false
				}
				cells[i][j] = s
				widths[j] = max(widths[j], utf8.RuneCountInString(s))
			}
		}
		line := func(vals []string) {
			var sb strings.Builder
			sb.WriteString(" ")
			for j, v := range vals {
				pad := strings.Repeat(" ", widths[j]-utf8.RuneCountInString(v))
				sb.WriteString(" ")
				if numeric[j] {
					sb.WriteString(pad + v)
				} else {
					sb.WriteString(v + pad)
				}
			}
			p.f("%s\n", strings.TrimRight(sb.String(), " "))
		}
		line(res.Columns)
		for _, c := range cells {
			line(c)
		}
	}
	return p.err
}

// WriteJSON writes the report as one JSON object: the parameters and, in
// order, each result's query, title, columns and rows (dates as
// "YYYY-MM-DD", times as RFC 3339).
func (r *Report) WriteJSON(w io.Writer) error {
	type result struct {
		Query   string   `json:"query"`
		Title   string   `json:"title"`
		Columns []string `json:"columns"`
		Rows    [][]any  `json:"rows"`
	}
	out := struct {
		App        string   `json:"app"`
		From       string   `json:"from,omitempty"`
		To         string   `json:"to,omitempty"`
		SourceKind string   `json:"source_kind,omitempty"`
		SourceName string   `json:"source_name,omitempty"`
		Journey    string   `json:"journey,omitempty"`
		Results    []result `json:"results"`
	}{App: r.Params.App, SourceKind: r.Params.SourceKind, SourceName: r.Params.SourceName, Journey: r.Params.Journey}
	if !r.Params.From.IsZero() {
		out.From = dateArg(r.Params.From, minTime)
	}
	if !r.Params.To.IsZero() {
		out.To = dateArg(r.Params.To, maxTime)
	}
	for _, res := range r.Results {
		rows := make([][]any, len(res.Rows))
		for i, row := range res.Rows {
			rows[i] = make([]any, len(row))
			for j, v := range row {
				if t, ok := v.(time.Time); ok {
					v = cell(t)
				}
				rows[i][j] = v
			}
		}
		out.Results = append(out.Results, result{Query: res.Query, Title: res.Title, Columns: res.Columns, Rows: rows})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// cell formats one value of a result.
func cell(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case time.Time:
		if v.Hour() == 0 && v.Minute() == 0 && v.Second() == 0 {
			return v.Format(time.DateOnly)
		}
		return v.Format(time.RFC3339)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}
