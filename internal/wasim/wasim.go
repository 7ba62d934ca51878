// Package wasim simulates the parts of Meta's WhatsApp Cloud API that Herald
// uses, faithfully enough that the dispatcher runs unchanged against it and
// against graph.facebook.com: sending messages, listing templates, and the
// signed status and inbound webhooks.
//
// Endpoints of Sim.Handler (any Graph version vNN.N in the path):
//
//	POST /{version}/{phone-number-id}/messages           send a template, text, image or interactive message; mark as read
//	GET  /{version}/{waba-id}/message_templates          list templates with cursor paging (limit, after, before)
//
// Requests need "Authorization: Bearer <access token>" (or ?access_token=)
// of the number (of a number of the WABA for templates). Refusals are Graph
// error bodies {"error":{"message","type","code","error_data":{...},"fbtrace_id"}}
// with the codes and HTTP statuses listed at the Code constants.
//
// After a message is accepted the webhook sender (Sim.Run) POSTs its
// statuses to the number's WebhookURL, one status per POST, in order sent,
// delivered, read (read for Config.ReadRatio of messages), Config.StatusDelay
// apart; messages interleave. Each body is signed like Meta signs it:
// X-Hub-Signature-256: sha256=hex(HMAC-SHA256(app secret, raw body)). A POST
// not answered 200 is retried with backoff for Config.WebhookRetryFor.
// Statuses carry pricing {billable, pricing_model "PMP", category, type}
// on sent and delivered: the template's category (marketing, utility,
// authentication), "service" for free-form messages; utility templates and
// free-form messages inside the customer-service window are not billable.
//
// Templates (Config.Templates, one registry per WABA) have a body with
// variables, an optional header (TEXT with at most one variable, IMAGE,
// VIDEO, DOCUMENT or LOCATION) and buttons; message_templates lists them
// with Meta's components (HEADER, BODY, BUTTONS) and examples. A template
// send is checked as Meta checks it: the template must exist in that
// language (132001) and be APPROVED (132001 for PENDING and REJECTED,
// 132015 PAUSED, 132016 DISABLED); the body and header parameter counts
// must match (132000), the header parameter must be of the header's type
// (132012), and every button that takes a parameter (a URL button whose url
// ends in {{1}}, an OTP button) needs a url text parameter (131008).
// Sim.SetTemplate, SetTemplateStatus and DeleteTemplate change a registry
// at run time; SetTemplateStatus also sends Meta's signed
// message_template_status_update webhook.
//
// The 24-hour customer-service window of a user opens when the user writes
// to the number: Sim.SendInbound. Free-form messages outside it, and
// messages to recipients whose digits end in UndeliverableSuffix ("0000"),
// are accepted and then fail with a failed status webhook (131047, 131026),
// as on graph.facebook.com; Config.SyncDeliveryErrors refuses them in the
// send call instead.
//
// Messaging tier (Config.MessagingTier, Sim.SetMessagingTier): a template
// to a user outside the number's service window counts that user toward
// the WABA's tier for 24 h; once the tier's unique users are reached in
// the moving 24 h, templates to further users outside the window fail with
// a failed status webhook 131048 (Meta has no code of its own for it and
// reports it after the send; Config.SyncDeliveryErrors answers it at
// once). Users reached within the 24 h may always be messaged again.
//
// Faults (Config.Faults, Sim.SetFaults): 5xx answers, latency before the
// answer, accepted messages without statuses (drop), failed statuses,
// accepted messages answered 500 (lost response), and accepted messages
// answered late (AnswerDelay: a sender with a shorter timeout is left in
// doubt, and the statuses tell it the message went out).
//
// The simulator has no Prometheus metrics of its own; Sim.Stats counts what
// it did, the requests to each endpoint included, Sim.AcceptedPerSecond counts the accepted messages of each number
// per second of the simulator's clock (what a throughput limit is judged
// by), and Sim.SetThroughput changes the per-number throughput at run time
// (Meta throttling or upgrading a number).
//
// Using it in-process (a test, or the demo):
//
//	sim, err := wasim.New(wasim.Config{
//		Numbers: []wasim.Number{{PhoneNumberID: "1001", WABAID: "2001",
//			AccessToken: "token", AppSecret: "secret", WebhookURL: herald.URL + "/whatsapp/webhooks"}},
//		Templates: wasim.DefaultTemplates(),
//	}, slog.Default())
//	if err != nil { ... }
//	go sim.Run(ctx)                              // status webhooks
//	api := httptest.NewServer(sim.Handler())     // point the dispatcher's Graph base URL here
//	wamid, err := sim.SendInbound(ctx, "1001", "+15551234567", "HELP")
package wasim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/internal/jsonenc"
)

// Sim is a simulated WhatsApp Cloud API. Its methods are safe for
// concurrent use.
type Sim struct {
	cfg        Config
	log        *slog.Logger
	numbers    map[string]*Number
	tokens     map[string]bool
	wabaTokens map[string]map[string]bool
	templates  *registry
	limits     *limits
	tiers      *tiers
	sched      *scheduler
	// optOuts are the (WABA, wa_id) pairs that stopped marketing
	// messages (SetMarketingOptOut).
	optMu   sync.Mutex
	optOuts map[[2]string]bool
	client  *http.Client
	// now is the clock of the limits and windows; tests replace it.
	now func() time.Time

	instance [6]byte
	// versionHeader is the Facebook-Api-Version header's value, shared
	// by every answer (net/http copies a handler's header values before
	// it writes them).
	versionHeader []string
	msgSeq        atomic.Uint64
	reqSeq        atomic.Uint64
	running       atomic.Bool

	faultsMu sync.RWMutex
	faults   Faults

	statsMu sync.Mutex
	stats   Stats
}

// Stats are the counters of a Sim since New.
type Stats struct {
	// Accepted messages (answered 200, or accepted under LostResponseRatio).
	Accepted int
	// Rejected API requests by Graph error code (Error5xxRatio faults
	// included, LostResponseRatio answers not).
	Rejected map[int]int
	// LostResponses are accepted messages answered with a 500 on purpose.
	LostResponses int
	// Dropped are accepted messages whose statuses DropRatio suppressed.
	Dropped int
	// TierRefused are templates refused for the messaging tier (a failed
	// status 131048, or the answer with SyncDeliveryErrors).
	TierRefused int
	// WebhooksSent are webhook POSTs answered 200, statuses and inbound.
	WebhooksSent int
	// WebhooksFailed are webhook POST attempts not answered 200 (each retry
	// counts), statuses and inbound.
	WebhooksFailed int
	// WebhooksAbandoned are status webhooks given up after WebhookRetryFor.
	WebhooksAbandoned int
	// Statuses counts the status webhooks delivered, by status (sent,
	// delivered, read, failed).
	Statuses map[string]int
	// Inbound counts the inbound message webhooks delivered.
	Inbound int
	// Pending are accepted messages whose statuses are not all sent yet.
	Pending int
	// MessageRequests and TemplateRequests count the requests to the
	// messages and message_templates endpoints, whatever their answer
	// (injected faults included).
	MessageRequests, TemplateRequests int
	// TemplateWebhooks counts the template status webhooks delivered
	// (SetTemplateStatus).
	TemplateWebhooks int
}

// New validates cfg and builds a simulator. log may be nil.
func New(cfg Config, log *slog.Logger) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating wasim config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		cfg:           cfg,
		versionHeader: []string{cfg.Version},
		log:           log,
		numbers:       make(map[string]*Number),
		tokens:        make(map[string]bool),
		wabaTokens:    make(map[string]map[string]bool),
		templates:     newRegistry(cfg.Numbers, cfg.Templates),
		limits:        newLimits(cfg.Throughput, cfg.PairInterval),
		tiers:         newTiers(cfg.MessagingTier),
		sched:         newScheduler(),
		client:        cfg.HTTPClient,
		now:           time.Now,
		faults:        cfg.Faults,
		stats:         Stats{Rejected: make(map[int]int), Statuses: make(map[string]int)},
	}
	if _, err := rand.Read(s.instance[:]); err != nil {
		return nil, fmt.Errorf("reading random instance id: %w", err)
	}
	for i := range s.cfg.Numbers {
		n := &s.cfg.Numbers[i]
		s.numbers[n.PhoneNumberID] = n
		s.tokens[n.AccessToken] = true
		if s.wabaTokens[n.WABAID] == nil {
			s.wabaTokens[n.WABAID] = make(map[string]bool)
		}
		s.wabaTokens[n.WABAID][n.AccessToken] = true
	}
	return s, nil
}

// SetFaults replaces the injected faults at run time. Ratios are clamped to
// [0, 1] and a negative latency to 0.
func (s *Sim) SetFaults(f Faults) {
	clamp := func(v float64) float64 {
		if !(v > 0) { // NaN too
			return 0
		}
		return math.Min(v, 1)
	}
	f.Error5xxRatio, f.DropRatio = clamp(f.Error5xxRatio), clamp(f.DropRatio)
	f.FailRatio, f.LostResponseRatio = clamp(f.FailRatio), clamp(f.LostResponseRatio)
	f.Latency, f.AnswerDelay = max(f.Latency, 0), max(f.AnswerDelay, 0)
	s.faultsMu.Lock()
	s.faults = f
	s.faultsMu.Unlock()
}

func (s *Sim) currentFaults() Faults {
	s.faultsMu.RLock()
	defer s.faultsMu.RUnlock()
	return s.faults
}

// SetTemplate adds a template to a WABA's registry, or replaces the one
// with the same name and language: use it to approve, pause or disable a
// template at run time.
func (s *Sim) SetTemplate(wabaID string, t Template) error {
	if err := t.validate(); err != nil {
		return fmt.Errorf("setting template: %w", err)
	}
	if err := s.templates.set(wabaID, t); err != nil {
		return fmt.Errorf("setting template %s: %w", t.Name, err)
	}
	return nil
}

// SetTemplateStatus changes the status of a WABA's template at run time,
// as Meta does when it approves, rejects, pauses or disables one, and then
// sends the signed message_template_status_update webhook (event status,
// reason, default "NONE") to the WebhookURL of the WABA's first number
// that has one, and waits for the answer. Without such a number only the
// status changes. The error wraps ErrWebhookRejected when the webhook did
// not answer 200 (the status is changed all the same).
func (s *Sim) SetTemplateStatus(ctx context.Context, wabaID, name, language, status, reason string) error {
	t := Template{Name: name, Language: language, Category: CategoryUtility, Status: status}
	if err := t.validate(); err != nil {
		return fmt.Errorf("setting template status: %w", err)
	}
	t, err := s.templates.setStatus(wabaID, name, language, status)
	if err != nil {
		return fmt.Errorf("setting template status: %w", err)
	}
	if reason == "" {
		reason = "NONE"
	}
	var n *Number
	for i := range s.cfg.Numbers {
		if s.cfg.Numbers[i].WABAID == wabaID && s.cfg.Numbers[i].WebhookURL != "" {
			n = &s.cfg.Numbers[i]
			break
		}
	}
	if n == nil {
		return nil
	}
	body, err := templateStatusBody(wabaID, &t, reason, s.now())
	if err != nil {
		return fmt.Errorf("encoding template status webhook: %w", err)
	}
	if err := s.post(ctx, n, body); err != nil {
		s.count(func(st *Stats) { st.WebhooksFailed++ })
		return fmt.Errorf("sending template status webhook of %s: %w", name, err)
	}
	s.count(func(st *Stats) {
		st.WebhooksSent++
		st.TemplateWebhooks++
	})
	return nil
}

// DeleteTemplate removes a template from a WABA's registry: it is no longer
// listed and sends answer 132001.
func (s *Sim) DeleteTemplate(wabaID, name, language string) error {
	if err := s.templates.remove(wabaID, name, language); err != nil {
		return fmt.Errorf("deleting template: %w", err)
	}
	return nil
}

// SetMarketingOptOut makes waID (digits, no plus) a user who stopped
// marketing messages from the WhatsApp Business account wabaID: MARKETING
// templates to it fail with 131050 (as a failed status, or at once with
// Config.SyncDeliveryErrors); other messages go through.
func (s *Sim) SetMarketingOptOut(wabaID, waID string) {
	s.optMu.Lock()
	defer s.optMu.Unlock()
	if s.optOuts == nil {
		s.optOuts = make(map[[2]string]bool)
	}
	s.optOuts[[2]string{wabaID, waID}] = true
}

// ClearMarketingOptOut undoes SetMarketingOptOut: the user accepts
// marketing messages from the account again.
func (s *Sim) ClearMarketingOptOut(wabaID, waID string) {
	s.optMu.Lock()
	defer s.optMu.Unlock()
	delete(s.optOuts, [2]string{wabaID, waID})
}

// SetMessagingTier sets the messaging tier of one WhatsApp Business
// account at run time (Meta upgrading or downgrading it): n unique users
// outside the service window per moving 24 h, 0 for unlimited. Users
// reached before keep counting for their 24 h.
func (s *Sim) SetMessagingTier(wabaID string, n int) {
	s.tiers.set(wabaID, max(n, 0))
}

// TierUsed returns how many unique users outside the service window the
// account's templates reached in the last 24 h of the simulator's clock
// (0 while its tier is unlimited: those are not counted).
func (s *Sim) TierUsed(wabaID string) int {
	return s.tiers.used(wabaID, s.now())
}

func (s *Sim) optedOut(wabaID, waID string) bool {
	s.optMu.Lock()
	defer s.optMu.Unlock()
	return s.optOuts[[2]string{wabaID, waID}]
}

// SetThroughput changes Config.Throughput at run time, as Meta does when it
// upgrades a number or throttles it: from now on each number may send
// perSecond messages a second before 130429 (a bucket holding one second of
// sends, its current tokens capped to the new size); 0 or negative disables
// the limit.
func (s *Sim) SetThroughput(perSecond int) {
	s.limits.setRate(perSecond)
}

// AcceptedPerSecond returns how many messages from phoneNumberID the
// simulator accepted (let through its throughput and pair-rate limits) in
// each second of its clock, by Unix second, for the last hour: the
// throughput Meta saw. Seconds without a message are absent.
func (s *Sim) AcceptedPerSecond(phoneNumberID string) map[int64]int {
	return s.limits.acceptedPerSecond(phoneNumberID)
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.statsMu.Lock()
	st := s.stats
	st.Rejected = make(map[int]int, len(s.stats.Rejected))
	for k, v := range s.stats.Rejected {
		st.Rejected[k] = v
	}
	st.Statuses = make(map[string]int, len(s.stats.Statuses))
	for k, v := range s.stats.Statuses {
		st.Statuses[k] = v
	}
	s.statsMu.Unlock()
	st.Pending = int(s.sched.pending.Load())
	return st
}

func (s *Sim) count(f func(*Stats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}

// Handler returns the Graph API endpoints of the simulator.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{version}/{id}/messages", func(w http.ResponseWriter, r *http.Request) {
		s.count(func(st *Stats) { st.MessageRequests++ })
		s.api(w, r, func(version, id string) {
			if r.Method != http.MethodPost {
				s.writeError(w, errNoObject(strings.ToLower(r.Method), id))
				return
			}
			s.send(w, r, id)
		})
	})
	mux.HandleFunc("/{version}/{id}/message_templates", func(w http.ResponseWriter, r *http.Request) {
		s.count(func(st *Stats) { st.TemplateRequests++ })
		s.api(w, r, func(version, id string) {
			if r.Method != http.MethodGet {
				s.writeError(w, errNoObject(strings.ToLower(r.Method), id))
				return
			}
			s.listTemplates(w, r, version, id)
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, errUnknownPath(r.URL.Path))
	})
	return mux
}

// api applies the version check and the request faults, then calls h.
func (s *Sim) api(w http.ResponseWriter, r *http.Request, h func(version, id string)) {
	version, id := r.PathValue("version"), r.PathValue("id")
	if !graphVersion(version) {
		s.writeError(w, errUnknownPath(r.URL.Path))
		return
	}
	seq := s.reqSeq.Add(1)
	f := s.currentFaults()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if f.Error5xxRatio > 0 && hit(strconv.FormatUint(seq, 10), "5xx", f.Error5xxRatio) {
		if seq%2 == 0 {
			s.writeError(w, errServiceUnavailable("Service temporarily unavailable (injected fault)."))
		} else {
			s.writeError(w, errUnknown())
		}
		return
	}
	h(version, id)
}

// graphVersion reports whether v is a Graph version as versionRE has it
// (v23.0), without the regexp on every request.
func graphVersion(v string) bool {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	switch len(v) {
	case 4: // v9.0
		return v[0] == 'v' && digit(v[1]) && v[2] == '.' && digit(v[3])
	case 5: // v23.0
		return v[0] == 'v' && digit(v[1]) && digit(v[2]) && v[3] == '.' && digit(v[4])
	}
	return false
}

// bearer returns the access token of a request: the Authorization Bearer
// header or the access_token query parameter.
func bearer(r *http.Request) (string, *graphError) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", errInvalidToken()
		}
		return strings.TrimSpace(tok), nil
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		return tok, nil
	}
	return "", errMissingToken()
}

// authNumber checks that tok may send from the number.
func (s *Sim) authNumber(tok, phoneID string) (*Number, *graphError) {
	if !s.tokens[tok] {
		return nil, errInvalidToken()
	}
	n := s.numbers[phoneID]
	if n == nil || n.AccessToken != tok {
		return nil, errNoObject("post", phoneID)
	}
	return n, nil
}

// authWABA checks that tok belongs to a number of the WABA.
func (s *Sim) authWABA(tok, waba string) *graphError {
	if !s.tokens[tok] {
		return errInvalidToken()
	}
	if !s.wabaTokens[waba][tok] {
		return errNoObject("get", waba)
	}
	return nil
}

// outMsg is an accepted message whose statuses the webhook sender sends.
type outMsg struct {
	num       *Number
	wamid     string
	waID      string
	bizOpaque string
	// steps are the statuses still to come, in order: one of the
	// steps* slices, shared and never written.
	steps    []string
	failCode int
	pricing  *pricingJSON
	convID   string
}

// The status sequences of outMsg.steps.
var (
	stepsFailed    = []string{"failed"}
	stepsDelivered = []string{"sent", "delivered"}
	stepsRead      = []string{"sent", "delivered", "read"}
)

// send handles POST /{version}/{phone-number-id}/messages.
func (s *Sim) send(w http.ResponseWriter, r *http.Request, phoneID string) {
	tok, gerr := bearer(r)
	if gerr != nil {
		s.writeError(w, gerr)
		return
	}
	num, gerr := s.authNumber(tok, phoneID)
	if gerr != nil {
		s.writeError(w, gerr)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		s.writeError(w, errParam("Request body could not be read: %v", err))
		return
	}
	req, gerr := decodeSend(body)
	if gerr != nil {
		s.writeError(w, gerr)
		return
	}
	if req.markRead {
		s.writeJSON(w, http.StatusOK, map[string]bool{"success": true})
		return
	}
	var tmpl Template
	if req.Type == "template" {
		if tmpl, gerr = s.checkTemplate(num.WABAID, req.Template); gerr != nil {
			s.writeError(w, gerr)
			return
		}
	}
	now := s.now()
	undeliverable := strings.HasSuffix(req.waID, UndeliverableSuffix)
	inWindow := s.limits.inWindow(num.PhoneNumberID, req.waID, now)
	closed := req.freeForm() && !inWindow
	optedOut := req.Type == "template" && tmpl.Category == CategoryMarketing && s.optedOut(num.WABAID, req.waID)
	if s.cfg.SyncDeliveryErrors {
		switch {
		case undeliverable:
			s.writeError(w, errDelivery(CodeUndeliverable))
			return
		case closed:
			s.writeError(w, errDelivery(CodeReEngagement))
			return
		case optedOut:
			s.writeError(w, errDelivery(CodeMarketingOptOut))
			return
		}
	}
	if num.WebhookURL != "" && s.sched.pending.Load() >= int64(s.cfg.WebhookQueue) {
		s.writeError(w, errServiceUnavailable("The webhook queue of the simulator is full; call Sim.Run or slow down."))
		return
	}
	if gerr := s.limits.admit(num.PhoneNumberID, req.waID, now); gerr != nil {
		s.writeError(w, gerr)
		return
	}
	// A template to a user outside the window is business-initiated: it
	// counts toward the WABA's messaging tier (once it got through the
	// throughput and pair limits, and if it can be delivered at all).
	overTier := req.Type == "template" && !inWindow && !undeliverable && !optedOut &&
		!s.tiers.admit(num.WABAID, req.waID, now)
	if overTier {
		s.count(func(st *Stats) { st.TierRefused++ })
		if s.cfg.SyncDeliveryErrors {
			s.writeError(w, errDelivery(CodeSpamRateLimit))
			return
		}
	}

	m := &outMsg{num: num, wamid: s.newWAMID(req.waID), waID: req.waID, bizOpaque: req.BizOpaque}
	f := s.currentFaults()
	dropped := false
	switch {
	case undeliverable:
		m.steps, m.failCode = stepsFailed, CodeUndeliverable
	case closed:
		m.steps, m.failCode = stepsFailed, CodeReEngagement
	case optedOut:
		m.steps, m.failCode = stepsFailed, CodeMarketingOptOut
	case overTier:
		m.steps, m.failCode = stepsFailed, CodeSpamRateLimit
	case hit(m.wamid, "drop", f.DropRatio):
		dropped = true
	case hit(m.wamid, "fail", f.FailRatio):
		m.steps, m.failCode = stepsFailed, CodeUndeliverable
	default:
		m.steps = stepsDelivered
		if hit(m.wamid, "read", s.cfg.ReadRatio) {
			m.steps = stepsRead
		}
		if num.WebhookURL != "" {
			// Only the statuses carry them.
			m.pricing = pricingFor(req, &tmpl, inWindow)
			m.convID = conversationID(num.PhoneNumberID, req.waID, m.pricing.Category, now)
		}
	}
	if !dropped && num.WebhookURL != "" {
		s.sched.start(&job{msg: m, due: time.Now().Add(s.cfg.StatusDelay)})
	}
	if f.AnswerDelay > 0 {
		// Accepted, the statuses on their way, the answer late: a sender
		// that gives up first cannot know the message went out.
		t := time.NewTimer(f.AnswerDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	lost := hit(m.wamid, "lost", f.LostResponseRatio)
	s.count(func(st *Stats) {
		st.Accepted++
		if dropped {
			st.Dropped++
		}
		if lost {
			st.LostResponses++
		}
	})
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		// Checked first: the arguments alone cost allocations per send.
		s.log.Debug("message accepted", "phone_number_id", num.PhoneNumberID, "wamid", m.wamid, "type", req.Type, "steps", m.steps)
	}
	if lost {
		e := errUnknown()
		e.FBTraceID = fbtrace()
		s.writeRaw(w, e.status, map[string]*graphError{"error": e})
		return
	}
	msg := sendMessageJSON{ID: m.wamid}
	if req.Type == "template" {
		// Meta includes message_status for template messages only.
		msg.MessageStatus = "accepted"
	}
	// The answer's fixed part is about 110 bytes.
	buf := make([]byte, 0, 128+len(req.To)+len(req.waID)+len(msg.ID)+len(msg.MessageStatus))
	s.writeBytes(w, http.StatusOK, appendSendResponse(buf, req.To, req.waID, msg))
}

// appendSendResponse appends the answer to an accepted send: the
// sendResponseJSON of one contact and one message, as json.Marshal writes
// it (TestAppendSendResponseMatchesJSON), without its reflection (a few
// percent of a send's CPU in the dispatcher's benchmarks).
func appendSendResponse(b []byte, input, waID string, msg sendMessageJSON) []byte {
	b = append(b, `{"messaging_product":"whatsapp","contacts":[{"input":`...)
	b = jsonenc.String(b, input)
	b = append(b, `,"wa_id":`...)
	b = jsonenc.String(b, waID)
	b = append(b, `}],"messages":[{"id":`...)
	b = jsonenc.String(b, msg.ID)
	if msg.MessageStatus != "" {
		b = append(b, `,"message_status":`...)
		b = jsonenc.String(b, msg.MessageStatus)
	}
	return append(b, "}]}"...)
}

// readBody reads a request's body, at most maxBodyBytes, as io.ReadAll
// does but into a buffer of its Content-Length (and a byte for the EOF)
// when it has one, where io.ReadAll would grow one from 512 bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readAllSized(http.MaxBytesReader(w, r.Body, maxBodyBytes), r.ContentLength, maxBodyBytes)
}

// readAllSized is io.ReadAll starting with a buffer of size+1 bytes when
// size is in (0, limit].
func readAllSized(rd io.Reader, size, limit int64) ([]byte, error) {
	n := 512
	if size > 0 && size <= limit {
		n = int(size) + 1
	}
	b := make([]byte, 0, n)
	for {
		k, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// checkTemplate finds the template of a send and checks its status and
// parameters: the count of body and header parameters, the header's type
// (text, a media of the header's format, a location), and the URL
// parameters of the template's buttons.
func (s *Sim) checkTemplate(waba string, tm *templateMsg) (Template, *graphError) {
	t, found, _ := s.templates.lookup(waba, tm.Name, tm.Language.Code)
	if !found {
		return t, errTemplateMissing(tm.Name, tm.Language.Code, "")
	}
	switch t.Status {
	case StatusPending, StatusRejected:
		return t, errTemplateMissing(tm.Name, tm.Language.Code, "template status is "+t.Status)
	case StatusPaused:
		return t, errTemplatePaused(t.Name)
	case StatusDisabled:
		return t, errTemplateDisabled(t.Name)
	}
	var body int
	var header []parameter
	var buttons map[int]*component
	for i := range tm.Components {
		c := &tm.Components[i]
		switch strings.ToLower(c.Type) {
		case "body":
			body += len(c.Parameters)
		case "header":
			header = append(header, c.Parameters...)
		case "button":
			if buttons == nil {
				buttons = make(map[int]*component)
			}
			buttons[int(*c.Index)] = c // decodeSend checked the index
		}
	}
	if gerr := checkHeader(&t, header); gerr != nil {
		return t, gerr
	}
	if body != t.BodyParams {
		return t, errTemplateParams("body", body, t.BodyParams)
	}
	return t, checkButtons(&t, buttons)
}

// checkHeader checks the header parameters of a send against the
// template's header.
func checkHeader(t *Template, params []parameter) *graphError {
	switch t.HeaderFormat {
	case "", HeaderText:
		if len(params) != t.HeaderParams {
			return errTemplateParams("header", len(params), t.HeaderParams)
		}
		for _, p := range params {
			if p.Type != "text" {
				return errParamFormat(fmt.Sprintf("header: parameter of type %s, the template's header is TEXT", p.Type))
			}
		}
		return nil
	}
	if len(params) != 1 {
		return errTemplateParams("header", len(params), 1)
	}
	if want := strings.ToLower(t.HeaderFormat); params[0].Type != want {
		return errParamFormat(fmt.Sprintf("header: parameter of type %s, the template's header is %s", params[0].Type, t.HeaderFormat))
	}
	return nil
}

// checkButtons checks the button components of a send: every button that
// takes a parameter gets one text parameter with sub_type url, and no
// button component names a button that takes none.
func checkButtons(t *Template, given map[int]*component) *graphError {
	for i := range t.Buttons {
		b := &t.Buttons[i]
		c := given[i]
		if !b.takesParam() {
			if c != nil && strings.EqualFold(c.SubType, "url") {
				return errTemplateParams(fmt.Sprintf("button at index %d (%s)", i, b.Type), len(c.Parameters), 0)
			}
			continue
		}
		if c == nil {
			return errParamMissing(fmt.Sprintf("buttons: button at index %d of type %s requires a parameter", i, b.Type))
		}
		if !strings.EqualFold(c.SubType, "url") || len(c.Parameters) != 1 || c.Parameters[0].Type != "text" {
			return errParamFormat(fmt.Sprintf("button at index %d of type %s takes one text parameter with sub_type url", i, b.Type))
		}
	}
	for i := range given {
		if i >= len(t.Buttons) {
			return errParam("Param template['components']: button index %d, the template has %d buttons.", i, len(t.Buttons))
		}
	}
	return nil
}

// pricingFor is the pricing of a message's statuses under Meta's
// per-message pricing: marketing and authentication templates are charged,
// utility templates only outside the customer-service window, free-form
// (service) messages never.
func pricingFor(req *sendRequest, t *Template, inWindow bool) *pricingJSON {
	if req.freeForm() {
		return &pricingJSON{Billable: false, PricingModel: "PMP", Category: "service", Type: "free_customer_service"}
	}
	p := &pricingJSON{Billable: true, PricingModel: "PMP", Category: strings.ToLower(t.Category), Type: "regular"}
	if t.Category == CategoryUtility && inWindow {
		p.Billable, p.Type = false, "free_customer_service"
	}
	return p
}

// conversationID is stable for a number, a recipient, a category and a day.
func conversationID(phone, waID, category string, now time.Time) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%s|%s", phone, waID, category, now.UTC().Format(time.DateOnly))
	return fmt.Sprintf("%032x", h.Sum64())
}

// newWAMID makes a unique message id shaped like Meta's:
// "wamid." + base64 of the recipient and a unique suffix.
func (s *Sim) newWAMID(waID string) string {
	var raw [64]byte
	b := append(raw[:0], 0x18, byte(len(waID)))
	b = append(b, waID...)
	b = append(b, 0x15, 0x02)
	b = append(b, s.instance[:]...)
	b = binary.BigEndian.AppendUint64(b, s.msgSeq.Add(1))
	var out [128]byte
	return string(base64.StdEncoding.AppendEncode(append(out[:0], "wamid."...), b))
}

// hit decides a ratio deterministically from a key: the same key, salt and
// ratio always give the same answer.
func hit(key, salt string, ratio float64) bool {
	if !(ratio > 0) {
		return false
	}
	if ratio >= 1 {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(key))
	// fnv's low bits mix poorly for short keys; fold the high half in.
	v := h.Sum64()
	v ^= v >> 29
	v *= 0xbf58476d1ce4e5b9
	v ^= v >> 32
	return float64(v>>11)/float64(1<<53) < ratio
}

type sendResponseJSON struct {
	MessagingProduct string            `json:"messaging_product"`
	Contacts         []sendContactJSON `json:"contacts"`
	Messages         []sendMessageJSON `json:"messages"`
}

type sendContactJSON struct {
	Input string `json:"input"`
	WAID  string `json:"wa_id"`
}

type sendMessageJSON struct {
	ID            string `json:"id"`
	MessageStatus string `json:"message_status,omitempty"`
}

// fbtrace makes a Graph-like trace id.
func fbtrace() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	var out [20]byte
	return string(base64.RawURLEncoding.AppendEncode(append(out[:0], 'A'), b[:]))
}

func (s *Sim) writeError(w http.ResponseWriter, e *graphError) {
	s.count(func(st *Stats) { st.Rejected[e.Code]++ })
	e.FBTraceID = fbtrace()
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `OAuth "Facebook Platform" "invalid_token" "`+strings.ReplaceAll(e.Message, `"`, `'`)+`"`)
	}
	s.writeRaw(w, e.status, map[string]*graphError{"error": e})
}

func (s *Sim) writeJSON(w http.ResponseWriter, status int, v any) { s.writeRaw(w, status, v) }

func (s *Sim) writeRaw(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; they always marshal.
		s.log.Error("encoding response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"internal","type":"OAuthException","code":1}}`)
	}
	s.writeBytes(w, status, b)
}

// writeBytes writes a JSON answer with Graph's headers. The keys are set
// in their canonical form directly (Header.Set would canonicalize them on
// every answer).
// jsonContentType is the Content-Type header's value of every answer
// (read-only, as Sim.versionHeader).
var jsonContentType = []string{"application/json; charset=UTF-8"}

func (s *Sim) writeBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Facebook-Api-Version"] = s.versionHeader
	h["X-Fb-Trace-Id"] = []string{fbtrace()}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
