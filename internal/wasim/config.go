package wasim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Template categories, as Meta names them.
const (
	CategoryMarketing      = "MARKETING"
	CategoryUtility        = "UTILITY"
	CategoryAuthentication = "AUTHENTICATION"
)

// Template statuses, as Meta names them. Only APPROVED templates send.
const (
	StatusApproved = "APPROVED"
	StatusPending  = "PENDING"
	StatusRejected = "REJECTED"
	StatusPaused   = "PAUSED"
	StatusDisabled = "DISABLED"
)

// Template is a message template registered in a WhatsApp Business account.
type Template struct {
	// Name is the template name: lowercase letters, digits and underscores.
	Name string `yaml:"name"`
	// Language is the language code the template is approved in, e.g. en_US.
	Language string `yaml:"language"`
	// Category is MARKETING, UTILITY or AUTHENTICATION. It decides the
	// pricing category of the template's status webhooks.
	Category string `yaml:"category"`
	// Status is APPROVED, PENDING, REJECTED, PAUSED or DISABLED.
	Status string `yaml:"status"`
	// BodyParams is how many body parameters ({{1}}, {{2}}, ...) a send must
	// give, counted over every body component parameter.
	BodyParams int `yaml:"body_params"`
	// HeaderParams is how many header parameters a send must give (0 for a
	// template without a header variable).
	HeaderParams int `yaml:"header_params"`
	// HeaderFormat is the header's format: TEXT (HeaderParams text
	// variables, at most 1), IMAGE, VIDEO or DOCUMENT (a send gives one
	// parameter of that media type), LOCATION (a send gives a location).
	// Default: TEXT when HeaderParams is set, else no header.
	HeaderFormat string `yaml:"header_format"`
	// Text is the body text shown by the message_templates endpoint.
	// Optional: when empty a text with BodyParams placeholders is made up;
	// when set, its {{n}} placeholders must number BodyParams.
	Text string `yaml:"text"`
	// Buttons are the template's buttons, at most 10; a send names a button
	// by its position here (its index).
	Buttons []Button `yaml:"buttons"`
}

// Header formats of Template.HeaderFormat, as Meta names them.
const (
	HeaderText     = "TEXT"
	HeaderImage    = "IMAGE"
	HeaderVideo    = "VIDEO"
	HeaderDocument = "DOCUMENT"
	HeaderLocation = "LOCATION"
)

// Button types of Button.Type, as Meta lists them.
const (
	ButtonQuickReply  = "QUICK_REPLY"
	ButtonURL         = "URL"
	ButtonPhoneNumber = "PHONE_NUMBER"
	ButtonOTP         = "OTP"
)

// maxButtons is the most buttons a template has.
const maxButtons = 10

// Button is one button of a template.
type Button struct {
	// Type is QUICK_REPLY, URL, PHONE_NUMBER or OTP (an authentication
	// template's copy-code button).
	Type string `yaml:"type"`
	// Text is the button's label.
	Text string `yaml:"text"`
	// URL is a URL button's address. Ending in {{1}} makes its suffix a
	// variable: a send must then give the button a text parameter
	// (component button, sub_type url, at its index). An OTP button always
	// takes one: the code.
	URL string `yaml:"url"`
	// PhoneNumber is a PHONE_NUMBER button's number.
	PhoneNumber string `yaml:"phone_number"`
}

// takesParam reports whether a send must give the button a text parameter.
func (b *Button) takesParam() bool {
	return b.Type == ButtonOTP || (b.Type == ButtonURL && strings.HasSuffix(b.URL, "{{1}}"))
}

// Number is a business phone number of the simulated Cloud API. Messages
// sent from it need "Authorization: Bearer AccessToken"; its status and
// inbound webhooks are POSTed to WebhookURL, signed with AppSecret.
type Number struct {
	// PhoneNumberID is the Graph id used in /{version}/{phone-number-id}/messages.
	PhoneNumberID string `yaml:"phone_number_id"`
	// WABAID is the WhatsApp Business account the number belongs to; its
	// templates are listed at /{version}/{waba-id}/message_templates.
	WABAID string `yaml:"waba_id"`
	// AccessToken is the bearer token that may send from this number. Several
	// numbers may share one token (one system user for a whole WABA).
	AccessToken string `yaml:"access_token"`
	// AppSecret signs the webhooks (X-Hub-Signature-256).
	AppSecret string `yaml:"app_secret"`
	// WebhookURL receives the number's webhooks. Optional: when empty no
	// status webhook is sent for the number and SendInbound fails.
	WebhookURL string `yaml:"webhook_url"`
	// DisplayPhoneNumber is metadata.display_phone_number in webhooks.
	// Default: a 1555xxxxxxx number derived from PhoneNumberID.
	DisplayPhoneNumber string `yaml:"display_phone_number"`
}

// Faults are failures injected on purpose, see Sim.SetFaults. Every ratio is
// in [0, 1]. Decisions are deterministic: the drop, fail and read decisions
// hash the message's wamid, the 5xx and lost-response decisions hash the
// request's sequence number.
type Faults struct {
	// Error5xxRatio of API requests answer a transient server error
	// (alternately 131000 with HTTP 500 and 2 with HTTP 503, is_transient
	// true) without doing anything.
	Error5xxRatio float64 `yaml:"error_5xx_ratio"`
	// Latency is added before every API request is answered.
	Latency time.Duration `yaml:"latency"`
	// DropRatio of accepted messages never get a status webhook.
	DropRatio float64 `yaml:"drop_ratio"`
	// FailRatio of accepted messages get a single failed status webhook with
	// error 131026 (message undeliverable) instead of sent/delivered/read.
	FailRatio float64 `yaml:"fail_ratio"`
	// AnswerDelay is added after a message was accepted (its status
	// webhooks are on their way) and before the API answers: a sender
	// whose request timeout is shorter gets no answer for a message that
	// went out (in doubt), and learns of it from the statuses only. A
	// sender that gives up does not cancel the message.
	AnswerDelay time.Duration `yaml:"answer_delay"`
	// LostResponseRatio of messages are accepted (their status webhooks
	// follow, biz_opaque_callback_data echoed) but the API answers 500 with
	// error 131000 as if the response had been lost on the way: the sender
	// cannot know the message went out. This exercises "in doubt" handling.
	LostResponseRatio float64 `yaml:"lost_response_ratio"`
}

func (f Faults) validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"error_5xx_ratio", f.Error5xxRatio},
		{"drop_ratio", f.DropRatio},
		{"fail_ratio", f.FailRatio},
		{"lost_response_ratio", f.LostResponseRatio},
	} {
		if !(r.v >= 0 && r.v <= 1) { // also rejects NaN
			return fmt.Errorf("faults: %s %v is not in [0, 1]", r.name, r.v)
		}
	}
	if f.Latency < 0 {
		return fmt.Errorf("faults: latency %v is negative", f.Latency)
	}
	if f.AnswerDelay < 0 {
		return fmt.Errorf("faults: answer_delay %v is negative", f.AnswerDelay)
	}
	return nil
}

// Config configures a Sim.
type Config struct {
	// Version is the Graph API version the simulator reports in the
	// facebook-api-version response header. Paths accept any version of
	// the form vNN.N (paging links repeat the request's). Default "v23.0".
	Version string `yaml:"version"`
	// Numbers are the business phone numbers. At least one is required.
	Numbers []Number `yaml:"numbers"`
	// Templates is the template registry given to every WABA that appears
	// in Numbers (each WABA gets its own copy; SetTemplate changes one).
	// Default: none (use DefaultTemplates for a realistic set).
	Templates []Template `yaml:"templates"`
	// Throughput is the messages per second one phone number may send
	// before 130429 (a token bucket holding one second of sends). Default
	// 80, Meta's default; negative disables the limit.
	Throughput int `yaml:"throughput"`
	// PairInterval is the minimum interval between two messages from one
	// number to one recipient before 131056. Default 6s; negative disables
	// the check.
	PairInterval time.Duration `yaml:"pair_interval"`
	// MessagingTier is the messaging tier of every WhatsApp Business
	// account: how many unique users outside the service window templates
	// may reach in a moving 24 h (Meta's tiers: 250, 2000, 10000, 100000).
	// A template to one more such user is accepted and then fails with a
	// failed status webhook 131048 (CodeSpamRateLimit; at once with
	// SyncDeliveryErrors). Sim.SetMessagingTier changes it per WABA.
	// Default 0: unlimited; negative is invalid.
	MessagingTier int `yaml:"messaging_tier"`
	// StatusDelay is the delay between the accept and the sent status, and
	// between each following status. Default 50ms; negative means none.
	StatusDelay time.Duration `yaml:"status_delay"`
	// ReadRatio is the fraction of delivered messages that are also read,
	// decided by a hash of the wamid. Default 1.0; negative means none.
	ReadRatio float64 `yaml:"read_ratio"`
	// Faults are the initial injected faults, see Sim.SetFaults.
	Faults Faults `yaml:"faults"`

	// SyncDeliveryErrors makes the send call itself answer 131047 (free-form
	// message outside the 24-hour window), 131026 (undeliverable
	// recipient), 131050 (marketing opt-out) and 131048 (messaging tier
	// reached) with HTTP 400. By default, as graph.facebook.com does, the
	// call is accepted and the error arrives as a failed status webhook.
	SyncDeliveryErrors bool `yaml:"sync_delivery_errors"`
	// WebhookWorkers is how many webhook POSTs run at once. Default 8.
	WebhookWorkers int `yaml:"webhook_workers"`
	// WebhookQueue bounds the messages whose statuses are still to be sent;
	// past it the send API answers 503 with error 2 (transient) until the
	// webhook sender catches up. Default 10000.
	WebhookQueue int `yaml:"webhook_queue"`
	// WebhookTimeout bounds one webhook POST. Default 5s.
	WebhookTimeout time.Duration `yaml:"webhook_timeout"`
	// WebhookRetryFor is how long a failed status webhook is retried, with
	// exponential backoff from 100ms to 5s, before it is abandoned (Meta
	// retries for up to 7 days). Default 1m.
	WebhookRetryFor time.Duration `yaml:"webhook_retry_for"`
	// HTTPClient sends the webhooks. Default: a client without a timeout
	// (WebhookTimeout bounds each POST).
	HTTPClient *http.Client `yaml:"-"`
}

var (
	versionRE  = regexp.MustCompile(`^v[0-9]{1,2}\.[0-9]$`)
	tmplNameRE = regexp.MustCompile(`^[a-z0-9_]{1,512}$`)
	langRE     = regexp.MustCompile(`^[a-z]{2,3}(_[A-Za-z]{2,4})?$`)
	graphIDRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	placeRE    = regexp.MustCompile(`\{\{([0-9]+)\}\}`)
)

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	if c.Version == "" {
		c.Version = "v23.0"
	}
	if !versionRE.MatchString(c.Version) {
		return fmt.Errorf("version %q: want vNN.N", c.Version)
	}
	if len(c.Numbers) == 0 {
		return errors.New("numbers: at least one is required")
	}
	ids := make(map[string]bool)
	for i := range c.Numbers {
		n := &c.Numbers[i]
		switch {
		case !graphIDRE.MatchString(n.PhoneNumberID):
			return fmt.Errorf("numbers[%d]: phone_number_id %q: want 1 to 64 of [A-Za-z0-9_.-]", i, n.PhoneNumberID)
		case !graphIDRE.MatchString(n.WABAID):
			return fmt.Errorf("numbers[%d]: waba_id %q: want 1 to 64 of [A-Za-z0-9_.-]", i, n.WABAID)
		case n.AccessToken == "":
			return fmt.Errorf("numbers[%d]: access_token is required", i)
		case n.AppSecret == "":
			return fmt.Errorf("numbers[%d]: app_secret is required", i)
		case ids[n.PhoneNumberID]:
			return fmt.Errorf("numbers[%d]: phone_number_id %s appears twice", i, n.PhoneNumberID)
		}
		ids[n.PhoneNumberID] = true
		if n.WebhookURL != "" {
			u, err := url.Parse(n.WebhookURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("numbers[%d]: webhook_url %q: want an absolute http(s) URL", i, n.WebhookURL)
			}
		}
		if n.DisplayPhoneNumber == "" {
			h := fnv.New32a()
			h.Write([]byte(n.PhoneNumberID))
			n.DisplayPhoneNumber = fmt.Sprintf("1555%07d", h.Sum32()%10_000_000)
		}
	}
	seen := make(map[string]bool)
	for i := range c.Templates {
		t := &c.Templates[i]
		if err := t.validate(); err != nil {
			return fmt.Errorf("templates[%d]: %w", i, err)
		}
		k := t.Name + "\x00" + t.Language
		if seen[k] {
			return fmt.Errorf("templates[%d]: %s in %s appears twice", i, t.Name, t.Language)
		}
		seen[k] = true
	}
	if c.Throughput == 0 {
		c.Throughput = 80
	}
	if c.PairInterval == 0 {
		c.PairInterval = 6 * time.Second
	}
	if c.MessagingTier < 0 {
		return fmt.Errorf("messaging_tier %d is negative (0 is unlimited)", c.MessagingTier)
	}
	if c.StatusDelay == 0 {
		c.StatusDelay = 50 * time.Millisecond
	}
	if c.StatusDelay < 0 {
		c.StatusDelay = 0
	}
	if c.ReadRatio == 0 {
		c.ReadRatio = 1
	}
	if c.ReadRatio > 1 {
		return fmt.Errorf("read_ratio %v is above 1", c.ReadRatio)
	}
	if c.ReadRatio != c.ReadRatio { // NaN
		return errors.New("read_ratio is NaN")
	}
	if err := c.Faults.validate(); err != nil {
		return err
	}
	if c.WebhookWorkers == 0 {
		c.WebhookWorkers = 8
	}
	if c.WebhookWorkers < 0 {
		return fmt.Errorf("webhook_workers %d is negative", c.WebhookWorkers)
	}
	if c.WebhookQueue == 0 {
		c.WebhookQueue = 10000
	}
	if c.WebhookQueue < 0 {
		return fmt.Errorf("webhook_queue %d is negative", c.WebhookQueue)
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = 5 * time.Second
	}
	if c.WebhookRetryFor == 0 {
		c.WebhookRetryFor = time.Minute
	}
	if c.WebhookTimeout < 0 || c.WebhookRetryFor < 0 {
		return errors.New("webhook_timeout and webhook_retry_for must not be negative")
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	return nil
}

func (t *Template) validate() error {
	switch {
	case !tmplNameRE.MatchString(t.Name):
		return fmt.Errorf("name %q: want 1 to 512 of [a-z0-9_]", t.Name)
	case !langRE.MatchString(t.Language):
		return fmt.Errorf("template %s: language %q: want a code like en or en_US", t.Name, t.Language)
	case t.BodyParams < 0 || t.HeaderParams < 0:
		return fmt.Errorf("template %s: parameter counts must not be negative", t.Name)
	case t.HeaderParams > 1:
		// Meta allows one variable in a text header.
		return fmt.Errorf("template %s: header_params %d: a header takes at most 1 parameter", t.Name, t.HeaderParams)
	case len(t.Buttons) > maxButtons:
		return fmt.Errorf("template %s: %d buttons, at most %d", t.Name, len(t.Buttons), maxButtons)
	}
	if err := t.validateHeader(); err != nil {
		return err
	}
	for i := range t.Buttons {
		if err := t.Buttons[i].validate(); err != nil {
			return fmt.Errorf("template %s: buttons[%d]: %w", t.Name, i, err)
		}
	}
	switch t.Category {
	case CategoryMarketing, CategoryUtility, CategoryAuthentication:
	default:
		return fmt.Errorf("template %s: category %q: want MARKETING, UTILITY or AUTHENTICATION", t.Name, t.Category)
	}
	switch t.Status {
	case StatusApproved, StatusPending, StatusRejected, StatusPaused, StatusDisabled:
	default:
		return fmt.Errorf("template %s: status %q: want APPROVED, PENDING, REJECTED, PAUSED or DISABLED", t.Name, t.Status)
	}
	if t.Text != "" {
		if n := countPlaceholders(t.Text); n != t.BodyParams {
			return fmt.Errorf("template %s: text has %d placeholders, body_params is %d", t.Name, n, t.BodyParams)
		}
	}
	return nil
}

// validateHeader checks HeaderFormat against HeaderParams and fills the
// TEXT default.
func (t *Template) validateHeader() error {
	switch t.HeaderFormat {
	case "":
		if t.HeaderParams > 0 {
			t.HeaderFormat = HeaderText
		}
	case HeaderText:
	case HeaderImage, HeaderVideo, HeaderDocument, HeaderLocation:
		if t.HeaderParams > 0 {
			return fmt.Errorf("template %s: a %s header has no text variables, header_params must be 0", t.Name, t.HeaderFormat)
		}
	default:
		return fmt.Errorf("template %s: header_format %q: want TEXT, IMAGE, VIDEO, DOCUMENT or LOCATION", t.Name, t.HeaderFormat)
	}
	return nil
}

func (b *Button) validate() error {
	switch b.Type {
	case ButtonQuickReply, ButtonOTP:
	case ButtonURL:
		if b.URL == "" {
			return errors.New("a URL button needs a url")
		}
		if n := countPlaceholders(b.URL); n > 1 || (n == 1 && !strings.HasSuffix(b.URL, "{{1}}")) {
			return fmt.Errorf("url %q: only a {{1}} at the end may be variable", b.URL)
		}
	case ButtonPhoneNumber:
		if b.PhoneNumber == "" {
			return errors.New("a PHONE_NUMBER button needs a phone_number")
		}
	default:
		return fmt.Errorf("type %q: want QUICK_REPLY, URL, PHONE_NUMBER or OTP", b.Type)
	}
	return nil
}

// countPlaceholders counts the distinct {{n}} placeholders of a template text.
func countPlaceholders(s string) int {
	seen := make(map[string]bool)
	for _, m := range placeRE.FindAllStringSubmatch(s, -1) {
		seen[m[1]] = true
	}
	return len(seen)
}

// bodyText returns the template's body text, made up when not configured.
func (t *Template) bodyText() string {
	if t.Text != "" {
		return t.Text
	}
	var b strings.Builder
	b.WriteString("Message ")
	b.WriteString(t.Name)
	for i := 1; i <= t.BodyParams; i++ {
		fmt.Fprintf(&b, " {{%d}}", i)
	}
	return b.String()
}

// DefaultTemplates returns a realistic seed registry covering the four uses
// of the product brief (marketing, transactional, service, verification),
// plus a PENDING and a REJECTED template for the error paths.
func DefaultTemplates() []Template {
	return []Template{
		{
			Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Status: StatusApproved, BodyParams: 1,
			Text: "Hi {{1}}, this week only: 20% off your next order. Reply STOP to opt out.",
		},
		{
			Name: "order_confirmation", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, BodyParams: 2,
			Text: "Thanks {{1}}! Your order {{2}} is confirmed. We will let you know when it ships.",
		},
		{
			Name: "shipping_update", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, BodyParams: 2,
			Text: "Good news: order {{1}} has shipped. Track it here: {{2}}",
		},
		{
			Name: "appointment_reminder", Language: "en_US", Category: CategoryUtility, Status: StatusApproved, BodyParams: 2,
			Text: "Reminder: your appointment is on {{1}} at {{2}}. Reply HELP to reschedule.",
		},
		{
			Name: "otp_code", Language: "en_US", Category: CategoryAuthentication, Status: StatusApproved, BodyParams: 1,
			Text: "{{1}} is your verification code. For your security, do not share this code.",
		},
		{
			Name: "help_menu", Language: "en_US", Category: CategoryUtility, Status: StatusApproved,
			Text: "How can we help? Reply ORDER, SHIPPING or AGENT.",
		},
		{
			Name: "sushi_promo", Language: "en_US", Category: CategoryMarketing, Status: StatusApproved, BodyParams: 1,
			Text: "{{1}}, craving sushi? Your next sushi order is 15% off this week. Reply STOP to opt out.",
		},
		{
			Name: "welcome_back", Language: "en_US", Category: CategoryMarketing, Status: StatusApproved,
			Text: "Welcome back! We saved your favourites for you.",
		},
		{
			Name: "summer_sale_draft", Language: "en_US", Category: CategoryMarketing, Status: StatusPending, BodyParams: 1,
			Text: "{{1}}, our summer sale starts tomorrow!",
		},
		{
			Name: "crypto_giveaway", Language: "en_US", Category: CategoryMarketing, Status: StatusRejected,
			Text: "Claim your free coins now!",
		},
	}
}
