package dispatcher

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
)

// EmailConfig configures the email channel. Each app's sender identity and
// SMTP server are in its apps entry (apps.Email).
type EmailConfig struct {
	// TrackingURL is ingest's public root (https://t.shop.example): the
	// open pixel, click redirects and the List-Unsubscribe link point under
	// it (internal/track). Empty: HTML is sent as it is, without pixel or
	// rewritten links, and List-Unsubscribe only carries the app's mailto.
	TrackingURL string `yaml:"tracking_url"`
	// TrackingKeys sign the links; the first signs, all verify (ingest
	// must have the same). Secrets: write them as env:NAME or file:/path.
	// Required with TrackingURL; each at least 16 bytes.
	TrackingKeys []string `yaml:"tracking_keys"`
	// RatePerSender is the emails a second each From address may send from
	// this replica. Default 14 (Amazon SES's starting quota).
	RatePerSender float64 `yaml:"rate_per_sender"`
	// Burst is how many emails a sender may send at once after being
	// idle. Default RatePerSender (rounded up).
	Burst int `yaml:"burst"`
	// PoolSize is the most connections open to one SMTP server (with one
	// set of credentials); sends beyond wait for a free one. Default 4.
	PoolSize int `yaml:"pool_size"`
	// MaxMessagesPerConn is how many messages one connection carries
	// before it is closed and a new one dialled (servers limit it too).
	// Default 100.
	MaxMessagesPerConn int `yaml:"max_messages_per_conn"`
	// IdleTimeout closes connections unused for this long (servers close
	// idle sessions after a few minutes anyway). Default 30s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// PushConfig configures the push channel. Each app's FCM project is in its
// apps entry (apps.Push).
type PushConfig struct {
	// FCMBaseURL is the FCM HTTP v1 root. Default
	// "https://fcm.googleapis.com"; the push simulator's in dev and tests.
	FCMBaseURL string `yaml:"fcm_base_url"`
	// RatePerSender is the pushes a second each FCM project may send from
	// this replica. Default 500 (FCM's default quota is 600,000 a minute
	// per project; QUOTA_EXCEEDED past it).
	RatePerSender float64 `yaml:"rate_per_sender"`
	// Burst is how many pushes a project may send at once after being
	// idle. Default RatePerSender (rounded up).
	Burst int `yaml:"burst"`
}

func validRate(field string, rate *float64, burst *int, def float64) error {
	if math.IsNaN(*rate) || math.IsInf(*rate, 0) || *rate < 0 {
		return fmt.Errorf("dispatcher: %s.rate_per_sender %v: want a positive number", field, *rate)
	}
	if *rate == 0 {
		*rate = def
	}
	if *burst < 0 {
		return fmt.Errorf("dispatcher: %s.burst %d is negative", field, *burst)
	}
	if *burst == 0 {
		*burst = int(math.Ceil(min(*rate, 1e6)))
	}
	return nil
}

// validate checks the config and fills defaults. Tracking keys are resolved
// (env:, file:) here.
func (c *EmailConfig) validate() error {
	if err := validRate("email", &c.RatePerSender, &c.Burst, 14); err != nil {
		return err
	}
	if c.PoolSize < 0 || c.MaxMessagesPerConn < 0 || c.IdleTimeout < 0 {
		return errors.New("dispatcher: email pool_size, max_messages_per_conn and idle_timeout must not be negative")
	}
	if c.PoolSize == 0 {
		c.PoolSize = 4
	}
	if c.MaxMessagesPerConn == 0 {
		c.MaxMessagesPerConn = 100
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.TrackingURL == "" {
		if len(c.TrackingKeys) > 0 {
			return errors.New("dispatcher: email.tracking_keys without email.tracking_url")
		}
		return nil
	}
	if err := checkBaseURL("email.tracking_url", c.TrackingURL); err != nil {
		return err
	}
	c.TrackingURL = strings.TrimRight(c.TrackingURL, "/")
	if len(c.TrackingKeys) == 0 {
		return errors.New("dispatcher: email.tracking_keys is required with email.tracking_url")
	}
	keys := make([]string, len(c.TrackingKeys))
	for i, k := range c.TrackingKeys {
		v, err := apps.ResolveSecret(k)
		if err != nil {
			return fmt.Errorf("dispatcher: email.tracking_keys[%d]: %w", i, err)
		}
		keys[i] = v
	}
	c.TrackingKeys = keys
	return nil
}

func (c *PushConfig) validate() error {
	if c.FCMBaseURL == "" {
		c.FCMBaseURL = "https://fcm.googleapis.com"
	}
	if err := checkBaseURL("push.fcm_base_url", c.FCMBaseURL); err != nil {
		return err
	}
	c.FCMBaseURL = strings.TrimRight(c.FCMBaseURL, "/")
	return validRate("push", &c.RatePerSender, &c.Burst, 500)
}

func checkBaseURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("dispatcher: parsing %s: %w", field, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("dispatcher: %s %q: want http(s)://host[:port][/path]", field, s)
	}
	return nil
}
