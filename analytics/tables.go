package analytics

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	chcol "github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// table is one ClickHouse table the sink writes: its name and its columns
// in insert order. Rows are sent column by column (clickhouse-go's
// column Append of a whole typed slice), which avoids the per-value
// reflection of row-wise Batch.Append; String columns are sized first
// (reserve).
type table[R any] struct {
	name string
	// src returns the index of a row's record in its batch.
	src  func(*R) int
	cols []column[R]
}

// column is one column of a table: its name and how the column of a slice
// of rows is appended to a batch (c is the batch's column, the same one as
// b.Column's).
type column[R any] struct {
	name string
	add  func(c chcol.Interface, rs []R) error
}

// col declares a column whose value of a row is get(row); V must be a Go
// type clickhouse-go appends to the column's ClickHouse type (string,
// uint8, uint16, int32, int64, uint64, time.Time, []string). The slice of
// values handed to clickhouse-go (which copies them into its own column)
// is reused between inserts, from a pool per column.
func col[R, V any](name string, get func(*R) V) column[R] {
	var pool sync.Pool
	return column[R]{name: name, add: func(c chcol.Interface, rs []R) error {
		p, _ := pool.Get().(*[]V)
		if p == nil {
			p = new([]V)
		}
		vs := slices.Grow((*p)[:0], len(rs))[:len(rs)]
		for i := range rs {
			vs[i] = get(&rs[i])
		}
		var err error
		if ss, ok := any(vs).([]string); ok {
			err = reserve(c, ss)
		}
		if err == nil {
			_, err = c.Append(vs)
		}
		clear(vs) // keep no strings of this batch alive
		*p = vs[:0]
		pool.Put(p)
		return err
	}}
}

func (t table[R]) insertQuery() string {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	return "INSERT INTO " + t.name + " (" + strings.Join(names, ", ") + ")"
}

// fill appends rs to b, column by column.
func (t table[R]) fill(b driver.Batch, rs []R) error {
	cols := b.Columns()
	if len(cols) != len(t.cols) {
		return fmt.Errorf("the insert has %d columns, want %d", len(cols), len(t.cols))
	}
	for i, c := range t.cols {
		if err := c.add(cols[i], rs); err != nil {
			return fmt.Errorf("column %s: %w", c.name, err)
		}
	}
	return nil
}

// reserveMin is the fewest values whose String column reserve sizes first.
const reserveMin = 256

// zeros is what reserve appends (a slice of it costs nothing), made on
// the first insert: a process that inserts nothing (another stage of the
// same binary) does not hold its 4 MiB.
var zeros = sync.OnceValue(func() string { return strings.Repeat("\x00", 4<<20) })

// noValues is a reader of String values that has none.
type noValues struct{}

func (noValues) Read([]byte) (int, error) { return 0, io.EOF }

// emptyReaders are proto.Readers of noValues (proto.NewReader buffers
// 128 KiB), one per concurrent insert.
var emptyReaders = sync.Pool{New: func() any { return proto.NewReader(noValues{}) }}

// reserve sizes the empty String column c for vs before they are appended.
// clickhouse-go appends a String column's values one by one, growing its
// bytes and its positions (16 bytes a value, more than most values) by
// append: for a column of 50,000 values that allocates about five times
// their size and copies each byte four times over (Go grows big slices by
// 1.25x), and the garbage collector runs as often. Here each is allocated
// once, with the column's exported methods: appending one value as long as
// all of vs sizes the bytes; Decode of len(vs) values from a reader that
// has none sizes the positions (ch-go's ColStr.DecodeColumn makes room for
// the rows it is told before it reads the first, and then fails); Reset
// after each empties the column and keeps its capacity (ch-go's
// ColStr.Reset says so). Only speed depends on those two behaviours, not
// what is inserted: that the column is empty again is checked, and
// TestReserveSameAsAppend compares the result with plain appends
// (TestReserveAllocatesOnce notices when a clickhouse-go upgrade makes
// reserve useless).
func reserve(c chcol.Interface, vs []string) error {
	if len(vs) < reserveMin || c.Rows() != 0 || c.Type() != "String" {
		return nil
	}
	n := 0
	for _, v := range vs {
		n += len(v)
	}
	z := zeros()
	if n > len(z) {
		z = strings.Repeat("\x00", n)
	}
	if _, err := c.Append([]string{z[:n]}); err != nil {
		return err
	}
	c.Reset()
	r := emptyReaders.Get().(*proto.Reader)
	_ = c.Decode(r, len(vs)) // fails at the first value: there is none
	emptyReaders.Put(r)
	c.Reset()
	if c.Rows() != 0 {
		return fmt.Errorf("reserving %d values: %d rows left after Reset", len(vs), c.Rows())
	}
	return nil
}

// Every row type carries src, the index in the polled batch of the record
// it came from, so that a row ClickHouse rejects dead-letters its record.

type eventRow struct {
	src                             int
	id, app, kind, name             string
	time                            time.Time
	timeMS                          uint16
	date, received                  time.Time
	hwid, userID, anonymousID       string
	deviceType                      uint8
	language, timezone, country     string
	attrKeys, attrValues            []string
	attributes, tags                string
	inFrom, inWAMID, inType, inText string
	inProfileName, phoneNumberID    string
}

var eventsTable = table[eventRow]{name: "events", src: func(r *eventRow) int { return r.src }, cols: []column[eventRow]{
	col("id", func(r *eventRow) string { return r.id }),
	col("app", func(r *eventRow) string { return r.app }),
	col("kind", func(r *eventRow) string { return r.kind }),
	col("name", func(r *eventRow) string { return r.name }),
	col("time", func(r *eventRow) time.Time { return r.time }),
	col("time_ms", func(r *eventRow) uint16 { return r.timeMS }),
	col("date", func(r *eventRow) time.Time { return r.date }),
	col("received", func(r *eventRow) time.Time { return r.received }),
	col("hwid", func(r *eventRow) string { return r.hwid }),
	col("user_id", func(r *eventRow) string { return r.userID }),
	col("anonymous_id", func(r *eventRow) string { return r.anonymousID }),
	col("device_type", func(r *eventRow) uint8 { return r.deviceType }),
	col("language", func(r *eventRow) string { return r.language }),
	col("timezone", func(r *eventRow) string { return r.timezone }),
	col("country", func(r *eventRow) string { return r.country }),
	col("attr_keys", func(r *eventRow) []string { return r.attrKeys }),
	col("attr_values", func(r *eventRow) []string { return r.attrValues }),
	col("attributes", func(r *eventRow) string { return r.attributes }),
	col("tags", func(r *eventRow) string { return r.tags }),
	col("inbound_from", func(r *eventRow) string { return r.inFrom }),
	col("inbound_wamid", func(r *eventRow) string { return r.inWAMID }),
	col("inbound_type", func(r *eventRow) string { return r.inType }),
	col("inbound_text", func(r *eventRow) string { return r.inText }),
	col("inbound_profile_name", func(r *eventRow) string { return r.inProfileName }),
	col("phone_number_id", func(r *eventRow) string { return r.phoneNumberID }),
}}

type statusRow struct {
	src                           int
	app, wamid, status, recipient string
	dispatchID, pricingCategory   string
	billable                      uint8
	errorCode                     int32
	errorTitle                    string
	time, date                    time.Time
	eventID                       string
	country, pricingType          string
	pricingModel                  string
}

var statusesTable = table[statusRow]{name: "statuses", src: func(r *statusRow) int { return r.src }, cols: []column[statusRow]{
	col("app", func(r *statusRow) string { return r.app }),
	col("wamid", func(r *statusRow) string { return r.wamid }),
	col("status", func(r *statusRow) string { return r.status }),
	col("recipient", func(r *statusRow) string { return r.recipient }),
	col("dispatch_id", func(r *statusRow) string { return r.dispatchID }),
	col("pricing_category", func(r *statusRow) string { return r.pricingCategory }),
	col("billable", func(r *statusRow) uint8 { return r.billable }),
	col("error_code", func(r *statusRow) int32 { return r.errorCode }),
	col("error_title", func(r *statusRow) string { return r.errorTitle }),
	col("time", func(r *statusRow) time.Time { return r.time }),
	col("date", func(r *statusRow) time.Time { return r.date }),
	col("event_id", func(r *statusRow) string { return r.eventID }),
	col("country", func(r *statusRow) string { return r.country }),
	col("pricing_type", func(r *statusRow) string { return r.pricingType }),
	col("pricing_model", func(r *statusRow) string { return r.pricingModel }),
}}

type messageRow struct {
	src                                                  int
	dispatchID, app, channel, sender, recipient, country string
	state, providerID, template, category                string
	sourceKind, sourceName, sourceEventID                string
	errorCode                                            int32
	errorMessage                                         string
	attempts                                             uint16
	requested, time, date                                time.Time
}

var messagesTable = table[messageRow]{name: "messages", src: func(r *messageRow) int { return r.src }, cols: []column[messageRow]{
	col("dispatch_id", func(r *messageRow) string { return r.dispatchID }),
	col("app", func(r *messageRow) string { return r.app }),
	col("channel", func(r *messageRow) string { return r.channel }),
	col("sender", func(r *messageRow) string { return r.sender }),
	col("recipient", func(r *messageRow) string { return r.recipient }),
	col("country", func(r *messageRow) string { return r.country }),
	col("state", func(r *messageRow) string { return r.state }),
	col("provider_id", func(r *messageRow) string { return r.providerID }),
	col("template", func(r *messageRow) string { return r.template }),
	col("category", func(r *messageRow) string { return r.category }),
	col("source_kind", func(r *messageRow) string { return r.sourceKind }),
	col("source_name", func(r *messageRow) string { return r.sourceName }),
	col("source_event_id", func(r *messageRow) string { return r.sourceEventID }),
	col("error_code", func(r *messageRow) int32 { return r.errorCode }),
	col("error_message", func(r *messageRow) string { return r.errorMessage }),
	col("attempts", func(r *messageRow) uint16 { return r.attempts }),
	col("requested", func(r *messageRow) time.Time { return r.requested }),
	col("time", func(r *messageRow) time.Time { return r.time }),
	col("date", func(r *messageRow) time.Time { return r.date }),
}}

type inboundRow struct {
	src                             int
	app, wamid, from, phoneNumberID string
	typ, text, payload, contextID   string
	profileName, keyword, country   string
	time                            time.Time
	timeMS                          uint16
	date                            time.Time
	eventID                         string
}

var inboundTable = table[inboundRow]{name: "inbound", src: func(r *inboundRow) int { return r.src }, cols: []column[inboundRow]{
	col("app", func(r *inboundRow) string { return r.app }),
	col("wamid", func(r *inboundRow) string { return r.wamid }),
	col("from_number", func(r *inboundRow) string { return r.from }),
	col("phone_number_id", func(r *inboundRow) string { return r.phoneNumberID }),
	col("type", func(r *inboundRow) string { return r.typ }),
	col("text", func(r *inboundRow) string { return r.text }),
	col("payload", func(r *inboundRow) string { return r.payload }),
	col("context_id", func(r *inboundRow) string { return r.contextID }),
	col("profile_name", func(r *inboundRow) string { return r.profileName }),
	col("keyword", func(r *inboundRow) string { return r.keyword }),
	col("country", func(r *inboundRow) string { return r.country }),
	col("time", func(r *inboundRow) time.Time { return r.time }),
	col("time_ms", func(r *inboundRow) uint16 { return r.timeMS }),
	col("date", func(r *inboundRow) time.Time { return r.date }),
	col("event_id", func(r *inboundRow) string { return r.eventID }),
}}

type stateRow struct {
	src                    int
	app, dispatchID, state string
	rank                   uint8
	version                uint64
	time                   time.Time
	wamid                  string
	errorCode              int32
	origin, eventID        string
}

var stateTable = table[stateRow]{name: "message_state", src: func(r *stateRow) int { return r.src }, cols: []column[stateRow]{
	col("app", func(r *stateRow) string { return r.app }),
	col("dispatch_id", func(r *stateRow) string { return r.dispatchID }),
	col("state", func(r *stateRow) string { return r.state }),
	col("rank", func(r *stateRow) uint8 { return r.rank }),
	col("version", func(r *stateRow) uint64 { return r.version }),
	col("time", func(r *stateRow) time.Time { return r.time }),
	col("wamid", func(r *stateRow) string { return r.wamid }),
	col("error_code", func(r *stateRow) int32 { return r.errorCode }),
	col("origin", func(r *stateRow) string { return r.origin }),
	col("event_id", func(r *stateRow) string { return r.eventID }),
}}

type costRow struct {
	src                          int
	app, wamid, dispatchID       string
	pricingCategory, pricingType string
	country                      string
	inWindow, priceKnown         uint8
	currency                     string
	priceMicros                  int64
	time, date                   time.Time
	version                      uint64
}

var costsTable = table[costRow]{name: "costs", src: func(r *costRow) int { return r.src }, cols: []column[costRow]{
	col("app", func(r *costRow) string { return r.app }),
	col("wamid", func(r *costRow) string { return r.wamid }),
	col("dispatch_id", func(r *costRow) string { return r.dispatchID }),
	col("pricing_category", func(r *costRow) string { return r.pricingCategory }),
	col("pricing_type", func(r *costRow) string { return r.pricingType }),
	col("country", func(r *costRow) string { return r.country }),
	col("in_window", func(r *costRow) uint8 { return r.inWindow }),
	col("price_known", func(r *costRow) uint8 { return r.priceKnown }),
	col("currency", func(r *costRow) string { return r.currency }),
	col("price_micros", func(r *costRow) int64 { return r.priceMicros }),
	col("time", func(r *costRow) time.Time { return r.time }),
	col("date", func(r *costRow) time.Time { return r.date }),
	col("version", func(r *costRow) uint64 { return r.version }),
}}

// tableNames are the tables the sink writes, in insert order.
var tableNames = []string{
	eventsTable.name, statusesTable.name, inboundTable.name, messagesTable.name, stateTable.name, costsTable.name,
	dispatchMetaTable.name, wamidsTable.name, factsTable.name, pendingTable.name,
}

type metaRow struct {
	src                              int
	app, dispatchID                  string
	day, due                         time.Time
	sourceKind, sourceName, template string
	category, country                string
}

var dispatchMetaTable = table[metaRow]{name: "dispatch_meta", src: func(r *metaRow) int { return r.src }, cols: []column[metaRow]{
	col("app", func(r *metaRow) string { return r.app }),
	col("dispatch_id", func(r *metaRow) string { return r.dispatchID }),
	col("day", func(r *metaRow) time.Time { return r.day }),
	col("due", func(r *metaRow) time.Time { return r.due }),
	col("source_kind", func(r *metaRow) string { return r.sourceKind }),
	col("source_name", func(r *metaRow) string { return r.sourceName }),
	col("template", func(r *metaRow) string { return r.template }),
	col("category", func(r *metaRow) string { return r.category }),
	col("country", func(r *metaRow) string { return r.country }),
}}

type wamidRow struct {
	src                    int
	app, wamid, dispatchID string
}

var wamidsTable = table[wamidRow]{name: "wamids", src: func(r *wamidRow) int { return r.src }, cols: []column[wamidRow]{
	col("app", func(r *wamidRow) string { return r.app }),
	col("wamid", func(r *wamidRow) string { return r.wamid }),
	col("dispatch_id", func(r *wamidRow) string { return r.dispatchID }),
}}

type factRow struct {
	src                              int
	app                              string
	day                              time.Time
	sourceKind, sourceName, template string
	category, country, dispatchID    string
	state, detail                    string
	amount                           int64
	currency                         string
	time                             time.Time
}

var factsTable = table[factRow]{name: "message_facts", src: func(r *factRow) int { return r.src }, cols: []column[factRow]{
	col("app", func(r *factRow) string { return r.app }),
	col("day", func(r *factRow) time.Time { return r.day }),
	col("source_kind", func(r *factRow) string { return r.sourceKind }),
	col("source_name", func(r *factRow) string { return r.sourceName }),
	col("template", func(r *factRow) string { return r.template }),
	col("category", func(r *factRow) string { return r.category }),
	col("country", func(r *factRow) string { return r.country }),
	col("dispatch_id", func(r *factRow) string { return r.dispatchID }),
	col("state", func(r *factRow) string { return r.state }),
	col("detail", func(r *factRow) string { return r.detail }),
	col("amount", func(r *factRow) int64 { return r.amount }),
	col("currency", func(r *factRow) string { return r.currency }),
	col("time", func(r *factRow) time.Time { return r.time }),
}}

type pendingRow struct {
	src                     int
	app, ref, state, detail string
	amount                  int64
	currency                string
	time                    time.Time
	resolved, version       uint8
}

var pendingTable = table[pendingRow]{name: "pending_facts", src: func(r *pendingRow) int { return r.src }, cols: []column[pendingRow]{
	col("app", func(r *pendingRow) string { return r.app }),
	col("ref", func(r *pendingRow) string { return r.ref }),
	col("state", func(r *pendingRow) string { return r.state }),
	col("detail", func(r *pendingRow) string { return r.detail }),
	col("amount", func(r *pendingRow) int64 { return r.amount }),
	col("currency", func(r *pendingRow) string { return r.currency }),
	col("time", func(r *pendingRow) time.Time { return r.time }),
	col("resolved", func(r *pendingRow) uint8 { return r.resolved }),
	col("version", func(r *pendingRow) uint8 { return r.version }),
}}
