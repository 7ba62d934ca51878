package dispatcher

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"time"

	"github.com/heraldhq/herald/internal/apps"
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
	// send, all dispatcher replicas together (Limiter.Mode global; each
	// replica alone with local), unless the app's whatsapp.throughput
	// names another rate for the number. Default 80 (Meta's default
	// throughput; error 130429 past it), at most 1000 (Meta's most for an
	// upgraded number). The global limiter lowers it on Meta's rate-limit
	// answers and raises it back in quiet periods, see LimiterConfig.
	RatePerSender float64 `yaml:"rate_per_sender"`
	// Burst is how many sends a sender may make at once on one replica
	// after being idle. Default 1: sends are evenly spaced, so that the
	// replicas together stay within the rate in any window (see
	// docs/LIMITS.md).
	Burst int `yaml:"burst"`
	// Limiter configures how the per-sender rate is shared and adapted.
	Limiter LimiterConfig `yaml:"limiter"`
	// PairInterval is the least time between two messages from one sender
	// to one recipient that the dispatcher plans (Meta's pair rate, error
	// 131056, allows about one per 6 s). A request whose recipient's turn
	// is further than MaxHold away is deferred to the scheduler, so that
	// it holds neither a worker nor the batch. Default 6s; negative
	// disables the planning (a 131056 is still retried no sooner than 6 s).
	PairInterval time.Duration `yaml:"pair_interval"`
	// MaxHold is the longest a recipient's next request waits inside a
	// batch, for its pair-rate turn or a retry's backoff. A longer wait
	// defers the recipient's remaining requests of the batch to
	// schemas.TopicScheduled with their planned send_at (the scheduler
	// releases them back), so that one recipient never holds the batch,
	// and with it the other recipients of its partition. Default 1s.
	MaxHold time.Duration `yaml:"max_hold"`
	// MaxBatchTime is the longest one polled batch starts sends. Past it
	// the calls in flight finish, the decided prefix of each partition is
	// committed and the undecided requests are carried over to the next
	// batch, ahead of what it polls (dropped if their partition is revoked
	// meanwhile: the new owner fetches them), so that a rebalance, which
	// waits for the batch, waits this long at most (plus RequestTimeout):
	// replicas join and leave a group under a backlog that the rate limit
	// spreads over minutes. Default 2s.
	MaxBatchTime time.Duration `yaml:"max_batch_time"`
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
	// Delivery configures the deduplication of redelivered requests and
	// what becomes of sends in doubt after a crash (delivery.go).
	Delivery DeliveryConfig `yaml:"delivery"`
	// Email and Push configure those channels (config_channels.go).
	Email EmailConfig `yaml:"email"`
	Push  PushConfig  `yaml:"push"`
}

// In-doubt policies, see DeliveryConfig.InDoubt.
const (
	InDoubtHold   = "hold"
	InDoubtResend = "resend"
)

// DeliveryConfig configures delivery.go: which dispatch ids a replica
// remembers as decided, and what it does with a send a crashed replica may
// have made (its intent is on schemas.TopicIntents, its outcome is not).
type DeliveryConfig struct {
	// InDoubt is the policy for a request whose intent was written but
	// whose outcome was not, and for which no status webhook proves that
	// Meta got it: "hold" reports it as an in_doubt outcome and does not
	// send it again; "resend" sends it again once ResendAfter passed since
	// the intent without a status (a possible duplicate, counted as
	// in_doubt{reason="resent"}). Default hold.
	InDoubt string `yaml:"in_doubt"`
	// ResendAfter is how long after its intent a send in doubt is sent
	// again under the resend policy, for Meta's status webhook to arrive
	// first (sent comes within seconds of an accepted call). Default 10m.
	ResendAfter time.Duration `yaml:"resend_after"`
	// Window is how far back a replica reads the outcomes and intents of a
	// partition it is assigned: a request redelivered or produced again
	// within it is not sent twice. Default 24h.
	Window time.Duration `yaml:"window"`
	// MaxIDs bounds the dispatch ids remembered per partition (the oldest
	// are forgotten first) and the records read back at assignment.
	// Default 250,000 (at most about 40 MB per partition; at 1,000
	// requests a second into one partition, about 4 minutes of them, far
	// more than a crash or rebalance redelivers).
	MaxIDs int `yaml:"max_ids"`
}

func (c *DeliveryConfig) validate() error {
	switch c.InDoubt {
	case "":
		c.InDoubt = InDoubtHold
	case InDoubtHold, InDoubtResend:
	default:
		return fmt.Errorf("dispatcher: delivery.in_doubt %q: want hold or resend", c.InDoubt)
	}
	switch {
	case c.ResendAfter < 0:
		return fmt.Errorf("dispatcher: delivery.resend_after %v is negative", c.ResendAfter)
	case c.ResendAfter == 0:
		c.ResendAfter = 10 * time.Minute
	}
	switch {
	case c.Window < 0:
		return fmt.Errorf("dispatcher: delivery.window %v is negative", c.Window)
	case c.Window == 0:
		c.Window = 24 * time.Hour
	}
	switch {
	case c.MaxIDs < 0:
		return fmt.Errorf("dispatcher: delivery.max_ids %d is negative", c.MaxIDs)
	case c.MaxIDs == 0:
		c.MaxIDs = 250_000
	}
	return nil
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

// Limiter modes, see LimiterConfig.Mode.
const (
	LimiterGlobal = "global"
	LimiterLocal  = "local"
	LimiterNone   = "none"
)

// LimiterConfig configures the per-sender rate limit. The global limiter's
// design and its bound on overshoot are in docs/LIMITS.md.
type LimiterConfig struct {
	// Mode is "global": each sender's rate is shared by every dispatcher
	// replica through schemas.TopicSenders and adapts to Meta's
	// rate-limit answers; "local": every replica gives each sender the
	// whole rate on its own (N replicas send up to N times it), for a
	// single replica; or "none": no limit, for benchmarks against a
	// simulator without limits. Default global.
	Mode string `yaml:"mode"`
	// Heartbeat is how often a replica publishes its demand per sender and
	// recomputes its shares. A replica silent for 3 heartbeats is taken
	// for gone; a share is raised only after staying up for 2. Default
	// 250ms, from 20ms to 5s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// LowerFactor multiplies a sender's rate when Meta answers a rate
	// limit (codes 4, 80007, 130429), for every replica. Default 0.7,
	// above 0 and below 1.
	LowerFactor float64 `yaml:"lower_factor"`
	// LowerCooldown is how long after a lowering further rate-limit
	// answers do not lower the rate again: they answer calls made before
	// every replica slowed down. Default 1s.
	LowerCooldown time.Duration `yaml:"lower_cooldown"`
	// MinRate is the least a sender's rate is lowered to, in messages a
	// second. Default 1.
	MinRate float64 `yaml:"min_rate"`
	// RaiseStep is the fraction of the sender's configured rate given back
	// after each RaiseEvery without a further lowering, until the
	// configured rate is reached again. Default 0.05.
	RaiseStep float64 `yaml:"raise_step"`
	// RaiseEvery is the quiet period of each raise step. Default 5s.
	RaiseEvery time.Duration `yaml:"raise_every"`
}

func (c *LimiterConfig) validate() error {
	switch c.Mode {
	case "":
		c.Mode = LimiterGlobal
	case LimiterGlobal, LimiterLocal, LimiterNone:
	default:
		return fmt.Errorf("dispatcher: limiter.mode %q: want global, local or none", c.Mode)
	}
	switch {
	case c.Heartbeat == 0:
		c.Heartbeat = 250 * time.Millisecond
	case c.Heartbeat < 20*time.Millisecond || c.Heartbeat > 5*time.Second:
		return fmt.Errorf("dispatcher: limiter.heartbeat %v: want 20ms to 5s", c.Heartbeat)
	}
	if c.LowerFactor == 0 {
		c.LowerFactor = 0.7
	}
	if !(c.LowerFactor > 0 && c.LowerFactor < 1) {
		return fmt.Errorf("dispatcher: limiter.lower_factor %v: want above 0 and below 1", c.LowerFactor)
	}
	if c.LowerCooldown < 0 || c.RaiseEvery < 0 {
		return errors.New("dispatcher: limiter.lower_cooldown and limiter.raise_every must not be negative")
	}
	if c.LowerCooldown == 0 {
		c.LowerCooldown = time.Second
	}
	if c.RaiseEvery == 0 {
		c.RaiseEvery = 5 * time.Second
	}
	if c.MinRate == 0 {
		c.MinRate = 1
	}
	if !(c.MinRate > 0 && c.MinRate <= apps.MaxThroughput) {
		return fmt.Errorf("dispatcher: limiter.min_rate %v: want above 0 and at most %d", c.MinRate, apps.MaxThroughput)
	}
	if c.RaiseStep == 0 {
		c.RaiseStep = 0.05
	}
	if !(c.RaiseStep > 0 && c.RaiseStep <= 1) {
		return fmt.Errorf("dispatcher: limiter.raise_step %v: want above 0 and at most 1 (a fraction of the configured rate)", c.RaiseStep)
	}
	return nil
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
	if c.RatePerSender == 0 {
		c.RatePerSender = 80
	}
	if !(c.RatePerSender > 0 && c.RatePerSender <= apps.MaxThroughput) { // NaN too
		return fmt.Errorf("dispatcher: rate_per_sender %v: want above 0 and at most %d messages a second (Meta's most for one number)",
			c.RatePerSender, apps.MaxThroughput)
	}
	if c.Burst < 0 {
		return fmt.Errorf("dispatcher: burst %d is negative", c.Burst)
	}
	if c.Burst == 0 {
		c.Burst = 1
	}
	if c.Burst > apps.MaxThroughput {
		return fmt.Errorf("dispatcher: burst %d: want at most %d", c.Burst, apps.MaxThroughput)
	}
	if err := c.Limiter.validate(); err != nil {
		return err
	}
	if c.PairInterval == 0 {
		c.PairInterval = 6 * time.Second
	}
	if c.MaxHold < 0 {
		return fmt.Errorf("dispatcher: max_hold %v is negative", c.MaxHold)
	}
	if c.MaxHold == 0 {
		c.MaxHold = time.Second
	}
	if c.MaxBatchTime < 0 {
		return fmt.Errorf("dispatcher: max_batch_time %v is negative", c.MaxBatchTime)
	}
	if c.MaxBatchTime == 0 {
		c.MaxBatchTime = 2 * time.Second
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
	if err := c.Delivery.validate(); err != nil {
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
