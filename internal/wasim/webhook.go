package wasim

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff of a failed status webhook: doubling from retryBase to retryMax.
const (
	retryBase = 100 * time.Millisecond
	retryMax  = 5 * time.Second
)

// SignatureHeader is the header that carries a webhook body's signature.
const SignatureHeader = "X-Hub-Signature-256"

// Sign returns the X-Hub-Signature-256 value of a webhook body:
// "sha256=" + hex(HMAC-SHA256(appSecret, body)).
func Sign(appSecret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(appSecret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Webhook payload, as Meta sends it.
type webhookPayload struct {
	Object string         `json:"object"`
	Entry  []webhookEntry `json:"entry"`
}

type webhookEntry struct {
	ID      string          `json:"id"`
	Changes []webhookChange `json:"changes"`
}

type webhookChange struct {
	Value webhookValue `json:"value"`
	Field string       `json:"field"`
}

type webhookValue struct {
	MessagingProduct string        `json:"messaging_product"`
	Metadata         metadataJSON  `json:"metadata"`
	Contacts         []contactJSON `json:"contacts,omitempty"`
	Messages         []inboundJSON `json:"messages,omitempty"`
	Statuses         []statusJSON  `json:"statuses,omitempty"`
}

type metadataJSON struct {
	DisplayPhoneNumber string `json:"display_phone_number"`
	PhoneNumberID      string `json:"phone_number_id"`
}

type statusJSON struct {
	ID           string            `json:"id"`
	Status       string            `json:"status"`
	Timestamp    string            `json:"timestamp"`
	RecipientID  string            `json:"recipient_id"`
	BizOpaque    string            `json:"biz_opaque_callback_data,omitempty"`
	Conversation *conversationJSON `json:"conversation,omitempty"`
	Pricing      *pricingJSON      `json:"pricing,omitempty"`
	Errors       []*statusError    `json:"errors,omitempty"`
}

type conversationJSON struct {
	ID                  string     `json:"id"`
	ExpirationTimestamp string     `json:"expiration_timestamp,omitempty"`
	Origin              originJSON `json:"origin"`
}

type originJSON struct {
	Type string `json:"type"`
}

type pricingJSON struct {
	Billable     bool   `json:"billable"`
	PricingModel string `json:"pricing_model"`
	Category     string `json:"category"`
	Type         string `json:"type"`
}

func (s *Sim) envelope(n *Number, v webhookValue) webhookPayload {
	v.MessagingProduct = "whatsapp"
	v.Metadata = metadataJSON{DisplayPhoneNumber: n.DisplayPhoneNumber, PhoneNumberID: n.PhoneNumberID}
	return webhookPayload{
		Object: "whatsapp_business_account",
		Entry:  []webhookEntry{{ID: n.WABAID, Changes: []webhookChange{{Field: "messages", Value: v}}}},
	}
}

// templateStatusPayload is the webhook body of a template status change
// (field message_template_status_update): its entry id is the WABA id and
// its value has no metadata.
type templateStatusPayload struct {
	Object string                `json:"object"`
	Entry  []templateStatusEntry `json:"entry"`
}

type templateStatusEntry struct {
	ID      string                 `json:"id"`
	Time    int64                  `json:"time"`
	Changes []templateStatusChange `json:"changes"`
}

type templateStatusChange struct {
	Value templateStatusValue `json:"value"`
	Field string              `json:"field"`
}

type templateStatusValue struct {
	Event    string      `json:"event"`
	ID       json.Number `json:"message_template_id"`
	Name     string      `json:"message_template_name"`
	Language string      `json:"message_template_language"`
	Reason   string      `json:"reason"`
}

// templateStatusBody is the webhook body of t's status change at now.
func templateStatusBody(waba string, t *Template, reason string, now time.Time) ([]byte, error) {
	return json.Marshal(templateStatusPayload{
		Object: "whatsapp_business_account",
		Entry: []templateStatusEntry{{ID: waba, Time: now.Unix(), Changes: []templateStatusChange{{
			Field: "message_template_status_update",
			Value: templateStatusValue{Event: t.Status, ID: json.Number(templateID(waba, t)), Name: t.Name, Language: t.Language, Reason: reason},
		}}}},
	})
}

// statusBody is the webhook body of one status of m at now. Conversation
// and pricing ride on sent and delivered, as Meta sends them; read carries
// neither, failed carries the error.
func (s *Sim) statusBody(m *outMsg, status string, now time.Time) ([]byte, error) {
	st := statusJSON{
		ID: m.wamid, Status: status, Timestamp: strconv.FormatInt(now.Unix(), 10),
		RecipientID: m.waID, BizOpaque: m.bizOpaque,
	}
	switch status {
	case "failed":
		st.Errors = []*statusError{newStatusError(m.failCode)}
	case "sent", "delivered":
		st.Pricing = m.pricing
		st.Conversation = &conversationJSON{ID: m.convID, Origin: originJSON{Type: m.pricing.Category}}
		if status == "sent" {
			st.Conversation.ExpirationTimestamp = strconv.FormatInt(now.Add(serviceWindow).Unix(), 10)
		}
	}
	return json.Marshal(s.envelope(m.num, webhookValue{Statuses: []statusJSON{st}}))
}

// post sends a signed webhook body to the number's WebhookURL. Anything
// but a 200 answer is an error.
func (s *Sim) post(ctx context.Context, n *Number, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "facebookexternalua")
	req.Header.Set(SignatureHeader, Sign(n.AppSecret, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: got %d", ErrWebhookRejected, resp.StatusCode)
	}
	return nil
}

// Run sends the status webhooks of accepted messages until ctx is done,
// with Config.WebhookWorkers POSTs at once. Statuses not sent when it
// returns stay queued for the next Run. It returns nil when ctx is done,
// ErrRunning if another Run is running.
func (s *Sim) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	ready := make(chan *job)
	var wg sync.WaitGroup
	for range s.cfg.WebhookWorkers {
		wg.Go(func() {
			for j := range ready {
				s.deliver(ctx, j)
			}
		})
	}
	defer func() {
		close(ready)
		wg.Wait()
	}()
	for {
		j, ok := s.sched.next(ctx)
		if !ok {
			return nil
		}
		select {
		case ready <- j:
		case <-ctx.Done():
			s.sched.push(j)
			return nil
		}
	}
}

// deliver POSTs one status and schedules what follows: the next status of
// the message after StatusDelay, or a retry of this one with backoff. One
// message has one job at a time, so its statuses stay in order.
func (s *Sim) deliver(ctx context.Context, j *job) {
	m := j.msg
	status := m.steps[j.step]
	if j.body == nil {
		now := time.Now()
		b, err := s.statusBody(m, status, s.now())
		if err != nil {
			// Our own types always marshal; give the message up rather than loop.
			s.log.Error("encoding status webhook", "wamid", m.wamid, "err", err)
			s.sched.done()
			return
		}
		j.body, j.first = b, now
	}
	err := s.post(ctx, m.num, j.body)
	if err != nil && ctx.Err() != nil {
		// Shutting down: keep the status for the next Run.
		s.sched.push(j)
		return
	}
	if err == nil {
		s.count(func(st *Stats) {
			st.WebhooksSent++
			st.Statuses[status]++
		})
	} else {
		s.count(func(st *Stats) { st.WebhooksFailed++ })
		if time.Since(j.first) < s.cfg.WebhookRetryFor {
			j.attempt++
			j.due = time.Now().Add(backoff(j.attempt))
			s.log.Debug("status webhook failed, retrying", "wamid", m.wamid, "status", status, "attempt", j.attempt, "err", err)
			s.sched.push(j)
			return
		}
		s.count(func(st *Stats) { st.WebhooksAbandoned++ })
		s.log.Warn("status webhook abandoned", "wamid", m.wamid, "status", status, "attempts", j.attempt+1, "err", err)
	}
	if j.step+1 < len(m.steps) {
		s.sched.push(&job{msg: m, step: j.step + 1, due: time.Now().Add(s.cfg.StatusDelay)})
		return
	}
	s.sched.done()
}

func backoff(attempt int) time.Duration {
	d := retryBase
	for i := 1; i < attempt && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// job is the next status webhook of one message.
type job struct {
	msg     *outMsg
	step    int
	due     time.Time
	body    []byte    // built at the first attempt, resent as is on retries
	first   time.Time // first attempt
	attempt int
	index   int
}

type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h jobHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *jobHeap) Push(x any) {
	j := x.(*job)
	j.index = len(*h)
	*h = append(*h, j)
}

func (h *jobHeap) Pop() any {
	old := *h
	n := len(old)
	j := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return j
}

// scheduler holds the status jobs by due time. pending counts the messages
// whose statuses are not all sent: it bounds the queue (Config.WebhookQueue).
type scheduler struct {
	mu      sync.Mutex
	h       jobHeap
	wake    chan struct{}
	pending atomic.Int64
}

func newScheduler() *scheduler { return &scheduler{wake: make(chan struct{}, 1)} }

// start queues the first status of a message.
func (q *scheduler) start(j *job) {
	q.pending.Add(1)
	q.push(j)
}

// done marks a message's statuses finished.
func (q *scheduler) done() { q.pending.Add(-1) }

func (q *scheduler) push(j *job) {
	q.mu.Lock()
	heap.Push(&q.h, j)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next waits for the earliest job to be due and returns it; false when ctx
// is done.
func (q *scheduler) next(ctx context.Context) (*job, bool) {
	for {
		q.mu.Lock()
		wait := time.Duration(-1)
		if len(q.h) > 0 {
			if wait = time.Until(q.h[0].due); wait <= 0 {
				j := heap.Pop(&q.h).(*job)
				q.mu.Unlock()
				return j, true
			}
		}
		q.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-q.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil, false
		}
	}
}
