package wasim

import (
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func validConfig() Config {
	return Config{
		Numbers:   []Number{{PhoneNumberID: "1001", WABAID: "2001", AccessToken: "t", AppSecret: "s", WebhookURL: "http://127.0.0.1:1/hook"}},
		Templates: DefaultTemplates(),
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error, "" for none
	}{
		{"valid", func(*Config) {}, ""},
		{"no numbers", func(c *Config) { c.Numbers = nil }, "numbers"},
		{"bad version", func(c *Config) { c.Version = "23" }, "version"},
		{"empty phone id", func(c *Config) { c.Numbers[0].PhoneNumberID = "" }, "phone_number_id"},
		{"phone id with slash", func(c *Config) { c.Numbers[0].PhoneNumberID = "1/2" }, "phone_number_id"},
		{"no waba", func(c *Config) { c.Numbers[0].WABAID = "" }, "waba_id"},
		{"no token", func(c *Config) { c.Numbers[0].AccessToken = "" }, "access_token"},
		{"no secret", func(c *Config) { c.Numbers[0].AppSecret = "" }, "app_secret"},
		{"duplicate number", func(c *Config) { c.Numbers = append(c.Numbers, c.Numbers[0]) }, "twice"},
		{"relative webhook", func(c *Config) { c.Numbers[0].WebhookURL = "/hook" }, "webhook_url"},
		{"ftp webhook", func(c *Config) { c.Numbers[0].WebhookURL = "ftp://x/hook" }, "webhook_url"},
		{"no webhook is fine", func(c *Config) { c.Numbers[0].WebhookURL = "" }, ""},
		{"template bad name", func(c *Config) { c.Templates[0].Name = "Promo" }, "name"},
		{"template bad language", func(c *Config) { c.Templates[0].Language = "english" }, "language"},
		{"template bad category", func(c *Config) { c.Templates[0].Category = "SERVICE" }, "category"},
		{"template bad status", func(c *Config) { c.Templates[0].Status = "LIVE" }, "status"},
		{"template negative params", func(c *Config) { c.Templates[0].BodyParams = -1 }, "negative"},
		{"template two header params", func(c *Config) { c.Templates[0].HeaderParams = 2 }, "header"},
		{"template text disagrees", func(c *Config) { c.Templates[0].BodyParams = 2 }, "placeholders"},
		{"template bad header format", func(c *Config) { c.Templates[0].HeaderFormat = "AUDIO" }, "header_format"},
		{"template image header with params", func(c *Config) { c.Templates[0].HeaderFormat, c.Templates[0].HeaderParams = HeaderImage, 1 }, "header_params must be 0"},
		{"template url button without url", func(c *Config) { c.Templates[0].Buttons = []Button{{Type: ButtonURL}} }, "needs a url"},
		{"template url variable not at the end", func(c *Config) {
			c.Templates[0].Buttons = []Button{{Type: ButtonURL, URL: "https://x.example/{{1}}/a"}}
		}, "at the end"},
		{"template phone button without number", func(c *Config) { c.Templates[0].Buttons = []Button{{Type: ButtonPhoneNumber}} }, "phone_number"},
		{"template bad button type", func(c *Config) { c.Templates[0].Buttons = []Button{{Type: "MPM"}} }, "buttons[0]"},
		{"template eleven buttons", func(c *Config) { c.Templates[0].Buttons = make([]Button, 11) }, "at most 10"},
		{"duplicate template", func(c *Config) { c.Templates = append(c.Templates, c.Templates[0]) }, "twice"},
		{"read ratio above 1", func(c *Config) { c.ReadRatio = 1.5 }, "read_ratio"},
		{"read ratio NaN", func(c *Config) { c.ReadRatio = math.NaN() }, "read_ratio"},
		{"fault ratio above 1", func(c *Config) { c.Faults.DropRatio = 2 }, "drop_ratio"},
		{"fault ratio NaN", func(c *Config) { c.Faults.Error5xxRatio = math.NaN() }, "error_5xx_ratio"},
		{"negative latency", func(c *Config) { c.Faults.Latency = -time.Second }, "latency"},
		{"negative workers", func(c *Config) { c.WebhookWorkers = -1 }, "webhook_workers"},
		{"negative queue", func(c *Config) { c.WebhookQueue = -1 }, "webhook_queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one about %q", err, tt.want)
			}
			if _, nerr := New(c, nil); (nerr == nil) != (err == nil) {
				t.Errorf("New and Validate disagree: %v vs %v", nerr, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig()
	c.Numbers[0].WebhookURL = ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Version != "v23.0" || c.Throughput != 80 || c.PairInterval != 6*time.Second || c.StatusDelay != 50*time.Millisecond ||
		c.ReadRatio != 1 || c.WebhookWorkers != 8 || c.WebhookQueue != 10000 || c.WebhookTimeout != 5*time.Second ||
		c.WebhookRetryFor != time.Minute || c.HTTPClient == nil || len(c.Numbers[0].DisplayPhoneNumber) != 11 {
		t.Errorf("defaults: %+v", c)
	}
	c2 := validConfig()
	c2.StatusDelay = -1
	if err := c2.Validate(); err != nil || c2.StatusDelay != 0 {
		t.Errorf("negative status delay: %v, %v", c2.StatusDelay, err)
	}
}

// TestConfigYAML checks the yaml keys a config file uses.
func TestConfigYAML(t *testing.T) {
	src := `
version: v22.0
throughput: 5
pair_interval: 2s
status_delay: 10ms
read_ratio: 0.25
sync_delivery_errors: true
faults: {error_5xx_ratio: 0.1, latency: 5ms, drop_ratio: 0.2, fail_ratio: 0.3, lost_response_ratio: 0.05}
numbers:
  - {phone_number_id: "1001", waba_id: "2001", access_token: t, app_secret: s, webhook_url: "http://localhost:8080/whatsapp/webhooks", display_phone_number: "15550001111"}
templates:
  - {name: promo_offer, language: en_US, category: MARKETING, status: APPROVED, body_params: 1, header_params: 1}
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Faults{Error5xxRatio: 0.1, Latency: 5 * time.Millisecond, DropRatio: 0.2, FailRatio: 0.3, LostResponseRatio: 0.05}
	if c.Version != "v22.0" || c.Throughput != 5 || c.PairInterval != 2*time.Second || c.StatusDelay != 10*time.Millisecond ||
		c.ReadRatio != 0.25 || !c.SyncDeliveryErrors || c.Faults != want || c.Numbers[0].DisplayPhoneNumber != "15550001111" ||
		c.Templates[0].HeaderParams != 1 {
		t.Errorf("decoded %+v", c)
	}
}

func TestDefaultTemplates(t *testing.T) {
	ts := DefaultTemplates()
	byName := make(map[string]Template)
	for _, tm := range ts {
		if err := tm.validate(); err != nil {
			t.Errorf("%s: %v", tm.Name, err)
		}
		byName[tm.Name] = tm
	}
	want := map[string]struct {
		cat, status string
		params      int
	}{
		"promo_offer": {CategoryMarketing, StatusApproved, 1}, "order_confirmation": {CategoryUtility, StatusApproved, 2},
		"shipping_update": {CategoryUtility, StatusApproved, 2}, "appointment_reminder": {CategoryUtility, StatusApproved, 2},
		"otp_code": {CategoryAuthentication, StatusApproved, 1}, "help_menu": {CategoryUtility, StatusApproved, 0},
		"welcome_back": {CategoryMarketing, StatusApproved, 0},
	}
	for name, w := range want {
		tm, ok := byName[name]
		if !ok || tm.Category != w.cat || tm.Status != w.status || tm.BodyParams != w.params || tm.Language != "en_US" {
			t.Errorf("%s: %+v", name, tm)
		}
	}
	statuses := make(map[string]int)
	for _, tm := range ts {
		statuses[tm.Status]++
	}
	if statuses[StatusPending] != 1 || statuses[StatusRejected] != 1 {
		t.Errorf("want one PENDING and one REJECTED template, got %v", statuses)
	}
}
