package segmenter

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/pricing"
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
	// DefaultChangelogInterval is Config.ChangelogInterval's default.
	DefaultChangelogInterval = 5 * time.Second
	// DefaultChangelogBytes is Config.ChangelogBytes' default.
	DefaultChangelogBytes = 64 << 20
	// DefaultGCPercent is the Go GC target (GOGC) a segmenter process runs
	// with (Config.GCPercent).
	DefaultGCPercent = 300
	// DefaultHeapLimitBytes is the Go runtime's soft memory limit
	// (GOMEMLIMIT) a segmenter process runs with (Config.HeapLimitBytes).
	DefaultHeapLimitBytes = 1 << 30
	// DefaultDispatchTTL is the lifetime of a produced dispatch request.
	DefaultDispatchTTL = 24 * time.Hour
	// DefaultLanguage is the template language of rules that name none.
	DefaultLanguage = "en_US"
	// AnyApp in KeywordRule.App makes the rule apply to every app.
	AnyApp = "*"
	// AnyKeyword as KeywordRule.Keyword makes the rule the catch-all.
	AnyKeyword = "*"
)

// Template categories a rule may name (Meta's template categories).
const (
	CategoryMarketing      = "MARKETING"
	CategoryUtility        = "UTILITY"
	CategoryAuthentication = "AUTHENTICATION"
)

// Keyword match modes (KeywordRule.Mode).
const (
	// ModeFirstWord matches the first word of the message (the default).
	ModeFirstWord = "first_word"
	// ModeExact matches the whole message.
	ModeExact = "exact"
	// ModePattern matches a Go regular expression (RE2 syntax).
	ModePattern = "pattern"
	// ModeAny is the catch-all: any text no other rule matched.
	ModeAny = "any"
)

// KeywordRule answers an inbound WhatsApp text. Every text is normalised
// before matching: case-folded, accents removed (Unicode NFD, combining
// marks dropped: "AYÚDA" is "ayuda") and whitespace collapsed and trimmed.
// Exactly one rule fires per message: the built-in STOP, UNSUBSCRIBE and
// START first (see BuiltinKeywords), then the matching rule of highest
// Priority; on a tie the more specific scope (app and PhoneNumberID, then
// app, then "*" and PhoneNumberID, then "*"), then the earlier rule in the
// config. Catch-all rules fire only when no other rule matched, in the same
// order among themselves.
//
// A rule has at least one action: a reply (Template or Text, not both),
// SetTags, OptOut. Profile actions are applied before the reply is built,
// and also when the reply is skipped (a stale message still opts out).
type KeywordRule struct {
	// App is the app id the rule applies to, or "*" for every app. Required.
	App string `yaml:"app"`
	// PhoneNumberID limits the rule to messages received by this business
	// number (Meta's phone number id, the webhook's
	// metadata.phone_number_id). Optional: any number.
	PhoneNumberID string `yaml:"phone_number_id"`
	// Mode is how Keyword is matched: first_word (default), exact, pattern
	// or any (catch-all).
	Mode string `yaml:"mode"`
	// Keyword is, in mode first_word, one word compared with the first
	// word of the message, punctuation and symbols around the word ignored
	// ("promo!", "*Help*", "¿ayuda?"); it must start and end with a letter
	// or digit. In mode exact, a word or phrase compared with the whole
	// message, punctuation and symbols at its ends ignored ("Stop!"); it
	// too must start and end with a letter or digit. In
	// mode pattern, a Go regular expression (RE2) searched in the
	// normalised message: write it in lower case and without accents
	// ("^order \d+$"). "*" (or mode any with no keyword) makes the rule the
	// catch-all. Required otherwise.
	Keyword string `yaml:"keyword"`
	// Phrases are more words (first_word) or phrases (exact) that match
	// like Keyword. Optional; not for modes pattern and any.
	Phrases []string `yaml:"phrases"`
	// Name names the rule in the reply's Source.Name and in its dispatch id.
	// Default: Keyword in upper case (first_word, exact), Keyword as
	// written (pattern), "*" (catch-all).
	Name string `yaml:"name"`
	// Priority orders rules that match the same message: higher first.
	// Default 0.
	Priority int `yaml:"priority"`
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
	// 24-hour customer-service window is open); it expires when the window
	// closes. It may contain the same placeholders as BodyParams.
	Text string `yaml:"text"`
	// SetTags sets tags on the sender's profile: name to a string, number
	// or boolean. Applied in the batch of the message, before the reply is
	// built (its placeholders see them).
	SetTags map[string]any `yaml:"set_tags"`
	// OptOut, when set, sets (true) or clears (false) the sender's
	// marketing opt-out, like the built-in STOP and START. Optional.
	OptOut *bool `yaml:"opt_out"`
}

// Config of the segmenter.
type Config struct {
	// Group is the Kafka consumer group. Default "herald-segmenter".
	Group string `yaml:"group"`
	// CacheBytes is the memory of the profile cache (fastcache); the oldest
	// profiles are evicted when it is full. Default 256 MiB, minimum 32 MiB.
	CacheBytes int `yaml:"cache_bytes"`
	// CacheLazy leaves the cache's memory unwritten until profiles fill
	// it. By default New writes all of it once (prefault: about 0.13 s for
	// 256 MiB): a fresh cache's first pass over its memory pays a page
	// fault per 4 KiB in the middle of the work, when a restarted member
	// catches up on its lag (1-7% of the segmenter's CPU in `herald
	// bench`, most on a loaded host; docs/BENCHMARKS.md), and the process
	// holds CacheBytes from its start rather than reaching it hours later,
	// so a memory limit too small for it fails at once. `herald dev` and
	// the tests set it.
	CacheLazy bool `yaml:"cache_lazy"`
	// DecodeAlways applies every event to a decoded profile. By default a
	// plain custom event or a message status that no segment or journey
	// of its app refers to is applied to the profile's cached encoding in
	// place, without decoding it (12% less CPU a record in `herald
	// bench`; docs/BENCHMARKS.md). Segments on the seen times only
	// ("active in the last 7 days") may refer to it: they are evaluated
	// on the encoding, and a member moving in or out takes the decoded
	// path. Both paths write the same bytes (the tests compare them);
	// this is the way back should they ever not.
	DecodeAlways bool `yaml:"decode_always"`
	// ChangelogInterval is the longest a profile's change waits for its
	// changelog and tags records while the segmenter works through a
	// backlog: until then, a later change of the profile replaces them,
	// so a user's events seconds apart cost one changelog record, not one
	// each. The events are committed once their records are written. When
	// the segmenter has caught up (what is left of its partitions fits in
	// one poll) they are written after every poll, as they are before
	// partitions are revoked and at a stop. A crash replays the events since the last write (their
	// outputs again, with the same ids). Default 5s; negative: after every
	// poll.
	ChangelogInterval time.Duration `yaml:"changelog_interval"`
	// ChangelogBytes bounds the memory of the records waiting
	// (ChangelogInterval): they are written when they hold this much.
	// Default 64 MiB, minimum 1 MiB.
	ChangelogBytes int `yaml:"changelog_bytes"`
	// GCPercent is the Go garbage collector's target (GOGC) of a process
	// running the segmenter (ApplyRuntime). Each event allocates a few KB
	// that die at once, while the live heap stays small (the profiles are
	// in fastcache, off the Go heap), so collecting when the heap reaches
	// 4x the live heap rather than 2x spends less CPU on the same work
	// (docs/BENCHMARKS.md). Default 300; -1 leaves the runtime's own. The
	// GOGC environment variable, when set, wins.
	GCPercent int `yaml:"gc_percent"`
	// HeapLimitBytes is the Go runtime's soft memory limit (GOMEMLIMIT)
	// of that process: it bounds what GCPercent lets the heap grow to, so
	// a large key index (about 30 bytes and the key per profile) does not
	// take 4x its size. The cache is not part of it. Default 1 GiB; -1
	// none. The GOMEMLIMIT environment variable, when set, wins.
	HeapLimitBytes int64 `yaml:"heap_limit_bytes"`
	// Keywords are the keyword rules. Default (nil) DefaultKeywords(); an
	// empty, non-nil list turns keyword replies off, the built-in STOP,
	// UNSUBSCRIBE and START included. The built-ins apply with any other
	// list (see BuiltinKeywords).
	Keywords []KeywordRule `yaml:"keywords"`
	// DispatchTTL is the lifetime of a produced request: its Deadline is
	// its creation time plus DispatchTTL. Inbound messages older than
	// DispatchTTL trigger no reply, so that a replay of old events does not
	// answer them again. Default 24h.
	DispatchTTL time.Duration `yaml:"dispatch_ttl"`
	// Limits are the per-user frequency cap and quiet hours that campaigns
	// respect (keyword replies, which the user asked for, do not count).
	Limits Limits `yaml:"limits"`
	// SweepInterval is how often the segments whose filters read the clock
	// (relative times: "last seen more than 30 days ago") are re-evaluated
	// over every profile of the partitions this member owns: membership
	// changes without any event of the user. Default 1m; negative: never.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// ClockSpeed speeds up the journeys' clock (waits, timeouts) from the
	// segmenter's start: 3600 runs an hour of journey a second (the demo).
	// Default 1 (real time).
	ClockSpeed float64 `yaml:"clock_speed"`
	// Clock, when set, is the journeys' clock instead (the demo moves it
	// forward by hours at once). Not configurable from YAML.
	Clock func() time.Time `yaml:"-"`
	// TickInterval is how often the segmenter checks for due journey
	// timers. Default 100ms.
	TickInterval time.Duration `yaml:"tick_interval"`
	// Workers process a batch in parallel, each the profiles whose key
	// hashes to it (a batch often holds one partition). Default
	// GOMAXPROCS.
	Workers int `yaml:"workers"`
	// Pricing chooses the rate card and rules of the campaign preview's
	// estimated Meta cost. Default: the embedded card (an estimate; see
	// internal/pricing) under the per-message rules of July 2025.
	Pricing pricing.Config `yaml:"pricing"`
}

// DefaultSweepInterval is Config.SweepInterval's default.
const DefaultSweepInterval = time.Minute

// Limits protect users from too many messages. The zero value limits
// nothing.
type Limits struct {
	// MaxMarketing is how many MARKETING campaign messages a user gets per
	// MarketingWindow at most; past it a campaign skips the user (counted,
	// reason frequency_cap). 0: no cap.
	MaxMarketing int `yaml:"max_marketing"`
	// MarketingWindow is the cap's moving window. Default 7 days.
	MarketingWindow time.Duration `yaml:"marketing_window"`
	// QuietStart and QuietEnd ("HH:mm", the user's local time; UTC when
	// unknown) bound the quiet hours, which may span midnight ("21:00" to
	// "09:00"). Both empty: none.
	QuietStart string `yaml:"quiet_start"`
	QuietEnd   string `yaml:"quiet_end"`
	// QuietPolicy is what happens to a campaign message that would arrive
	// in quiet hours: "defer" (default) sends it when they end, "drop"
	// skips the user (counted, reason quiet_hours).
	QuietPolicy string `yaml:"quiet_policy"`

	quietStart, quietEnd int // minutes after midnight; -1 without quiet hours
}

// Quiet hours policies.
const (
	QuietDefer = "defer"
	QuietDrop  = "drop"
)

// validate checks l and fills defaults.
func (l *Limits) validate() error {
	if l.MaxMarketing < 0 {
		return fmt.Errorf("limits.max_marketing %d is negative", l.MaxMarketing)
	}
	switch {
	case l.MarketingWindow < 0:
		return fmt.Errorf("limits.marketing_window %s is negative", l.MarketingWindow)
	case l.MarketingWindow == 0:
		l.MarketingWindow = 7 * 24 * time.Hour
	}
	l.quietStart, l.quietEnd = -1, -1
	if (l.QuietStart == "") != (l.QuietEnd == "") {
		return errors.New("limits: quiet_start and quiet_end go together")
	}
	if l.QuietStart != "" {
		for _, f := range []struct {
			name, v string
			dst     *int
		}{{"quiet_start", l.QuietStart, &l.quietStart}, {"quiet_end", l.QuietEnd, &l.quietEnd}} {
			t, err := time.Parse("15:04", f.v)
			if err != nil {
				return fmt.Errorf("limits.%s %q is not HH:mm", f.name, f.v)
			}
			*f.dst = t.Hour()*60 + t.Minute()
		}
		if l.quietStart == l.quietEnd {
			return errors.New("limits: quiet_start and quiet_end are equal")
		}
	}
	switch l.QuietPolicy {
	case "":
		l.QuietPolicy = QuietDefer
	case QuietDefer, QuietDrop:
	default:
		return fmt.Errorf("limits.quiet_policy %q is not defer or drop", l.QuietPolicy)
	}
	return nil
}

// quietUntil reports whether at, in loc, falls in the quiet hours, and
// when they end.
func (l *Limits) quietUntil(at time.Time, loc *time.Location) (time.Time, bool) {
	if l.quietStart < 0 {
		return time.Time{}, false
	}
	t := at.In(loc)
	m := t.Hour()*60 + t.Minute()
	in := l.quietStart < l.quietEnd && m >= l.quietStart && m < l.quietEnd ||
		l.quietStart > l.quietEnd && (m >= l.quietStart || m < l.quietEnd)
	if !in {
		return time.Time{}, false
	}
	end := time.Date(t.Year(), t.Month(), t.Day(), l.quietEnd/60, l.quietEnd%60, 0, 0, loc)
	if !end.After(t) {
		end = end.AddDate(0, 0, 1)
	}
	return end.UTC(), true
}

// DefaultKeywords are the rules used when Config.Keywords is nil: PROMO sends
// the MARKETING template promo_offer with the sender's name, HELP answers
// with a free-form text.
func DefaultKeywords() []KeywordRule {
	return []KeywordRule{
		{
			App:        AnyApp,
			Mode:       ModeFirstWord,
			Keyword:    "PROMO",
			Template:   "promo_offer",
			Language:   DefaultLanguage,
			Category:   CategoryMarketing,
			BodyParams: []string{"{{profile_name|there}}"},
		},
		{
			App:     AnyApp,
			Mode:    ModeFirstWord,
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
	if c.ChangelogInterval == 0 {
		c.ChangelogInterval = DefaultChangelogInterval
	}
	switch {
	case c.ChangelogBytes == 0:
		c.ChangelogBytes = DefaultChangelogBytes
	case c.ChangelogBytes < 1<<20:
		return fmt.Errorf("segmenter: changelog_bytes %d is below the minimum 1048576 (1 MiB)", c.ChangelogBytes)
	}
	switch {
	case c.GCPercent == 0:
		c.GCPercent = DefaultGCPercent
	case c.GCPercent < -1:
		return fmt.Errorf("segmenter: gc_percent %d: want a percentage, or -1 for the runtime's own", c.GCPercent)
	}
	switch {
	case c.HeapLimitBytes == 0:
		c.HeapLimitBytes = DefaultHeapLimitBytes
	case c.HeapLimitBytes < -1:
		return fmt.Errorf("segmenter: heap_limit_bytes %d: want a size in bytes, or -1 for none", c.HeapLimitBytes)
	}
	switch {
	case c.DispatchTTL == 0:
		c.DispatchTTL = DefaultDispatchTTL
	case c.DispatchTTL < 0:
		return fmt.Errorf("segmenter: dispatch_ttl %s is negative", c.DispatchTTL)
	}
	if err := c.Limits.validate(); err != nil {
		return fmt.Errorf("segmenter: %w", err)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.ClockSpeed < 0 {
		return fmt.Errorf("segmenter: clock_speed %v is negative", c.ClockSpeed)
	}
	if c.ClockSpeed == 0 {
		c.ClockSpeed = 1
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	switch {
	case c.Workers == 0:
		c.Workers = runtime.GOMAXPROCS(0)
	case c.Workers < 0 || c.Workers > 1024:
		return fmt.Errorf("segmenter: workers %d is not 1 to 1024", c.Workers)
	}
	if err := c.Pricing.Validate(); err != nil {
		return fmt.Errorf("segmenter: %w", err)
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
		r.Mode = strings.ToLower(strings.TrimSpace(r.Mode))
		switch {
		case r.Mode == "" && strings.TrimSpace(r.Keyword) == AnyKeyword:
			r.Mode = ModeAny
		case r.Mode == "":
			r.Mode = ModeFirstWord
		}
	}
	if _, err := compileRules(c.Keywords); err != nil {
		return fmt.Errorf("segmenter: %w", err)
	}
	return nil
}

// ApplyRuntime sets the process's GC target and soft memory limit to
// c.GCPercent and c.HeapLimitBytes (after Validate), each unless it is -1
// or the GOGC or GOMEMLIMIT environment variable sets it, and returns the
// function that puts back what was before. They are process-wide: call it
// in a process whose main work is the segmenter.
func (c *Config) ApplyRuntime() (restore func()) {
	gc, limit := -2, int64(-2)
	if c.GCPercent > 0 && os.Getenv("GOGC") == "" {
		gc = debug.SetGCPercent(c.GCPercent)
	}
	if c.HeapLimitBytes > 0 && os.Getenv("GOMEMLIMIT") == "" {
		limit = debug.SetMemoryLimit(c.HeapLimitBytes)
	}
	return func() {
		if gc != -2 {
			debug.SetGCPercent(gc)
		}
		if limit != -2 {
			debug.SetMemoryLimit(limit)
		}
	}
}
