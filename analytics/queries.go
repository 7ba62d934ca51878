package analytics

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/heraldhq/herald/schemas"
)

// Query is one of the analyst queries documented in docs/ANALYTICS.md
// (which holds each SQL verbatim; a test checks it). Its SQL has ?
// placeholders, bound in order to the Params fields Args names.
//
// Every query is exact: rows stored twice (after a redelivery) count once,
// either because the query sums the fact counter's counts (each dispatch's
// state written once, see counter.go), reads a ReplacingMergeTree with
// FINAL, counts distinct ids (uniqExact), or merges the uniqExact states of
// a daily aggregate.
type Query struct {
	// Name identifies the query (report sections, -json keys, the doc's
	// headings).
	Name string
	// Title is a one-line description.
	Title string
	// Doc says what the numbers mean, for the doc.
	Doc string
	// SQL is the query, with ? placeholders.
	SQL string
	// Args names the parameter of each ?, in order: app, from, to (dates),
	// source_kind_from, source_kind_to, source_name_from, source_name_to,
	// journey_from, journey_to (ranges: the value twice, or "" and "\xff"
	// for any), sourced ("1" when a source is given, else "").
	Args []string
}

// Params are the parameters of the queries.
type Params struct {
	// App is the app, required.
	App string
	// From and To bound the days (UTC, both included) of the rows a query
	// reads: the day of the request for messages, of the event or status
	// otherwise. Zero means unbounded.
	From, To time.Time
	// SourceKind and SourceName restrict message queries to one source
	// (campaign, journey, keyword, api); "" means every source.
	SourceKind, SourceName string
	// Journey restricts the journey queries to one journey; "" means all.
	Journey string
}

// Bind returns the query's arguments for p.
func (q Query) Bind(p Params) ([]any, error) {
	args := make([]any, len(q.Args))
	for i, a := range q.Args {
		switch a {
		case "app":
			args[i] = p.App
		case "from":
			args[i] = dateArg(p.From, minTime)
		case "to":
			args[i] = dateArg(p.To, maxTime)
		case "source_kind_from":
			args[i], _ = rangeOf(p.SourceKind)
		case "source_kind_to":
			_, args[i] = rangeOf(p.SourceKind)
		case "source_name_from":
			args[i], _ = rangeOf(p.SourceName)
		case "source_name_to":
			_, args[i] = rangeOf(p.SourceName)
		case "sourced":
			if p.SourceKind != "" || p.SourceName != "" {
				args[i] = "1"
			} else {
				args[i] = ""
			}
		case "journey_from":
			args[i], _ = rangeOf(p.Journey)
		case "journey_to":
			_, args[i] = rangeOf(p.Journey)
		default:
			return nil, fmt.Errorf("query %s: unknown parameter %q", q.Name, a)
		}
	}
	return args, nil
}

// dateArg formats t as a date for toDate(?), clamped into Date's range;
// the zero time gives def.
func dateArg(t, def time.Time) string {
	if t.IsZero() {
		t = def
	}
	t = t.UTC()
	if t.Before(minTime) {
		t = minTime
	}
	if t.After(maxTime) {
		t = maxTime
	}
	return t.Format(time.DateOnly)
}

// source is the filter of message queries on a source: ranges, because
// ClickHouse 18.16 does not use the sorting key for "(? = empty OR col =
// ?)" (a campaign's facts: 2.4 s that way, 0.09 s with the range). Bind
// sets each range to the value, or to everything (the empty string to
// "\xff", above any UTF-8 string) when the value is empty.
const source = `source_kind BETWEEN ? AND ? AND source_name BETWEEN ? AND ?`

var sourceArgs = []string{"source_kind_from", "source_kind_to", "source_name_from", "source_name_to"}

// journeyArgs bind "journey BETWEEN ? AND ?", the journey filter as a range
// for the reason given at source.
var journeyArgs = []string{"journey_from", "journey_to"}

// anyHigh is above every valid UTF-8 string: the upper end of an
// unrestricted range.
const anyHigh = "\xff"

// rangeOf returns the range matching v, or every string when v is "".
func rangeOf(v string) (from, to string) {
	if v == "" {
		return "", anyHigh
	}
	return v, v
}

// funnelDays is the filter of the fact counts (fact_days, fact_sources,
// state_moves) on the request day.
const funnelDays = `app = ? AND day BETWEEN toDate(?) AND toDate(?)`

// either selects cols of the rows matching where from bySource, the
// aggregate sorted by source first, when the query names a source
// (Params.SourceKind or SourceName), else from byDay, the same aggregate
// sorted by day first: each serves its filter with few granules (one
// campaign in bySource, one day in byDay), and a branch whose constant
// condition is false reads nothing. where's parameters come twice, each
// time followed by "sourced" (eitherArgs).
func either(cols, bySource, byDay, where string) string {
	return `(
        SELECT ` + cols + ` FROM ` + bySource + ` WHERE ` + where + ` AND ? != ''
        UNION ALL
        SELECT ` + cols + ` FROM ` + byDay + ` WHERE ` + where + ` AND ? = ''
    )`
}

// eitherArgs are the parameters of either with the day and source filter.
var eitherArgs = args(dayArgs, sourceArgs, []string{"sourced"}, dayArgs, sourceArgs, []string{"sourced"})

var dayArgs = []string{"app", "from", "to"}

// args concatenates parameter lists.
func args(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// dayWhere is the filter of the event aggregates on app and days, and
// journeyWhere that of the journey aggregates on app, days and journey;
// their parameters are dayArgs and journeyWhereArgs.
const (
	dayWhere     = `app = ? AND day BETWEEN toDate(?) AND toDate(?)`
	journeyWhere = dayWhere + ` AND journey BETWEEN ? AND ?`
)

var journeyWhereArgs = args(dayArgs, journeyArgs)

// settledCounts is a SELECT of the key columns of t but app, and events,
// the events of each key matching where (whose parameters come four times),
// each line indented by indent. The count of a key is its settled count
// when that is fresh (a settled row whose rows equals the key's current
// sumMerge(rows)), else the merge of its states; only the states of the
// dirty keys are read (the key tuple IN the dirty keys: ClickHouse skips
// the other granules by the sorting key). The dirty keys are found once,
// in the IN set, and each key's count is taken from the merge when it has
// one, else from its latest settled row: a key that was fresh when the set
// was built has a settled row whose count is exact, and a later settle
// only writes the count of later rows. Keys the settler never saw are
// dirty, so a settler that never ran leaves the live merge.
func settledCounts(t settledTable, where, indent string) string {
	keys := strings.Join(t.keys, ", ")
	cols := strings.Join(t.keys[1:], ", ")
	sql := `SELECT ` + cols + `, argMax(n, live) AS events
FROM
(
    SELECT ` + cols + `, argMax(events, rows) AS n, toUInt8(0) AS live
    FROM ` + t.name + `
    WHERE ` + where + `
    GROUP BY ` + keys + `
    UNION ALL
    SELECT ` + cols + `, uniqExactMerge(events) AS n, toUInt8(1) AS live
    FROM ` + t.source + `
    WHERE ` + where + ` AND (` + keys + `) IN
    (
        ` + strings.ReplaceAll(dirtyKeys(t, where), "\n", "\n        ") + `
    )
    GROUP BY ` + keys + `
)
GROUP BY ` + cols
	return indent + strings.ReplaceAll(sql, "\n", "\n"+indent)
}

// Journey events are the segmenter's (schemas.EventJourneyEntered,
// EventJourneyStep, EventJourneyExited), with the attributes journey,
// version, step and from (steps), reason (exits: completed, goal,
// archived, replaced). A user converted when they exited with reason goal.
// The view journey_days_mv (migrations/0014, 0007 before) selects the
// three by name.
const journeyGoal = "goal"

// OptOutKeywords are the first words of inbound messages that count as a
// marketing opt-out in the opt_out_rate query: the segmenter's default
// keyword rules (STOP, UNSUBSCRIBE), lowercased.
var OptOutKeywords = []string{"stop", "unsubscribe"}

// Queries are the documented analyst queries, in the doc's order.
var Queries = []Query{
	{
		Name:  "funnel",
		Title: "Delivery funnel per campaign (requested → sent → delivered → read → replied)",
		Doc: "Dispatches by source (campaign, journey, keyword, api) requested in the days, and how many " +
			"reached each state: sent (accepted by Meta, or any status), delivered (a delivered or read " +
			"status: Meta may skip delivered), read, and replied (an inbound message whose context is the " +
			"message), from the daily fact counts fact_sources (one source) or fact_days.",
		SQL: `SELECT source_kind, source_name,
    sumIf(n, state = 'requested') AS requested,
    sumIf(n, state = 'sent') AS sent,
    sumIf(n, state = 'delivered') AS delivered,
    sumIf(n, state = 'read') AS read,
    sumIf(n, state = 'replied') AS replied
FROM ` + either("source_kind, source_name, state, n", "fact_sources", "fact_days",
			funnelDays+` AND `+source+` AND state IN ('requested', 'sent', 'delivered', 'read', 'replied')`) + `
GROUP BY source_kind, source_name
ORDER BY requested DESC, source_kind, source_name`,
		Args: eitherArgs,
	},
	{
		Name:  "read_rate_by_template",
		Title: "Read rate by template",
		Doc: "Template messages sent (accepted by Meta or a sent status) per template, how many were " +
			"delivered and read, and read / delivered.",
		SQL: `SELECT template, category, sent, delivered, read,
    round(if(delivered = 0, 0, read / delivered), 4) AS read_rate
FROM
(
    SELECT template, category,
        sumIf(n, state = 'sent') AS sent,
        sumIf(n, state = 'delivered') AS delivered,
        sumIf(n, state = 'read') AS read
    FROM ` + either("template, category, state, n", "fact_sources", "fact_days",
			funnelDays+` AND `+source+` AND template != '' AND state IN ('sent', 'delivered', 'read')`) + `
    GROUP BY template, category
)
WHERE sent > 0
ORDER BY sent DESC, template, category`,
		Args: eitherArgs,
	},
	{
		Name:  "cost_by_category_country",
		Title: "Cost by pricing category and country per day",
		Doc: "Billable WhatsApp messages of Herald's dispatches by the day of the request, Meta's pricing " +
			"category and the recipient's country: how many, how many had no known rate, and their " +
			"estimated cost in millionths of the currency (messages in the service window are priced 0). " +
			"The exact per-message table is costs (one row per wamid, by the day Meta charged it).",
		SQL: `SELECT day, detail AS pricing_category, country, currency,
    sum(n) AS billable,
    sumIf(n, amount = -1) AS unpriced,
    sumIf(n * amount, amount > 0) AS cost_micros
FROM ` + either("day, detail, country, currency, amount, n", "fact_sources", "fact_days",
			funnelDays+` AND `+source+` AND state = 'billed'`) + `
GROUP BY day, pricing_category, country, currency
ORDER BY day, pricing_category, country, currency`,
		Args: eitherArgs,
	},
	{
		Name:  "cost_by_source",
		Title: "Cost by campaign or journey and template",
		Doc: "The billable messages of Herald's dispatches and their estimated cost by source and template, " +
			"over the days of the requests.",
		SQL: `SELECT source_kind, source_name, template,
    sum(n) AS billable,
    sumIf(n, amount = -1) AS unpriced,
    sumIf(n * amount, amount > 0) AS cost_micros
FROM ` + either("source_kind, source_name, template, amount, n", "fact_sources", "fact_days",
			funnelDays+` AND `+source+` AND state = 'billed'`) + `
GROUP BY source_kind, source_name, template
ORDER BY cost_micros DESC, billable DESC, source_kind, source_name, template`,
		Args: eitherArgs,
	},
	{
		Name:  "failures_by_error_code",
		Title: "Failures by error code",
		Doc: "Failed messages by error code: refused when sent (origin dispatcher: Meta's Graph error " +
			"code, or a Herald code below 0 for refusals before the call) or reported failed by a status " +
			"webhook (origin meta).",
		SQL: `SELECT error_code, origin, sum(n) AS failures
FROM
(
    SELECT error_code, 'dispatcher' AS origin, uniqExactMerge(dispatches) AS n
    FROM send_failures_daily
    WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?) AND ` + source + `
    GROUP BY error_code
    UNION ALL
    SELECT error_code, 'meta' AS origin, uniqExactMerge(messages) AS n
    FROM status_failures_daily
    WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?)
    GROUP BY error_code
)
GROUP BY error_code, origin
ORDER BY failures DESC, error_code, origin`,
		Args: args(dayArgs, sourceArgs, dayArgs),
	},
	{
		Name:  "keyword_triggers",
		Title: "Keyword-trigger counts",
		Doc: "Replies sent by each keyword rule (dispatches of source keyword, whatever their state), " +
			"from the daily aggregate.",
		SQL: `SELECT source_name AS rule, uniqExactMerge(dispatches) AS replies
FROM sends_daily
WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?) AND source_kind = 'keyword'
GROUP BY rule
ORDER BY replies DESC, rule`,
		Args: dayArgs,
	},
	{
		Name:  "inbound_keywords",
		Title: "Inbound messages by first word",
		Doc:   "Inbound messages by their first word, lowercased (\"\" for messages without text), from the hourly aggregate.",
		SQL: `SELECT keyword, uniqExactMerge(messages) AS messages
FROM inbound_hourly
WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?)
GROUP BY keyword
ORDER BY messages DESC, keyword
LIMIT 20`,
		Args: dayArgs,
	},
	{
		Name:  "journey_steps",
		Title: "Journey branch counts",
		Doc: "Journey events by journey, event, step, the step or branch it came from (from: timeout, " +
			"event, an A/B branch, yes/no) and exit reason: events and distinct users (user id, else hwid), " +
			"from the daily aggregate journey_days: the events of each day from its settled counts where " +
			"they are fresh, else from its states (see Settled counts), the users from its states. The segmenter writes " +
			schemas.EventJourneyEntered + ", " + schemas.EventJourneyStep + " and " + schemas.EventJourneyExited +
			" as users move through journeys.",
		SQL: `SELECT journey, name, step, from_step, reason, sum(events) AS events, sum(users) AS users
FROM
(
    SELECT journey, name, step, from_step, reason, events, toUInt64(0) AS users
    FROM
    (
` + settledCounts(settledTables[1], journeyWhere, "        ") + `
    )
    UNION ALL
    SELECT journey, name, step, from_step, reason, toUInt64(0) AS events, uniqExactMerge(users) AS users
    FROM journey_days
    WHERE ` + journeyWhere + `
    GROUP BY journey, name, step, from_step, reason
)
GROUP BY journey, name, step, from_step, reason
ORDER BY journey, name, step, from_step, reason`,
		Args: args(journeyWhereArgs, journeyWhereArgs, journeyWhereArgs, journeyWhereArgs, journeyWhereArgs),
	},
	{
		Name:  "journey_conversion",
		Title: "Journey conversion",
		Doc: "Distinct users who entered each journey, who reached its conversion goal (exited with " +
			"reason goal), and converted / entered, from the daily aggregate journey_days.",
		SQL: `SELECT journey,
    uniqExactMergeIf(users, name = '` + schemas.EventJourneyEntered + `') AS entered,
    uniqExactMergeIf(users, name = '` + schemas.EventJourneyExited + `' AND reason = '` + journeyGoal + `') AS converted,
    round(if(entered = 0, 0, converted / entered), 4) AS conversion_rate
FROM journey_days
WHERE ` + journeyWhere + `
    AND name IN ('` + schemas.EventJourneyEntered + `', '` + schemas.EventJourneyExited + `')
GROUP BY journey
ORDER BY journey`,
		Args: args(dayArgs, journeyArgs),
	},
	{
		Name:  "time_to_read",
		Title: "Time-to-read distribution",
		Doc:   "Messages read, by the time from the request's creation to the read status, in buckets.",
		SQL: `SELECT detail AS bucket, sum(n) AS messages
FROM ` + either("detail, n", "fact_sources", "fact_days", funnelDays+` AND `+source+` AND state = 'read'`) + `
GROUP BY bucket
ORDER BY indexOf(['< 1 min', '1-5 min', '5-60 min', '1-6 h', '6-24 h', '>= 24 h'], bucket)`,
		Args: eitherArgs,
	},
	{
		Name:  "opt_out_rate",
		Title: "Opt-out rate",
		Doc: "Distinct users who sent an opt-out keyword (STOP, UNSUBSCRIBE) in the days, distinct " +
			"recipients of the MARKETING messages the dispatcher handled (requested in the days, from the daily " +
			"aggregate marketing_recipients_daily), their " +
			"ratio, and the dispatches that failed because Meta refused them as the user opted out of marketing " +
			"(131050; from the aggregate send_failures_daily).",
		// Three one-row subqueries joined, not scalar subqueries: 18.16
		// runs a scalar subquery twice (once to analyse the query), which
		// doubled the marketing recipients' merge (1.1 s against 0.55 s
		// over 30 days of 10,000,000 messages).
		SQL: `SELECT opted_out, marketing_recipients,
    round(if(marketing_recipients = 0, 0, opted_out / marketing_recipients), 4) AS opt_out_rate,
    refused_131050
FROM
(
    SELECT * FROM
    (
        SELECT uniqExact(from_number) AS opted_out FROM inbound
        WHERE app = ? AND date BETWEEN toDate(?) AND toDate(?) AND keyword IN ('` + strings.Join(OptOutKeywords, "', '") + `')
    )
    CROSS JOIN
    (
        SELECT uniqExactMerge(recipients) AS marketing_recipients FROM marketing_recipients_daily
        WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?)
    )
)
CROSS JOIN
(
    SELECT uniqExactMerge(dispatches) AS refused_131050 FROM send_failures_daily
    WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?) AND error_code = 131050
)`,
		Args: args(dayArgs, dayArgs, dayArgs),
	},
	{
		Name:  "inbound_by_hour",
		Title: "Inbound volume by hour of day (UTC)",
		Doc:   "Inbound messages per hour of the day (UTC) over the days, from the hourly aggregate.",
		SQL: `SELECT hour, uniqExactMerge(messages) AS messages
FROM inbound_hourly
WHERE app = ? AND day BETWEEN toDate(?) AND toDate(?)
GROUP BY hour
ORDER BY hour`,
		Args: dayArgs,
	},
	{
		Name:  "segment_size",
		Title: "Segment size over time",
		Doc: "Per saved segment and day: users who entered and exited (PW_SegmentEntered / PW_SegmentExited " +
			"events of the segmenter) and the size at the end of the day, counted from the segment's first " +
			"event (so the size is right whatever the first day shown), from the daily aggregate segment_daily.",
		SQL: `SELECT segment, day, entered, exited, size
FROM
(
    SELECT segment,
        arraySort(groupArray((day, entered, exited))) AS days,
        arrayCumSum(arrayMap(d -> toInt64(tupleElement(d, 2)) - toInt64(tupleElement(d, 3)), days)) AS sizes
    FROM
    (
        SELECT segment, day,
            uniqExactMergeIf(events, name = 'PW_SegmentEntered') AS entered,
            uniqExactMergeIf(events, name = 'PW_SegmentExited') AS exited
        FROM segment_daily
        WHERE app = ? AND day <= toDate(?)
        GROUP BY segment, day
    )
    GROUP BY segment
)
ARRAY JOIN
    arrayMap(d -> tupleElement(d, 1), days) AS day,
    arrayMap(d -> tupleElement(d, 2), days) AS entered,
    arrayMap(d -> tupleElement(d, 3), days) AS exited,
    sizes AS size
WHERE day >= toDate(?)
ORDER BY segment, day`,
		Args: []string{"app", "to", "from"},
	},
	{
		Name:  "sends_by_day",
		Title: "Sends per day by source, template, category, country and state",
		Doc: "Dispatches per request day by the dispatcher's outcomes (accepted, failed, expired, " +
			"in_doubt), from the outcome facts of the daily fact counts fact_sources (one source) or fact_days; a " +
			"dispatch counts once in each outcome it had.",
		SQL: `SELECT day, source_kind, source_name, template, category, country, detail AS state,
    sum(n) AS dispatches
FROM ` + either("day, source_kind, source_name, template, category, country, detail, n", "fact_sources", "fact_days",
			funnelDays+` AND `+source+` AND state = 'outcome'`) + `
GROUP BY day, source_kind, source_name, template, category, country, state
ORDER BY day, source_kind, source_name, template, category, country, state`,
		Args: eitherArgs,
	},
	{
		Name:  "current_states",
		Title: "Messages by current state",
		Doc: "The dispatches requested in the days by their current state (the highest-ranked state " +
			"reached: requested < in_doubt < expired < sent < failed < delivered < read), from state_moves, " +
			"where the fact counter adds 1 to a dispatch's new highest state and takes 1 from the one it " +
			"left; message_state FINAL has the same per dispatch.",
		SQL: `SELECT arrayElement(['requested', 'in_doubt', 'expired', 'sent', 'failed', 'delivered', 'read'], rank) AS state,
    toUInt64(sum(n)) AS messages
FROM state_moves
WHERE ` + funnelDays + ` AND ` + source + `
GROUP BY rank, state
HAVING sum(n) > 0
ORDER BY rank`,
		Args: args(dayArgs, sourceArgs),
	},
	{
		Name:  "events_by_name",
		Title: "Events per day by kind and name",
		Doc: "Events per day by kind and name, from the daily aggregate event_days: its settled counts where " +
			"they are fresh, else its states (see Settled counts).",
		SQL: `SELECT day, kind, name, events
FROM
(
` + settledCounts(settledTables[0], dayWhere, "    ") + `
)
ORDER BY day, kind, name`,
		Args: args(dayArgs, dayArgs, dayArgs, dayArgs),
	},
}

// QueryByName returns the query named name.
func QueryByName(name string) (Query, bool) {
	for _, q := range Queries {
		if q.Name == name {
			return q, true
		}
	}
	return Query{}, false
}

// Result is what a query returned: its column names and its rows, each
// value a string, an integer (int64 or uint64), a float64 or a date
// (time.Time).
type Result struct {
	Query   string   `json:"query"`
	Title   string   `json:"title"`
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// Run runs q with p and returns all its rows.
func (q Query) Run(ctx context.Context, conn driver.Conn, p Params) (*Result, error) {
	if p.App == "" {
		return nil, fmt.Errorf("query %s: app is required", q.Name)
	}
	a, err := q.Bind(p)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, q.SQL, a...)
	if err != nil {
		return nil, fmt.Errorf("running query %s: %w", q.Name, err)
	}
	defer rows.Close()
	res := &Result{Query: q.Name, Title: q.Title, Columns: rows.Columns(), Rows: [][]any{}}
	types := rows.ColumnTypes()
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("reading query %s: %w", q.Name, err)
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			row[i] = plain(reflect.ValueOf(d).Elem().Interface())
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading query %s: %w", q.Name, err)
	}
	return res, nil
}

// plain widens a scanned value to string, int64, uint64, float64 or
// time.Time (UTC).
func plain(v any) any {
	switch v := v.(type) {
	case string, int64, uint64, float64:
		return v
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case uint8:
		return uint64(v)
	case uint16:
		return uint64(v)
	case uint32:
		return uint64(v)
	case float32:
		return float64(v)
	case bool:
		if v {
			return uint64(1)
		}
		return uint64(0)
	case time.Time:
		return v.UTC()
	default:
		return fmt.Sprint(v)
	}
}
