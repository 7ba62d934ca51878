package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/ingest"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
	"github.com/heraldhq/herald/segmenter"
)

// stageFlags are the flags every standalone stage shares.
type stageFlags struct {
	*flags
	brokers    string
	partitions int
	saslMech   string
	saslUser   string
	tls        bool
	linger     time.Duration
	opsAddr    string
}

func newStageFlags(name string, stderr io.Writer) *stageFlags {
	f := &stageFlags{flags: newFlags(name, stderr)}
	f.StringVar(&f.brokers, "kafka.brokers", "127.0.0.1:9092", "Kafka seed brokers, comma-separated")
	f.IntVar(&f.partitions, "kafka.partitions", 8, "partitions of topics Herald creates when they are missing")
	f.StringVar(&f.saslMech, "kafka.sasl.mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (password from HERALD_KAFKA_SASL_PASSWORD or HERALD_KAFKA_SASL_PASSWORD_FILE)")
	f.StringVar(&f.saslUser, "kafka.sasl.user", "", "SASL user")
	f.BoolVar(&f.tls, "kafka.tls", false, "connect to Kafka over TLS")
	f.DurationVar(&f.linger, "kafka.linger", 0, "how long producers wait to fill a batch (0: send at once; batches still form under load)")
	f.StringVar(&f.opsAddr, "ops.addr", "127.0.0.1:9100", "address of /metrics, /healthz and /readyz")
	return f
}

func (f *stageFlags) kafka() (kafka.Config, error) {
	c := kafka.Config{
		Brokers:       splitList(f.brokers),
		Partitions:    int32(f.partitions),
		SASLMechanism: f.saslMech,
		SASLUser:      f.saslUser,
		TLS:           f.tls,
		Linger:        f.linger,
	}
	if err := c.PasswordFromEnv(); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// stageRun is a started stage process: its ops server and Kafka client.
type stageRun struct {
	log   *slog.Logger
	ops   *service.Ops
	opsSv *service.Server
	kcfg  kafka.Config
	admin *kgo.Client
}

// startStage parses flags, ensures the topics and starts the ops server.
func startStage(ctx context.Context, f *stageFlags, args []string, stderr io.Writer) (*stageRun, error) {
	if err := f.parse(args); err != nil {
		return nil, err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return nil, err
	}
	kcfg, err := f.kafka()
	if err != nil {
		return nil, err
	}
	admin, err := kgo.NewClient(kcfg.Opts(log)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	if err := kafka.EnsureTopics(ctx, admin, kcfg.Partitions, kcfg.ReplicationFactor, schemas.Topics...); err != nil {
		admin.Close()
		return nil, err
	}
	r := &stageRun{log: log, ops: service.NewOps(), kcfg: kcfg, admin: admin}
	r.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, admin) })
	if r.opsSv, err = service.Listen(f.opsAddr, r.ops.Handler(), log); err != nil {
		admin.Close()
		return nil, err
	}
	log.Info("ops endpoints", "addr", r.opsSv.URL())
	return r, nil
}

func (r *stageRun) close() {
	_ = r.opsSv.Shutdown(5 * time.Second)
	r.admin.Close()
}

func loadApps(path string) (*apps.Registry, error) {
	if path == "" {
		return nil, errors.New("-apps is required: a YAML file listing the apps (see deploy/apps.example.yaml)")
	}
	return apps.Load(path)
}

func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("broker", stderr)
	port := f.Int("port", 9092, "port to listen on")
	host := f.String("host", "127.0.0.1", "host to listen on")
	dataDir := f.String("data-dir", ".herald/broker", "directory the broker persists topics, offsets and groups in (empty: memory only)")
	partitions := f.Int("kafka.partitions", 8, "partitions of the topics it creates")
	sync := f.Bool("sync-writes", false, "fsync every produced batch before acknowledging it")
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		abs, err := filepath.Abs(*dataDir)
		if err != nil {
			return err
		}
		*dataDir = abs
	}
	b, err := broker.Start(broker.Config{Host: *host, Port: *port, DataDir: *dataDir, SyncWrites: *sync,
		Partitions: int32(*partitions), Topics: schemas.Topics}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stdout, "herald broker listening on %s (data dir %q)\n", joinList(b.Addrs()), *dataDir)
	<-ctx.Done()
	return nil
}

func runWasim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("wasim", stderr)
	addr := f.String("http.addr", "127.0.0.1:8090", "address to serve the Graph API on")
	appsFile := f.String("apps", "", "apps file: the simulator serves each app's phone numbers with its access token and app secret")
	webhook := f.String("webhook.url", "http://127.0.0.1:8080/whatsapp/webhooks", "where status and inbound webhooks are posted")
	throughput := f.Int("throughput", 80, "messages per second per phone number before error 130429")
	readRatio := f.Float64("read-ratio", 1, "fraction of delivered messages that get read")
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	reg, err := loadApps(*appsFile)
	if err != nil {
		return err
	}
	sim, err := wasim.New(wasim.Config{Numbers: simNumbers(reg, *webhook), Templates: wasim.DefaultTemplates(),
		Throughput: *throughput, ReadRatio: *readRatio}, log)
	if err != nil {
		return err
	}
	srv, err := service.Listen(*addr, sim.Handler(), log)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Shutdown(5 * time.Second) }()
	fmt.Fprintf(stdout, "herald wasim serving the WhatsApp Cloud API on %s\n", srv.URL())
	return sim.Run(ctx)
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newStageFlags("ingest", stderr)
	addr := f.String("http.addr", "127.0.0.1:8080", "address of the ingest HTTP APIs")
	appsFile := f.String("apps", "", "apps file (YAML)")
	var icfg ingest.Config
	f.Float64Var(&icfg.RatePerCredential, "ingest.rate", 5000, "requests per second per API token or write key on this replica, then 429 (negative: no limit)")
	f.IntVar(&icfg.BurstPerCredential, "ingest.burst", 0, "burst of that limit (0: twice the rate)")
	f.Int64Var(&icfg.MaxBodyBytes, "ingest.max-body", 1<<20, "largest request body in bytes, then 413")
	f.DurationVar(&icfg.ProduceTimeout, "ingest.produce-timeout", 10*time.Second, "how long a request waits for Kafka's acknowledgement before 503")
	f.DurationVar(&icfg.DedupWindow, "ingest.dedup-window", 24*time.Hour, "how long redeliveries (Segment messageId, Meta webhook wamid+status) are recognised and dropped, at least")
	f.IntVar(&icfg.DedupMaxBytes, "ingest.dedup-max-bytes", 32<<20, "memory bound of that window per generation (two are kept); past it the oldest keys are forgotten")
	var tcfg ingest.TagViewConfig
	f.IntVar(&tcfg.CacheBytes, "ingest.tags-cache-bytes", 256<<20, "memory of the getTags view, a copy of the tags topic (every profile's tags) in each replica")
	r, err := startStage(ctx, f, args, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	reg, err := loadApps(*appsFile)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(r.kcfg.Opts(r.log)...)
	if err != nil {
		return fmt.Errorf("creating kafka client: %w", err)
	}
	defer cl.Close()
	ing, err := ingest.New(icfg, reg, cl, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	view, err := ingest.NewTagView(tcfg, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer view.Close()
	ing.ServeTags(view)
	viewCtx, stopView := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(viewCtx) }()
	defer func() { stopView(); <-viewDone }()
	srv, err := service.Listen(*addr, ing.Handler(), r.log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald ingest listening on %s\n", srv.URL())
	<-ctx.Done()
	// Drain in-flight requests: each answers only after Kafka acknowledged.
	return srv.Shutdown(30 * time.Second)
}

func runSegmenter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newStageFlags("segmenter", stderr)
	addr := f.String("http.addr", "", "address of the segment API (createFilter, listFilters, deleteFilter); empty: not served")
	appsFile := f.String("apps", "", "apps file (YAML), required with -http.addr: the API tokens of the segment API")
	keywords := f.String("segmenter.keywords", "", "keyword rules file (YAML, see deploy/keywords.example.yaml); default: PROMO, HELP and the built-in STOP/START")
	var scfg segmenter.Config
	limitFlags(f.FlagSet, &scfg.Limits)
	r, err := startStage(ctx, f, args, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	if *keywords != "" {
		if scfg.Keywords, err = loadKeywords(*keywords); err != nil {
			return err
		}
	}
	s, err := segmenter.New(scfg, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer s.Close()
	if *addr != "" {
		reg, err := loadApps(*appsFile)
		if err != nil {
			return err
		}
		srv, err := service.Listen(*addr, s.APIHandler(reg), r.log)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Shutdown(10 * time.Second) }()
		fmt.Fprintf(stdout, "herald segmenter: segment API on %s\n", srv.URL())
	}
	return s.Run(ctx)
}

func runDispatcher(ctx context.Context, args []string, _, stderr io.Writer) error {
	f := newStageFlags("dispatcher", stderr)
	appsFile := f.String("apps", "", "apps file (YAML)")
	base := f.String("whatsapp.base-url", "https://graph.facebook.com", "WhatsApp Cloud API base URL (the simulator's in dev)")
	rate := f.Float64("whatsapp.rate", 80, "messages per second per sending phone number")
	maxPending := f.Int("scheduler.max-pending", 1_000_000, "scheduled requests held in memory before the scheduler stops fetching")
	r, err := startStage(ctx, f, args, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	reg, err := loadApps(*appsFile)
	if err != nil {
		return err
	}
	d, err := dispatcher.New(dispatcher.Config{WhatsAppBaseURL: *base, RatePerSender: *rate}, r.kcfg, reg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer d.Close()
	// The scheduler runs next to the dispatcher: it releases the requests
	// of herald.scheduled.v1 to herald.dispatch.v1 at their send_at.
	sch, err := dispatcher.NewScheduler(dispatcher.SchedulerConfig{MaxPending: *maxPending}, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer sch.Close()
	return runBoth(ctx, d.Run, sch.Run)
}

// runBoth runs a and b until ctx is done or one of them fails, which stops
// the other; it returns the first error.
func runBoth(ctx context.Context, a, b func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{a, b} {
		go func() {
			err := run(ctx)
			cancel()
			errs <- err
		}()
	}
	first := <-errs
	if second := <-errs; first == nil {
		first = second
	}
	return first
}

func runAnalytics(ctx context.Context, args []string, _, stderr io.Writer) error {
	f := newStageFlags("analytics", stderr)
	dsn := f.String("clickhouse.dsn", "clickhouse://127.0.0.1:9000/default", "ClickHouse DSN (password from HERALD_CLICKHOUSE_DSN is best)")
	r, err := startStage(ctx, f, args, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	conn, err := analytics.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := analytics.Migrate(ctx, conn, r.log); err != nil {
		return err
	}
	r.ops.AddCheck("clickhouse", func(ctx context.Context) error { return conn.Ping(ctx) })
	s, err := analytics.New(analytics.Config{DSN: *dsn}, r.kcfg, conn, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("migrate", stderr)
	dsn := f.String("clickhouse.dsn", "clickhouse://127.0.0.1:9000/default", "ClickHouse DSN")
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	conn, err := analytics.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := analytics.Migrate(ctx, conn, log)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema is up to date")
	}
	for _, m := range applied {
		fmt.Fprintf(stdout, "applied %s\n", m)
	}
	return nil
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("report", stderr)
	dsn := f.String("clickhouse.dsn", "clickhouse://127.0.0.1:9000/default", "ClickHouse DSN")
	app := f.String("app", "", "the app to report on; without it, a short summary of every app")
	since := f.Duration("since", 0, "summary only: the last duration, e.g. 24h (default: everything)")
	campaign := f.String("campaign", "", "only this campaign's messages (with -app)")
	journey := f.String("journey", "", "only this journey's messages and events (with -app)")
	from := f.String("from", "", "first day, YYYY-MM-DD UTC (with -app; default: the first)")
	to := f.String("to", "", "last day, YYYY-MM-DD UTC, included (with -app; default: the last)")
	asJSON := f.Bool("json", false, "print JSON instead of tables (with -app)")
	if err := f.parse(args); err != nil {
		return err
	}
	p, err := reportParams(*app, *campaign, *journey, *from, *to)
	if err != nil {
		return err
	}
	if *app == "" && (*asJSON || *campaign != "" || *journey != "" || *from != "" || *to != "") {
		return errors.New("report: -campaign, -journey, -from, -to and -json need -app")
	}
	conn, err := analytics.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *app == "" {
		var since0 time.Time
		if *since > 0 {
			since0 = time.Now().Add(-*since)
		}
		sum, err := analytics.Summarize(ctx, conn, "", since0)
		if err != nil {
			return err
		}
		return sum.WriteText(stdout)
	}
	rep, err := analytics.RunReport(ctx, conn, p, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteText(stdout)
}

// reportParams builds the query parameters of herald report's flags.
func reportParams(app, campaign, journey, from, to string) (analytics.Params, error) {
	p := analytics.Params{App: app}
	if campaign != "" && journey != "" {
		return p, errors.New("report: -campaign and -journey exclude each other")
	}
	if campaign != "" {
		p.SourceKind, p.SourceName = "campaign", campaign
	}
	if journey != "" {
		p.SourceKind, p.SourceName, p.Journey = "journey", journey, journey
	}
	for _, d := range []struct {
		flag, value string
		into        *time.Time
	}{{"-from", from, &p.From}, {"-to", to, &p.To}} {
		if d.value == "" {
			continue
		}
		t, err := time.Parse(time.DateOnly, d.value)
		if err != nil {
			return p, fmt.Errorf("report: %s %q: want a day, YYYY-MM-DD", d.flag, d.value)
		}
		*d.into = t
	}
	if !p.From.IsZero() && !p.To.IsZero() && p.To.Before(p.From) {
		return p, fmt.Errorf("report: -to %s is before -from %s", to, from)
	}
	return p, nil
}

// loadKeywords reads a keyword rules file: a YAML list of
// segmenter.KeywordRule, or a map with the list under "keywords". Unknown
// fields are errors (a misspelt key would silently change a rule).
func loadKeywords(path string) ([]segmenter.KeywordRule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading keyword rules: %w", err)
	}
	var doc struct {
		Keywords []segmenter.KeywordRule `yaml:"keywords"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return nil, fmt.Errorf("parsing keyword rules %s: %w", path, err)
	}
	if doc.Keywords == nil {
		return nil, nil // no rules in the file: the defaults ("keywords: []" turns every rule off)
	}
	cfg := segmenter.Config{Keywords: doc.Keywords}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("keyword rules %s: %w", path, err)
	}
	return doc.Keywords, nil
}

// limitFlags declares the flags of segmenter.Limits on fs.
func limitFlags(fs *flag.FlagSet, l *segmenter.Limits) {
	fs.IntVar(&l.MaxMarketing, "segmenter.max-marketing", 0, "MARKETING campaign messages per user per -segmenter.marketing-window at most (0: no cap)")
	fs.DurationVar(&l.MarketingWindow, "segmenter.marketing-window", 7*24*time.Hour, "moving window of the marketing cap")
	fs.StringVar(&l.QuietStart, "segmenter.quiet-start", "", "start of the quiet hours, HH:mm in each user's timezone (with -segmenter.quiet-end)")
	fs.StringVar(&l.QuietEnd, "segmenter.quiet-end", "", "end of the quiet hours, HH:mm")
	fs.StringVar(&l.QuietPolicy, "segmenter.quiet-policy", segmenter.QuietDefer, "campaign messages in quiet hours: defer (sent when they end) or drop")
}
