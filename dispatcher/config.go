package dispatcher

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"time"
)

// Config of the dispatcher.
type Config struct {
	// Group is the Kafka consumer group. Default "herald-dispatcher".
	Group string `yaml:"group"`
	// WhatsAppBaseURL is the Graph API root. Default
	// "https://graph.facebook.com"; the simulator's URL in dev and tests.
	WhatsAppBaseURL string `yaml:"whatsapp_base_url"`
	// GraphVersion is the Graph API version in the path. Default "v23.0".
	GraphVersion string `yaml:"graph_version"`
	// RatePerSender is the messages a second each sending phone number may
	// send from this replica. Default 80 (Meta's default throughput; error
	// 130429 past it).
	RatePerSender float64 `yaml:"rate_per_sender"`
	// Burst is how many sends a sender may make at once after being idle.
	// Default RatePerSender (rounded up).
	Burst int `yaml:"burst"`
	// RequestTimeout bounds one HTTP call to the provider. A call that times
	// out after its request was written ends the dispatch as in_doubt.
	// Default 10s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxAttempts is how many calls a request gets for retryable errors,
	// with exponential backoff and jitter between them; a request's
	// Deadline bounds the retries too. Default 5.
	MaxAttempts int `yaml:"max_attempts"`
	// Concurrency is the most sends in flight per dispatcher; requests to
	// one recipient are still sent one after the other, in order.
	// Default 64.
	Concurrency int `yaml:"concurrency"`
	// Breaker configures the circuit breaker of each (provider, sender).
	Breaker BreakerConfig `yaml:"breaker"`
	// Templates configures the template sync.
	Templates TemplatesConfig `yaml:"templates"`
	// Email and Push configure those channels (config_channels.go).
	Email EmailConfig `yaml:"email"`
	Push  PushConfig  `yaml:"push"`
}

// TemplatesConfig configures the sync of every app's WhatsApp templates
// from its WhatsApp Business account to schemas.TopicTemplates.
type TemplatesConfig struct {
	// SyncInterval is how often every app's templates are listed again,
	// besides at start and after template webhooks; each replica adds
	// ±10% jitter. Default 15m; negative: only at start and after webhooks.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// ResyncDelay is how long after a template webhook (a status, quality
	// or category change) its app's templates are listed again; the
	// webhook's status applies at once. Default 5s.
	ResyncDelay time.Duration `yaml:"resync_delay"`
	// PageLimit is the templates asked for per page of the listing.
	// Default 100.
	PageLimit int `yaml:"page_limit"`
}

// BreakerConfig configures the circuit breaker of each (provider, sender).
type BreakerConfig struct {
	// ConsecutiveFailures (5xx, network errors, timeouts) open the breaker.
	// Rate-limit answers and cancelled calls never count. Default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// OpenTimeout is how long an open breaker holds that sender's requests
	// (they wait, within their deadline) before letting probes through.
	// Default 10s.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// HalfOpenRequests is how many probes a half-open breaker lets through;
	// as many successes close it, one failure opens it again. Default 1.
	HalfOpenRequests int `yaml:"half_open_requests"`
}

var graphVersionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Group == "" {
		c.Group = "herald-dispatcher"
	}
	if c.WhatsAppBaseURL == "" {
		c.WhatsAppBaseURL = "https://graph.facebook.com"
	}
	u, err := url.Parse(c.WhatsAppBaseURL)
	if err != nil {
		return fmt.Errorf("dispatcher: parsing whatsapp_base_url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("dispatcher: whatsapp_base_url %q: want http(s)://host[:port][/path]", c.WhatsAppBaseURL)
	}
	if c.GraphVersion == "" {
		c.GraphVersion = "v23.0"
	}
	if !graphVersionRE.MatchString(c.GraphVersion) {
		return fmt.Errorf("dispatcher: graph_version %q: want vMAJOR.MINOR, e.g. v23.0", c.GraphVersion)
	}
	if math.IsNaN(c.RatePerSender) || math.IsInf(c.RatePerSender, 0) || c.RatePerSender < 0 {
		return fmt.Errorf("dispatcher: rate_per_sender %v: want a positive number", c.RatePerSender)
	}
	if c.RatePerSender == 0 {
		c.RatePerSender = 80
	}
	if c.Burst < 0 {
		return fmt.Errorf("dispatcher: burst %d is negative", c.Burst)
	}
	if c.Burst == 0 {
		c.Burst = int(math.Ceil(min(c.RatePerSender, 1e6)))
	}
	if c.RequestTimeout < 0 {
		return fmt.Errorf("dispatcher: request_timeout %v is negative", c.RequestTimeout)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxAttempts < 0 {
		return fmt.Errorf("dispatcher: max_attempts %d is negative", c.MaxAttempts)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("dispatcher: concurrency %d is negative", c.Concurrency)
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if err := c.Templates.validate(); err != nil {
		return err
	}
	if err := c.Email.validate(); err != nil {
		return err
	}
	if err := c.Push.validate(); err != nil {
		return err
	}
	return c.Breaker.validate()
}

func (c *TemplatesConfig) validate() error {
	switch {
	case c.SyncInterval == 0:
		c.SyncInterval = 15 * time.Minute
	case c.SyncInterval > 0 && c.SyncInterval < time.Second:
		return fmt.Errorf("dispatcher: templates.sync_interval %v: want at least 1s (or negative: no periodic sync)", c.SyncInterval)
	}
	switch {
	case c.ResyncDelay < 0:
		return fmt.Errorf("dispatcher: templates.resync_delay %v is negative", c.ResyncDelay)
	case c.ResyncDelay == 0:
		c.ResyncDelay = 5 * time.Second
	}
	switch {
	case c.PageLimit < 0 || c.PageLimit > 1000:
		return fmt.Errorf("dispatcher: templates.page_limit %d: want 1 to 1000", c.PageLimit)
	case c.PageLimit == 0:
		c.PageLimit = 100
	}
	return nil
}

func (c *BreakerConfig) validate() error {
	if c.ConsecutiveFailures < 0 || c.OpenTimeout < 0 || c.HalfOpenRequests < 0 {
		return errors.New("dispatcher: breaker settings must not be negative")
	}
	if c.ConsecutiveFailures > math.MaxUint32 || c.HalfOpenRequests > math.MaxUint32 {
		return errors.New("dispatcher: breaker consecutive_failures and half_open_requests must fit in 32 bits")
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = 10 * time.Second
	}
	if c.HalfOpenRequests == 0 {
		c.HalfOpenRequests = 1
	}
	return nil
}
