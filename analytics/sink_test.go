package analytics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// value returns the value of a counter.
func value(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// histogram returns the sample count and sum of a histogram in reg, for the
// series with label table (any series when table is "").
func histogram(t testing.TB, reg *prometheus.Registry, name, table string) (n uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() != table {
					goto next
				}
			}
			return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		next:
		}
	}
	t.Fatalf("histogram %s{table=%q} not found", name, table)
	return 0, 0
}

func TestWriteStoresEveryTable(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, reg := newSink(t, Config{}, conn)
	dls, err := s.Write(t.Context(), dataset(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Fatalf("%d dead letters for valid records", len(dls))
	}
	for table, want := range map[string]uint64{"events": 15, "statuses": 6, "messages": 5} {
		if got := count(t, conn, "SELECT count() FROM "+table); got != want {
			t.Errorf("%s holds %d rows, want %d", table, got, want)
		}
		if got := value(t, s.m.rowsInserted.WithLabelValues(table)); got != float64(want) {
			t.Errorf("rows_inserted_total{table=%s} = %v, want %d", table, got, want)
		}
	}
	// 15 events, 6 statuses, 5 messages, 6 inbound, 11 message_state
	// (5 outcomes, 6 statuses naming a dispatch), 6 costs (billable), 5
	// dispatch_meta (outcomes), 10 wamids (4 accepted outcomes, 6
	// statuses), 26 facts (2 per outcome; sent 1, delivered 2, read 3 and
	// billed 1 per status).
	if n, sum := histogram(t, reg, "herald_analytics_batch_rows", ""); n != 1 || sum != 90 {
		t.Errorf("batch_rows: %d samples summing to %v, want 1 of 90", n, sum)
	}

	t.Run("inbound row", func(t *testing.T) {
		var (
			kind, name, date, from, text, typ, wamid, profile, phone, country, hwid string
			unix, received                                                          uint32
			ms                                                                      uint16
			device                                                                  uint8
		)
		err := conn.QueryRow(t.Context(), `SELECT kind, name, toUnixTimestamp(time), time_ms, toString(date), toUnixTimestamp(received),
			inbound_from, inbound_text, inbound_type, inbound_wamid, inbound_profile_name, phone_number_id, country, hwid, device_type
			FROM events WHERE id = 'in-4'`).Scan(&kind, &name, &unix, &ms, &date, &received, &from, &text, &typ, &wamid, &profile, &phone, &country, &hwid, &device)
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(4 * time.Minute)
		got := []any{kind, name, int64(unix), ms, date, int64(received), from, text, typ, wamid, profile, phone, country, hwid, device}
		want := []any{
			"inbound", schemas.EventWhatsAppReceived, at.Unix(), uint16(123), "2025-03-10", at.Unix() + 1,
			"+8801711000004", "  hello world", "text", "wamid.in.in-4", "Rahim", "1001", "BD", "whatsapp:+8801711000004", uint8(schemas.DeviceWhatsApp),
		}
		if !slices.Equal(got, want) {
			t.Fatalf("inbound row\n got %v\nwant %v", got, want)
		}
	})

	t.Run("attributes and tags", func(t *testing.T) {
		var keys, values []string
		var attrs, tags, emptyTags string
		if err := conn.QueryRow(t.Context(), "SELECT attr_keys, attr_values, attributes, tags FROM events WHERE id = 'ev-1'").Scan(&keys, &values, &attrs, &emptyTags); err != nil {
			t.Fatal(err)
		}
		if want := []string{"gift", "items", "note", "price", "sku"}; !slices.Equal(keys, want) {
			t.Errorf("attr_keys = %q, want %q", keys, want)
		}
		if want := []string{"true", `["a","b"]`, "", "12.5", "A-1"}; !slices.Equal(values, want) {
			t.Errorf("attr_values = %q, want %q", values, want)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(attrs), &m); err != nil || m["sku"] != "A-1" || m["price"] != 12.5 || len(m) != 5 {
			t.Errorf("attributes = %s (%v)", attrs, err)
		}
		if emptyTags != "{}" {
			t.Errorf("tags of an event without tags = %q, want {}", emptyTags)
		}
		if err := conn.QueryRow(t.Context(), "SELECT tags FROM events WHERE id = 'reg-1'").Scan(&tags); err != nil {
			t.Fatal(err)
		}
		if tags != `{"Age":31,"City":"Dhaka"}` {
			t.Errorf("tags = %s", tags)
		}
		// The parallel arrays answer a lookup by key.
		var sku string
		if err := conn.QueryRow(t.Context(), "SELECT arrayElement(attr_values, indexOf(attr_keys, 'sku')) FROM events WHERE id = 'ev-1'").Scan(&sku); err != nil || sku != "A-1" {
			t.Errorf("attribute lookup = %q, %v", sku, err)
		}
	})

	t.Run("status row", func(t *testing.T) {
		var app, wamid, st, recipient, dispatch, pricing, title, date, eventID, kind string
		var billable uint8
		var code int32
		var unix uint32
		err := conn.QueryRow(t.Context(), `SELECT app, wamid, status, recipient, dispatch_id, pricing_category, billable, error_code,
			error_title, toUnixTimestamp(time), toString(date), event_id FROM statuses WHERE wamid = 'wamid.d1' AND status = 'read'`).
			Scan(&app, &wamid, &st, &recipient, &dispatch, &pricing, &billable, &code, &title, &unix, &date, &eventID)
		if err != nil {
			t.Fatal(err)
		}
		got := []any{app, wamid, st, recipient, dispatch, pricing, billable, code, title, int64(unix), date, eventID}
		want := []any{"demo", "wamid.d1", "read", "+8801711000001", "d1", "marketing", uint8(1), int32(0), "", base.Add(90 * time.Second).Unix(), "2025-03-10", "st-6"}
		if !slices.Equal(got, want) {
			t.Fatalf("status row\n got %v\nwant %v", got, want)
		}
		if err := conn.QueryRow(t.Context(), "SELECT kind FROM events WHERE id = 'st-6'").Scan(&kind); err != nil || kind != "status" {
			t.Fatalf("status event in events: kind %q, %v", kind, err)
		}
	})

	t.Run("message row", func(t *testing.T) {
		var dispatch, app, channel, sender, recipient, country, state, provider, template, category, sk, sn, se, msg, date string
		var code int32
		var attempts uint16
		var requested, at uint32
		err := conn.QueryRow(t.Context(), `SELECT dispatch_id, app, channel, sender, recipient, country, state, provider_id, template, category,
			source_kind, source_name, source_event_id, error_code, error_message, attempts, toUnixTimestamp(requested), toUnixTimestamp(time), toString(date)
			FROM messages WHERE dispatch_id = 'd4'`).
			Scan(&dispatch, &app, &channel, &sender, &recipient, &country, &state, &provider, &template, &category, &sk, &sn, &se, &code, &msg, &attempts, &requested, &at, &date)
		if err != nil {
			t.Fatal(err)
		}
		o := outcome("d4", "demo", schemas.OutcomeFailed, "promo", base.Add(4*time.Minute))
		got := []any{dispatch, app, channel, sender, recipient, country, state, provider, template, category, sk, sn, se, code, msg, attempts, int64(requested), int64(at), date}
		want := []any{
			"d4", "demo", "whatsapp", "1001", "+8801711000001", "BD", "failed", "", "promo", "MARKETING", "keyword", "hi", "ev-d4",
			int32(131026), "Message undeliverable", uint16(1), o.Requested.Unix(), o.Time.Unix(), "2025-03-10",
		}
		if !slices.Equal(got, want) {
			t.Fatalf("message row\n got %v\nwant %v", got, want)
		}
	})
}

func TestWriteRedeliveryCountsOnce(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	if _, err := s.Write(t.Context(), dataset(t)); err != nil {
		t.Fatal(err)
	}
	once, err := Summarize(t.Context(), conn, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// The same records again, as after a crash before the commit, in two
	// deliveries (two more parts).
	recs := dataset(t)
	for _, part := range [][]*kgo.Record{recs[:7], recs[7:]} {
		if _, err := s.Write(t.Context(), part); err != nil {
			t.Fatal(err)
		}
	}
	// The copies are stored (nothing was merged yet) ...
	if got := count(t, conn, "SELECT count() FROM events"); got != 30 {
		t.Fatalf("events holds %d rows, want both copies (30)", got)
	}
	// ... and every read of the report collapses them.
	twice, err := Summarize(t.Context(), conn, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffSummary(once, twice); diff != "" {
		t.Fatalf("summary changed after redelivery: %s", diff)
	}
	for table, want := range map[string]uint64{"events": 15, "statuses": 6, "messages": 5} {
		if got := count(t, conn, "SELECT count() FROM "+table+" FINAL"); got != want {
			t.Errorf("%s FINAL holds %d rows, want %d", table, got, want)
		}
	}
}

func TestLatestOutcomeWins(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	inDoubt := outcome("d9", "demo", schemas.OutcomeInDoubt, "welcome", base)
	accepted := outcome("d9", "demo", schemas.OutcomeAccepted, "welcome", base.Add(30*time.Second))
	// The later outcome first, then a redelivered earlier one: time decides,
	// not arrival.
	for _, x := range []*schemas.Outcome{inDoubt, accepted, inDoubt} {
		if _, err := s.Write(t.Context(), []*kgo.Record{o.rec(t, schemas.TopicOutcomes, x.Key(), x)}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Summarize(t.Context(), conn, "demo", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sends != 1 || sum.SendsByState["accepted"] != 1 || sum.SendsByState["in_doubt"] != 0 {
		t.Fatalf("sends %d by state %v, want 1 accepted", sum.Sends, sum.SendsByState)
	}
}

// TestReconciledOutcomeSupersedesInDoubt: the dispatcher's reconciled
// outcome (accepted, reconciled, the wamid of a late status, its time the
// next second after the in_doubt outcome's) replaces the in_doubt one in
// messages and message_state, in one insert or in two, whatever their
// order; the request's fields stay.
func TestReconciledOutcomeSupersedesInDoubt(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	o := offsets{}
	pair := func(id string) (*schemas.Outcome, *schemas.Outcome) {
		doubt := outcome(id, "demo", schemas.OutcomeInDoubt, "welcome", base)
		rec := *doubt
		rec.State, rec.ProviderID, rec.Reconciled = schemas.OutcomeAccepted, "wamid.late-"+id, true
		rec.ErrorMessage = "reconciled: status sent"
		rec.Time = base.Truncate(time.Second).Add(time.Second)
		return doubt, &rec
	}
	d1, r1 := pair("rc1") // one insert, in topic order
	if _, err := s.Write(t.Context(), []*kgo.Record{o.rec(t, schemas.TopicOutcomes, d1.Key(), d1), o.rec(t, schemas.TopicOutcomes, r1.Key(), r1)}); err != nil {
		t.Fatal(err)
	}
	d2, r2 := pair("rc2") // two inserts, the in_doubt one redelivered last
	for _, x := range []*schemas.Outcome{d2, r2, d2} {
		if _, err := s.Write(t.Context(), []*kgo.Record{o.rec(t, schemas.TopicOutcomes, x.Key(), x)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"rc1", "rc2"} {
		if n := count(t, conn, "SELECT count() FROM messages FINAL WHERE dispatch_id = ? AND state = 'accepted' AND provider_id = ? AND template = 'welcome' AND source_name = 'hi'", id, "wamid.late-"+id); n != 1 {
			t.Errorf("%s: messages FINAL does not hold the reconciled outcome", id)
		}
		if n := count(t, conn, "SELECT count() FROM message_state FINAL WHERE dispatch_id = ? AND state = 'sent'", id); n != 1 {
			t.Errorf("%s: message_state is not sent", id)
		}
	}
}

func TestWriteDeadLettersPoison(t *testing.T) {
	// In one chunk, and in chunks of 4 records (Write decodes the next
	// chunk while it stores the one before).
	for _, batchRows := range []int{0, 4} {
		t.Run(fmt.Sprintf("batch_rows=%d", batchRows), func(t *testing.T) { testWriteDeadLettersPoison(t, batchRows) })
	}
}

func testWriteDeadLettersPoison(t *testing.T, batchRows int) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{BatchRows: batchRows}, conn)
	o := offsets{}
	good := inbound("good-1", "demo", "+8801711000001", "hi", base)
	goodOut := outcome("good-d", "demo", schemas.OutcomeAccepted, "welcome", base)
	eventJSON := func(mut func(e *schemas.Event)) []byte {
		e := inbound("bad", "demo", "+8801711000001", "hi", base)
		mut(e)
		return must(e.Marshal())
	}
	outcomeJSON := func(mut func(o *schemas.Outcome)) []byte {
		x := outcome("bad", "demo", schemas.OutcomeAccepted, "welcome", base)
		mut(x)
		return must(x.Marshal())
	}
	tests := []struct {
		name   string
		topic  string
		value  []byte
		reason string
	}{
		{"not json", schemas.TopicEvents, []byte("{not json"), "decoding event: invalid record"},
		{"empty value", schemas.TopicOutcomes, nil, "decoding outcome: invalid record"},
		{"unknown version", schemas.TopicEvents, bytes.Replace(eventJSON(func(*schemas.Event) {}), []byte(`"v":1`), []byte(`"v":2`), 1), "unsupported record version"},
		{"missing id", schemas.TopicEvents, eventJSON(func(e *schemas.Event) { e.ID = "" }), "id is required"},
		{"time before 1970", schemas.TopicEvents, eventJSON(func(e *schemas.Event) { e.Time = time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC) }), "time 1960-01-01T00:00:00Z is outside"},
		{"time after 2105", schemas.TopicEvents, eventJSON(func(e *schemas.Event) { e.Time = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }), "time 2200-01-01T00:00:00Z is outside"},
		{"received before 1970", schemas.TopicEvents, eventJSON(func(e *schemas.Event) { e.Received = time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC) }), "received 1969-12-31T23:59:59Z is outside"},
		{"device type too big", schemas.TopicEvents, eventJSON(func(e *schemas.Event) { e.DeviceType = 300 }), "device_type 300 does not fit UInt8"},
		{"status error code too big", schemas.TopicEvents, must(status("bad", "demo", "w", "failed", "", base).Marshal()), ""},
		{"attempts too big", schemas.TopicOutcomes, outcomeJSON(func(o *schemas.Outcome) { o.Attempts = 70000 }), "attempts 70000 does not fit UInt16"},
		{"negative attempts", schemas.TopicOutcomes, outcomeJSON(func(o *schemas.Outcome) { o.Attempts = -1 }), "attempts -1 does not fit UInt16"},
		{"error code too big", schemas.TopicOutcomes, outcomeJSON(func(o *schemas.Outcome) { o.ErrorCode = 1 << 40 }), "error_code 1099511627776 does not fit Int32"},
		{"requested before 1970", schemas.TopicOutcomes, outcomeJSON(func(o *schemas.Outcome) { o.Requested = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC) }), "requested 1900-01-01T00:00:00Z is outside"},
		{"unknown state", schemas.TopicOutcomes, outcomeJSON(func(o *schemas.Outcome) { o.State = "lost" }), `unknown state "lost"`},
		{"unexpected topic", schemas.TopicScheduled, []byte("{}"), `unexpected topic "herald.scheduled.v1"`},
	}
	// A status whose error code does not fit Int32.
	st := status("bad-st", "demo", "w", "failed", "", base)
	st.Status.ErrorCode = -1 << 40
	tests[8].value, tests[8].reason = must(st.Marshal()), "status.error_code -1099511627776 does not fit Int32"

	recs := []*kgo.Record{o.rec(t, schemas.TopicEvents, good.Key(), good)}
	for _, tt := range tests {
		recs = append(recs, o.raw(tt.topic, []byte("key-"+tt.name), tt.value))
	}
	recs = append(recs, o.rec(t, schemas.TopicOutcomes, goodOut.Key(), goodOut))

	// A nil record (only a caller of Write can make one) is skipped.
	dls, err := s.Write(t.Context(), append(slices.Clone(recs), nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != len(tests) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, rec := recs[i+1], dls[i]
			if rec.Topic != schemas.TopicDeadLetter || !bytes.Equal(rec.Key, orig.Key) {
				t.Fatalf("dead letter to %s key %q, want %s key %q", rec.Topic, rec.Key, schemas.TopicDeadLetter, orig.Key)
			}
			dl, err := schemas.DecodeDeadLetter(rec.Value)
			if err != nil {
				t.Fatal(err)
			}
			if dl.Stage != "analytics" || dl.Topic != orig.Topic || dl.Offset != orig.Offset || !bytes.Equal(dl.Value, orig.Value) {
				t.Errorf("dead letter %+v does not carry the original record", dl)
			}
			if !strings.Contains(dl.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", dl.Reason, tt.reason)
			}
		})
	}
	if got := value(t, s.m.deadLetters); got != float64(len(tests)) {
		t.Errorf("dead_letters_total = %v, want %d", got, len(tests))
	}
	for table, want := range map[string]uint64{"events": 1, "statuses": 0, "messages": 1} {
		if got := count(t, conn, "SELECT count() FROM "+table); got != want {
			t.Errorf("%s holds %d rows, want %d (the good records only)", table, got, want)
		}
	}
}

func TestWriteSplitsLargeBatches(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, reg := newSink(t, Config{BatchRows: 4}, conn)
	recs := dataset(t)
	if _, err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	// Written in chunks of 4 records, each table's rows of a chunk in one
	// insert: as many inserts into a table as chunks with rows for it.
	want := map[string]uint64{}
	for i := 0; i < len(recs); i += 4 {
		var r rows
		for j, rec := range recs[i:min(i+4, len(recs))] {
			if err := r.add(rec, j); err != nil {
				t.Fatal(err)
			}
		}
		for table, n := range map[string]int{"events": len(r.events), "statuses": len(r.statuses), "messages": len(r.messages)} {
			if n > 0 {
				want[table]++
			}
		}
	}
	if want["events"] < 3 {
		t.Fatalf("the data set makes %d chunks with events: too few to test chunking", want["events"])
	}
	for table, want := range want {
		if n, _ := histogram(t, reg, "herald_analytics_insert_duration_seconds", table); n != want {
			t.Errorf("%d inserts into %s, want %d", n, table, want)
		}
	}
	// 15 events, 6 statuses, 5 messages.
	for table, want := range map[string]uint64{"events": 15, "statuses": 6, "messages": 5} {
		if got := count(t, conn, "SELECT count() FROM "+table); got != want {
			t.Errorf("%s holds %d rows, want %d", table, got, want)
		}
	}
}

// TestWriteEndsChunksWhenContextEnds: a chunked Write whose inserts fail
// returns when its context ends, with the decoder goroutine gone and the
// scratch rows back, so the next Write neither blocks nor loses rows.
func TestWriteEndsChunksWhenContextEnds(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{BatchRows: 4}, conn)
	renameTable(t, conn, "statuses", "statuses_away")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(ctx, dataset(t))
		done <- err
	}()
	waitFor(t, 10*time.Second, "a failed insert into statuses", func() bool {
		return value(t, s.m.insertErrors.WithLabelValues("statuses")) >= 1
	})
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Write returned nil with its inserts failing")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Write did not return after its context ended")
	}
	if n := len(s.scratch); n != cap(s.scratch) {
		t.Fatalf("%d of %d scratch rows back after Write returned", n, cap(s.scratch))
	}
	renameTable(t, conn, "statuses_away", "statuses")
	if _, err := s.Write(t.Context(), dataset(t)); err != nil {
		t.Fatal(err)
	}
	// (The first Write stored the other tables' rows of its first chunks:
	// FINAL collapses them with the second's.)
	for table, want := range map[string]uint64{"statuses": 6, "messages": 5} {
		if got := count(t, conn, "SELECT count() FROM "+table+" FINAL"); got != want {
			t.Errorf("%s holds %d rows, want %d", table, got, want)
		}
	}
}

// renameTable moves a table away (so inserts fail) or back.
func renameTable(t testing.TB, conn driver.Conn, from, to string) {
	t.Helper()
	if err := conn.Exec(context.Background(), "RENAME TABLE "+from+" TO "+to); err != nil {
		t.Fatal(err)
	}
}

func TestWriteRetriesUntilClickHouseAccepts(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	renameTable(t, conn, "statuses", "statuses_away")

	done := make(chan error, 1)
	go func() {
		_, err := s.Write(t.Context(), dataset(t))
		done <- err
	}()
	waitFor(t, 10*time.Second, "a failed insert into statuses", func() bool {
		return value(t, s.m.insertErrors.WithLabelValues("statuses")) >= 2
	})
	select {
	case err := <-done:
		t.Fatalf("Write returned %v while ClickHouse refused the insert", err)
	default:
	}
	renameTable(t, conn, "statuses_away", "statuses")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Write did not return after the table came back")
	}
	for table, want := range map[string]uint64{"events": 15, "statuses": 6, "messages": 5} {
		if got := count(t, conn, "SELECT count() FROM "+table); got != want {
			t.Errorf("%s holds %d rows, want %d", table, got, want)
		}
	}
}

func TestWriteReturnsErrorWhenContextEnds(t *testing.T) {
	_, conn := migratedDB(t)
	s, _, _ := newSink(t, Config{}, conn)
	renameTable(t, conn, "messages", "messages_away")
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	dls, err := s.Write(ctx, dataset(t))
	if err == nil {
		t.Fatal("Write succeeded without a messages table")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "inserting into messages") {
		t.Fatalf("err = %v, want a deadline error naming messages", err)
	}
	if dls != nil {
		t.Fatalf("dead letters %v returned with an error", dls)
	}
}

func TestRunSinksTopicsAndCommits(t *testing.T) {
	_, conn := migratedDB(t)
	s, c, _ := newSink(t, Config{FlushInterval: 50 * time.Millisecond}, conn)
	producer := c.Client(t)

	recs := dataset(t)
	poison := &kgo.Record{Topic: schemas.TopicEvents, Key: []byte("demo|x"), Value: []byte("not json")}
	recs = append(recs, poison)
	want := map[string]int64{}
	for _, r := range recs {
		r.Offset = 0
		want[r.Topic]++
	}
	if err := producer.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()

	waitFor(t, 20*time.Second, "ClickHouse to hold every record", func() bool {
		return count(t, conn, "SELECT count() FROM events FINAL") == 15 &&
			count(t, conn, "SELECT count() FROM statuses FINAL") == 6 &&
			count(t, conn, "SELECT count() FROM messages FINAL") == 5
	})
	dls := c.ReadAll(t, schemas.TopicDeadLetter, 1)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters on the topic, want 1", len(dls))
	}
	dl, err := schemas.DecodeDeadLetter(dls[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Stage != "analytics" || string(dl.Value) != "not json" || !strings.Contains(dl.Reason, "decoding event") {
		t.Fatalf("dead letter %+v", dl)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}

	// Every record, the poison one too, is committed for the group.
	offs, err := kadm.NewClient(producer).FetchOffsets(t.Context(), DefaultGroup)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil {
			t.Errorf("offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		got[o.Topic] += o.At
	})
	if got[schemas.TopicEvents] != want[schemas.TopicEvents] || got[schemas.TopicOutcomes] != want[schemas.TopicOutcomes] {
		t.Fatalf("committed offsets sum to %v, want %v", got, want)
	}
}

func TestRunBatchesByTime(t *testing.T) {
	_, conn := migratedDB(t)
	// A flush interval well above what the Write of a small batch takes on
	// a loaded machine (several inserts and lookups): when a Write takes
	// longer than the interval, the sink polls at once and the trickle
	// splits into more batches.
	const flush = 3 * time.Second
	s, c, reg := newSink(t, Config{FlushInterval: flush}, conn)
	producer := c.Client(t)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	produce := func(i int) {
		e := inbound("trickle-"+string(rune('a'+i)), "demo", "+8801711000001", "hi", base)
		if err := producer.ProduceSync(t.Context(), &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: must(e.Marshal())}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The first record after a pause is inserted at once ...
	produce(0)
	waitFor(t, 10*time.Second, "the first record", func() bool { return count(t, conn, "SELECT count() FROM events") == 1 })
	// ... the ones trickling in during the next 200 ms gather into one
	// insert (or one per flush interval the trickle spans, on a machine so
	// loaded that producing ten records takes longer than that).
	start := time.Now()
	for i := 1; i <= 10; i++ {
		produce(i)
		time.Sleep(20 * time.Millisecond)
	}
	spans := int(time.Since(start) / flush)
	waitFor(t, 10*time.Second, "the trickle", func() bool { return count(t, conn, "SELECT count() FROM events") == 11 })
	if n, _ := histogram(t, reg, "herald_analytics_batch_rows", ""); n > uint64(3+spans) {
		t.Fatalf("%d batches for 11 records, the trickle spanning %d flush intervals past the first, want at most %d", n, spans, 3+spans)
	}
}

func TestDeadLetterTooLargeForTopicLosesValueOnly(t *testing.T) {
	_, conn := migratedDB(t)
	s, c, _ := newSink(t, Config{}, conn)
	// Base64 in the dead letter grows this past the producer's 1 MB limit.
	big := &kgo.Record{Topic: schemas.TopicEvents, Key: []byte("k"), Value: bytes.Repeat([]byte("x"), 900_000), Offset: 42}
	if err := s.handle(t.Context(), []*kgo.Record{big}); err != nil {
		t.Fatal(err)
	}
	dls := c.ReadAll(t, schemas.TopicDeadLetter, 1)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl, err := schemas.DecodeDeadLetter(dls[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Offset != 42 || dl.Value != nil || !strings.Contains(dl.Reason, "decoding event") ||
		!strings.Contains(dl.Reason, "original value of 900000 bytes dropped") {
		t.Fatalf("dead letter offset %d, %d value bytes, reason %q", dl.Offset, len(dl.Value), dl.Reason)
	}
}

// TestInsertConcurrently: every job runs, at most insertConcurrency at
// once; the records they reject are joined (the first job's reason wins
// for a record two reject), and a failing job's error is returned after
// the others finished.
func TestInsertConcurrently(t *testing.T) {
	s := &Sink{}
	var inFlight, most, ran atomic.Int32
	job := func(rejects map[int]string, err error) func(map[int]string) error {
		return func(rejected map[int]string) error {
			n := inFlight.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			defer inFlight.Add(-1)
			ran.Add(1)
			for src, reason := range rejects {
				rejected[src] = reason
			}
			return err
		}
	}
	jobs := []func(map[int]string) error{
		job(map[int]string{1: "first"}, nil),
		job(map[int]string{1: "second", 2: "two"}, nil),
		job(nil, nil), job(nil, nil), job(map[int]string{7: "seven"}, nil), job(nil, nil),
	}
	rejected, err := s.insertConcurrently(jobs)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int]string{1: "first", 2: "two", 7: "seven"}; !maps.Equal(rejected, want) {
		t.Errorf("rejected = %v, want %v", rejected, want)
	}
	if ran.Load() != int32(len(jobs)) || most.Load() > insertConcurrency {
		t.Errorf("%d of %d jobs ran, at most %d at once (limit %d)", ran.Load(), len(jobs), most.Load(), insertConcurrency)
	}

	ran.Store(0)
	boom := errors.New("inserting into events: boom")
	_, err = s.insertConcurrently(append(jobs[:1:1], job(nil, boom), job(nil, nil)))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if ran.Load() != 3 {
		t.Fatalf("%d of 3 jobs ran", ran.Load())
	}
}
