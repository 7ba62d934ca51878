package segmenter

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Group != "herald-segmenter" || c.CacheBytes != 256<<20 || c.DispatchTTL != 24*time.Hour {
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
dispatch_ttl: 2h
keywords:
  - app: shop
    keyword: promo
    template: promo_offer
    category: marketing
    body_params: ["{{profile_name|there}}"]
  - app: "*"
    keyword: help
    text: "Hi {{profile_name}}"
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Group: "g1", CacheBytes: 64 << 20, DispatchTTL: 2 * time.Hour,
		Keywords: []KeywordRule{
			{App: "shop", Keyword: "promo", Template: "promo_offer", Language: "en_US", Category: "MARKETING", BodyParams: []string{"{{profile_name|there}}"}},
			{App: "*", Keyword: "help", Text: "Hi {{profile_name}}"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestConfigValidate(t *testing.T) {
	rule := func(mod func(r *KeywordRule)) Config {
		r := KeywordRule{App: AnyApp, Keyword: "PROMO", Template: "t"}
		mod(&r)
		return Config{Keywords: []KeywordRule{r}}
	}
	tests := []struct {
		name string
		cfg  Config
		err  string // substring; "" for valid
	}{
		{name: "valid template", cfg: rule(func(r *KeywordRule) {})},
		{name: "valid text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text = "", "hi" })},
		{name: "valid inner punctuation", cfg: rule(func(r *KeywordRule) { r.Keyword = "e-book" })},
		{name: "cache too small", cfg: Config{CacheBytes: 1 << 20}, err: "below the minimum"},
		{name: "negative ttl", cfg: Config{DispatchTTL: -time.Second}, err: "negative"},
		{name: "empty keyword", cfg: rule(func(r *KeywordRule) { r.Keyword = "" }), err: "keyword is required"},
		{name: "two words", cfg: rule(func(r *KeywordRule) { r.Keyword = "PROMO NOW" }), err: "one word"},
		{name: "punctuation around", cfg: rule(func(r *KeywordRule) { r.Keyword = "PROMO!" }), err: "start and end with a letter"},
		{name: "punctuation only", cfg: rule(func(r *KeywordRule) { r.Keyword = "!!" }), err: "start and end with a letter"},
		{name: "no app", cfg: rule(func(r *KeywordRule) { r.App = "" }), err: "must be an app id"},
		{name: "bad app", cfg: rule(func(r *KeywordRule) { r.App = "a b" }), err: "must be an app id"},
		{name: "neither template nor text", cfg: rule(func(r *KeywordRule) { r.Template = "" }), err: "exactly one of template and text"},
		{name: "both template and text", cfg: rule(func(r *KeywordRule) { r.Text = "hi" }), err: "exactly one of template and text"},
		{name: "body params on text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text, r.BodyParams = "", "hi", []string{"x"} }), err: "body_params need a template"},
		{name: "category on text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text, r.Category = "", "hi", "MARKETING" }), err: "need a template"},
		{name: "unknown category", cfg: rule(func(r *KeywordRule) { r.Category = "PROMOTIONAL" }), err: "is not MARKETING"},
		{name: "unknown placeholder", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"{{first_name}}"} }), err: "unknown placeholder"},
		{name: "empty tag name", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"{{tag:}}"} }), err: "unknown placeholder"},
		{name: "unterminated placeholder", cfg: rule(func(r *KeywordRule) { r.BodyParams = []string{"Hi {{profile_name"} }), err: "unterminated"},
		{name: "bad placeholder in text", cfg: rule(func(r *KeywordRule) { r.Template, r.Text = "", "{{x}}" }), err: "text: unknown placeholder"},
		{name: "duplicate keyword in one app", cfg: Config{Keywords: []KeywordRule{
			{App: AnyApp, Keyword: "PROMO", Template: "t"}, {App: AnyApp, Keyword: "promo", Text: "x"},
		}}, err: "defined twice"},
		{name: "same keyword in two apps", cfg: Config{Keywords: []KeywordRule{
			{App: AnyApp, Keyword: "PROMO", Template: "t"}, {App: "shop", Keyword: "promo", Text: "x"},
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
			case tt.err != "" && !strings.Contains(err.Error(), tt.err):
				t.Fatalf("error %q does not contain %q", err, tt.err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := newSegmenter(Config{CacheBytes: 1}, nil, nil); err == nil {
		t.Fatal("no error for a 1-byte cache")
	}
}
