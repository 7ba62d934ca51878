package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/chserver"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
	"github.com/heraldhq/herald/segmenter"
)

// benchRow is one line of the bench table.
type benchRow struct {
	stage   string
	records int64
	elapsed time.Duration
	note    string
	cpu     time.Duration // of this process (broker, clients, stages), not ClickHouse's
}

func (r benchRow) rate() float64 { return float64(r.records) / r.elapsed.Seconds() }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("bench", stderr)
	n := f.Int("events", 1_000_000, "synthetic events to load into the broker")
	keywordEvery := f.Int("keyword-every", 200, "one event in this many is an inbound PROMO (a dispatch request)")
	partitions := f.Int("kafka.partitions", 8, "partitions per topic")
	chDSN := f.String("clickhouse.dsn", "", "use this ClickHouse instead of a private server")
	only := f.String("stages", "segmenter,dispatcher,analytics,e2e", "the measurements to run after the load and the bare consumer, comma-separated: segmenter, dispatcher, analytics, e2e")
	cpuProfile := f.String("cpuprofile", "", "write a CPU profile of the stage measurements (not the load) to this file")
	traceFile := f.String("trace", "", "write an execution trace of the stage measurements (not the load) to this file, for go tool trace: which goroutines ran and where the cores sat idle")
	f.logLevel = "warn"
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	stages, err := benchStages(*only)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	b, err := broker.Start(broker.Config{Partitions: int32(*partitions), Topics: schemas.Topics}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	kcfg := kafka.Config{Brokers: b.Addrs(), Partitions: int32(*partitions), CommitInterval: 100 * time.Millisecond}
	if err := kcfg.Validate(); err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(kcfg.Opts(log), kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	dsn := *chDSN
	var conn driver.Conn
	if stages["analytics"] || stages["e2e"] {
		if dsn == "" {
			ch, err := chserver.Start(ctx, chserver.Config{Dir: dir + "/clickhouse"})
			if err != nil {
				return err
			}
			defer ch.Close()
			dsn = ch.DSN("default")
		}
		if conn, err = analytics.Open(ctx, dsn); err != nil {
			return err
		}
		defer conn.Close()
		if _, err := analytics.Migrate(ctx, conn, log); err != nil {
			return err
		}
	}

	creds, err := loadDevCredentials(dir)
	if err != nil {
		return err
	}
	reg, err := apps.New([]apps.App{creds.app()})
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "herald bench: %d events, %d partitions, GOMAXPROCS %d, %s\n", *n, *partitions, runtime.GOMAXPROCS(0), runtime.Version())
	var rows []benchRow

	// 1. Load.
	t0, cpu0 := time.Now(), processCPU()
	bytes, err := loadSynthetic(ctx, cl, *n, *keywordEvery)
	if err != nil {
		return err
	}
	rows = append(rows, benchRow{"load (produce, acks=all)", int64(*n), time.Since(t0), fmt.Sprintf("%.0f MB", float64(bytes)/1e6), processCPU() - cpu0})

	// 2. The bare consumer: read and decode the same topic, nothing else.
	t0, cpu0 = time.Now(), processCPU()
	if err := bareConsume(ctx, kcfg, int64(*n)); err != nil {
		return err
	}
	bare := benchRow{"bare franz-go consumer + decode", int64(*n), time.Since(t0), "baseline", processCPU() - cpu0}
	bareAt := len(rows)
	rows = append(rows, bare)

	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	stopProfile = sync.OnceFunc(stopProfile)
	defer stopProfile()
	stopTrace, err := startTrace(*traceFile)
	if err != nil {
		return err
	}
	stopTrace = sync.OnceFunc(stopTrace)
	defer stopTrace()
	rows, err = runBenchStages(ctx, benchEnv{kcfg: kcfg, adm: adm, reg: reg, log: log, dsn: dsn, conn: conn, n: int64(*n)}, stages, rows)
	if err != nil {
		return err
	}
	stopProfile()
	stopTrace()

	// 4. The bare consumer again: a stage's ratio is to the mean rate of
	// the two bare runs around the stages, so that a host whose speed
	// drifts during the run (these shared machines do, by a fifth within
	// minutes) moves the baseline with it rather than against it.
	baseline := bare.rate()
	if len(stages) > 0 {
		t0, cpu0 = time.Now(), processCPU()
		if err := bareConsume(ctx, kcfg, int64(*n)); err != nil {
			return err
		}
		again := benchRow{bareAgain, int64(*n), time.Since(t0), "", processCPU() - cpu0}
		baseline = (bare.rate() + again.rate()) / 2
		again.note = fmt.Sprintf("baseline: mean of both, %.0f/s", baseline)
		rows[bareAt].note = "baseline, with the run after"
		rows = append(rows, again)
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\trecords\tseconds\trecords/s\tvs bare consumer\tCPU s\tCPU µs/record\tnote\t")
	for _, r := range rows {
		ratio := "-"
		if r.stage != bare.stage && r.stage != bareAgain && r.stage != rows[0].stage {
			ratio = strconv.FormatFloat(r.rate()/baseline, 'f', 3, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%.2f\t%.2f\t%s\t\n", r.stage, r.records, r.elapsed.Seconds(), r.rate(), ratio,
			r.cpu.Seconds(), float64(r.cpu.Microseconds())/float64(max(r.records, 1)), r.note)
	}
	return tw.Flush()
}

// benchStages parses -stages.
func benchStages(list string) (map[string]bool, error) {
	stages := map[string]bool{}
	for name := range strings.SplitSeq(list, ",") {
		switch name = strings.TrimSpace(name); name {
		case "segmenter", "dispatcher", "analytics", "e2e":
			stages[name] = true
		case "":
		default:
			return nil, fmt.Errorf("-stages: unknown stage %q (want segmenter, dispatcher, analytics or e2e)", name)
		}
	}
	if stages["dispatcher"] && !stages["segmenter"] {
		// Its backlog is the dispatch requests the segmenter measurement
		// made (the keyword replies among the events).
		return nil, fmt.Errorf("-stages: dispatcher needs segmenter too: the dispatch requests it sends are the segmenter's output")
	}
	return stages, nil
}

// benchEnv is what the stage measurements share.
type benchEnv struct {
	kcfg kafka.Config
	adm  *kadm.Client
	reg  *apps.Registry
	log  *slog.Logger
	dsn  string
	conn driver.Conn // nil unless analytics or e2e runs
	n    int64
}

// runBenchStages runs the measurements stages names, in pipeline order, and
// appends their rows.
func runBenchStages(ctx context.Context, env benchEnv, stages map[string]bool, rows []benchRow) ([]benchRow, error) {
	kcfg, adm, reg, log, dsn, conn := env.kcfg, env.adm, env.reg, env.log, env.dsn, env.conn
	// 3. Each stage alone on its whole backlog.
	if stages["segmenter"] {
		// With the GC target and heap limit `herald segmenter` runs with
		// (GOGC and GOMEMLIMIT in the environment win, as there). The
		// limit comes on top of what this process holds already, kfake's
		// copy of the topics above all, which a segmenter process does
		// not have.
		scfg := segmenter.Config{Group: "bench-segmenter"}
		if err := scfg.Validate(); err != nil {
			return rows, err
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		scfg.HeapLimitBytes += int64(ms.HeapAlloc)
		restore := scfg.ApplyRuntime()
		seg, err := segmenter.New(scfg, kcfg, log, nil)
		if err != nil {
			restore()
			return rows, err
		}
		logBefore, err := topicRecords(ctx, adm, schemas.TopicProfiles)
		if err != nil {
			seg.Close()
			restore()
			return rows, err
		}
		row, err := measureStage(ctx, adm, "segmenter", "bench-segmenter", seg.Run, schemas.TopicEvents)
		seg.Close()
		restore()
		if err != nil {
			return rows, err
		}
		logAfter, err := topicRecords(ctx, adm, schemas.TopicProfiles)
		if err != nil {
			return rows, err
		}
		row.note = fmt.Sprintf("%d changelog records", logAfter-logBefore)
		rows = append(rows, row)
	}
	if !stages["dispatcher"] && !stages["analytics"] && !stages["e2e"] {
		return rows, nil
	}

	sim, simSrv, err := benchSim(reg, log)
	if err != nil {
		return rows, err
	}
	defer func() { _ = simSrv.Shutdown(5 * time.Second) }()
	simCtx, simStop := context.WithCancel(ctx)
	defer simStop()
	go func() { _ = sim.Run(simCtx) }()
	if stages["dispatcher"] {
		disp, err := dispatcher.New(benchDispatcherConfig("bench-dispatcher", simSrv.URL()), kcfg, reg, log, nil)
		if err != nil {
			return rows, err
		}
		row, err := measureStage(ctx, adm, "dispatcher (to simulator over HTTP)", "bench-dispatcher", disp.Run, schemas.TopicDispatch)
		disp.Close()
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}

	if stages["analytics"] {
		sink, err := analytics.New(analytics.Config{Group: "bench-analytics", DSN: dsn}, kcfg, conn, log, nil)
		if err != nil {
			return rows, err
		}
		row, err := measureStage(ctx, adm, "analytics (to ClickHouse)", "bench-analytics", sink.Run, schemas.TopicEvents, schemas.TopicDispatch, schemas.TopicOutcomes)
		sink.Close()
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	if !stages["e2e"] {
		return rows, nil
	}

	// 4. End to end: all three stages together on fresh groups, from the
	// first event to the last row in ClickHouse.
	t0, cpu0 := time.Now(), processCPU()
	e2eCtx, e2eStop := context.WithCancel(ctx)
	defer e2eStop()
	seg2, err := segmenter.New(segmenter.Config{Group: "e2e-segmenter"}, kcfg, log, nil)
	if err != nil {
		return rows, err
	}
	defer seg2.Close()
	disp2, err := dispatcher.New(benchDispatcherConfig("e2e-dispatcher", simSrv.URL()), kcfg, reg, log, nil)
	if err != nil {
		return rows, err
	}
	defer disp2.Close()
	sink2, err := analytics.New(analytics.Config{Group: "e2e-analytics", DSN: dsn}, kcfg, conn, log, nil)
	if err != nil {
		return rows, err
	}
	defer sink2.Close()
	for _, run := range []func(context.Context) error{seg2.Run, disp2.Run, sink2.Run} {
		go func() { _ = run(e2eCtx) }()
	}
	err = waitGroupsDone(ctx, adm,
		groupTopics{"e2e-segmenter", []string{schemas.TopicEvents}},
		groupTopics{"e2e-dispatcher", []string{schemas.TopicDispatch}},
		groupTopics{"e2e-analytics", []string{schemas.TopicEvents, schemas.TopicDispatch, schemas.TopicOutcomes}},
	)
	elapsed, cpu := time.Since(t0), processCPU()-cpu0
	if err != nil {
		return rows, err
	}
	return append(rows, benchRow{"end to end (3 stages together)", env.n, elapsed, "events in -> rows in ClickHouse", cpu}), nil
}

// loadSynthetic produces n events: registrations, tag updates, custom events,
// and one inbound PROMO every keywordEvery events. It returns the bytes
// produced.
func loadSynthetic(ctx context.Context, cl *kgo.Client, n, keywordEvery int) (int64, error) {
	users := max(n/10, 1)
	var total int64
	errc := make(chan error, 1)
	now := time.Now().UTC()
	for i := range n {
		u := i % users
		phone := fmt.Sprintf("+9198%08d", u)
		ev := &schemas.Event{ID: "bench-" + strconv.Itoa(i), App: devAppID, Time: now, Received: now, HWID: "whatsapp:" + phone}
		switch {
		case keywordEvery > 0 && i%keywordEvery == keywordEvery-1:
			ev.Kind, ev.Name = schemas.KindInbound, schemas.EventWhatsAppReceived
			ev.Inbound = &schemas.Inbound{PhoneNumberID: devPhoneNumberID, From: phone, WAMID: "wamid.bench" + strconv.Itoa(i), Type: "text", Text: "PROMO", ProfileName: "Bench"}
		case i < users:
			ev.Kind, ev.Name, ev.DeviceType, ev.Country, ev.Language = schemas.KindRegister, schemas.EventDeviceRegistered, schemas.DeviceWhatsApp, "IN", "en"
			ev.Tags = map[string]any{"City": "Mumbai", "FavoriteCuisine": "asian", "Orders": u % 20}
		case i%5 == 0:
			ev.Kind = schemas.KindTags
			ev.Tags = map[string]any{"LastOrderCuisine": "indian", "Orders": i % 20}
		default:
			ev.Kind, ev.Name = schemas.KindEvent, "OrderPlaced"
			ev.Attributes = map[string]any{"cuisine": "asian", "amount": i % 60, "currency": "USD"}
		}
		v, err := ev.Marshal()
		if err != nil {
			return 0, err
		}
		total += int64(len(v))
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicEvents, Key: ev.Key(), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	select {
	case err := <-errc:
		return 0, fmt.Errorf("loading events: %w", err)
	default:
	}
	return total, nil
}

// bareAgain is the bare consumer's second run, after the stages.
const bareAgain = "bare consumer again, after the stages"

// bareConsume reads n records of the events topic with a plain franz-go
// consumer and decodes each: the ceiling a stage is compared with.
func bareConsume(ctx context.Context, kcfg kafka.Config, n int64) error {
	cl, err := kgo.NewClient(append(kcfg.Opts(nil), kgo.ConsumeTopics(schemas.TopicEvents),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var read int64
	for read < n {
		fs := cl.PollRecords(ctx, 10000)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, r := range fs.Records() {
			if _, err := schemas.DecodeEvent(r.Value); err != nil {
				return fmt.Errorf("bare consumer: %w", err)
			}
			read++
		}
	}
	return nil
}

// measureStage runs a stage alone until its group committed everything on
// topics, and reports its throughput.
func measureStage(ctx context.Context, adm *kadm.Client, name, group string, run func(context.Context) error, topics ...string) (benchRow, error) {
	total, err := topicRecords(ctx, adm, topics...)
	if err != nil {
		return benchRow{}, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	t0, cpu0 := time.Now(), processCPU()
	errc := make(chan error, 1)
	go func() { errc <- run(sctx) }()
	if err := waitGroupsDone(ctx, adm, groupTopics{group, topics}); err != nil {
		return benchRow{}, err
	}
	elapsed, cpu := time.Since(t0), processCPU()-cpu0
	stop()
	if err := <-errc; err != nil {
		return benchRow{}, fmt.Errorf("%s: %w", name, err)
	}
	return benchRow{stage: name, records: total, elapsed: elapsed, cpu: cpu}, nil
}

// topicRecords is the sum of the topics' end offsets.
func topicRecords(ctx context.Context, adm *kadm.Client, topics ...string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n, nil
}

// processCPU is the CPU time this process used so far, user and system:
// what a stage costs whatever else shares the machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// groupTopics is a consumer group and the topics it consumes.
type groupTopics struct {
	group  string
	topics []string
}

// waitGroupsDone waits until every group has committed up to the end of its
// topics. Groups are given in pipeline order and checked in that order, so
// when an upstream group is done the downstream topic's end checked after it
// is final. A group that has not committed yet is not done.
func waitGroupsDone(ctx context.Context, adm *kadm.Client, groups ...groupTopics) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		done := true
		for _, g := range groups {
			if !done {
				break
			}
			ends, err := adm.ListEndOffsets(ctx, g.topics...)
			if err != nil {
				return err
			}
			committed, err := adm.FetchOffsets(ctx, g.group)
			if errors.Is(err, kerr.GroupIDNotFound) {
				done = false
				continue
			}
			if err != nil {
				return err
			}
			ends.Each(func(o kadm.ListedOffset) {
				c, ok := committed.Lookup(o.Topic, o.Partition)
				if o.Offset > 0 && (!ok || c.At < o.Offset) {
					done = false
				}
			})
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("stages did not finish within 30 minutes")
}

// benchDispatcherConfig is a dispatcher without rate limit or pair-rate
// planning, like the simulator it sends to (benchSim): its own cost is
// measured.
func benchDispatcherConfig(group, url string) dispatcher.Config {
	return dispatcher.Config{
		Group: group, WhatsAppBaseURL: url,
		Limiter:      dispatcher.LimiterConfig{Mode: dispatcher.LimiterNone},
		PairInterval: -1,
	}
}

// benchSim is a simulator with no throughput or pair limit, no status delay
// and no webhooks (the numbers have no webhook URL), so what is measured is
// the dispatcher's own cost plus one HTTP round trip per send.
func benchSim(reg *apps.Registry, log *slog.Logger) (*wasim.Sim, *service.Server, error) {
	sim, err := wasim.New(wasim.Config{
		Numbers:      simNumbers(reg, ""),
		Templates:    wasim.DefaultTemplates(),
		Throughput:   -1,
		PairInterval: -1,
		StatusDelay:  -1,
	}, log.With("component", "wasim"))
	if err != nil {
		return nil, nil, err
	}
	srv, err := service.Listen("127.0.0.1:0", sim.Handler(), log)
	if err != nil {
		return nil, nil, err
	}
	return sim, srv, nil
}
