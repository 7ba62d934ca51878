package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/segmenter"
)

// devFlags are the flags of dev and demo.
type devFlags struct {
	*flags
	dataDir    string
	brokerPort int
	brokers    string
	partitions int
	chDSN      string
	ingestAddr string
	wasimAddr  string
	smtpAddr   string
	fcmAddr    string
	opsAddr    string
	appsFile   string
	keywords   string
	limits     segmenter.Limits
	pricing    pricing.Config
	readRatio  float64
}

func newDevFlags(name string, stderr io.Writer, ports bool) *devFlags {
	f := &devFlags{flags: newFlags(name, stderr)}
	ingest, wasimA, ops, broker := "127.0.0.1:8080", "127.0.0.1:8090", "127.0.0.1:9100", 9092
	smtpA, fcmA := "127.0.0.1:2525", "127.0.0.1:8091"
	if !ports { // demo and tests: free ports, so nothing clashes
		ingest, wasimA, ops, broker = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", 0
		smtpA, fcmA = "127.0.0.1:0", "127.0.0.1:0"
	}
	f.StringVar(&f.dataDir, "data-dir", ".herald/"+name, "directory for the broker's and ClickHouse's data and the dev credentials")
	f.IntVar(&f.brokerPort, "broker.port", broker, "port of the embedded Kafka broker (0: a free port)")
	f.StringVar(&f.brokers, "kafka.brokers", "", "use these Kafka brokers (comma-separated) instead of the embedded broker")
	f.IntVar(&f.partitions, "kafka.partitions", 8, "partitions of the topics Herald creates")
	f.StringVar(&f.chDSN, "clickhouse.dsn", "", "use this ClickHouse (clickhouse://host:9000/db) instead of a private server")
	f.StringVar(&f.ingestAddr, "http.addr", ingest, "ingest HTTP address (Pushwoosh API, Meta webhook)")
	f.StringVar(&f.wasimAddr, "wasim.addr", wasimA, "WhatsApp Cloud API simulator address")
	f.StringVar(&f.smtpAddr, "smtpsim.addr", smtpA, "SMTP sink address (STARTTLS, AUTH; keeps the emails the dispatcher sends)")
	f.StringVar(&f.fcmAddr, "fcmsim.addr", fcmA, "FCM HTTP v1 push simulator address")
	f.StringVar(&f.opsAddr, "ops.addr", ops, "address of /metrics, /healthz and /readyz")
	f.Float64Var(&f.readRatio, "wasim.read-ratio", 0.8, "fraction of delivered messages the simulator reports as read (decided per wamid)")
	f.StringVar(&f.appsFile, "apps", "", "apps file (YAML); default: one demo app with credentials generated into the data dir")
	limitFlags(f.FlagSet, &f.limits)
	pricingFlags(f.FlagSet, &f.pricing)
	f.StringVar(&f.keywords, "segmenter.keywords", "", "keyword rules file (YAML, see deploy/keywords.example.yaml); default: PROMO, HELP and the built-in STOP/START")
	return f
}

func (f *devFlags) stackConfig() (stackConfig, *devCredentials, error) {
	cfg := stackConfig{
		DataDir:       f.dataDir,
		BrokerPort:    f.brokerPort,
		Partitions:    int32(f.partitions),
		ClickHouseDSN: f.chDSN,
		IngestAddr:    f.ingestAddr,
		WasimAddr:     f.wasimAddr,
		SMTPAddr:      f.smtpAddr,
		FCMAddr:       f.fcmAddr,
		OpsAddr:       f.opsAddr,
	}
	cfg.Wasim.ReadRatio = f.readRatio
	if f.readRatio == 0 {
		cfg.Wasim.ReadRatio = -1 // the simulator's "none"; 0 would mean its default
	}
	if f.brokers != "" {
		cfg.Brokers = splitList(f.brokers)
	}
	cfg.Segmenter.Limits = f.limits
	cfg.Segmenter.Pricing = f.pricing
	if f.keywords != "" {
		rules, err := loadKeywords(f.keywords)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Segmenter.Keywords = rules
	}
	if f.appsFile != "" {
		reg, err := apps.Load(f.appsFile)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Apps = reg
		return cfg, nil, nil
	}
	creds, err := loadDevCredentials(f.dataDir)
	if err != nil {
		return cfg, nil, err
	}
	// The registry is built at start: the app's email and push settings
	// point at the SMTP sink and the push simulator started then.
	app := creds.app()
	creds.devChannels(&app)
	cfg.DevApp = &app
	cfg.TrackingKeys = []string{creds.TrackingKey}
	return cfg, creds, nil
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newDevFlags("dev", stderr, true)
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	cfg, creds, err := f.stackConfig()
	if err != nil {
		return err
	}
	s, err := startStack(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	s.printBanner(stdout, creds)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "herald dev: stopping")
			return nil
		case <-t.C:
			if err := s.Err(); err != nil {
				return err
			}
		}
	}
}

// printBanner prints where everything listens and, for the generated demo
// app only, its credentials: they are local dev secrets that scripts need.
func (s *stack) printBanner(w io.Writer, creds *devCredentials) {
	fmt.Fprintln(w, "herald dev is running")
	fmt.Fprintf(w, "  ingest HTTP     %s  (POST /json/1.3/registerDevice|setTags|postEvent, /whatsapp/webhooks)\n", s.ingestSrv.URL())
	fmt.Fprintf(w, "  kafka broker    %s\n", joinList(s.kcfg.Brokers))
	fmt.Fprintf(w, "  clickhouse      %s\n", redactDSN(s.dsn))
	fmt.Fprintf(w, "  whatsapp sim    %s  (Graph API; base URL for -whatsapp.base-url)\n", s.wasimSrv.URL())
	fmt.Fprintf(w, "  smtp sink       %s  (STARTTLS, AUTH; email requests of the demo app land here)\n", s.sims.smtp.Addr())
	fmt.Fprintf(w, "  push sim        %s  (FCM HTTP v1; base URL for -push.fcm-base-url)\n", s.sims.fcmSrv.URL())
	fmt.Fprintf(w, "  metrics         %s/metrics  (/healthz, /readyz)\n", s.opsSrv.URL())
	if creds != nil {
		fmt.Fprintf(w, "demo app %q (dev-only credentials, kept in %s/credentials.json):\n", devAppID, s.cfg.DataDir)
		fmt.Fprintf(w, "  api token         %s  (Authorization: Token ...)\n", creds.APIToken)
		fmt.Fprintf(w, "  segment write key %s\n", creds.SegmentWriteKey)
		fmt.Fprintf(w, "  webhook secret    %s  (X-Hub-Signature-256)\n", creds.AppSecret)
		fmt.Fprintf(w, "  verify token      %s  (hub.verify_token)\n", creds.VerifyToken)
		fmt.Fprintf(w, "  phone number id   %s\n", devPhoneNumberID)
		fmt.Fprintf(w, "  email from        %s (smtp user %s)\n", devEmailFrom, devSMTPUser)
		fmt.Fprintf(w, "  fcm project       %s\n", devFCMProject)
	}
}
