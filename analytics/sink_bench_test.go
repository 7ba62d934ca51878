package analytics

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/chtest"
	"github.com/heraldhq/herald/schemas"
)

// benchRecords builds n records like the sink sees them: half inbound
// events, a quarter status events (which also fill statuses, message_state
// and costs), an eighth dispatch requests and an eighth outcomes (each
// also a message_state row).
func benchRecords(b testing.TB, n int) (recs []*kgo.Record, bytes int64) {
	o := offsets{}
	recs = make([]*kgo.Record, 0, n)
	for i := range n {
		at := base.Add(time.Duration(i) * time.Millisecond)
		var rec *kgo.Record
		switch i % 8 {
		case 0, 1, 2, 3:
			e := inbound(fmt.Sprintf("in-%d", i), "demo", fmt.Sprintf("+88017110%05d", i%100000), "hi there", at)
			rec = o.rec(b, schemas.TopicEvents, e.Key(), e)
		case 4, 5:
			// Statuses of the dispatch requested at i%8 == 6.
			d := i - i%8 + 6
			e := status(fmt.Sprintf("st-%d", i), "demo", fmt.Sprintf("wamid.d%d", d), []string{"sent", "delivered"}[i%2], fmt.Sprintf("d%d", d), at)
			e.Country = "BD"
			rec = o.rec(b, schemas.TopicEvents, e.Key(), e)
		case 6:
			d := &schemas.DispatchRequest{
				ID: fmt.Sprintf("d%d", i), App: "demo", Channel: schemas.ChannelWhatsApp, Sender: "1001",
				To: fmt.Sprintf("+88017110%05d", i%100000), Country: "BD", Template: &schemas.Template{Name: "welcome", Language: "en_US", Category: "MARKETING"},
				Source: schemas.Source{Kind: "campaign", Name: "spring"}, Created: at,
			}
			rec = o.rec(b, schemas.TopicDispatch, d.Key(), d)
		case 7:
			x := outcome(fmt.Sprintf("d%d", i-1), "demo", schemas.OutcomeAccepted, "welcome", at)
			rec = o.rec(b, schemas.TopicOutcomes, x.Key(), x)
		}
		bytes += int64(len(rec.Value))
		recs = append(recs, rec)
	}
	return recs, bytes
}

// BenchmarkWrite measures Write (decode, split by table, insert) into the
// real ClickHouse of chtest, batches of 10,000 records.
func BenchmarkWrite(b *testing.B) {
	_, conn := migratedDB(b)
	s, _, _ := newSink(b, Config{}, conn)
	recs, bytes := benchRecords(b, 10_000)
	r := benchRows(b, recs)
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Write(b.Context(), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*r.len())/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkSinkVsClient compares, in one run, the sink's inserts with
// clickhouse-client inserting the same rows in Native format, into the
// same tables (views included) of a private ClickHouse:
//
//   - sink_insert: the decoded rows of 200,000 records (HERALD_BENCH_RECORDS)
//     inserted as the sink
//     does (Config.BatchRows rows per INSERT, tables concurrently);
//   - sink_write: Write of the same records in polls as Run makes them
//     (JSON decode included, overlapping the inserts of the chunk before);
//   - client_native: the same rows exported with SELECT ... FORMAT Native
//     and inserted with `clickhouse-client --query "INSERT ... FORMAT
//     Native" < file`, one file per table.
//
// Each reports rows/s (rows over every table); the sink's two also report
// go-cpu-ns/row, the user+system CPU time of this process (every goroutine,
// the garbage collector and kfake included, ClickHouse not: it is another
// process) during the timed part of each iteration, over its rows: on a
// small host that shares its cores with the server, throughput is noisy and
// the Go side's CPU is what the sink controls. Only sink_insert holds the
// decoded rows of every record alive; sink_write holds the records, as a
// running sink holds its poll (Config.BatchRows times writeChunks records),
// and reuses the row slices of a running sink (see the comment inside).
//
//	go test -run '^$' -bench BenchmarkSinkVsClient -benchtime 3x ./analytics/
func BenchmarkSinkVsClient(b *testing.B) {
	client, err := exec.LookPath("clickhouse-client")
	if err != nil {
		b.Skip("clickhouse-client is not installed")
	}
	n := 200_000
	if v := os.Getenv("HERALD_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("HERALD_BENCH_RECORDS=%q: want a number >= 100", v)
		}
	}
	cfg := Config{}
	if v := os.Getenv("HERALD_BENCH_BATCH_ROWS"); v != "" {
		cfg.BatchRows, _ = strconv.Atoi(v)
	}
	recs, _ := benchRecords(b, n)
	total := benchRows(b, recs).len()
	addr := chtest.Server(b).Addr

	b.Run("sink_insert", func(b *testing.B) {
		r := benchRows(b, recs)
		eachSink(b, cfg, total, func(s *Sink) {
			if err := insertRows(b.Context(), s, r); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("sink_write", func(b *testing.B) {
		// Each iteration writes into a fresh database with a fresh sink (its
		// attribution cache empty, as for new dispatches), but with the row
		// slices a running sink has kept from its earlier chunks: a sink
		// grows them in its first two chunks only. An untimed write warms
		// them first.
		var scratch chan rows
		write := func(s *Sink) {
			if scratch != nil {
				s.scratch = scratch
			}
			scratch = s.scratch
			poll := s.pollRecords() // as Run polls
			for i := 0; i < len(recs); i += poll {
				if _, err := s.Write(b.Context(), recs[i:min(i+poll, len(recs))]); err != nil {
					b.Fatal(err)
				}
			}
		}
		_, conn := migratedDB(b)
		s, _, _ := newSink(b, cfg, conn)
		write(s)
		eachSink(b, cfg, total, write)
	})
	b.Run("client_native", func(b *testing.B) {
		// The rows as Native files, exported from a database the sink filled.
		dir := b.TempDir()
		src, conn := migratedDB(b)
		s, _, _ := newSink(b, Config{}, conn)
		if err := insertRows(b.Context(), s, benchRows(b, recs)); err != nil {
			b.Fatal(err)
		}
		db := dbOf(src)
		host, port, _ := strings.Cut(addr, ":")
		var files []string
		for _, t := range tableColumns() {
			f := filepath.Join(dir, t.name+".native")
			files = append(files, f)
			runClient(b, client, host, port, "", "SELECT "+t.cols+" FROM "+db+"."+t.name+" FORMAT Native", f)
		}
		for b.Loop() {
			b.StopTimer()
			dst, _ := migratedDB(b)
			b.StartTimer()
			for i, t := range tableColumns() {
				runClient(b, client, host, port, files[i], "INSERT INTO "+dbOf(dst)+"."+t.name+" ("+t.cols+") FORMAT Native", "")
			}
		}
		b.ReportMetric(float64(b.N*total)/b.Elapsed().Seconds(), "rows/s")
	})
}

// benchRows decodes recs into the rows of one batch.
func benchRows(b *testing.B, recs []*kgo.Record) *rows {
	b.Helper()
	r := new(rows)
	for i, rec := range recs {
		if err := r.add(rec, i); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// eachSink runs f on a fresh sink into a fresh database each iteration
// (untimed) and reports rows/s and the CPU time per row of f, which stores
// rows rows.
func eachSink(b *testing.B, cfg Config, rows int, f func(*Sink)) {
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		_, conn := migratedDB(b)
		s, _, _ := newSink(b, cfg, conn)
		b.StartTimer()
		start := cpuTime(b)
		f(s)
		cpu += cpuTime(b) - start
	}
	reportRows(b, rows, cpu)
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRows reports rows/s and the process's CPU time per row of b.N
// iterations of rows rows each, cpu in all.
func reportRows(b *testing.B, rows int, cpu time.Duration) {
	b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*rows), "go-cpu-ns/row")
}

// insertRows inserts decoded rows the way Write does.
func insertRows(ctx context.Context, s *Sink, r *rows) error {
	rejected, err := s.store(ctx, r)
	if err != nil {
		return err
	}
	if len(rejected) > 0 {
		return fmt.Errorf("%d rows rejected", len(rejected))
	}
	return nil
}

type tableCols struct{ name, cols string }

// tableColumns lists the sink's tables with their insert columns.
func tableColumns() []tableCols {
	cols := func(q string) string { return q[strings.Index(q, "(")+1 : len(q)-1] }
	return []tableCols{
		{eventsTable.name, cols(eventsTable.insertQuery())},
		{statusesTable.name, cols(statusesTable.insertQuery())},
		{inboundTable.name, cols(inboundTable.insertQuery())},
		{messagesTable.name, cols(messagesTable.insertQuery())},
		{stateTable.name, cols(stateTable.insertQuery())},
		{costsTable.name, cols(costsTable.insertQuery())},
		{dispatchMetaTable.name, cols(dispatchMetaTable.insertQuery())},
		{wamidsTable.name, cols(wamidsTable.insertQuery())},
		{factsTable.name, cols(factsTable.insertQuery())},
	}
}

// dbOf is the database of a chtest DSN.
func dbOf(dsn string) string {
	db := dsn[strings.LastIndex(dsn, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	return db
}

// runClient runs clickhouse-client with query, stdin from in and stdout to
// out when they are set.
func runClient(b *testing.B, client, host, port, in, query, out string) {
	b.Helper()
	cmd := exec.Command(client, "--host", host, "--port", port, "--query", query)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd.Stdout = f
	}
	if err := cmd.Run(); err != nil {
		b.Fatalf("clickhouse-client %q: %v: %s", query, err, stderr.String())
	}
}
