// Package kafka is the Kafka plumbing every stage shares: client options from
// a Config, topic creation, the consume loop that commits an offset only after
// the record reached its durable end, and dead-lettering.
//
// Stages use franz-go's *kgo.Client directly; this package only builds one and
// runs the loop around it.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/heraldhq/herald/internal/tlsconf"
	"github.com/heraldhq/herald/schemas"
)

// Config says how to reach Kafka.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// ClientID is sent to the brokers. Default "herald".
	ClientID string `yaml:"client_id"`
	// Partitions is the partition count of topics Herald creates. Default 8.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of topics Herald creates; -1 uses the broker
	// default. Default -1.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// SASLMechanism is "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	// Default "": no SASL.
	SASLMechanism string `yaml:"sasl_mechanism"`
	// SASLUser is the SASL user, required with a mechanism.
	SASLUser string `yaml:"sasl_user"`
	// SASLPassword is read from the environment or a file, never logged.
	SASLPassword string `yaml:"-"`
	// TLS enables TLS with the system roots (TLSFiles can set a CA bundle
	// and a client certificate; setting one turns TLS on too).
	// Default false.
	TLS bool `yaml:"tls"`
	// TLSFiles are the CA bundle, client certificate and server name of the
	// TLS connection; TLSFiles.Enabled is the same switch as TLS.
	TLSFiles tlsconf.Files `yaml:"tls_files"`
	// CommitInterval is how often consumers commit the offsets of processed
	// records. Default 1s, at least 100ms (franz-go's floor). A crash
	// redelivers at most this much work.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// Linger is how long a producer waits for more records before sending
	// a partition's batch. Default 0: send at once; while a request is in
	// flight records batch up by themselves, so under load batches are
	// large without making a lone request (an ingest call waiting for its
	// acknowledgement) wait. A few milliseconds can save broker CPU with
	// many sparse producers.
	Linger time.Duration `yaml:"linger"`
	// SessionTimeout is how long the group waits for a consumer that
	// stopped heartbeating (killed, not stopped) before it gives the
	// consumer's partitions to the others. Default 45s (franz-go's); the
	// brokers bound it (Kafka's group.min.session.timeout.ms and
	// group.max.session.timeout.ms: 6s and 30m by default). Heartbeats go
	// every third of it, at most every 3s.
	SessionTimeout time.Duration `yaml:"session_timeout"`

	// tlsConfig is built by Validate from TLS and TLSFiles.
	tlsConfig *tls.Config
}

// DefaultSessionTimeout is Config.SessionTimeout's default.
const DefaultSessionTimeout = 45 * time.Second

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: brokers is required")
	}
	if c.ClientID == "" {
		c.ClientID = "herald"
	}
	if c.Partitions <= 0 {
		c.Partitions = 8
	}
	switch {
	case c.CommitInterval <= 0:
		c.CommitInterval = time.Second
	case c.CommitInterval < 100*time.Millisecond:
		return fmt.Errorf("kafka: commit_interval %s is below the 100ms minimum", c.CommitInterval)
	}
	if c.Linger < 0 {
		return fmt.Errorf("kafka: linger %s is negative", c.Linger)
	}
	switch {
	case c.SessionTimeout == 0:
		c.SessionTimeout = DefaultSessionTimeout
	case c.SessionTimeout < time.Second:
		return fmt.Errorf("kafka: session_timeout %s is below the 1s minimum", c.SessionTimeout)
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return fmt.Errorf("kafka: unknown sasl mechanism %q", c.SASLMechanism)
	}
	if c.SASLMechanism != "" && c.SASLUser == "" {
		return errors.New("kafka: sasl user is required with a sasl mechanism")
	}
	files := c.TLSFiles
	files.Enabled = files.Enabled || c.TLS
	tc, err := files.Config("kafka.tls")
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	c.tlsConfig = tc
	return nil
}

// ParseBrokers splits a comma-separated broker list.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Opts returns the client options common to every Herald client: seeds,
// client id, SASL and TLS, logging through log, and an idempotent producer
// with acks=all (franz-go's default, stated here because Herald's delivery
// guarantee depends on it).
func (c *Config) Opts(log *slog.Logger) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(c.Linger),
	}
	if log != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(log.With("component", "kafka"))))
	}
	switch {
	case c.tlsConfig != nil:
		opts = append(opts, kgo.DialTLSConfig(c.tlsConfig.Clone()))
	case c.TLS || c.TLSFiles.On():
		// Not validated: the files are read by Validate only.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUser, Pass: c.SASLPassword}.AsSha512Mechanism()))
	}
	return opts
}

// PasswordFromEnv fills SASLPassword from HERALD_KAFKA_SASL_PASSWORD or the
// file named by HERALD_KAFKA_SASL_PASSWORD_FILE.
func (c *Config) PasswordFromEnv() error {
	if v := os.Getenv("HERALD_KAFKA_SASL_PASSWORD"); v != "" {
		c.SASLPassword = v
		return nil
	}
	if f := os.Getenv("HERALD_KAFKA_SASL_PASSWORD_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading kafka sasl password file: %w", err)
		}
		c.SASLPassword = strings.TrimSpace(string(b))
	}
	return nil
}

// EnsureTopics creates the topics that do not exist yet with the configured
// partition count and the topic's schemas.TopicConfigs (the compacted
// TopicTags and TopicProfiles, the long retention of TopicScheduled).
// Topics that exist are left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replication int16, topics ...string) error {
	adm := kadm.NewClient(cl)
	var plain []string
	create := func(configs map[string]*string, topics ...string) error {
		resp, err := adm.CreateTopics(ctx, partitions, replication, configs, topics...)
		if err != nil {
			return fmt.Errorf("creating topics: %w", err)
		}
		for _, r := range resp.Sorted() {
			if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("creating topic %s: %w", r.Topic, r.Err)
			}
		}
		return nil
	}
	for _, t := range topics {
		cfg, ok := schemas.TopicConfigs[t]
		if !ok {
			plain = append(plain, t)
			continue
		}
		configs := make(map[string]*string, len(cfg))
		for k, v := range cfg {
			configs[k] = kadm.StringPtr(v)
		}
		if err := create(configs, t); err != nil {
			return err
		}
	}
	if len(plain) == 0 {
		return nil
	}
	return create(nil, plain...)
}

// Ping checks that a broker answers.
func Ping(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}
