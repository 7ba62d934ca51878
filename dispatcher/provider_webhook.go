package dispatcher

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// Webhook calls an app's own endpoint (a journey's webhook step): a JSON
// POST of
//
//	{"dispatch_id","app","source":{kind,name,event_id},"hwid","user_id","body":{...},"sent_at"}
//
// with the headers X-Herald-Dispatch-Id and X-Herald-Signature:
// sha256=<hex HMAC-SHA256 of the body with the app's webhooks.secret>. A
// 2xx answer is success; 408, 429 and 5xx are retried with backoff (429's
// Retry-After honoured); other answers fail the request with the status.
// A call whose answer is lost is retried too: receivers must deduplicate
// on X-Herald-Dispatch-Id (delivery is at least once). An app without a
// webhook secret gets no calls (unsigned calls could be forged).
type Webhook struct {
	client *http.Client
}

// NewWebhook returns the webhook provider; client nil means a default
// client (the dispatcher bounds each call with its RequestTimeout).
func NewWebhook(client *http.Client) *Webhook {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer, not followed
		}}
	}
	return &Webhook{client: client}
}

var (
	_ Provider = (*Webhook)(nil)
	_ preparer = (*Webhook)(nil)
)

// webhookRate is the most webhook calls a second to one endpoint host.
const webhookRate = 50

// ErrWebhookUnsigned: the app has no webhooks.secret. Permanent.
var ErrWebhookUnsigned = errors.New("app has no webhooks.secret: webhook calls are refused unsigned")

// prepare refuses requests the provider cannot make: no secret, a bad URL.
func (w *Webhook) prepare(app *apps.App, req *schemas.DispatchRequest) error {
	if app.Webhooks.Secret == "" {
		return ErrWebhookUnsigned
	}
	if req.Webhook == nil {
		return fmt.Errorf("%w: webhook is required", ErrInvalidRequest)
	}
	if err := schemas.CheckWebhookURL(req.Webhook.URL); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	if u, err := url.Parse(req.Webhook.URL); err == nil {
		req.Sender = u.Host // the breaker and the rate limit are per endpoint
	}
	return nil
}

// WebhookError is an answer other than 2xx.
type WebhookError struct {
	Status     int
	RetryAfter time.Duration
	Body       string
}

func (e *WebhookError) Error() string {
	return fmt.Sprintf("webhook answered HTTP %d: %s", e.Status, e.Body)
}

var _ providerError = (*WebhookError)(nil)

func (e *WebhookError) outcomeCode() int    { return e.Status }
func (e *WebhookError) metricLabel() string { return "webhook_" + strconv.Itoa(e.Status) }
func (e *WebhookError) retryable() bool {
	return e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests || e.Status >= 500
}
func (e *WebhookError) rateLimited() bool     { return e.Status == http.StatusTooManyRequests }
func (e *WebhookError) endpointFailure() bool { return e.Status >= 500 }

// webhookCall is the body of a call.
type webhookCall struct {
	DispatchID string         `json:"dispatch_id"`
	App        string         `json:"app"`
	Source     schemas.Source `json:"source"`
	HWID       string         `json:"hwid,omitempty"`
	UserID     string         `json:"user_id,omitempty"`
	Body       map[string]any `json:"body,omitempty"`
	SentAt     time.Time      `json:"sent_at"`
}

// Send makes the call.
func (w *Webhook) Send(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) (string, error) {
	if err := w.prepare(app, req); err != nil {
		return "", err
	}
	body, err := json.Marshal(webhookCall{
		DispatchID: req.ID, App: req.App, Source: req.Source, HWID: req.HWID, UserID: req.UserID,
		Body: req.Webhook.Body, SentAt: time.Now().UTC(),
	})
	if err != nil {
		return "", fmt.Errorf("%w: encoding the webhook body: %v", ErrInvalidRequest, err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, req.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	mac := hmac.New(sha256.New, []byte(app.Webhooks.Secret))
	mac.Write(body)
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "Herald-Webhook/1")
	hr.Header.Set("X-Herald-Dispatch-Id", req.ID)
	hr.Header.Set("X-Herald-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := w.client.Do(hr)
	if err != nil {
		// At least once: the receiver deduplicates on the dispatch id.
		return "", &WebhookError{Status: http.StatusServiceUnavailable, Body: "unreachable: " + err.Error()}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return "webhook:" + req.ID, nil
	}
	werr := &WebhookError{Status: resp.StatusCode, Body: string(bytes.TrimSpace(snippet))}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		werr.RetryAfter = time.Duration(s) * time.Second
	}
	return "", werr
}
