package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/ingest"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/tlsconf"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
	"github.com/heraldhq/herald/segmenter"
)

// DefaultShutdownTimeout is the default of -shutdown.timeout: how long a
// stage may take to drain and commit after SIGTERM. Kubernetes'
// terminationGracePeriodSeconds must be longer (deploy/kubernetes uses 45s).
const DefaultShutdownTimeout = 30 * time.Second

// deployCmd is a command operators deploy: it declares its flags, checks
// its whole configuration without touching the network (all -dry-run does),
// and runs until its context ends.
type deployCmd interface {
	// flagSet is the command's flags, declared and not parsed yet.
	flagSet() *flags
	// check validates the parsed configuration and loads the files it
	// names; errors name the option at fault.
	check() error
	// run serves until ctx is done, then drains.
	run(ctx context.Context, stdout io.Writer) error
}

// configCommand is one config-reading command, for `config validate`,
// `config print`, the docs and the known keys of a config file.
type configCommand struct {
	name string
	new  func(stderr io.Writer) deployCmd
	// stage: validated by `config validate` when no -command is given.
	stage bool
}

var configCmds = []configCommand{
	{"ingest", func(w io.Writer) deployCmd { return newIngestCmd(w) }, true},
	{"segmenter", func(w io.Writer) deployCmd { return newSegmenterCmd(w) }, true},
	{"dispatcher", func(w io.Writer) deployCmd { return newDispatcherCmd(w) }, true},
	{"analytics", func(w io.Writer) deployCmd { return newAnalyticsCmd(w) }, true},
	{"migrate", func(w io.Writer) deployCmd { return newMigrateCmd(w) }, false},
	{"report", func(w io.Writer) deployCmd { return newReportCmd(w) }, false},
	{"broker", func(w io.Writer) deployCmd { return newBrokerCmd(w) }, false},
	{"wasim", func(w io.Writer) deployCmd { return newWasimCmd(w) }, false},
}

// declared caches one declared flag set per config command: the known keys
// of config files.
var declared = sync.OnceValue(func() []struct {
	name string
	fs   *flags
} {
	out := make([]struct {
		name string
		fs   *flags
	}, len(configCmds))
	for i, c := range configCmds {
		out[i].name, out[i].fs = c.name, c.new(io.Discard).flagSet()
	}
	return out
})

// configCommands returns every config-reading command with its declared
// (unparsed, shared: do not parse) flags.
func configCommands() []struct {
	name    string
	flagSet func() *flags
} {
	d := declared()
	out := make([]struct {
		name    string
		flagSet func() *flags
	}, len(d))
	for i := range d {
		fs := d[i].fs
		out[i].name, out[i].flagSet = d[i].name, func() *flags { return fs }
	}
	return out
}

// runDeploy parses args into c's flags, checks the configuration, and runs
// c unless -dry-run; after ctx ends c has -shutdown.timeout to return.
func runDeploy(ctx context.Context, name string, c deployCmd, args []string, stdout io.Writer) error {
	f := c.flagSet()
	if err := f.parse(args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if f.dryRun {
		fmt.Fprintf(stdout, "herald %s: configuration ok\n", name)
		return nil
	}
	timeout := DefaultShutdownTimeout
	if fl := f.Lookup("shutdown.timeout"); fl != nil {
		timeout = fl.Value.(flag.Getter).Get().(time.Duration)
	}
	return runDrained(ctx, timeout, func(ctx context.Context) error { return c.run(ctx, stdout) })
}

// runDrained runs run until it returns; once ctx is done it waits at most
// timeout more, then gives up with an error (the process exits; what was
// not committed is delivered again to the next owner).
func runDrained(ctx context.Context, timeout time.Duration, run func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("shutting down: not drained within -shutdown.timeout %s; exiting with work uncommitted (it is delivered again)", timeout)
	}
}

// shutdownFlag declares -shutdown.timeout on f.
func shutdownFlag(f *flags) {
	f.Duration("shutdown.timeout", DefaultShutdownTimeout, "after SIGTERM or SIGINT: how long to drain (finish in-flight requests and batches, commit offsets, leave the group) before exiting anyway; keep it below Kubernetes' terminationGracePeriodSeconds")
}

// stageFlags are the flags every standalone stage shares.
type stageFlags struct {
	*flags
	brokers     string
	partitions  int
	replication int
	clientID    string
	saslMech    string
	saslUser    string
	saslPass    string
	tls         tlsconf.Files
	linger      time.Duration
	commitEvery time.Duration
	session     time.Duration
	opsAddr     string

	kcfg kafka.Config // built by check
	log  *slog.Logger // built by check
}

func newStageFlags(name string, stderr io.Writer) *stageFlags {
	f := &stageFlags{flags: newFlags(name, stderr)}
	f.addDryRun()
	shutdownFlag(f.flags)
	f.StringVar(&f.brokers, "kafka.brokers", "127.0.0.1:9092", "Kafka seed brokers, comma-separated")
	f.StringVar(&f.clientID, "kafka.client-id", "herald", "client id sent to the brokers (quotas and broker logs)")
	f.IntVar(&f.partitions, "kafka.partitions", 8, "partitions of topics Herald creates when they are missing (the most replicas a consumer stage can use; docs/OPERATIONS.md)")
	f.IntVar(&f.replication, "kafka.replication-factor", -1, "replication factor of topics Herald creates when they are missing (-1: the broker's default)")
	f.StringVar(&f.saslMech, "kafka.sasl.mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	f.StringVar(&f.saslUser, "kafka.sasl.user", "", "SASL user, required with -kafka.sasl.mechanism")
	f.secretVar(&f.saslPass, "kafka.sasl.password", "SASL password, required with -kafka.sasl.mechanism")
	f.BoolVar(&f.tls.Enabled, "kafka.tls.enabled", false, "connect to Kafka over TLS (system roots unless -kafka.tls.ca-file)")
	f.BoolVar(&f.tls.Enabled, "kafka.tls", false, "the same as -kafka.tls.enabled (the older name)")
	f.StringVar(&f.tls.CAFile, "kafka.tls.ca-file", "", "PEM bundle of the CAs that sign the brokers' certificates (implies TLS)")
	f.StringVar(&f.tls.CertFile, "kafka.tls.cert-file", "", "PEM client certificate for mutual TLS (implies TLS; with -kafka.tls.key-file)")
	f.StringVar(&f.tls.KeyFile, "kafka.tls.key-file", "", "PEM key of -kafka.tls.cert-file")
	f.StringVar(&f.tls.ServerName, "kafka.tls.server-name", "", "name to verify in the brokers' certificates (empty: the host dialled)")
	f.BoolVar(&f.tls.InsecureSkipVerify, "kafka.tls.insecure-skip-verify", false, "accept any broker certificate (tests only)")
	f.DurationVar(&f.linger, "kafka.linger", 0, "how long producers wait to fill a batch (0: send at once; batches still form under load)")
	f.DurationVar(&f.commitEvery, "kafka.commit-interval", time.Second, "how often consumers commit processed offsets (at least 100ms; a crash redelivers at most this much work)")
	f.DurationVar(&f.session, "kafka.session-timeout", kafka.DefaultSessionTimeout, "how long the consumer group waits for a member that stopped heartbeating (killed, not stopped: a stop leaves the group at once) before its partitions go to the others (at least 1s; the brokers bound it, 6s-30m by default)")
	f.StringVar(&f.opsAddr, "ops.addr", "127.0.0.1:9100", "address of /metrics, /healthz and /readyz")
	return f
}

func (f *stageFlags) flagSet() *flags { return f.flags }

// check builds the logger and the Kafka config; errors name the option.
func (f *stageFlags) check() error {
	log, err := f.logger(f.Output())
	if err != nil {
		return err
	}
	f.log = log
	f.kcfg, err = f.kafka()
	return err
}

func (f *stageFlags) kafka() (kafka.Config, error) {
	c := kafka.Config{
		Brokers:           splitList(f.brokers),
		ClientID:          f.clientID,
		Partitions:        int32(f.partitions),
		ReplicationFactor: int16(f.replication),
		SASLMechanism:     strings.ToUpper(f.saslMech),
		SASLUser:          f.saslUser,
		SASLPassword:      f.saslPass,
		TLS:               f.tls.Enabled,
		TLSFiles:          f.tls,
		Linger:            f.linger,
		CommitInterval:    f.commitEvery,
		SessionTimeout:    f.session,
	}
	switch {
	case len(c.Brokers) == 0:
		return c, errors.New("kafka.brokers is required")
	case f.partitions <= 0 || f.partitions > 1<<20:
		return c, fmt.Errorf("kafka.partitions: want a positive number, got %d", f.partitions)
	case f.replication == 0 || f.replication < -1 || f.replication > 1<<14:
		return c, fmt.Errorf("kafka.replication-factor: want -1 (the broker's default) or a positive number, got %d", f.replication)
	case f.commitEvery < 100*time.Millisecond:
		return c, fmt.Errorf("kafka.commit-interval: want at least 100ms, got %s", f.commitEvery)
	case f.linger < 0:
		return c, fmt.Errorf("kafka.linger: want 0 or more, got %s", f.linger)
	case f.session < time.Second:
		return c, fmt.Errorf("kafka.session-timeout: want at least 1s, got %s", f.session)
	}
	switch c.SASLMechanism {
	case "":
		if c.SASLUser != "" || c.SASLPassword != "" {
			return c, errors.New("kafka.sasl.mechanism is required with kafka.sasl.user or kafka.sasl.password")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASLUser == "" {
			return c, fmt.Errorf("kafka.sasl.user is required with kafka.sasl.mechanism %s", c.SASLMechanism)
		}
		if c.SASLPassword == "" {
			return c, fmt.Errorf("kafka.sasl.password (or kafka.sasl.password-file) is required with kafka.sasl.mechanism %s", c.SASLMechanism)
		}
	default:
		return c, fmt.Errorf("kafka.sasl.mechanism: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", f.saslMech)
	}
	if err := c.Validate(); err != nil { // reads the TLS files
		return c, err
	}
	return c, nil
}

// chFlags are the ClickHouse options of analytics, migrate and report.
type chFlags struct {
	dsn      string
	user     string
	password string
	tls      tlsconf.Files
	dial     analytics.Dial // built by check
}

func newCHFlags(f *flags) *chFlags {
	c := &chFlags{}
	f.StringVar(&c.dsn, "clickhouse.dsn", analytics.DefaultDSN, "ClickHouse native-protocol DSN, clickhouse://host:9000/database?dial_timeout=5s (secure=true for TLS with the system roots); keep the password out of it: -clickhouse.password-file")
	f.masks["clickhouse.dsn"] = redactDSN
	f.StringVar(&c.user, "clickhouse.user", "", "ClickHouse user (empty: the DSN's, else default)")
	f.secretVar(&c.password, "clickhouse.password", "ClickHouse password (empty: the DSN's)")
	f.BoolVar(&c.tls.Enabled, "clickhouse.tls.enabled", false, "connect to ClickHouse over TLS (the secure native port, 9440; system roots unless -clickhouse.tls.ca-file)")
	f.StringVar(&c.tls.CAFile, "clickhouse.tls.ca-file", "", "PEM bundle of the CAs that sign ClickHouse's certificate (implies TLS)")
	f.StringVar(&c.tls.CertFile, "clickhouse.tls.cert-file", "", "PEM client certificate for mutual TLS (implies TLS; with -clickhouse.tls.key-file)")
	f.StringVar(&c.tls.KeyFile, "clickhouse.tls.key-file", "", "PEM key of -clickhouse.tls.cert-file")
	f.StringVar(&c.tls.ServerName, "clickhouse.tls.server-name", "", "name to verify in ClickHouse's certificate (empty: the host dialled)")
	f.BoolVar(&c.tls.InsecureSkipVerify, "clickhouse.tls.insecure-skip-verify", false, "accept any ClickHouse certificate (tests only)")
	return c
}

func (c *chFlags) check() error {
	cfg := analytics.Config{DSN: c.dsn}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("clickhouse.dsn: %w", err)
	}
	tc, err := c.tls.Config("clickhouse.tls")
	if err != nil {
		return err
	}
	c.dial = analytics.Dial{User: c.user, Password: c.password, TLS: tc}
	return nil
}

func (c *chFlags) open(ctx context.Context) (driver.Conn, error) {
	return analytics.OpenWith(ctx, c.dsn, c.dial)
}

// stageRun is a started stage process: its ops server and Kafka client.
type stageRun struct {
	log   *slog.Logger
	ops   *service.Ops
	opsSv *service.Server
	kcfg  kafka.Config
	admin *kgo.Client
}

// startStage ensures the topics and starts the ops server, with the lag
// of groups (the consumer groups of the stage) on /metrics. Once ctx is
// done /readyz answers 503, so that load balancers stop sending work
// while the stage drains.
func startStage(ctx context.Context, f *stageFlags, groups ...string) (*stageRun, error) {
	log, kcfg := f.log, f.kcfg
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
	if len(groups) > 0 {
		if err := r.ops.Registry.Register(kafka.NewLagCollector(admin, groups...)); err != nil {
			admin.Close()
			return nil, fmt.Errorf("registering the lag collector: %w", err)
		}
	}
	context.AfterFunc(ctx, func() {
		r.ops.Drain()
		log.Info("signal received: draining", "deadline", f.Lookup("shutdown.timeout").Value.String())
	})
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
	r.log.Info("stopped")
}

func loadApps(path string) (*apps.Registry, error) {
	if path == "" {
		return nil, errors.New("apps is required: a YAML file listing the apps (see deploy/apps.example.yaml)")
	}
	reg, err := apps.Load(path)
	if err != nil {
		return nil, fmt.Errorf("apps: %w", err)
	}
	return reg, nil
}

// brokerCmd is `herald broker`.
type brokerCmd struct {
	f                *flags
	port, partitions int
	host, dataDir    string
	syncWrites       bool
	log              *slog.Logger
}

func newBrokerCmd(stderr io.Writer) *brokerCmd {
	c := &brokerCmd{f: newFlags("broker", stderr)}
	c.f.addDryRun()
	shutdownFlag(c.f)
	c.f.IntVar(&c.port, "port", 9092, "port to listen on")
	c.f.StringVar(&c.host, "host", "127.0.0.1", "host to listen on")
	c.f.StringVar(&c.dataDir, "data-dir", ".herald/broker", "directory the broker persists topics, offsets and groups in (empty: memory only)")
	c.f.IntVar(&c.partitions, "kafka.partitions", 8, "partitions of the topics it creates")
	c.f.BoolVar(&c.syncWrites, "sync-writes", false, "fsync every produced batch before acknowledging it")
	return c
}

func (c *brokerCmd) flagSet() *flags { return c.f }

func (c *brokerCmd) check() (err error) {
	if c.log, err = c.f.logger(c.f.Output()); err != nil {
		return err
	}
	if c.port < 0 || c.port > 65535 {
		return fmt.Errorf("port: %d is not a TCP port", c.port)
	}
	if c.partitions <= 0 {
		return fmt.Errorf("kafka.partitions: want a positive number, got %d", c.partitions)
	}
	if c.dataDir != "" {
		if c.dataDir, err = filepath.Abs(c.dataDir); err != nil {
			return fmt.Errorf("data-dir: %w", err)
		}
	}
	return nil
}

func (c *brokerCmd) run(ctx context.Context, stdout io.Writer) error {
	b, err := broker.Start(broker.Config{
		Host: c.host, Port: c.port, DataDir: c.dataDir, SyncWrites: c.syncWrites,
		Partitions: int32(c.partitions), Topics: schemas.Topics,
	}, c.log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stdout, "herald broker listening on %s (data dir %q)\n", joinList(b.Addrs()), c.dataDir)
	<-ctx.Done()
	return nil
}

func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "broker", newBrokerCmd(stderr), args, stdout)
}

// wasimCmd is `herald wasim`.
type wasimCmd struct {
	f                    *flags
	addr, appsFile, hook string
	throughput           int
	readRatio            float64
	log                  *slog.Logger
	cfg                  wasim.Config
}

func newWasimCmd(stderr io.Writer) *wasimCmd {
	c := &wasimCmd{f: newFlags("wasim", stderr)}
	c.f.addDryRun()
	shutdownFlag(c.f)
	c.f.StringVar(&c.addr, "http.addr", "127.0.0.1:8090", "address to serve the Graph API on")
	c.f.StringVar(&c.appsFile, "apps", "", "apps file: the simulator serves each app's phone numbers with its access token and app secret")
	c.f.StringVar(&c.hook, "webhook.url", "http://127.0.0.1:8080/whatsapp/webhooks", "where status and inbound webhooks are posted")
	c.f.IntVar(&c.throughput, "throughput", 80, "messages per second per phone number before error 130429")
	c.f.Float64Var(&c.readRatio, "read-ratio", 1, "fraction of delivered messages that get read")
	return c
}

func (c *wasimCmd) flagSet() *flags { return c.f }

func (c *wasimCmd) check() (err error) {
	if c.log, err = c.f.logger(c.f.Output()); err != nil {
		return err
	}
	reg, err := loadApps(c.appsFile)
	if err != nil {
		return err
	}
	c.cfg = wasim.Config{
		Numbers: simNumbers(reg, c.hook), Templates: wasim.DefaultTemplates(),
		Throughput: c.throughput, ReadRatio: c.readRatio,
	}
	check := c.cfg
	if err := check.Validate(); err != nil {
		return fmt.Errorf("wasim: %w", err)
	}
	return nil
}

func (c *wasimCmd) run(ctx context.Context, stdout io.Writer) error {
	sim, err := wasim.New(c.cfg, c.log)
	if err != nil {
		return err
	}
	srv, err := service.Listen(c.addr, sim.Handler(), c.log)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Shutdown(5 * time.Second) }()
	fmt.Fprintf(stdout, "herald wasim serving the WhatsApp Cloud API on %s\n", srv.URL())
	return sim.Run(ctx)
}

func runWasim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "wasim", newWasimCmd(stderr), args, stdout)
}

// ingestCmd is `herald ingest`.
type ingestCmd struct {
	*stageFlags
	addr, appsFile string
	drainFor       time.Duration
	icfg           ingest.Config
	tcfg           ingest.TagViewConfig
	trackKeys      stringList
	reg            *apps.Registry
}

func newIngestCmd(stderr io.Writer) *ingestCmd {
	c := &ingestCmd{stageFlags: newStageFlags("ingest", stderr)}
	f := c.stageFlags
	f.StringVar(&c.addr, "http.addr", "127.0.0.1:8080", "address of the ingest HTTP APIs")
	f.StringVar(&c.appsFile, "apps", "", "apps file (YAML), required")
	f.Float64Var(&c.icfg.RatePerCredential, "ingest.rate", 5000, "requests per second per API token or write key on this replica, then 429 (negative: no limit)")
	f.IntVar(&c.icfg.BurstPerCredential, "ingest.burst", 0, "burst of that limit (0: twice the rate)")
	f.Int64Var(&c.icfg.MaxBodyBytes, "ingest.max-body", 1<<20, "largest request body in bytes, then 413")
	f.DurationVar(&c.icfg.ProduceTimeout, "ingest.produce-timeout", 10*time.Second, "how long a request waits for Kafka's acknowledgement before 503")
	f.DurationVar(&c.icfg.DedupWindow, "ingest.dedup-window", 24*time.Hour, "how long redeliveries (Segment messageId, Meta webhook wamid+status) are recognised and dropped, at least")
	f.IntVar(&c.icfg.DedupMaxBytes, "ingest.dedup-max-bytes", 32<<20, "memory bound of that window per generation (two are kept); past it the oldest keys are forgotten")
	f.IntVar(&c.tcfg.CacheBytes, "ingest.tags-cache-bytes", 256<<20, "memory of the getTags view, a copy of the tags topic (every profile's tags) in each replica")
	f.Var(&c.trackKeys, "ingest.tracking-keys", "keys verifying the email tracking links the dispatcher signs (comma-separated, any verifies; env:NAME or file:/path each; best set as HERALD_INGEST_TRACKING_KEYS); empty: /t/ routes answer 404")
	f.DurationVar(&c.drainFor, "ingest.drain-timeout", 20*time.Second, "after SIGTERM: how long in-flight requests get to finish (each answers after Kafka's acknowledgement); within -shutdown.timeout")
	return c
}

func (c *ingestCmd) check() error {
	if err := c.stageFlags.check(); err != nil {
		return err
	}
	c.icfg.TrackingKeys = c.trackKeys
	icfg, tcfg := c.icfg, c.tcfg
	if err := icfg.Validate(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := tcfg.Validate(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	var err error
	c.reg, err = loadApps(c.appsFile)
	return err
}

func (c *ingestCmd) run(ctx context.Context, stdout io.Writer) error {
	r, err := startStage(ctx, c.stageFlags)
	if err != nil {
		return err
	}
	defer r.close()
	cl, err := kgo.NewClient(r.kcfg.Opts(r.log)...)
	if err != nil {
		return fmt.Errorf("creating kafka client: %w", err)
	}
	defer cl.Close()
	ing, err := ingest.New(c.icfg, c.reg, cl, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	view, err := ingest.NewTagView(c.tcfg, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer view.Close()
	ing.ServeTags(view)
	viewCtx, stopView := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); _ = view.Run(viewCtx) }()
	defer func() { stopView(); <-viewDone }()
	srv, err := service.Listen(c.addr, ing.Handler(), r.log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "herald ingest listening on %s\n", srv.URL())
	<-ctx.Done()
	// Drain in-flight requests: each answers only after Kafka acknowledged.
	return srv.Shutdown(c.drainFor)
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "ingest", newIngestCmd(stderr), args, stdout)
}

// segmenterCmd is `herald segmenter`.
type segmenterCmd struct {
	*stageFlags
	addr, appsFile, keywords string
	scfg                     segmenter.Config
	reg                      *apps.Registry
}

func newSegmenterCmd(stderr io.Writer) *segmenterCmd {
	c := &segmenterCmd{stageFlags: newStageFlags("segmenter", stderr)}
	f := c.stageFlags
	f.StringVar(&c.addr, "http.addr", "", "address of the segment API (createFilter, listFilters, deleteFilter, addTag, listTags, deleteTag, createTargetedMessage, previewTargetedMessage); empty: not served")
	f.StringVar(&c.appsFile, "apps", "", "apps file (YAML), required with -http.addr: the API tokens of the segment API")
	f.StringVar(&c.keywords, "segmenter.keywords", "", "keyword rules file (YAML, see deploy/keywords.example.yaml); default: PROMO, HELP and the built-in STOP/START")
	f.IntVar(&c.scfg.CacheBytes, "segmenter.cache-bytes", segmenter.DefaultCacheBytes, "memory of the profile cache of this replica (fastcache); size it for the hot profiles of the partitions it owns (evicted ones are read back from the changelog)")
	f.BoolVar(&c.scfg.CacheLazy, "segmenter.cache-lazy", false, "leave the profile cache's memory unwritten until profiles fill it; by default it is written once at start (about 0.1 s for 256 MiB), so that catching up after a restart pays no page faults and the process holds -segmenter.cache-bytes from the start")
	f.BoolVar(&c.scfg.DecodeAlways, "segmenter.decode-always", false, "apply every event to a decoded profile; by default plain custom events and message statuses that no segment (segments on the seen times only excepted) or journey refers to are applied to the cached profile in place (the same bytes, less CPU): this is the way back")
	f.DurationVar(&c.scfg.ChangelogInterval, "segmenter.changelog-interval", segmenter.DefaultChangelogInterval, "longest a profile change waits for its changelog record while this replica works through a backlog, a later change of the profile replacing it (one record for a user's events seconds apart); written after every poll when caught up (what is left fits in one poll), before partitions move and at a stop; the events are committed once it is written; negative: after every poll")
	f.IntVar(&c.scfg.ChangelogBytes, "segmenter.changelog-bytes", segmenter.DefaultChangelogBytes, "memory of the changelog records waiting (-segmenter.changelog-interval): written when they hold this much")
	f.IntVar(&c.scfg.GCPercent, "segmenter.gc-percent", segmenter.DefaultGCPercent, "Go GC target of this process (GOGC): a higher one spends less CPU on the short-lived garbage of each event; -1 leaves the runtime's own; the GOGC variable wins")
	f.Int64Var(&c.scfg.HeapLimitBytes, "segmenter.heap-limit-bytes", segmenter.DefaultHeapLimitBytes, "Go soft memory limit of this process (GOMEMLIMIT), the cache not included: bounds what -segmenter.gc-percent lets the heap grow to; -1 none; the GOMEMLIMIT variable wins")
	f.IntVar(&c.scfg.Workers, "segmenter.workers", 0, "goroutines processing a batch, each the profiles whose key hashes to it; 0: GOMAXPROCS")
	limitFlags(f.FlagSet, &c.scfg.Limits)
	f.DurationVar(&c.scfg.SweepInterval, "segmenter.sweep-interval", segmenter.DefaultSweepInterval, "how often segments with relative times (\"-30d\") are re-evaluated over every profile; 0: never")
	pricingFlags(f.FlagSet, &c.scfg.Pricing)
	return c
}

func (c *segmenterCmd) check() (err error) {
	if err := c.stageFlags.check(); err != nil {
		return err
	}
	if c.scfg.SweepInterval == 0 {
		c.scfg.SweepInterval = -1 // the flag's 0 is "never", the config's is the default
	}
	if c.keywords != "" {
		if c.scfg.Keywords, err = loadKeywords(c.keywords); err != nil {
			return fmt.Errorf("segmenter.keywords: %w", err)
		}
	}
	scfg := c.scfg
	if err := scfg.Validate(); err != nil {
		return fmt.Errorf("segmenter: %w", err)
	}
	if _, err := pricing.New(scfg.Pricing); err != nil {
		return fmt.Errorf("pricing: %w", err)
	}
	if c.addr != "" {
		if c.reg, err = loadApps(c.appsFile); err != nil {
			return fmt.Errorf("%w (the segment API of -http.addr needs it)", err)
		}
	}
	return nil
}

func (c *segmenterCmd) run(ctx context.Context, stdout io.Writer) error {
	r, err := startStage(ctx, c.stageFlags, segmenter.DefaultGroup)
	if err != nil {
		return err
	}
	defer r.close()
	defer c.scfg.ApplyRuntime()()
	s, err := segmenter.New(c.scfg, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.addr != "" {
		srv, err := service.Listen(c.addr, s.APIHandler(c.reg), r.log)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Shutdown(10 * time.Second) }()
		fmt.Fprintf(stdout, "herald segmenter: segment API on %s\n", srv.URL())
	}
	return s.Run(ctx)
}

func runSegmenter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "segmenter", newSegmenterCmd(stderr), args, stdout)
}

// dispatcherCmd is `herald dispatcher` (and the scheduler beside it).
type dispatcherCmd struct {
	*stageFlags
	appsFile  string
	dcfg      dispatcher.Config
	schcfg    dispatcher.SchedulerConfig
	trackKeys stringList
	reg       *apps.Registry
}

func newDispatcherCmd(stderr io.Writer) *dispatcherCmd {
	c := &dispatcherCmd{stageFlags: newStageFlags("dispatcher", stderr)}
	f := c.stageFlags
	f.StringVar(&c.appsFile, "apps", "", "apps file (YAML), required")
	f.StringVar(&c.dcfg.WhatsAppBaseURL, "whatsapp.base-url", "https://graph.facebook.com", "WhatsApp Cloud API base URL (the simulator's in dev)")
	f.Float64Var(&c.dcfg.RatePerSender, "whatsapp.rate", 80, "messages per second per sending phone number, all dispatcher replicas together (at most 1000; apps.yaml whatsapp.throughput overrides it per number)")
	f.StringVar(&c.dcfg.Limiter.Mode, "limiter.mode", dispatcher.LimiterGlobal, "per-sender rate limit: global (shared by every replica through herald.senders.v1, adaptive), local (each replica alone) or none")
	f.DurationVar(&c.dcfg.Limiter.Heartbeat, "limiter.heartbeat", 250*time.Millisecond, "how often replicas publish their demand per sender")
	f.DurationVar(&c.dcfg.PairInterval, "whatsapp.pair-interval", 6*time.Second, "least time between two messages to one recipient (Meta's pair rate); negative disables the planning")
	f.StringVar(&c.dcfg.Delivery.InDoubt, "dispatcher.in-doubt", dispatcher.InDoubtHold,
		"a send a crashed replica may have made, without a status webhook: hold (report it in_doubt, never send it again) or resend (send it again after dispatcher.resend-after)")
	f.DurationVar(&c.dcfg.Delivery.ResendAfter, "dispatcher.resend-after", 10*time.Minute, "with dispatcher.in-doubt resend: how long after its intent a send in doubt is sent again, for Meta's status webhook to come first")
	f.DurationVar(&c.dcfg.Delivery.Window, "dispatcher.dedupe-window", 24*time.Hour, "how far back a replica reads the outcomes and intents of a partition it is assigned: requests decided within it are not sent again")
	f.IntVar(&c.schcfg.MaxPending, "scheduler.max-pending", 1_000_000, "scheduled requests held in memory before the scheduler stops fetching")
	f.DurationVar(&c.dcfg.Templates.SyncInterval, "dispatcher.templates-sync", 15*time.Minute,
		"how often every app's WhatsApp templates are listed again, besides at start and after template webhooks (negative: never)")
	f.StringVar(&c.dcfg.Email.TrackingURL, "email.tracking-url", "", "ingest's public URL for email open, click and unsubscribe links; empty: no tracking")
	f.Var(&c.trackKeys, "email.tracking-keys", "keys signing email tracking links, the first signs (comma-separated; env:NAME or file:/path each; best set as HERALD_EMAIL_TRACKING_KEYS)")
	f.Float64Var(&c.dcfg.Email.RatePerSender, "email.rate", 14, "emails per second per From address")
	f.IntVar(&c.dcfg.Email.PoolSize, "email.pool-size", 4, "connections per SMTP server")
	f.StringVar(&c.dcfg.Push.FCMBaseURL, "push.fcm-base-url", "https://fcm.googleapis.com", "FCM HTTP v1 base URL (the push simulator's in dev)")
	f.Float64Var(&c.dcfg.Push.RatePerSender, "push.rate", 500, "pushes per second per FCM project")
	return c
}

func (c *dispatcherCmd) check() (err error) {
	if err := c.stageFlags.check(); err != nil {
		return err
	}
	if u, err := url.Parse(c.dcfg.WhatsAppBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("whatsapp.base-url: %q: want http(s)://host[:port][/path]", c.dcfg.WhatsAppBaseURL)
	}
	if r := c.dcfg.RatePerSender; r <= 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		return fmt.Errorf("whatsapp.rate: want a positive number of messages a second, got %v", r)
	}
	if c.schcfg.MaxPending <= 0 {
		return fmt.Errorf("scheduler.max-pending: want a positive number, got %d", c.schcfg.MaxPending)
	}
	c.dcfg.Email.TrackingKeys = c.trackKeys
	dcfg, schcfg := c.dcfg, c.schcfg
	if err := dcfg.Validate(); err != nil {
		return err
	}
	if err := schcfg.Validate(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	c.reg, err = loadApps(c.appsFile)
	return err
}

func (c *dispatcherCmd) run(ctx context.Context, _ io.Writer) error {
	schcfg := c.schcfg
	_ = schcfg.Validate() // fills the group name
	r, err := startStage(ctx, c.stageFlags, "herald-dispatcher", schcfg.Group)
	if err != nil {
		return err
	}
	defer r.close()
	d, err := dispatcher.New(c.dcfg, r.kcfg, c.reg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer d.Close()
	r.ops.AddCheck("templates", d.Ready)
	// The scheduler runs next to the dispatcher: it releases the requests
	// of herald.scheduled.v1 to herald.dispatch.v1 at their send_at.
	sch, err := dispatcher.NewScheduler(c.schcfg, r.kcfg, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer sch.Close()
	return runBoth(ctx, d.Run, sch.Run)
}

func runDispatcher(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "dispatcher", newDispatcherCmd(stderr), args, stdout)
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

// analyticsCmd is `herald analytics`.
type analyticsCmd struct {
	*stageFlags
	ch      *chFlags
	acfg    analytics.Config
	migrate bool
	pricing pricing.Config
}

func newAnalyticsCmd(stderr io.Writer) *analyticsCmd {
	c := &analyticsCmd{stageFlags: newStageFlags("analytics", stderr)}
	c.ch = newCHFlags(c.flags)
	c.IntVar(&c.acfg.BatchRows, "analytics.batch-rows", analytics.DefaultBatchRows, "most rows one INSERT carries, and the most records one poll hands to the sink")
	c.DurationVar(&c.acfg.FlushInterval, "analytics.flush-interval", analytics.DefaultFlushInterval, "least time between two inserts of batches smaller than -analytics.batch-rows (ClickHouse wants few, large inserts)")
	c.DurationVar(&c.acfg.FactsHorizon, "analytics.facts-horizon", analytics.DefaultFactsHorizon, "how long after a dispatch's request day the fact counter keeps its counted states in memory (older dispatches' facts are looked up in ClickHouse one by one); at least 24h")
	c.DurationVar(&c.acfg.SettleInterval, "analytics.settle-interval", analytics.DefaultSettleInterval, "period of the settler, which caches the final counts of event_days and journey_days for events_by_name and journey_steps (keys touched since the last settle are merged live: exact either way)")
	c.BoolVar(&c.migrate, "analytics.migrate", true, "apply pending ClickHouse migrations at start (false: run herald migrate yourself first)")
	pricingFlags(c.FlagSet, &c.pricing)
	return c
}

func (c *analyticsCmd) check() error {
	if err := c.stageFlags.check(); err != nil {
		return err
	}
	if err := c.ch.check(); err != nil {
		return err
	}
	c.acfg.DSN = c.ch.dsn
	acfg := c.acfg
	if err := acfg.Validate(); err != nil {
		return err
	}
	// The rate card prices each billable message into costs.
	t, err := pricing.New(c.pricing)
	if err != nil {
		return fmt.Errorf("pricing: %w", err)
	}
	c.acfg.Pricer = analytics.TablePricer{Table: t}
	return nil
}

func (c *analyticsCmd) run(ctx context.Context, _ io.Writer) error {
	r, err := startStage(ctx, c.stageFlags, analytics.DefaultGroup, analytics.DefaultFactsGroup)
	if err != nil {
		return err
	}
	defer r.close()
	conn, err := c.ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.migrate {
		if _, err := analytics.Migrate(ctx, conn, r.log); err != nil {
			return err
		}
	}
	r.ops.AddCheck("clickhouse", func(ctx context.Context) error { return conn.Ping(ctx) })
	s, err := analytics.New(c.acfg, r.kcfg, conn, r.log, r.ops.Registry)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
}

func runAnalytics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "analytics", newAnalyticsCmd(stderr), args, stdout)
}

// migrateCmd is `herald migrate`.
type migrateCmd struct {
	f   *flags
	ch  *chFlags
	log *slog.Logger
}

func newMigrateCmd(stderr io.Writer) *migrateCmd {
	c := &migrateCmd{f: newFlags("migrate", stderr)}
	c.f.addDryRun()
	c.ch = newCHFlags(c.f)
	return c
}

func (c *migrateCmd) flagSet() *flags { return c.f }

func (c *migrateCmd) check() (err error) {
	if c.log, err = c.f.logger(c.f.Output()); err != nil {
		return err
	}
	return c.ch.check()
}

func (c *migrateCmd) run(ctx context.Context, stdout io.Writer) error {
	conn, err := c.ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := analytics.Migrate(ctx, conn, c.log)
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

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "migrate", newMigrateCmd(stderr), args, stdout)
}

// reportCmd is `herald report`: without -app, the short summary of every
// app; with -app, the analyst queries of docs/ANALYTICS.md as tables or
// JSON, for a campaign, a journey or days.
type reportCmd struct {
	f        *flags
	ch       *chFlags
	app      string
	since    time.Duration
	campaign string
	journey  string
	from, to string
	json     bool
	params   analytics.Params
}

func newReportCmd(stderr io.Writer) *reportCmd {
	c := &reportCmd{f: newFlags("report", stderr)}
	c.f.addDryRun()
	c.ch = newCHFlags(c.f)
	c.f.StringVar(&c.app, "app", "", "the app to report on (the analyst queries); without it, a short summary of every app")
	c.f.DurationVar(&c.since, "since", 0, "summary only: the last duration, e.g. 24h (default: everything)")
	c.f.StringVar(&c.campaign, "campaign", "", "only this campaign's messages (with -app)")
	c.f.StringVar(&c.journey, "journey", "", "only this journey's messages and events (with -app)")
	c.f.StringVar(&c.from, "from", "", "first day, YYYY-MM-DD UTC (with -app; default: the first)")
	c.f.StringVar(&c.to, "to", "", "last day, YYYY-MM-DD UTC, included (with -app; default: the last)")
	c.f.BoolVar(&c.json, "json", false, "print JSON instead of tables (with -app)")
	return c
}

func (c *reportCmd) flagSet() *flags { return c.f }

func (c *reportCmd) check() error {
	if c.since < 0 {
		return fmt.Errorf("since: want a positive duration, got %s", c.since)
	}
	if c.app == "" && (c.json || c.campaign != "" || c.journey != "" || c.from != "" || c.to != "") {
		return errors.New("report: -campaign, -journey, -from, -to and -json need -app")
	}
	p, err := reportParams(c.app, c.campaign, c.journey, c.from, c.to)
	if err != nil {
		return err
	}
	c.params = p
	return c.ch.check()
}

func (c *reportCmd) run(ctx context.Context, stdout io.Writer) error {
	conn, err := c.ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.app == "" {
		var from time.Time
		if c.since > 0 {
			from = time.Now().Add(-c.since)
		}
		sum, err := analytics.Summarize(ctx, conn, "", from)
		if err != nil {
			return err
		}
		return sum.WriteText(stdout)
	}
	rep, err := analytics.RunReport(ctx, conn, c.params, nil)
	if err != nil {
		return err
	}
	if c.json {
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

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDeploy(ctx, "report", newReportCmd(stderr), args, stdout)
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

// pricingFlags declares the flags of pricing.Config (the rate card of the
// campaign preview's estimated cost) on fs.
func pricingFlags(fs *flag.FlagSet, c *pricing.Config) {
	fs.StringVar(&c.File, "pricing.file", "", "Meta rate card CSV for the estimated cost of campaign previews: Meta's published layout "+
		"(Market,Currency,Marketing,Utility,Authentication,...) or country,currency,marketing,utility,authentication (docs/PRICING.md); "+
		"default: the embedded USD card of 2026-01-01, an estimate")
	fs.StringVar((*string)(&c.Rules), "pricing.rules", string(pricing.RulesJuly2025), "Meta's per-message pricing rules: "+
		"2025-07 (utility templates free in the service window, service messages free) or 2026-10 (both charged)")
	fs.StringVar(&c.BusinessCountry, "pricing.business-country", "", "your primary business location (ISO 3166 alpha-2) if Meta bills you "+
		"authentication-international rates: AUTHENTICATION messages to other countries with such a rate are estimated at it")
}
