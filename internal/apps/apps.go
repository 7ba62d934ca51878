// Package apps is the registry of the apps (tenants) one Herald serves: each
// app's API token, Segment write key and WhatsApp Business identity. Every
// stage looks apps up here; one app's credentials never reach another's data.
//
// Secrets (api_token, segment_write_key, access_token, app_secret,
// verify_token, email.smtp.password, push.fcm.access_token) may be written as "env:NAME" (read from the environment) or
// "file:/path" (read from a file, trimmed) in the apps file, so the file
// itself can be committed without them. An App never prints its secrets:
// its LogValue and String show the id only.
package apps

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/heraldhq/herald/schemas"
)

// App is one tenant.
type App struct {
	// ID is the application code (Pushwoosh's "application"), see
	// schemas.ValidAppID.
	ID string `yaml:"id"`
	// APIToken authenticates the Pushwoosh-style API
	// (Authorization: Token <api_token>, or "auth" in the request).
	APIToken string `yaml:"api_token"`
	// APITokens are further API tokens of the app, each as good as
	// APIToken: one per backend or integration, and the way to rotate a
	// token (add the new one, move clients, remove the old one).
	APITokens []string `yaml:"api_tokens"`
	// SegmentWriteKey authenticates the Segment-spec API. Optional.
	SegmentWriteKey string `yaml:"segment_write_key"`
	// WhatsApp is the app's WhatsApp Business account.
	WhatsApp WhatsApp `yaml:"whatsapp"`
	// Email is the app's email identity and SMTP server; optional (without
	// it the app's email requests fail as unsupported). See channels.go.
	Email Email `yaml:"email"`
	// Push is the app's Firebase Cloud Messaging project; optional. See
	// channels.go.
	Push Push `yaml:"push"`
	// Webhooks sign the calls of journeys' webhook steps; optional
	// (without a secret webhook steps are refused).
	Webhooks Webhooks `yaml:"webhooks"`
}

// Webhooks are an app's webhook settings.
type Webhooks struct {
	// Secret keys the HMAC-SHA256 signature of every call (header
	// X-Herald-Signature: sha256=<hex>): "env:NAME", "file:/path" or the
	// value. Never printed.
	Secret string `yaml:"secret"`
}

// String shows whether a secret is set, never the secret.
func (w Webhooks) String() string {
	if w.Secret == "" {
		return "webhooks: unsigned (refused)"
	}
	return "webhooks: signed"
}

// WhatsApp is an app's WhatsApp Business identity.
type WhatsApp struct {
	// PhoneNumberIDs are the business phone-number ids the app sends from and
	// receives on. The first is the default sender.
	PhoneNumberIDs []string `yaml:"phone_number_ids"`
	// WABAID is the WhatsApp Business account id (template sync).
	WABAID string `yaml:"waba_id"`
	// AccessToken is the Graph API bearer token the dispatcher sends with.
	AccessToken string `yaml:"access_token"`
	// AppSecret is the Meta app secret that signs webhooks
	// (X-Hub-Signature-256).
	AppSecret string `yaml:"app_secret"`
	// VerifyToken answers Meta's webhook verification (hub.verify_token).
	VerifyToken string `yaml:"verify_token"`
	// Throughput overrides the dispatcher's messages per second for some
	// of the app's numbers, by phone-number id: numbers Meta upgraded (up
	// to MaxThroughput) or that should send slower. Numbers not listed get
	// the dispatcher's rate_per_sender (default 80, Meta's default).
	Throughput map[string]float64 `yaml:"throughput"`
	// MessagingTier is Meta's messaging tier of the business: the most
	// unique recipients it may reach outside the 24-hour service window
	// in a moving 24 hours, all its numbers together. One of "250",
	// "2000", "10000", "100000" or "unlimited" (YAML numbers fit too;
	// "2K", "10K", "100K" as Meta writes them). Empty: not enforced
	// (unlimited), as before Herald counted tiers; a new WhatsApp Business
	// account starts at 250, so set it to what WhatsApp Manager shows. The
	// dispatcher refuses sends past it (docs/LIMITS.md) and the campaign
	// preview shows the headroom.
	MessagingTier string `yaml:"messaging_tier"`
}

// Tiers are the messaging tiers Meta grants, smallest first.
var Tiers = []int{250, 2000, 10000, 100000}

// TierUnlimited is what Tier returns for an unlimited (or unset) tier.
const TierUnlimited = 0

// Tier returns the app's messaging tier in unique recipients per 24 h, or
// TierUnlimited (0). The registry validated it.
func (a *App) Tier() int {
	n, _ := parseTier(a.WhatsApp.MessagingTier)
	return n
}

// Business returns what Meta counts the app's messaging tier for: its
// WhatsApp Business account id, or "app:" and the app id without one.
func (a *App) Business() string {
	if a.WhatsApp.WABAID != "" {
		return a.WhatsApp.WABAID
	}
	return "app:" + a.ID
}

// parseTier parses a messaging_tier value.
func parseTier(s string) (int, error) {
	switch v := strings.ToUpper(strings.TrimSpace(s)); v {
	case "", "UNLIMITED":
		return TierUnlimited, nil
	case "2K":
		return 2000, nil
	case "10K":
		return 10000, nil
	case "100K":
		return 100000, nil
	default:
		n, err := strconv.Atoi(v)
		if err == nil && slices.Contains(Tiers, n) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: want one of 250, 2000, 10000, 100000 or unlimited", quoteCut(s))
}

// MaxThroughput is the most messages a second Meta lets one business phone
// number send (an upgraded number; 80 by default).
const MaxThroughput = 1000

// LogValue shows the app id only, never a secret.
func (a App) LogValue() slog.Value { return slog.StringValue(a.ID) }

// String shows the app id only, never a secret.
func (a App) String() string { return a.ID }

// Sender returns the app's default WhatsApp sender, "" if none.
func (a *App) Sender() string {
	if len(a.WhatsApp.PhoneNumberIDs) == 0 {
		return ""
	}
	return a.WhatsApp.PhoneNumberIDs[0]
}

// Throughput returns the configured messages per second of one of the
// app's numbers, 0 when it has no override.
func (a *App) Throughput(phoneNumberID string) float64 {
	return a.WhatsApp.Throughput[phoneNumberID]
}

// Registry finds apps by id and by credential.
type Registry struct {
	apps    []*App
	byID    map[string]*App
	byToken map[[32]byte]*App
	byKey   map[[32]byte]*App
	byPhone map[string]*App
	byWABA  map[string]*App
}

// New validates apps and builds a registry. Secrets written as env: or file:
// references are resolved here.
func New(list []App) (*Registry, error) {
	r := &Registry{
		byID:    make(map[string]*App),
		byToken: make(map[[32]byte]*App),
		byKey:   make(map[[32]byte]*App),
		byPhone: make(map[string]*App),
		byWABA:  make(map[string]*App),
	}
	for i := range list {
		a := list[i]
		if !schemas.ValidAppID(a.ID) {
			return nil, fmt.Errorf("apps[%d]: id %q: want 1 to 64 of [A-Za-z0-9_.-]", i, a.ID)
		}
		if _, dup := r.byID[a.ID]; dup {
			return nil, fmt.Errorf("apps[%d]: id %q appears twice", i, a.ID)
		}
		for _, s := range []*string{&a.APIToken, &a.SegmentWriteKey, &a.WhatsApp.AccessToken, &a.WhatsApp.AppSecret, &a.WhatsApp.VerifyToken} {
			v, err := ResolveSecret(*s)
			if err != nil {
				return nil, fmt.Errorf("app %s: %w", a.ID, err)
			}
			*s = v
		}
		if err := a.Email.resolve(); err != nil {
			return nil, fmt.Errorf("app %s: %w", a.ID, err)
		}
		if a.Webhooks.Secret != "" {
			sec, err := ResolveSecret(a.Webhooks.Secret)
			if err != nil {
				return nil, fmt.Errorf("app %s: webhooks.secret: %w", a.ID, err)
			}
			a.Webhooks.Secret = sec
		}
		if err := a.Push.resolve(); err != nil {
			return nil, fmt.Errorf("app %s: %w", a.ID, err)
		}
		a.APITokens = append([]string(nil), a.APITokens...) // the caller's slice stays as it was
		for j := range a.APITokens {
			v, err := ResolveSecret(a.APITokens[j])
			if err != nil {
				return nil, fmt.Errorf("app %s: api_tokens[%d]: %w", a.ID, j, err)
			}
			a.APITokens[j] = v
		}
		ap := &a
		for j, tok := range append([]string{a.APIToken}, a.APITokens...) {
			field := "api_token"
			if j > 0 {
				field = fmt.Sprintf("api_tokens[%d]", j-1)
			}
			if len(tok) < 16 {
				return nil, fmt.Errorf("app %s: %s must be at least 16 characters", a.ID, field)
			}
			tk := sha256.Sum256([]byte(tok))
			if other, dup := r.byToken[tk]; dup {
				if other == ap {
					return nil, fmt.Errorf("app %s: %s repeats another token of the app", a.ID, field)
				}
				return nil, fmt.Errorf("app %s: %s is used by another app", a.ID, field)
			}
			r.byToken[tk] = ap
		}
		if a.SegmentWriteKey != "" {
			k := sha256.Sum256([]byte(a.SegmentWriteKey))
			if _, dup := r.byKey[k]; dup {
				return nil, fmt.Errorf("app %s: segment_write_key is used by another app", a.ID)
			}
			r.byKey[k] = ap
		}
		if err := checkThroughput(&a); err != nil {
			return nil, err
		}
		if _, err := parseTier(a.WhatsApp.MessagingTier); err != nil {
			return nil, fmt.Errorf("app %s: whatsapp.messaging_tier %w", a.ID, err)
		}
		for _, p := range a.WhatsApp.PhoneNumberIDs {
			if other, dup := r.byPhone[p]; dup {
				return nil, fmt.Errorf("app %s: phone number id %s belongs to app %s too", a.ID, p, other.ID)
			}
			r.byPhone[p] = ap
		}
		if w := a.WhatsApp.WABAID; w != "" {
			if other, dup := r.byWABA[w]; dup {
				return nil, fmt.Errorf("app %s: waba_id %s belongs to app %s too", a.ID, w, other.ID)
			}
			r.byWABA[w] = ap
		}
		r.byID[a.ID] = ap
		r.apps = append(r.apps, ap)
	}
	return r, nil
}

// All returns every app.
func (r *Registry) All() []*App { return r.apps }

// ByID returns the app with id.
func (r *Registry) ByID(id string) (*App, bool) {
	a, ok := r.byID[id]
	return a, ok
}

// ByToken returns the app whose API token is token. The lookup is by SHA-256
// of the token, so its timing says nothing about stored tokens.
func (r *Registry) ByToken(token string) (*App, bool) {
	if token == "" {
		return nil, false
	}
	a, ok := r.byToken[sha256.Sum256([]byte(token))]
	return a, ok
}

// ByWriteKey returns the app whose Segment write key is key.
func (r *Registry) ByWriteKey(key string) (*App, bool) {
	if key == "" {
		return nil, false
	}
	a, ok := r.byKey[sha256.Sum256([]byte(key))]
	return a, ok
}

// ByPhoneNumberID returns the app that owns a WhatsApp business number.
func (r *Registry) ByPhoneNumberID(id string) (*App, bool) {
	a, ok := r.byPhone[id]
	return a, ok
}

// ByWABAID returns the app that owns a WhatsApp Business account.
func (r *Registry) ByWABAID(id string) (*App, bool) {
	a, ok := r.byWABA[id]
	return a, ok
}

// ByVerifyToken returns an app whose webhook verify token is token, compared
// in constant time.
func (r *Registry) ByVerifyToken(token string) (*App, bool) {
	if token == "" {
		return nil, false
	}
	for _, a := range r.apps {
		if a.WhatsApp.VerifyToken != "" && subtle.ConstantTimeCompare([]byte(a.WhatsApp.VerifyToken), []byte(token)) == 1 {
			return a, true
		}
	}
	return nil, false
}

// checkThroughput checks a's throughput overrides: numbers of the app, rates
// above 0 and at most MaxThroughput.
func checkThroughput(a *App) error {
	for id, v := range a.WhatsApp.Throughput {
		if !slices.Contains(a.WhatsApp.PhoneNumberIDs, id) {
			return fmt.Errorf("app %s: whatsapp.throughput: %s is not one of the app's phone_number_ids", a.ID, quoteCut(id))
		}
		if !(v > 0 && v <= MaxThroughput) { // NaN too
			return fmt.Errorf("app %s: whatsapp.throughput[%s] %v: want more than 0 and at most %d messages a second", a.ID, id, v, MaxThroughput)
		}
	}
	return nil
}

// ResolveSecret returns s, or the environment variable it names with
// "env:NAME", or the trimmed content of the file it names with "file:PATH".
func ResolveSecret(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "env:"):
		name := strings.TrimPrefix(s, "env:")
		v, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("secret from environment variable %s: not set", name)
		}
		return v, nil
	case strings.HasPrefix(s, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(s, "file:"))
		if err != nil {
			return "", fmt.Errorf("reading secret file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return s, nil
}

// File is the apps file: `apps: [...]`.
type File struct {
	Apps []App `yaml:"apps"`
}

// Load reads an apps file and builds the registry.
func Load(path string) (*Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading apps file: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parsing apps file %s: %w", path, err)
	}
	if len(f.Apps) == 0 {
		return nil, errors.New("apps file lists no apps")
	}
	return New(f.Apps)
}

// AuthError is why Authorize refused a call: the HTTP status, the request
// field at fault and the message.
type AuthError struct {
	Code  int
	Field string
	Msg   string
}

func (e *AuthError) Error() string { return e.Field + ": " + e.Msg }

// Authorize finds the app of a Pushwoosh-style call's API token, given as
// the header "Authorization: Token <api_token>" (authHeader) or in the body
// (bodyAuth, the field request.auth), and checks that it is application
// (request.application): an app's token never reaches another app's data.
// token is the token used, for rate limits keyed by credential.
func (r *Registry) Authorize(authHeader, bodyAuth, application string) (app *App, token string, _ *AuthError) {
	token, field := bodyAuth, "request.auth"
	if authHeader != "" {
		scheme, tok, _ := strings.Cut(authHeader, " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Token") || tok == "" {
			return nil, "", &AuthError{Code: http.StatusUnauthorized, Field: "Authorization", Msg: `must be "Token <api_token>"`}
		}
		if bodyAuth != "" && bodyAuth != tok {
			return nil, "", &AuthError{Code: http.StatusUnauthorized, Field: "request.auth", Msg: "differs from the token of the Authorization header"}
		}
		token, field = tok, "Authorization"
	}
	if token == "" {
		return nil, "", &AuthError{
			Code: http.StatusUnauthorized, Field: "request.auth",
			Msg: "an API token is required: header Authorization: Token <api_token>, or request.auth",
		}
	}
	app, ok := r.ByToken(token)
	if !ok {
		return nil, "", &AuthError{Code: http.StatusUnauthorized, Field: field, Msg: "unknown API token"}
	}
	if application == "" {
		return nil, "", &AuthError{Code: http.StatusBadRequest, Field: "request.application", Msg: "is required"}
	}
	if application != app.ID {
		return nil, "", &AuthError{
			Code: http.StatusForbidden, Field: "request.application",
			Msg: "the API token does not belong to application " + quoteCut(application),
		}
	}
	return app, token, nil
}

// quoteCut quotes an outside value for a message, cut to 64 bytes.
func quoteCut(s string) string {
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
