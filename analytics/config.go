package analytics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Config of the analytics stage.
type Config struct {
	// Group is the Kafka consumer group of the sink. Default
	// "herald-analytics".
	Group string `yaml:"group"`
	// DSN is the clickhouse-go DSN of the native protocol,
	// clickhouse://user:password@host:9000/database?dial_timeout=5s. The
	// password is never logged. Default "clickhouse://127.0.0.1:9000/default".
	DSN string `yaml:"dsn"`
	// BatchRows is the most rows one INSERT carries, and the most records
	// of one chunk of a poll (a poll takes up to four chunks, the next
	// decoded while the one before is inserted); bigger batches are
	// split. ClickHouse
	// inserts big blocks much faster than small ones (each INSERT writes a
	// part per table and runs the views once): 50,000 rows a table insert
	// about twice as fast as 10,000 (docs/BENCHMARKS.md). Default 50000.
	BatchRows int `yaml:"batch_rows"`
	// FlushInterval is the least time between two inserts of batches
	// smaller than BatchRows (see the package doc). Default 1s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// FactsGroup is the Kafka consumer group of the fact counter, which
	// counts herald.facts.v1 into fact_log (counter.go). Default
	// "herald-analytics-facts".
	FactsGroup string `yaml:"facts_group"`
	// FactsHorizon is how long after a dispatch's request day the fact
	// counter remembers its counted states in memory; a fact of a dispatch
	// requested before it is checked against fact_log one by one. Meta
	// stops sending statuses of a message 30 days after it was sent.
	// Default 35 days (840h).
	FactsHorizon time.Duration `yaml:"facts_horizon"`
	// SettleInterval is the period of the settler (settle.go), which
	// caches the final counts of event_days and journey_days for
	// events_by_name and journey_steps; keys touched since the last settle
	// are merged from their states by the queries, exact either way.
	// Default 1m.
	SettleInterval time.Duration `yaml:"settle_interval"`
	// Pricer prices billable messages into the costs table; nil stores
	// their rows with price_known = 0 (no price table loaded). Default nil.
	Pricer Pricer `yaml:"-"`
}

// Config defaults.
const (
	DefaultGroup          = "herald-analytics"
	DefaultDSN            = "clickhouse://127.0.0.1:9000/default"
	DefaultBatchRows      = 50000
	DefaultFlushInterval  = time.Second
	DefaultFactsGroup     = "herald-analytics-facts"
	DefaultFactsHorizon   = 35 * 24 * time.Hour
	DefaultSettleInterval = time.Minute
)

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.DSN == "" {
		c.DSN = DefaultDSN
	}
	if _, err := parseDSN(c.DSN); err != nil {
		return fmt.Errorf("analytics: %w", err)
	}
	switch {
	case c.BatchRows < 0:
		return fmt.Errorf("analytics: batch_rows must not be negative, got %d", c.BatchRows)
	case c.BatchRows == 0:
		c.BatchRows = DefaultBatchRows
	}
	switch {
	case c.FlushInterval < 0:
		return fmt.Errorf("analytics: flush_interval must not be negative, got %s", c.FlushInterval)
	case c.FlushInterval == 0:
		c.FlushInterval = DefaultFlushInterval
	}
	if c.FactsGroup == "" {
		c.FactsGroup = DefaultFactsGroup
	}
	if c.FactsGroup == c.Group {
		return fmt.Errorf("analytics: facts_group must differ from group (%q): the fact counter is a consumer group of its own", c.Group)
	}
	switch {
	case c.FactsHorizon < 0:
		return fmt.Errorf("analytics: facts_horizon must not be negative, got %s", c.FactsHorizon)
	case c.FactsHorizon == 0:
		c.FactsHorizon = DefaultFactsHorizon
	case c.FactsHorizon < 24*time.Hour:
		return fmt.Errorf("analytics: facts_horizon must be at least 24h, got %s", c.FactsHorizon)
	}
	switch {
	case c.SettleInterval < 0:
		return fmt.Errorf("analytics: settle_interval must not be negative, got %s", c.SettleInterval)
	case c.SettleInterval == 0:
		c.SettleInterval = DefaultSettleInterval
	}
	return nil
}

// Dial holds what reaches ClickHouse beyond the DSN: credentials an
// operator keeps out of it (a password read from a file or the
// environment) and TLS with a CA bundle or a client certificate, which a
// DSN cannot carry.
type Dial struct {
	// User replaces the DSN's user when not empty.
	User string
	// Password replaces the DSN's password when not empty. Never logged.
	Password string
	// TLS, when not nil, is used for the connection (the DSN's secure=true
	// alone uses the system roots).
	TLS *tls.Config
}

// Open connects to ClickHouse with the native protocol and pings it. Errors
// name the DSN's hosts and database, never its password.
func Open(ctx context.Context, dsn string) (driver.Conn, error) {
	return OpenWith(ctx, dsn, Dial{})
}

// OpenWith is Open with credentials and TLS set apart from the DSN.
func OpenWith(ctx context.Context, dsn string, d Dial) (driver.Conn, error) {
	opts, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	if d.User != "" {
		opts.Auth.Username = d.User
	}
	if d.Password != "" {
		opts.Auth.Password = d.Password
	}
	if d.TLS != nil {
		opts.TLS = d.TLS
	}
	where := strings.Join(opts.Addr, ",") + "/" + opts.Auth.Database
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse at %s: %w", where, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("pinging clickhouse at %s: %w", where, redact(err, dsn, opts.Auth.Password))
	}
	return conn, nil
}

// parseDSN parses a native-protocol DSN; its errors hold no password.
func parseDSN(dsn string) (*clickhouse.Options, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		pass := ""
		if u, uerr := url.Parse(dsn); uerr == nil {
			pass, _ = u.User.Password()
		}
		return nil, fmt.Errorf("parsing clickhouse dsn: %w", redact(err, dsn, pass))
	}
	if opts.Protocol != clickhouse.Native {
		// clickhouse-go's HTTP transport fails against 18.16.
		return nil, fmt.Errorf("parsing clickhouse dsn: want the native protocol (clickhouse://host:9000/db), got %s", opts.Protocol)
	}
	return opts, nil
}

// redact returns err with every copy of the DSN and of the password replaced,
// keeping errors.Is working through the wrap only when nothing was replaced.
func redact(err error, dsn, password string) error {
	msg := err.Error()
	clean := strings.ReplaceAll(msg, dsn, "<dsn>")
	if password != "" {
		clean = strings.ReplaceAll(clean, password, "<password>")
		clean = strings.ReplaceAll(clean, url.QueryEscape(password), "<password>")
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}
