package segmenter

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/heraldhq/herald/schemas"
)

// Config defaults and limits.
const (
	// DefaultGroup is the consumer group of the segmenter.
	DefaultGroup = "herald-segmenter"
	// DefaultCacheBytes is the size of the profile cache.
	DefaultCacheBytes = 256 << 20
	// MinCacheBytes is fastcache's smallest real size (512 buckets of one
	// 64 KiB chunk); a smaller size would silently be rounded up.
	MinCacheBytes = 32 << 20
	// DefaultDispatchTTL is the lifetime of a produced dispatch request.
	DefaultDispatchTTL = 24 * time.Hour
	// DefaultLanguage is the template language of rules that name none.
	DefaultLanguage = "en_US"
	// AnyApp in KeywordRule.App makes the rule apply to every app.
	AnyApp = "*"
)

// Template categories a rule may name (Meta's template categories).
const (
	CategoryMarketing      = "MARKETING"
	CategoryUtility        = "UTILITY"
	CategoryAuthentication = "AUTHENTICATION"
)

// KeywordRule answers an inbound WhatsApp message whose first word is
// Keyword. Exactly one of Template and Text is set.
type KeywordRule struct {
	// App is the app id the rule applies to, or "*" for every app. A rule
	// for an app wins over a "*" rule with the same keyword. Required.
	App string `yaml:"app"`
	// Keyword is matched against the first word of the inbound text: case
	// does not matter, and punctuation or symbols around the word ("promo!",
	// "*Help*", "¿ayuda?") are ignored. One word; it must start and end
	// with a letter or digit. Required.
	Keyword string `yaml:"keyword"`
	// Template is the name of an approved WhatsApp template to send.
	Template string `yaml:"template"`
	// Language is the template's language code. Default "en_US".
	Language string `yaml:"language"`
	// Category is the template's category, MARKETING, UTILITY or
	// AUTHENTICATION, copied into the request. Optional; users who opted out
	// of marketing never get a MARKETING template.
	Category string `yaml:"category"`
	// BodyParams are the template body parameters {{1}}, {{2}}, ... in
	// order. They may contain placeholders: "{{profile_name}}" (the sender's
	// WhatsApp profile name) and "{{tag:NAME}}" (the user's tag NAME), each
	// with an optional fallback used when the value is empty:
	// "{{profile_name|there}}". A parameter that ends up empty cancels the
	// reply (Meta refuses empty parameters).
	BodyParams []string `yaml:"body_params"`
	// Text is a free-form reply, allowed because the user just wrote (the
	// 24-hour customer-service window is open). It may contain the same
	// placeholders as BodyParams.
	Text string `yaml:"text"`
}

// Config of the segmenter.
type Config struct {
	// Group is the Kafka consumer group. Default "herald-segmenter".
	Group string `yaml:"group"`
	// CacheBytes is the memory of the profile cache (fastcache); the oldest
	// profiles are evicted when it is full. Default 256 MiB, minimum 32 MiB.
	CacheBytes int `yaml:"cache_bytes"`
	// Keywords are the keyword rules. Default (nil) DefaultKeywords(); an
	// empty, non-nil list turns keyword replies off.
	Keywords []KeywordRule `yaml:"keywords"`
	// DispatchTTL is the lifetime of a produced request: its Deadline is
	// its creation time plus DispatchTTL. Inbound messages older than
	// DispatchTTL trigger no reply, so that a replay of old events does not
	// answer them again. Default 24h.
	DispatchTTL time.Duration `yaml:"dispatch_ttl"`
}

// DefaultKeywords are the rules used when Config.Keywords is nil: PROMO sends
// the MARKETING template promo_offer with the sender's name, HELP answers
// with a free-form text.
func DefaultKeywords() []KeywordRule {
	return []KeywordRule{
		{
			App:        AnyApp,
			Keyword:    "PROMO",
			Template:   "promo_offer",
			Language:   DefaultLanguage,
			Category:   CategoryMarketing,
			BodyParams: []string{"{{profile_name|there}}"},
		},
		{
			App:     AnyApp,
			Keyword: "HELP",
			Text:    "Hi! Reply PROMO for this week's offer, or write your question and an agent will answer.",
		},
	}
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	switch {
	case c.CacheBytes == 0:
		c.CacheBytes = DefaultCacheBytes
	case c.CacheBytes < MinCacheBytes:
		return fmt.Errorf("segmenter: cache_bytes %d is below the minimum %d (32 MiB)", c.CacheBytes, MinCacheBytes)
	}
	switch {
	case c.DispatchTTL == 0:
		c.DispatchTTL = DefaultDispatchTTL
	case c.DispatchTTL < 0:
		return fmt.Errorf("segmenter: dispatch_ttl %s is negative", c.DispatchTTL)
	}
	if c.Keywords == nil {
		c.Keywords = DefaultKeywords()
	}
	for i := range c.Keywords {
		r := &c.Keywords[i]
		if r.Template != "" && r.Language == "" {
			r.Language = DefaultLanguage
		}
		r.Category = strings.ToUpper(strings.TrimSpace(r.Category))
	}
	if _, err := compileRules(c.Keywords); err != nil {
		return fmt.Errorf("segmenter: %w", err)
	}
	return nil
}

// validateRule checks one rule (defaults already filled).
func validateRule(r *KeywordRule) error {
	if r.App != AnyApp && !schemas.ValidAppID(r.App) {
		return fmt.Errorf("app %q must be an app id or %q", r.App, AnyApp)
	}
	if r.Keyword == "" {
		return errors.New("keyword is required")
	}
	if strings.IndexFunc(r.Keyword, unicode.IsSpace) >= 0 {
		return fmt.Errorf("keyword %q must be one word (only the first word of a message is matched)", r.Keyword)
	}
	if trimWord(r.Keyword) != r.Keyword {
		return fmt.Errorf("keyword %q must start and end with a letter or digit", r.Keyword)
	}
	if (r.Template == "") == (r.Text == "") {
		return fmt.Errorf("keyword %q: exactly one of template and text is required", r.Keyword)
	}
	if r.Text != "" && len(r.BodyParams) > 0 {
		return fmt.Errorf("keyword %q: body_params need a template", r.Keyword)
	}
	if r.Text != "" && (r.Language != "" || r.Category != "") {
		return fmt.Errorf("keyword %q: language and category need a template", r.Keyword)
	}
	switch r.Category {
	case "", CategoryMarketing, CategoryUtility, CategoryAuthentication:
	default:
		return fmt.Errorf("keyword %q: category %q is not MARKETING, UTILITY or AUTHENTICATION", r.Keyword, r.Category)
	}
	return nil
}
