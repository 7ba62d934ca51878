// Package ingest is Herald's front door: HTTP APIs in, schemas.Event records
// out on the Kafka topic schemas.TopicEvents.
//
// Routes (all served by Server.Handler):
//
//	POST /json/1.3/registerDevice  Pushwoosh-compatible: register a subscriber   -> KindRegister
//	POST /json/1.3/setTags         Pushwoosh-compatible: set or remove tags       -> KindTags
//	POST /json/1.3/postEvent       Pushwoosh-compatible: a custom or default event -> KindEvent
//	POST /json/1.3/unregisterDevice  Pushwoosh-compatible: a device stops receiving -> KindUnregister
//	POST /json/1.3/registerUser    Pushwoosh-compatible: a user id bound to a device -> KindEvent PW_UserRegistered
//	POST /json/1.3/createWhatsAppMessage  Pushwoosh-compatible: WhatsApp sends -> dispatch requests on TopicDispatch (TopicScheduled for a future send_date)
//	POST /json/1.3/getTags         Pushwoosh-compatible: a subscriber's tags, read from TopicTags (see TagView)
//	POST /v1/track|identify|page|screen|group|alias|batch  Segment spec for CDPs (see segment.go)
//	GET  /whatsapp/webhooks        Meta's webhook verification (hub.challenge echo)
//	POST /whatsapp/webhooks        Meta's signed webhook: inbound messages, statuses, template changes -> KindInbound, KindStatus, KindTemplate (and a TemplateSignal on TopicTemplates)
//	GET  /t/o/{token}.gif          email open pixel (signed, internal/track) -> KindEvent PW_EmailOpened
//	GET  /t/c/{token}              email click: 302 to the signed URL -> KindEvent PW_EmailClicked
//	GET|POST /t/u/{token}          List-Unsubscribe page and RFC 8058 one-click POST -> KindEvent PW_EmailUnsubscribed
//
// Delivery: a handler answers 2xx only after Kafka acknowledged every record
// of the request (acks=all, idempotent producer, see internal/kafka). When
// Kafka fails or does not answer within Config.ProduceTimeout the answer is
// 503 with Retry-After, never 200-and-drop; the caller retries. A retried
// Pushwoosh call gets a new random event id (it may be stored twice if the
// first attempt was in fact written); a retried webhook delivery produces the
// same deterministic ids, so consumers deduplicate it; so does a Segment
// message with a messageId. Within Config.DedupWindow such redeliveries are
// dropped at the edge already (herald_ingest_duplicates_total).
//
// Bodies must be valid UTF-8 (400 naming "body" and the offset otherwise):
// encoding/json would silently replace invalid bytes with U+FFFD and store
// something the caller did not send. JSON nested deeper than
// encoding/json's 10,000 levels is refused the same way.
//
// Errors are JSON in the Pushwoosh envelope and name the field at fault:
//
//	{"status_code":400,"status_message":"request.hwid: ...","field":"request.hwid"}
//
// Tenancy: a Pushwoosh call's API token must belong to request.application
// (else 403), and a webhook change is accepted only when the app owning its
// metadata.phone_number_id has the Meta app secret that signed the body, so
// one app can never write another's data.
//
// Metrics (registered on the Registerer given to New):
//
//	herald_ingest_requests_total{route,code}            requests answered, by route and HTTP status
//	herald_ingest_request_duration_seconds{route}        time to answer, Kafka acknowledgement included
//	herald_ingest_records_produced_total{kind}           records acknowledged by Kafka, by event kind ("deadletter" for dead letters, "dispatch" and "scheduled" for dispatch requests, "template_signal" for template changes on TopicTemplates, "delivery_status" for statuses by dispatch id on TopicIntents)
//	herald_ingest_webhook_signature_failures_total       webhook POSTs refused for a missing or wrong X-Hub-Signature-256
//	herald_ingest_webhook_foreign_changes_total          webhook changes skipped because their phone number is unknown or belongs to an app the signing secret does not
//	herald_ingest_throttled_total                       requests refused with 429: a credential over its rate
//	herald_ingest_webhook_skipped_total{reason}          webhook parts ignored on purpose (other objects and fields, malformed values)
//	herald_ingest_duplicates_total{api}                  redeliveries dropped within the dedup window: webhook (Meta's retries), segment (messageId)
//	herald_ingest_tracking_hits_total{kind,result}       email tracking link hits: event, malformed, forged, unknown_app, throttled, not_configured
//	herald_ingest_tracking_lost_total                    clicks redirected without their event (Kafka did not acknowledge in time)
package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/dedup"
	"github.com/heraldhq/herald/internal/track"
	"github.com/heraldhq/herald/schemas"

	// Time zone names in registerDevice are validated with time.LoadLocation;
	// the embedded database makes that independent of the host's tzdata.
	_ "time/tzdata"
)

// Config of the ingest HTTP server.
type Config struct {
	// MaxBodyBytes bounds every request body; larger bodies get 413.
	// Default 1 MiB (1048576), at most 64 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ProduceTimeout is how long a request waits for Kafka to acknowledge
	// its records. On timeout, or when Kafka is unreachable, the answer is
	// 503 with Retry-After. Default 10s.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// RatePerCredential is the requests per second one API token or write
	// key may make on this replica; past it the answer is 429 with
	// Retry-After. Default 5000; negative disables the limit.
	RatePerCredential float64 `yaml:"rate_per_credential"`
	// BurstPerCredential is the bucket size of that limit. Default twice
	// the rate.
	BurstPerCredential int `yaml:"burst_per_credential"`
	// DedupWindow is how long redeliveries are recognised and dropped
	// (Segment messageId, Meta webhook wamid+status): at least this long,
	// at most twice. Default 24h.
	DedupWindow time.Duration `yaml:"dedup_window"`
	// DedupMaxBytes bounds the memory of that window, per generation (two
	// are kept); past it the oldest keys are forgotten early. Default and
	// minimum 32 MiB.
	DedupMaxBytes int `yaml:"dedup_max_bytes"`
	// TrackingKeys verify the email tracking links the dispatcher signs
	// (its email.tracking_keys; any of them verifies). Secrets: env:NAME
	// or file:/path. Empty: the /t/ routes answer 404.
	TrackingKeys []string `yaml:"tracking_keys"`
}

const (
	defaultMaxBodyBytes   = 1 << 20
	maxMaxBodyBytes       = 64 << 20
	defaultProduceTimeout = 10 * time.Second
	defaultRate           = 5000
	defaultDedupWindow    = 24 * time.Hour
	// retryAfter is the Retry-After (seconds) sent with 503.
	retryAfter = "5"
)

// Validate checks the config and fills defaults.
func (c *Config) Validate() error {
	switch {
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("ingest: max_body_bytes %d is negative", c.MaxBodyBytes)
	case c.MaxBodyBytes == 0:
		c.MaxBodyBytes = defaultMaxBodyBytes
	case c.MaxBodyBytes > maxMaxBodyBytes:
		return fmt.Errorf("ingest: max_body_bytes %d is above the %d limit", c.MaxBodyBytes, maxMaxBodyBytes)
	}
	switch {
	case c.ProduceTimeout < 0:
		return fmt.Errorf("ingest: produce_timeout %s is negative", c.ProduceTimeout)
	case c.ProduceTimeout == 0:
		c.ProduceTimeout = defaultProduceTimeout
	}
	switch {
	case c.DedupWindow < 0:
		return fmt.Errorf("ingest: dedup_window %s is negative", c.DedupWindow)
	case c.DedupWindow == 0:
		c.DedupWindow = defaultDedupWindow
	}
	if c.DedupMaxBytes < 0 {
		return fmt.Errorf("ingest: dedup_max_bytes %d is negative", c.DedupMaxBytes)
	}
	if c.RatePerCredential == 0 {
		c.RatePerCredential = defaultRate
	}
	switch {
	case c.BurstPerCredential < 0:
		return fmt.Errorf("ingest: burst_per_credential %d is negative", c.BurstPerCredential)
	case c.BurstPerCredential == 0 && c.RatePerCredential > 0:
		c.BurstPerCredential = int(math.Ceil(2 * c.RatePerCredential))
	}
	return nil
}

// Server serves the ingest routes and produces what they accept to Kafka.
type Server struct {
	cfg Config
	reg *apps.Registry
	cl  *kgo.Client
	log *slog.Logger
	m   *metrics
	lim *limiter // per credential; nil when disabled
	// seen drops redeliveries: keys are added only after Kafka acknowledged
	// what they stand for, prefixed per API ("seg:", "wa:").
	seen *dedup.Window
	// tags serves getTags; nil until ServeTags.
	tags *TagView
	// tracker verifies email tracking links; nil without TrackingKeys.
	tracker *track.Signer

	// secrets are the distinct non-empty Meta app secrets of the registry,
	// tried in turn against a webhook's signature.
	secrets []string

	// Throttles for log lines an outsider can repeat at will.
	logSignature, logForeign, logProduce, logSkipped throttle
}

// New builds a server. reg and cl are required; cl must be able to produce
// to schemas.TopicEvents and schemas.TopicDeadLetter. log may be nil (no
// logs); prom may be nil (metrics are kept but not registered).
func New(cfg Config, reg *apps.Registry, cl *kgo.Client, log *slog.Logger, prom prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("ingest: app registry is required")
	}
	if cl == nil {
		return nil, errors.New("ingest: kafka client is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(prom)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, reg: reg, cl: cl, log: log.With("stage", "ingest"), m: m,
		lim:  newLimiter(cfg.RatePerCredential, cfg.BurstPerCredential, time.Now),
		seen: dedup.New(cfg.DedupWindow, cfg.DedupMaxBytes),
	}
	if len(cfg.TrackingKeys) > 0 {
		if s.tracker, err = newTracker(cfg.TrackingKeys); err != nil {
			return nil, err
		}
	}
	seen := make(map[string]bool)
	for _, a := range reg.All() {
		if sec := a.WhatsApp.AppSecret; sec != "" && !seen[sec] {
			seen[sec] = true
			s.secrets = append(s.secrets, sec)
		}
	}
	if len(s.secrets) == 0 {
		s.log.Warn("no app has a whatsapp app_secret: every webhook POST will be refused")
	}
	return s, nil
}

// route is one path of the API.
type route struct {
	name    string
	methods map[string]func(*statusWriter, *http.Request)
	allow   string
	// anyBody skips the JSON Content-Type check of POST (the one-click
	// unsubscribe POST is a form).
	anyBody bool
}

// Route names, the "route" label of the metrics.
const (
	routeRegisterDevice   = "register_device"
	routeSetTags          = "set_tags"
	routePostEvent        = "post_event"
	routeUnregisterDevice = "unregister_device"
	routeRegisterUser     = "register_user"
	routeCreateWhatsApp   = "create_whatsapp_message"
	routeGetTags          = "get_tags"
	routeWebhook          = "whatsapp_webhook"
	routeNotFound         = "not_found"
)

// Handler returns the HTTP handler of every ingest route. Unknown paths get a
// JSON 404 and known paths with the wrong method a JSON 405 with Allow.
func (s *Server) Handler() http.Handler {
	routes := make(map[string]*route)
	// Each API family declares its routes in its own file.
	for _, set := range []map[string]*route{s.pushwooshRoutes(), s.segmentRoutes(), s.webhookRoutes()} {
		for path, rt := range set {
			routes[path] = rt
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		name := routeNotFound
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, compared as net/http does
					panic(p)
				}
				s.log.Error("handler panicked", "route", name, "panic", p, "stack", string(debug.Stack()))
				if !sw.wrote {
					writeError(sw, &apiError{Code: http.StatusInternalServerError, Msg: "internal error"})
				}
			}
			s.m.requests.WithLabelValues(name, strconv.Itoa(sw.status())).Inc()
			s.m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		}()
		rt, ok := routes[r.URL.Path]
		if !ok {
			rt, ok = s.trackingRoute(r.URL.Path) // the /t/ prefixes, tracking.go
		}
		if !ok {
			writeError(sw, &apiError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no route %s", quote(r.URL.Path))})
			return
		}
		name = rt.name
		h, ok := rt.methods[r.Method]
		if !ok {
			sw.Header().Set("Allow", rt.allow)
			writeError(sw, &apiError{Code: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("method %s is not allowed, use %s", quote(r.Method), rt.allow)})
			return
		}
		if r.Method == http.MethodPost && !rt.anyBody {
			if aerr := checkContentType(r.Header.Get("Content-Type")); aerr != nil {
				writeError(sw, aerr)
				return
			}
		}
		h(sw, r)
	})
}

// checkContentType accepts the bodies every route decodes: JSON, sent as
// application/json (or a +json type), as text/plain (browser beacons and
// some CDP libraries send JSON so to avoid CORS preflights), or with no
// Content-Type at all. Forms, multipart and the rest get 415 before the
// body is read.
func checkContentType(ct string) *apiError {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || mt == "text/plain" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &apiError{
		Code: http.StatusUnsupportedMediaType, Field: "Content-Type",
		Msg: fmt.Sprintf("%s is not accepted: send JSON as application/json", quote(ct)),
	}
}

// readBody reads the request body, bounded by MaxBodyBytes.
func (s *Server) readBody(w *statusWriter, r *http.Request) ([]byte, *apiError) {
	// The underlying writer, so that net/http closes the connection after
	// an oversized body instead of draining it.
	b, err := io.ReadAll(http.MaxBytesReader(w.ResponseWriter, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &apiError{
				Code: http.StatusRequestEntityTooLarge, Field: "body",
				Msg: fmt.Sprintf("is larger than the %d bytes limit", s.cfg.MaxBodyBytes),
			}
		}
		return nil, &apiError{Code: http.StatusBadRequest, Field: "body", Msg: fmt.Sprintf("reading: %v", err)}
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, storing
	// something the caller did not send: refuse it instead.
	if !utf8.Valid(b) {
		return nil, badField("body", "is not valid UTF-8 (first invalid byte at offset %d)", invalidUTF8At(b))
	}
	return b, nil
}

// invalidUTF8At is the offset of the first byte of b that is not valid
// UTF-8, or -1.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// errProduce marks an error of produce: Kafka did not acknowledge.
var errProduce = errors.New("kafka did not acknowledge")

// produce sends events (to TopicEvents) and dead letters (to
// TopicDeadLetter) and waits until Kafka acknowledged every one, see
// produceRecords. A template change (KindTemplate) also goes to
// TopicTemplates as a schemas.TemplateSignal, so that dispatchers apply it
// before their next template sync.
func (s *Server) produce(ctx context.Context, events []*schemas.Event, dead []*schemas.DeadLetter) error {
	recs := make([]*kgo.Record, 0, len(events)+len(dead))
	kinds := make([]string, 0, len(events)+len(dead))
	for _, e := range events {
		v, err := e.Marshal()
		if err != nil {
			return fmt.Errorf("encoding event %s: %w", e.ID, err)
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicEvents, Key: e.Key(), Value: v})
		kinds = append(kinds, string(e.Kind))
		if e.Kind == schemas.KindTemplate && e.Template != nil {
			r, err := templateSignal(e)
			if err != nil {
				return err
			}
			recs = append(recs, r)
			kinds = append(kinds, "template_signal")
		}
		if e.Kind == schemas.KindStatus && e.Status != nil && e.Status.DispatchID != "" {
			r, err := deliveryStatus(e)
			if err != nil {
				return err
			}
			recs = append(recs, r)
			kinds = append(kinds, "delivery_status")
		}
	}
	for _, d := range dead {
		v, err := d.Marshal()
		if err != nil {
			return fmt.Errorf("encoding dead letter: %w", err)
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicDeadLetter, Key: d.Key, Value: v})
		kinds = append(kinds, "deadletter")
	}
	return s.produceRecords(ctx, recs, kinds)
}

// deliveryStatus is the TopicIntents record of a status event of a message
// the dispatcher sent (its dispatch id echoed in biz_opaque_callback_data):
// keyed like the dispatch request, so that the dispatcher owning the
// request's partition finds it when it reconciles sends in doubt.
func deliveryStatus(e *schemas.Event) (*kgo.Record, error) {
	st := e.Status
	m := &schemas.DeliveryMark{
		Kind: schemas.MarkStatus, DispatchID: st.DispatchID, App: e.App, To: st.Recipient,
		WAMID: st.WAMID, Status: st.Status, ErrorCode: st.ErrorCode, Time: e.Time,
	}
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	v, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding delivery status of %s: %w", st.DispatchID, err)
	}
	return &kgo.Record{Topic: schemas.TopicIntents, Key: m.Key(), Value: v}, nil
}

// templateSignal is the TopicTemplates record of a template change event.
func templateSignal(e *schemas.Event) (*kgo.Record, error) {
	sig := &schemas.TemplateSignal{App: e.App, EventID: e.ID, Template: *e.Template, Time: e.Time, Received: e.Received}
	if sig.Received.IsZero() {
		sig.Received = time.Now().UTC()
	}
	if sig.Time.IsZero() {
		sig.Time = sig.Received
	}
	v, err := sig.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding template signal of event %s: %w", e.ID, err)
	}
	return &kgo.Record{
		Topic:   schemas.TopicTemplates,
		Key:     sig.Key(),
		Value:   v,
		Headers: []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordTemplateSignal)}},
	}, nil
}

// produceDispatch sends dispatch requests, see produceRecords: to
// TopicScheduled those with a SendAt (the scheduler releases them at that
// time), to TopicDispatch the others.
func (s *Server) produceDispatch(ctx context.Context, reqs []*schemas.DispatchRequest) error {
	recs := make([]*kgo.Record, 0, len(reqs))
	kinds := make([]string, 0, len(reqs))
	for _, d := range reqs {
		v, err := d.Marshal()
		if err != nil {
			return fmt.Errorf("encoding dispatch request %s: %w", d.ID, err)
		}
		if !d.SendAt.IsZero() {
			recs = append(recs, &kgo.Record{Topic: schemas.TopicScheduled, Key: d.Key(), Value: v})
			kinds = append(kinds, "scheduled")
			continue
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: v})
		kinds = append(kinds, "dispatch")
	}
	return s.produceRecords(ctx, recs, kinds)
}

// produceRecords sends recs and waits until Kafka acknowledged every one,
// or ProduceTimeout passed, or ctx is done. kinds[i] is the "kind" label
// of recs[i] in herald_ingest_records_produced_total.
//
// It waits on the records' promises rather than in ProduceSync so that the
// timeout holds even for records already written to a broker that then went
// away: the idempotent producer does not fail those until the broker answers,
// but the caller has to get its 503 in time. Such records may still be
// written later; callers retry, and consumers deduplicate on record ids.
func (s *Server) produceRecords(ctx context.Context, recs []*kgo.Record, kinds []string) error {
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProduceTimeout)
	defer cancel()
	acks := make(chan error, len(recs)) // buffered: promises never block
	for _, r := range recs {
		s.cl.Produce(ctx, r, func(_ *kgo.Record, err error) { acks <- err })
	}
	var first error
	for range recs {
		select {
		case err := <-acks:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: producing %d records: %w", errProduce, len(recs), context.Cause(ctx))
		}
	}
	if first != nil {
		return fmt.Errorf("%w: producing %d records: %w", errProduce, len(recs), first)
	}
	for _, k := range kinds {
		s.m.produced.WithLabelValues(k).Inc()
	}
	return nil
}

// produceError turns a produce error into the answer: 413 for a record too
// large for Kafka (retrying cannot help), else 503.
func (s *Server) produceError(route string, err error) *apiError {
	if errors.Is(err, kerr.MessageTooLarge) {
		return &apiError{Code: http.StatusRequestEntityTooLarge, Field: "body", Msg: "is too large for the event stream"}
	}
	if ok, n := s.logProduce.allow(); ok {
		s.log.Warn("kafka did not acknowledge, answering 503", "route", route, "err", err, "suppressed", n)
	}
	return &apiError{Code: http.StatusServiceUnavailable, Msg: "event stream unavailable, retry later"}
}

// newEventID returns 128 random bits, hex.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b[:])
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.code
}

// okBody is a Pushwoosh success answer.
type okBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Response      any    `json:"response"`
}

// errBody is an error answer, the Pushwoosh envelope plus the field at fault.
type errBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Field         string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // plain structs of strings and ints: cannot happen
		code, b = http.StatusInternalServerError, []byte(`{"status_code":500,"status_message":"encoding answer"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n')) // the client went away: nothing to do
}

func writeOK(w http.ResponseWriter, response any) {
	writeJSON(w, http.StatusOK, okBody{StatusCode: http.StatusOK, StatusMessage: "OK", Response: response})
}

func writeError(w http.ResponseWriter, e *apiError) {
	switch {
	case e.RetryAfter > 0:
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	case e.Code == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, e.Code, errBody{StatusCode: e.Code, StatusMessage: e.Error(), Field: e.Field})
}

// throttle lets a repeated log line through at most once a period and
// counts what it held back.
type throttle struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const throttlePeriod = 10 * time.Second

// allow reports whether to log now and how many lines were suppressed since
// the last one.
func (t *throttle) allow() (bool, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < throttlePeriod {
		t.suppressed++
		return false, 0
	}
	n := t.suppressed
	t.last, t.suppressed = now, 0
	return true, n
}
