// Package fcmsim simulates the part of Firebase Cloud Messaging's HTTP v1
// API that Herald uses, faithfully enough that the dispatcher's push
// provider runs unchanged against it and against fcm.googleapis.com:
//
//	POST /v1/projects/{project_id}/messages:send   {"message":{"token","notification":{"title","body"},"data":{...}}}
//
// answered {"name":"projects/{project_id}/messages/{id}"}, or an error body
// as FCM writes it:
//
//	{"error":{"code":404,"message":"...","status":"NOT_FOUND",
//	  "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}
//
// Checks, in order: the bearer token (401 UNAUTHENTICATED when missing or
// unknown, 403 PERMISSION_DENIED SENDER_ID_MISMATCH for another project's
// token, 404 NOT_FOUND for an unknown project), the JSON (400 INVALID_ARGUMENT for unknown
// fields, a target other than one token, non-string data values, reserved
// data keys, a payload over 4,096 bytes), the project's quota
// (Config.QuotaPerSecond: 429 QUOTA_EXCEEDED with Retry-After), scripted
// faults (Sim.Script), and unregistered tokens (Sim.Unregister: 404
// UNREGISTERED).
//
// The simulator has no Prometheus metrics; Sim.Stats counts what it did and
// Sim.Messages returns what it accepted.
//
// Usage:
//
//	sim, _ := fcmsim.New(fcmsim.Config{Projects: []fcmsim.Project{{ID: "shop-app", AccessToken: "tok"}}})
//	srv := httptest.NewServer(sim.Handler()) // the dispatcher's push.fcm_base_url
package fcmsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config of a Sim.
type Config struct {
	// Projects are the Firebase projects served, each with the bearer
	// token its requests must carry.
	Projects []Project
	// QuotaPerSecond is the sends a second each project may make; past it
	// the answer is 429 QUOTA_EXCEEDED with Retry-After. 0: no quota.
	QuotaPerSecond int
	// MaxStored is how many accepted messages are kept, the oldest dropped
	// first. Default 10,000.
	MaxStored int
}

// Project is one Firebase project.
type Project struct {
	ID          string
	AccessToken string
}

// Message is an accepted push.
type Message struct {
	Project string
	// Name is the message name answered.
	Name  string
	Token string
	Title string
	Body  string
	Data  map[string]string
	Time  time.Time
}

// Fault is a scripted answer to a send to one token.
type Fault struct {
	// Status is the HTTP status, ErrorCode FCM's errorCode
	// (UNREGISTERED, QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL, ...).
	Status    int
	ErrorCode string
	// RetryAfter, when positive, is sent as Retry-After in seconds.
	RetryAfter int
	// Hang holds the answer until the client gives up (a timeout after the
	// request was read: in doubt).
	Hang bool
}

// Stats counts what the simulator did.
type Stats struct {
	Requests int
	Accepted int
	// Refused counts error answers by FCM errorCode (or status name).
	Refused map[string]int
}

// FCM error codes.
const (
	ErrUnregistered     = "UNREGISTERED"
	ErrQuotaExceeded    = "QUOTA_EXCEEDED"
	ErrUnavailable      = "UNAVAILABLE"
	ErrInternal         = "INTERNAL"
	ErrInvalidArgument  = "INVALID_ARGUMENT"
	ErrSenderIDMismatch = "SENDER_ID_MISMATCH"
)

// statusOf is the google.rpc status of each FCM error code.
var statusOf = map[string]struct {
	http   int
	status string
}{
	ErrUnregistered:     {404, "NOT_FOUND"},
	ErrQuotaExceeded:    {429, "RESOURCE_EXHAUSTED"},
	ErrUnavailable:      {503, "UNAVAILABLE"},
	ErrInternal:         {500, "INTERNAL"},
	ErrInvalidArgument:  {400, "INVALID_ARGUMENT"},
	ErrSenderIDMismatch: {403, "PERMISSION_DENIED"},
}

// Sim is the simulator.
type Sim struct {
	cfg      Config
	projects map[string]string // id -> token

	mu           sync.Mutex
	stored       []Message
	stats        Stats
	scripts      map[string][]Fault
	unregistered map[string]bool
	window       map[string]*quotaWindow
	seq          int
	now          func() time.Time
}

type quotaWindow struct {
	second int64
	n      int
}

// New validates cfg and returns a simulator.
func New(cfg Config) (*Sim, error) {
	if cfg.MaxStored < 0 || cfg.QuotaPerSecond < 0 {
		return nil, errors.New("fcmsim: limits must not be negative")
	}
	if cfg.MaxStored == 0 {
		cfg.MaxStored = 10_000
	}
	s := &Sim{
		cfg: cfg, projects: make(map[string]string), scripts: make(map[string][]Fault),
		unregistered: make(map[string]bool), window: make(map[string]*quotaWindow), now: time.Now,
		stats: Stats{Refused: make(map[string]int)},
	}
	for i, p := range cfg.Projects {
		if p.ID == "" || p.AccessToken == "" {
			return nil, fmt.Errorf("fcmsim: projects[%d]: id and access token are required", i)
		}
		if _, dup := s.projects[p.ID]; dup {
			return nil, fmt.Errorf("fcmsim: project %s appears twice", p.ID)
		}
		s.projects[p.ID] = p.AccessToken
	}
	return s, nil
}

// Script queues faults for sends to token, used in order.
func (s *Sim) Script(token string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[token] = append(s.scripts[token], faults...)
}

// Unregister makes sends to token answer 404 UNREGISTERED from now on, as
// after the app was uninstalled.
func (s *Sim) Unregister(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered[token] = true
}

// Messages returns a copy of the accepted messages, oldest first.
func (s *Sim) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.stored...)
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Refused = make(map[string]int, len(s.stats.Refused))
	for k, v := range s.stats.Refused {
		st.Refused[k] = v
	}
	return st
}

// Handler serves the API.
func (s *Sim) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.stats.Requests++
		s.mu.Unlock()
		project, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
		if ok {
			project, ok = strings.CutSuffix(project, "/messages:send")
		}
		if !ok || project == "" || strings.Contains(project, "/") {
			s.fail(w, 404, "NOT_FOUND", "", "Requested entity was not found.", 0)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			s.fail(w, 405, "METHOD_NOT_ALLOWED", "", "Method not allowed.", 0)
			return
		}
		s.send(w, r, project)
	})
}

// wire shapes
type (
	sendRequest struct {
		ValidateOnly bool         `json:"validate_only"`
		Message      *wireMessage `json:"message"`
	}
	wireMessage struct {
		Token        string `json:"token"`
		Topic        string `json:"topic"`
		Condition    string `json:"condition"`
		Notification *struct {
			Title string `json:"title"`
			Body  string `json:"body"`
			Image string `json:"image"`
		} `json:"notification"`
		Data    map[string]string `json:"data"`
		Android json.RawMessage   `json:"android"`
		APNS    json.RawMessage   `json:"apns"`
		Webpush json.RawMessage   `json:"webpush"`
	}
)

func (s *Sim) send(w http.ResponseWriter, r *http.Request, project string) {
	want, known := s.projects[project]
	tok, hasTok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case !hasTok || tok == "":
		s.fail(w, 401, "UNAUTHENTICATED", "", "Request is missing required authentication credential. Expected OAuth 2 access token.", 0)
		return
	case !known:
		s.fail(w, 404, "NOT_FOUND", "", "Requested entity was not found.", 0)
		return
	case tok != want:
		if s.ownsToken(tok) {
			s.fail(w, 403, "PERMISSION_DENIED", ErrSenderIDMismatch, "SenderId mismatch", 0)
			return
		}
		s.fail(w, 401, "UNAUTHENTICATED", "", "Request had invalid authentication credentials.", 0)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.fail(w, 400, "INVALID_ARGUMENT", ErrInvalidArgument, "Could not read the request body.", 0)
		return
	}
	var req sendRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, 400, "INVALID_ARGUMENT", ErrInvalidArgument, "Invalid JSON payload received. "+err.Error(), 0)
		return
	}
	m, msg := checkMessage(req.Message)
	if msg != "" {
		s.fail(w, 400, "INVALID_ARGUMENT", ErrInvalidArgument, msg, 0)
		return
	}
	if retry := s.overQuota(project); retry > 0 {
		s.fail(w, 429, "RESOURCE_EXHAUSTED", ErrQuotaExceeded, "Sending limit exceeded for the project.", retry)
		return
	}
	if f, ok := s.nextFault(m.Token); ok {
		if f.Hang {
			<-r.Context().Done()
			return
		}
		st := statusOf[f.ErrorCode]
		status := f.Status
		if status == 0 {
			status = st.http
		}
		s.fail(w, status, st.status, f.ErrorCode, "Scripted fault.", f.RetryAfter)
		return
	}
	s.mu.Lock()
	unreg := s.unregistered[m.Token]
	s.mu.Unlock()
	if unreg {
		s.fail(w, 404, "NOT_FOUND", ErrUnregistered, "Requested entity was not found.", 0)
		return
	}
	if req.ValidateOnly {
		writeJSON(w, 200, map[string]string{"name": "projects/" + project + "/messages/fake_message_id"})
		return
	}
	name := s.store(project, m)
	writeJSON(w, 200, map[string]string{"name": name})
}

func (s *Sim) ownsToken(tok string) bool {
	for _, t := range s.projects {
		if t == tok {
			return true
		}
	}
	return false
}

// checkMessage validates a message as FCM does; msg is the refusal.
func checkMessage(m *wireMessage) (*wireMessage, string) {
	if m == nil {
		return nil, "Request contains an invalid argument: message is required."
	}
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	switch {
	case targets != 1:
		return nil, "Request contains an invalid argument: exactly one of token, topic or condition is required."
	case m.Token == "":
		return nil, "fcmsim serves token messages only."
	case len(m.Token) > 4096 || strings.ContainsAny(m.Token, " \t\r\n"):
		return nil, "The registration token is not a valid FCM registration token"
	}
	size := 0
	if n := m.Notification; n != nil {
		size += len(n.Title) + len(n.Body)
	}
	for k, v := range m.Data {
		lk := strings.ToLower(k)
		if lk == "from" || lk == "notification" || lk == "message_type" || strings.HasPrefix(lk, "google") || strings.HasPrefix(lk, "gcm") {
			return nil, "Invalid data payload key: " + k
		}
		size += len(k) + len(v)
	}
	if size > 4096 {
		return nil, "Request contains an invalid argument: message is too big."
	}
	return m, ""
}

// overQuota counts a send against project's quota and returns the
// Retry-After in seconds when it is over, else 0.
func (s *Sim) overQuota(project string) int {
	if s.cfg.QuotaPerSecond <= 0 {
		return 0
	}
	sec := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.window[project]
	if q == nil || q.second != sec {
		q = &quotaWindow{second: sec}
		s.window[project] = q
	}
	if q.n >= s.cfg.QuotaPerSecond {
		return 1
	}
	q.n++
	return 0
}

func (s *Sim) nextFault(token string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.scripts[token]
	if len(q) == 0 {
		return Fault{}, false
	}
	s.scripts[token] = q[1:]
	return q[0], true
}

func (s *Sim) store(project string, m *wireMessage) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	name := fmt.Sprintf("projects/%s/messages/0:%d%%sim", project, s.seq)
	msg := Message{Project: project, Name: name, Token: m.Token, Data: m.Data, Time: s.now()}
	if n := m.Notification; n != nil {
		msg.Title, msg.Body = n.Title, n.Body
	}
	s.stored = append(s.stored, msg)
	if len(s.stored) > s.cfg.MaxStored {
		s.stored = append(s.stored[:0:0], s.stored[len(s.stored)-s.cfg.MaxStored:]...)
	}
	s.stats.Accepted++
	return name
}

// fail writes an FCM error body and counts it.
func (s *Sim) fail(w http.ResponseWriter, status int, rpcStatus, fcmCode, msg string, retryAfter int) {
	s.mu.Lock()
	key := fcmCode
	if key == "" {
		key = rpcStatus
	}
	s.stats.Refused[key]++
	s.mu.Unlock()
	e := map[string]any{"code": status, "message": msg, "status": rpcStatus}
	if fcmCode != "" {
		e["details"] = []map[string]string{{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcmCode}}
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // maps of strings and numbers
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
