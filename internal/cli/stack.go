package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/analytics"
	"github.com/heraldhq/herald/dispatcher"
	"github.com/heraldhq/herald/ingest"
	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/broker"
	"github.com/heraldhq/herald/internal/chserver"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/internal/service"
	"github.com/heraldhq/herald/internal/wasim"
	"github.com/heraldhq/herald/schemas"
	"github.com/heraldhq/herald/segmenter"
)

// stackConfig says how to assemble the whole pipeline in one process.
type stackConfig struct {
	// DataDir holds the broker's and ClickHouse's data and the dev
	// credentials. Required.
	DataDir string
	// BrokerPort of the embedded broker, 0 for a free one. Brokers, when set,
	// points at an existing Kafka instead.
	BrokerPort int
	Brokers    []string
	Partitions int32
	// ClickHouseDSN, when set, points at an existing server instead of a
	// private one started in DataDir/clickhouse.
	ClickHouseDSN string
	// Listen addresses; ":0" style for free ports.
	IngestAddr, WasimAddr, OpsAddr string
	// SMTPAddr and FCMAddr are the listen addresses of the SMTP sink and
	// the push simulator; empty: free ports on 127.0.0.1.
	SMTPAddr, FCMAddr string

	// Apps are the apps served; with DevApp set instead, the registry is
	// built at start from DevApp with email and push settings pointing at
	// the SMTP sink and the push simulator (channels.go).
	Apps   *apps.Registry
	DevApp *apps.App
	// TrackingKeys sign and verify email tracking links (dispatcher and
	// ingest); empty: no tracking.
	TrackingKeys []string

	Segmenter  segmenter.Config
	Dispatcher dispatcher.Config
	Scheduler  dispatcher.SchedulerConfig
	Analytics  analytics.Config
	Wasim      wasim.Config
}

// stack is the running pipeline.
type stack struct {
	cfg  stackConfig
	log  *slog.Logger
	ops  *service.Ops
	kcfg kafka.Config

	broker *broker.Broker
	ch     *chserver.Server
	dsn    string
	conn   driver.Conn
	admin  *kgo.Client
	ingCl  *kgo.Client

	ingestSrv, wasimSrv, opsSrv *service.Server
	sim                         *wasim.Sim
	sims                        channelSims
	tagView                     *ingest.TagView
	seg                         *segmenter.Segmenter
	disp                        *dispatcher.Dispatcher
	sched                       *dispatcher.Scheduler
	sink                        *analytics.Sink

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
	closed bool
}

// startStack starts every part and returns when all are running. On error
// whatever started is stopped again.
func startStack(ctx context.Context, cfg stackConfig, log *slog.Logger) (_ *stack, err error) {
	s := &stack{cfg: cfg, log: log, ops: service.NewOps()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	// The email and push sinks first: the dev app's settings point at them.
	if err := s.startChannelSims(&cfg, log); err != nil {
		return nil, err
	}
	s.cfg = cfg

	// Kafka: embedded unless brokers were given.
	brokers := cfg.Brokers
	if len(brokers) == 0 {
		s.broker, err = broker.Start(broker.Config{
			Port:       cfg.BrokerPort,
			DataDir:    filepath.Join(cfg.DataDir, "broker"),
			Partitions: cfg.Partitions,
			Topics:     schemas.Topics,
		}, log)
		if err != nil {
			return nil, err
		}
		brokers = s.broker.Addrs()
	}
	s.kcfg = kafka.Config{Brokers: brokers, Partitions: cfg.Partitions, ClientID: "herald-dev"}
	if err := s.kcfg.Validate(); err != nil {
		return nil, err
	}
	if s.admin, err = kgo.NewClient(s.kcfg.Opts(log)...); err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	if err := kafka.EnsureTopics(ctx, s.admin, s.kcfg.Partitions, s.kcfg.ReplicationFactor, schemas.Topics...); err != nil {
		return nil, err
	}
	s.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, s.admin) })

	// ClickHouse: a private server unless a DSN was given; migrations always.
	s.dsn = cfg.ClickHouseDSN
	if s.dsn == "" {
		s.ch, err = chserver.Start(ctx, chserver.Config{Dir: filepath.Join(cfg.DataDir, "clickhouse")})
		if err != nil {
			return nil, err
		}
		s.dsn = s.ch.DSN("default")
	}
	if s.conn, err = analytics.Open(ctx, s.dsn); err != nil {
		return nil, err
	}
	if _, err := analytics.Migrate(ctx, s.conn, log); err != nil {
		return nil, err
	}
	s.ops.AddCheck("clickhouse", func(ctx context.Context) error { return s.conn.Ping(ctx) })

	// Ingest listens first: the simulator needs its webhook URL.
	if s.ingCl, err = kgo.NewClient(s.kcfg.Opts(log)...); err != nil {
		return nil, fmt.Errorf("creating ingest kafka client: %w", err)
	}
	ing, err := ingest.New(ingest.Config{TrackingKeys: cfg.TrackingKeys}, cfg.Apps, s.ingCl, log, s.ops.Registry)
	if err != nil {
		return nil, err
	}
	if s.tagView, err = ingest.NewTagView(ingest.TagViewConfig{}, s.kcfg, log.With("stage", "ingest"), s.ops.Registry); err != nil {
		return nil, err
	}
	ing.ServeTags(s.tagView)
	// The segmenter is built before ingest listens: its segment API
	// (createFilter, listFilters, deleteFilter) shares ingest's address.
	segCfg := cfg.Segmenter
	// One process for everything, on a developer's machine and in the
	// tests: the cache grows with the profiles rather than taking its
	// whole size at start.
	segCfg.CacheLazy = true
	if s.seg, err = segmenter.New(segCfg, s.kcfg, log.With("stage", "segmenter"), s.ops.Registry); err != nil {
		return nil, err
	}
	if s.ingestSrv, err = service.Listen(cfg.IngestAddr, withSegmentAPI(ing.Handler(), s.seg.APIHandler(cfg.Apps)), log); err != nil {
		return nil, err
	}

	// The WhatsApp Cloud API simulator, one number per app phone number.
	wcfg := cfg.Wasim
	wcfg.Numbers = simNumbers(cfg.Apps, s.ingestSrv.URL()+"/whatsapp/webhooks")
	if len(wcfg.Templates) == 0 {
		wcfg.Templates = wasim.DefaultTemplates()
	}
	if s.sim, err = wasim.New(wcfg, log.With("component", "wasim")); err != nil {
		return nil, err
	}
	if s.wasimSrv, err = service.Listen(cfg.WasimAddr, s.sim.Handler(), log); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.goRun(runCtx, "wasim", s.sim.Run)
	s.goRun(runCtx, "ingest tags view", s.tagView.Run)

	s.goRun(runCtx, "segmenter", s.seg.Run)

	dcfg := cfg.Dispatcher
	if dcfg.WhatsAppBaseURL == "" {
		dcfg.WhatsAppBaseURL = s.wasimSrv.URL()
	}
	s.channelConfig(&dcfg)
	if s.disp, err = dispatcher.New(dcfg, s.kcfg, cfg.Apps, log, s.ops.Registry); err != nil {
		return nil, err
	}
	s.ops.AddCheck("templates", s.disp.Ready)
	s.goRun(runCtx, "dispatcher", s.disp.Run)
	// The scheduler releases the requests of herald.scheduled.v1
	// (createWhatsAppMessage with a future send_date) to the dispatcher.
	if s.sched, err = dispatcher.NewScheduler(cfg.Scheduler, s.kcfg, log, s.ops.Registry); err != nil {
		return nil, err
	}
	s.goRun(runCtx, "scheduler", s.sched.Run)

	acfg := cfg.Analytics
	acfg.DSN = s.dsn
	if acfg.Pricer == nil {
		// The segmenter's rate card prices the sends into costs too.
		t, err := pricing.New(cfg.Segmenter.Pricing)
		if err != nil {
			return nil, fmt.Errorf("pricing: %w", err)
		}
		acfg.Pricer = analytics.TablePricer{Table: t}
	}
	if s.sink, err = analytics.New(acfg, s.kcfg, s.conn, log, s.ops.Registry); err != nil {
		return nil, err
	}
	s.goRun(runCtx, "analytics", s.sink.Run)

	mux := http.NewServeMux()
	mux.Handle("/", s.ops.Handler())
	if s.opsSrv, err = service.Listen(cfg.OpsAddr, mux, log); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *stack) goRun(ctx context.Context, name string, run func(context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("stage stopped", "stage", name, "err", err)
			s.errMu.Lock()
			if s.err == nil {
				s.err = fmt.Errorf("%s: %w", name, err)
			}
			s.errMu.Unlock()
		}
	}()
}

// Err is the first error a stage stopped with, nil while all run.
func (s *stack) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Close stops everything in reverse order: ingest stops taking requests
// (in-flight ones finish), the stages commit what they finished, then the
// simulator, ClickHouse and the broker stop.
func (s *stack) Close() {
	if s.closed {
		return
	}
	s.closed = true
	if s.ingestSrv != nil {
		_ = s.ingestSrv.Shutdown(10 * time.Second)
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	for _, c := range []interface{ Close() }{s.tagView, s.seg, s.disp, s.sched, s.sink} {
		if c != nil && !isNilCloser(c) {
			c.Close()
		}
	}
	for _, srv := range []*service.Server{s.wasimSrv, s.opsSrv} {
		if srv != nil {
			_ = srv.Shutdown(5 * time.Second)
		}
	}
	s.sims.close()
	if s.ingCl != nil {
		s.ingCl.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.ch != nil {
		s.ch.Close()
	}
	if s.broker != nil {
		s.broker.Close()
	}
}

func isNilCloser(c interface{ Close() }) bool {
	switch v := c.(type) {
	case *segmenter.Segmenter:
		return v == nil
	case *dispatcher.Dispatcher:
		return v == nil
	case *dispatcher.Scheduler:
		return v == nil
	case *analytics.Sink:
		return v == nil
	}
	return false
}

// simNumbers gives the simulator one business number per app phone number,
// with that app's token and secret, posting webhooks to webhookURL.
func simNumbers(reg *apps.Registry, webhookURL string) []wasim.Number {
	var out []wasim.Number
	for _, a := range reg.All() {
		for _, p := range a.WhatsApp.PhoneNumberIDs {
			out = append(out, wasim.Number{
				PhoneNumberID: p,
				WABAID:        a.WhatsApp.WABAID,
				AccessToken:   a.WhatsApp.AccessToken,
				AppSecret:     a.WhatsApp.AppSecret,
				WebhookURL:    webhookURL,
			})
		}
	}
	return out
}

// devCredentials are the demo app's secrets, generated on first run and kept
// in DataDir/credentials.json (mode 0600) so a restarted dev keeps them.
type devCredentials struct {
	APIToken        string `json:"api_token"`
	SegmentWriteKey string `json:"segment_write_key"`
	AccessToken     string `json:"access_token"`
	AppSecret       string `json:"app_secret"`
	VerifyToken     string `json:"verify_token"`
	// SMTPPassword (the SMTP sink's), FCMToken (the push simulator's) and
	// TrackingKey (email tracking links) were added later: a credentials
	// file without them gets them generated and written back.
	SMTPPassword string `json:"smtp_password"`
	FCMToken     string `json:"fcm_token"`
	TrackingKey  string `json:"tracking_key"`
}

// Dev app identity: the simulator's business number and account.
const (
	devAppID         = "demo"
	devPhoneNumberID = "106540352242922"
	devWABAID        = "102290129340398"
)

func loadDevCredentials(dir string) (*devCredentials, error) {
	path := filepath.Join(dir, "credentials.json")
	b, err := os.ReadFile(path)
	if err == nil {
		c := new(devCredentials)
		if err := json.Unmarshal(b, c); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		if c.SMTPPassword != "" && c.FCMToken != "" && c.TrackingKey != "" {
			return c, nil
		}
		c.fillChannels()
		return c, c.write(path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading dev credentials: %w", err)
	}
	c := &devCredentials{
		APIToken:        randHex(24),
		SegmentWriteKey: randHex(16),
		AccessToken:     "EAAG" + randHex(32),
		AppSecret:       randHex(16),
		VerifyToken:     randHex(12),
	}
	c.fillChannels()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	return c, c.write(path)
}

// fillChannels generates the email and push secrets that are missing.
func (c *devCredentials) fillChannels() {
	if c.SMTPPassword == "" {
		c.SMTPPassword = randHex(16)
	}
	if c.FCMToken == "" {
		c.FCMToken = "ya29." + randHex(24)
	}
	if c.TrackingKey == "" {
		c.TrackingKey = randHex(32)
	}
}

func (c *devCredentials) write(path string) error {
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing dev credentials: %w", err)
	}
	return nil
}

func (c *devCredentials) app() apps.App {
	return apps.App{
		ID:              devAppID,
		APIToken:        c.APIToken,
		SegmentWriteKey: c.SegmentWriteKey,
		WhatsApp: apps.WhatsApp{
			PhoneNumberIDs: []string{devPhoneNumberID},
			WABAID:         devWABAID,
			AccessToken:    c.AccessToken,
			AppSecret:      c.AppSecret,
			VerifyToken:    c.VerifyToken,
		},
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withSegmentAPI serves the segment API's paths with api and everything
// else with ingest, so that one address takes every Pushwoosh-style call.
func withSegmentAPI(ingest, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", ingest)
	for _, p := range segmenter.APIPaths {
		mux.Handle(p, api)
	}
	return mux
}
