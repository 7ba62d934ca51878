package segmenter

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/internal/pricing"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Group != "herald-segmenter" || c.CacheBytes != 256<<20 || c.DispatchTTL != 24*time.Hour || c.GCPercent != 300 || c.HeapLimitBytes != 1<<30 ||
		c.ChangelogInterval != 5*time.Second || c.ChangelogBytes != 64<<20 {
		t.Errorf("defaults: %+v", c)
	}
	if !reflect.DeepEqual(c.Keywords, DefaultKeywords()) {
		t.Errorf("keywords %+v, want DefaultKeywords()", c.Keywords)
	}
	// An explicitly empty list turns keywords off.
	off := Config{Keywords: []KeywordRule{}}
	if err := off.Validate(); err != nil || len(off.Keywords) != 0 {
		t.Errorf("empty keyword list: %v %+v", err, off.Keywords)
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
group: g1
cache_bytes: 67108864
gc_percent: 200
heap_limit_bytes: 2147483648
changelog_interval: 2s
changelog_bytes: 8388608
dispatch_ttl: 2h
sweep_interval: 5m
keywords:
  - app: shop
    keyword: promo
    template: promo_offer
    category: marketing
    body_params: ["{{profile_name|there}}"]
  - app: "*"
    keyword: help
    text: "Hi {{profile_name}}"
pricing:
  file: /etc/herald/rates.csv
  rules: "2026-10"
  business_country: gb
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Group: "g1", CacheBytes: 64 << 20, ChangelogInterval: 2 * time.Second, ChangelogBytes: 8 << 20, GCPercent: 200, HeapLimitBytes: 2 << 30, DispatchTTL: 2 * time.Hour, SweepInterval: 5 * time.Minute, Workers: runtime.GOMAXPROCS(0), ClockSpeed: 1, TickInterval: 100 * time.Millisecond,
		Limits:  Limits{MarketingWindow: 7 * 24 * time.Hour, QuietPolicy: QuietDefer, quietStart: -1, quietEnd: -1},
		Pricing: pricing.Config{File: "/etc/herald/rates.csv", Rules: pricing.RulesOctober2026, BusinessCountry: "GB"},
		Keywords: []KeywordRule{
			{App: "shop", Mode: ModeFirstWord, Keyword: "promo", Template: "promo_offer", Language: "en_US", Category: "MARKETING", BodyParams: []string{"{{profile_name|there}}"}},
			{App: "*", Mode: ModeFirstWord, Keyword: "help", Text: "Hi {{profile_name}}"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestConfigKeywordsYAML(t *testing.T) {
	const doc = `
keywords:
  - app: shop
    phone_number_id: "1098765"
    mode: exact
    keyword: opening hours
    phrases: ["when are you open", "horário"]
    priority: 10
    text: "We are open 9-18."
  - app: shop
    mode: pattern
    keyword: '^order #?\d+$'
    name: ORDER
    template: order_status
    category: utility
  - app: "*"
    keyword: vip
    set_tags: {vip: true, level: 3, source: keyword}
    text: "Welcome to the club, {{profile_name|friend}}!"
  - app: shop
    keyword: "*"
    text: "Thanks! An agent will answer soon."
  - app: shop
    keyword: baja
    opt_out: true
    text: "Ya no recibirás promociones. Responde START para volver."
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	on := true
	want := []KeywordRule{
		{App: "shop", PhoneNumberID: "1098765", Mode: ModeExact, Keyword: "opening hours", Phrases: []string{"when are you open", "horário"}, Priority: 10, Text: "We are open 9-18."},
		{App: "shop", Mode: ModePattern, Keyword: `^order #?\d+$`, Name: "ORDER", Template: "order_status", Language: "en_US", Category: CategoryUtility},
		{App: "*", Mode: ModeFirstWord, Keyword: "vip", SetTags: map[string]any{"vip": true, "level": 3, "source": "keyword"}, Text: "Welcome to the club, {{profile_name|friend}}!"},
		{App: "shop", Mode: ModeAny, Keyword: "*", Text: "Thanks! An agent will answer soon."},
		{App: "shop", Mode: ModeFirstWord, Keyword: "baja", OptOut: &on, Text: "Ya no recibirás promociones. Responde START para volver."},
	}
	if !reflect.DeepEqual(c.Keywords, want) {
		t.Errorf("got  %+v\nwant %+v", c.Keywords, want)
	}
}

func TestConfigValidate(t *testing.T) {
	rule := func(mod func(r *KeywordRule)) Config {
		r := KeywordRule{App: AnyApp, Keyword: "PROMO", Template: "t"}
		mod(&r)
		return Config{Keywords: []KeywordRule{r}}
	}
	on := true
	tests := []struct {
		name string
		cfg  Config
		err  string // the whole message; "" for valid
	}{
		{name: "valid template", cfg: rule(func(r *KeywordRule) {})},
		{name: "valid text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text = "", "hi" })},
		{name: "valid inner punctuation", cfg: rule(func(r *KeywordRule) { r.Keyword = "e-book" })},
		{name: "valid tags only", cfg: rule(func(r *KeywordRule) {
			r.Template, r.SetTags = "", map[string]any{"a": "x", "n": 1.5, "b": false, "i": int64(2)}
		})},
		{name: "valid opt-out only", cfg: rule(func(r *KeywordRule) { r.Template, r.OptOut = "", &on })},
		{name: "valid catch-all by mode", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModeAny, "" })},
		{name: "valid catch-all by keyword", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModeExact, "*" })},
		{name: "valid exact phrase", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword, r.Phrases = ModeExact, "promo now", []string{"PROMO  ya"} })},
		{name: "valid pattern", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModePattern, `^promo\b` })},
		{name: "valid per number", cfg: rule(func(r *KeywordRule) { r.App, r.PhoneNumberID = "shop", "1098765" })},
		{name: "cache too small", cfg: Config{CacheBytes: 1 << 20}, err: "segmenter: cache_bytes 1048576 is below the minimum 33554432 (32 MiB)"},
		{name: "changelog bytes too small", cfg: Config{ChangelogBytes: 1000}, err: "segmenter: changelog_bytes 1000 is below the minimum 1048576 (1 MiB)"},
		{name: "changelog after every poll", cfg: Config{ChangelogInterval: -1}},
		{name: "negative ttl", cfg: Config{DispatchTTL: -time.Second}, err: "segmenter: dispatch_ttl -1s is negative"},
		{name: "runtime's own gc and no limit", cfg: Config{GCPercent: -1, HeapLimitBytes: -1}},
		{name: "bad gc percent", cfg: Config{GCPercent: -5}, err: "segmenter: gc_percent -5: want a percentage, or -1 for the runtime's own"},
		{name: "bad heap limit", cfg: Config{HeapLimitBytes: -2}, err: "segmenter: heap_limit_bytes -2: want a size in bytes, or -1 for none"},
		{name: "unknown mode", cfg: rule(func(r *KeywordRule) { r.Mode = "Fuzzy" }), err: `segmenter: keywords[0].mode: unknown mode "fuzzy": want first_word, exact, pattern or any`},
		{name: "empty keyword", cfg: rule(func(r *KeywordRule) { r.Keyword = "" }), err: `segmenter: keywords[0].keyword: required in mode first_word (a catch-all has mode any or keyword "*")`},
		{name: "empty pattern", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModePattern, " " }), err: `segmenter: keywords[0].keyword: required in mode pattern (a catch-all has mode any or keyword "*")`},
		{name: "keyword with mode any", cfg: rule(func(r *KeywordRule) { r.Mode = ModeAny }), err: `segmenter: keywords[0].keyword: "PROMO" given with mode any: a catch-all takes no keyword (or "*")`},
		{name: "two words", cfg: rule(func(r *KeywordRule) { r.Keyword = "PROMO NOW" }), err: `segmenter: keywords[0].keyword: "PROMO NOW" must be one word in mode first_word (use mode exact for a phrase)`},
		{name: "two-word phrase in first_word", cfg: rule(func(r *KeywordRule) { r.Phrases = []string{"deal", "good deal"} }), err: `segmenter: keywords[0].phrases[1]: "good deal" must be one word in mode first_word (use mode exact for a phrase)`},
		{name: "punctuation around", cfg: rule(func(r *KeywordRule) { r.Keyword = "PROMO!" }), err: `segmenter: keywords[0].keyword: "PROMO!" must start and end with a letter or digit`},
		{name: "punctuation only", cfg: rule(func(r *KeywordRule) { r.Keyword = "!!" }), err: `segmenter: keywords[0].keyword: "!!" must start and end with a letter or digit`},
		{name: "blank phrase", cfg: rule(func(r *KeywordRule) { r.Mode, r.Phrases = ModeExact, []string{" \t"} }), err: "segmenter: keywords[0].phrases[0]: empty"},
		{name: "phrases on a pattern", cfg: rule(func(r *KeywordRule) { r.Mode, r.Phrases = ModePattern, []string{"x"} }), err: "segmenter: keywords[0].phrases: not allowed in mode pattern (use alternation in the pattern)"},
		{name: "bad pattern", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModePattern, "promo(" }), err: "segmenter: keywords[0].keyword: compiling pattern: error parsing regexp: missing closing ): `promo(`"},
		{name: "star is no pattern", cfg: rule(func(r *KeywordRule) { r.Mode, r.Keyword = ModePattern, "*" }), err: "segmenter: keywords[0].keyword: compiling pattern: error parsing regexp: missing argument to repetition operator: `*`"},
		{name: "no app", cfg: rule(func(r *KeywordRule) { r.App = "" }), err: `segmenter: keywords[0].app: "" must be an app id or "*"`},
		{name: "bad app", cfg: rule(func(r *KeywordRule) { r.App = "a b" }), err: `segmenter: keywords[0].app: "a b" must be an app id or "*"`},
		{name: "bad number", cfg: rule(func(r *KeywordRule) { r.PhoneNumberID = "10 98" }), err: `segmenter: keywords[0].phone_number_id: "10 98" must not contain spaces`},
		{name: "blank name", cfg: rule(func(r *KeywordRule) { r.Name = " " }), err: "segmenter: keywords[0].name: blank"},
		{name: "no action", cfg: rule(func(r *KeywordRule) { r.Template = "" }), err: "segmenter: keywords[0]: no action: want template, text, set_tags or opt_out"},
		{name: "template and text conflict", cfg: rule(func(r *KeywordRule) { r.Text = "hi" }), err: "segmenter: keywords[0].text: conflicts with template: a rule sends one reply, a template or a text"},
		{name: "body params on text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text, r.BodyParams = "", "hi", []string{"x"} }), err: "segmenter: keywords[0].body_params: needs a template"},
		{name: "category on text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text, r.Category = "", "hi", "MARKETING" }), err: "segmenter: keywords[0].category: needs a template"},
		{name: "unknown category", cfg: rule(func(r *KeywordRule) { r.Category = "promotional" }), err: `segmenter: keywords[0].category: "PROMOTIONAL" is not MARKETING, UTILITY or AUTHENTICATION`},
		{name: "marketing with opt-out", cfg: rule(func(r *KeywordRule) { r.Category, r.OptOut = CategoryMarketing, &on }), err: "segmenter: keywords[0].category: a MARKETING template is never sent to a user who opted out, and opt_out: true opts the user out first"},
		{name: "unknown placeholder", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"{{first_name}}"} }), err: "segmenter: keywords[0].body_params[0]: unknown placeholder {{first_name}}: want {{profile_name}} or {{tag:NAME}}"},
		{name: "empty tag name", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"ok", "{{tag:}}"} }), err: "segmenter: keywords[0].body_params[1]: unknown placeholder {{tag:}}: want {{profile_name}} or {{tag:NAME}}"},
		{name: "unterminated placeholder", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"Hi {{profile_name"} }), err: `segmenter: keywords[0].body_params[0]: unterminated placeholder "{{profile_name"`},
		{name: "bad placeholder in text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text = "", "{{x}}" }), err: "segmenter: keywords[0].text: unknown placeholder {{x}}: want {{profile_name}} or {{tag:NAME}}"},
		{name: "list in set_tags", cfg: rule(func(r *KeywordRule) { r.SetTags = map[string]any{"ok": 1, "cities": []any{"Oslo"}} }), err: "segmenter: keywords[0].set_tags.cities: a []interface {} is not a scalar: want a string, number or boolean"},
		{name: "map in set_tags", cfg: rule(func(r *KeywordRule) { r.SetTags = map[string]any{"a": map[string]any{"b": 1}} }), err: "segmenter: keywords[0].set_tags.a: a map[string]interface {} is not a scalar: want a string, number or boolean"},
		{name: "null in set_tags", cfg: rule(func(r *KeywordRule) { r.SetTags = map[string]any{"a": nil} }), err: "segmenter: keywords[0].set_tags.a: null is not a value: want a string, number or boolean"},
		{name: "empty tag name in set_tags", cfg: rule(func(r *KeywordRule) { r.SetTags = map[string]any{"": "x"} }), err: "segmenter: keywords[0].set_tags: empty tag name"},
		{name: "duplicate keyword in one app", cfg: Config{Keywords: []KeywordRule{
			{App: AnyApp, Keyword: "PROMO", Template: "t"}, {App: AnyApp, Keyword: "promo", Text: "x"},
		}}, err: `segmenter: keywords[1].keyword: duplicates keywords[0]: same app "*", phone_number_id "", mode first_word and keyword "promo"`},
		{name: "duplicate through accents and a phrase", cfg: Config{Keywords: []KeywordRule{
			{App: "shop", Mode: ModeExact, Keyword: "ayuda", Text: "x"}, {App: "shop", Mode: ModeExact, Keyword: "help", Phrases: []string{"AYÚDA"}, Text: "y"},
		}}, err: `segmenter: keywords[1].phrases[0]: duplicates keywords[0]: same app "shop", phone_number_id "", mode exact and keyword "ayuda"`},
		{name: "duplicate pattern", cfg: Config{Keywords: []KeywordRule{
			{App: "shop", Mode: ModePattern, Keyword: "^a", Text: "x"}, {App: "shop", Mode: ModePattern, Keyword: "^a", Text: "y"},
		}}, err: `segmenter: keywords[1].keyword: duplicates keywords[0]: same app "shop", phone_number_id "", mode pattern and keyword "^a"`},
		{name: "two catch-alls in one scope", cfg: Config{Keywords: []KeywordRule{
			{App: "shop", Keyword: "*", Text: "x"}, {App: "shop", Mode: ModeAny, Text: "y"},
		}}, err: `segmenter: keywords[1].keyword: duplicates keywords[0]: same app "shop", phone_number_id "", mode any and keyword "*"`},
		{name: "same keyword in two apps", cfg: Config{Keywords: []KeywordRule{
			{App: AnyApp, Keyword: "PROMO", Template: "t"}, {App: "shop", Keyword: "promo", Text: "x"},
		}}},
		{name: "same keyword on two numbers", cfg: Config{Keywords: []KeywordRule{
			{App: "shop", Keyword: "PROMO", Template: "t"}, {App: "shop", PhoneNumberID: "1", Keyword: "promo", Text: "x"},
		}}},
		{name: "same keyword in two modes", cfg: Config{Keywords: []KeywordRule{
			{App: "shop", Keyword: "PROMO", Template: "t"}, {App: "shop", Mode: ModeExact, Keyword: "promo", Text: "x"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.err != "" && err == nil:
				t.Fatalf("no error, want %q", tt.err)
			case tt.err != "" && err.Error() != tt.err:
				t.Fatalf("error\n got %s\nwant %s", err, tt.err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := newSegmenter(Config{CacheBytes: 1}, nil, nil); err == nil {
		t.Fatal("no error for a 1-byte cache")
	}
}

// TestConfigPricing: a bad pricing config or rate card stops the segmenter
// from starting, naming what is wrong.
func TestConfigPricing(t *testing.T) {
	c := Config{Pricing: pricing.Config{Rules: "2027"}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `segmenter: pricing: rules "2027"`) {
		t.Fatalf("Validate: %v", err)
	}
	card := filepath.Join(t.TempDir(), "rates.csv")
	if err := os.WriteFile(card, []byte("Market,Currency,Marketing,Utility,Authentication\nIndia,USD,0.01,0.001,0.001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newSegmenter(Config{Pricing: pricing.Config{File: card}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "loading the rate card") || !strings.Contains(err.Error(), "no Other row") {
		t.Fatalf("newSegmenter with a card without Other: %v", err)
	}
}

// TestApplyRuntime: ApplyRuntime sets the GC target and the soft memory
// limit and puts them back; -1 and the GOGC and GOMEMLIMIT variables leave
// the runtime's own.
func TestApplyRuntime(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	gc0, limit0 := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc0)
	c := Config{GCPercent: 250, HeapLimitBytes: 3 << 30}
	restore := c.ApplyRuntime()
	gc, limit := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc)
	restore()
	if gc != 250 || limit != 3<<30 {
		t.Errorf("applied GC percent %d and limit %d, want 250 and %d", gc, limit, int64(3<<30))
	}
	gc, limit = debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc)
	if gc != gc0 || limit != limit0 {
		t.Errorf("restored GC percent %d and limit %d, want %d and %d", gc, limit, gc0, limit0)
	}

	for _, tc := range []struct {
		name     string
		cfg      Config
		gogc     string
		memlimit string
	}{
		{name: "-1", cfg: Config{GCPercent: -1, HeapLimitBytes: -1}},
		{name: "environment", cfg: Config{GCPercent: 250, HeapLimitBytes: 3 << 30}, gogc: "100", memlimit: "1GiB"},
	} {
		t.Setenv("GOGC", tc.gogc)
		t.Setenv("GOMEMLIMIT", tc.memlimit)
		restore := tc.cfg.ApplyRuntime()
		gc, limit := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
		debug.SetGCPercent(gc)
		restore()
		if gc != gc0 || limit != limit0 {
			t.Errorf("%s: GC percent %d and limit %d, want the runtime's %d and %d", tc.name, gc, limit, gc0, limit0)
		}
	}
}
