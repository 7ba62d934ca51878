package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

var (
	_ Provider    = (*Push)(nil)
	_ preparer    = (*Push)(nil)
	_ TokenSource = StaticTokens{}
)

// PushDataDispatchID is the data key every push carries with its dispatch
// id: the app posts it back as the attribute dispatch_id of PW_PushOpened.
const PushDataDispatchID = "herald_dispatch_id"

// maxPushPayload bounds a notification's title, body and data together:
// FCM refuses messages over 4,096 bytes of payload.
const maxPushPayload = 4000

// TokenSource gives the OAuth2 bearer token of an app's FCM project. A
// service-account flow (a JWT signed with the account's key exchanged at
// Google's token endpoint, cached until shortly before it expires)
// implements it next to StaticTokens; Push calls Token once per send, so
// an implementation caches.
type TokenSource interface {
	// Token returns the bearer token for app's project. An error wrapping
	// ErrPushToken fails the send permanently.
	Token(ctx context.Context, app *apps.App) (string, error)
}

// StaticTokens is the TokenSource of apps.FCM.AccessToken: a token minted
// outside Herald, or the push simulator's.
type StaticTokens struct{}

// Token implements TokenSource.
func (StaticTokens) Token(_ context.Context, app *apps.App) (string, error) {
	if app.Push.FCM.AccessToken == "" {
		return "", fmt.Errorf("app %s: push.fcm.access_token is empty: %w", app.ID, ErrPushToken)
	}
	return app.Push.FCM.AccessToken, nil
}

// Push sends push notifications through FCM HTTP v1:
// POST {base}/v1/projects/{project_id}/messages:send with
// {"message":{"token","notification":{"title","body"},"data":{...}}}
// (https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send).
// The recipient (req.To) is the registration token; the sender is the
// app's project id. The provider id of an accepted push is FCM's message
// name (projects/{project}/messages/{id}).
type Push struct {
	base   string
	client *http.Client
	tokens TokenSource
}

// NewPush returns a push provider calling baseURL through client's
// Transport (http.DefaultClient when nil; as NewWhatsApp, timeouts come
// from the ctx and redirects are not followed) with tokens (StaticTokens
// when nil).
func NewPush(baseURL string, client *http.Client, tokens TokenSource) *Push {
	if client == nil {
		client = http.DefaultClient
	}
	if tokens == nil {
		tokens = StaticTokens{}
	}
	return &Push{base: strings.TrimRight(baseURL, "/"), client: client, tokens: tokens}
}

// prepare checks that app has an FCM project, that req.Sender is it (set
// when empty), and that req is a valid push.
func (p *Push) prepare(app *apps.App, req *schemas.DispatchRequest) error {
	if !app.Push.Enabled() {
		return fmt.Errorf("app %s has no push settings: %w", app.ID, ErrUnsupportedChannel)
	}
	switch req.Sender {
	case "":
		req.Sender = app.Push.FCM.ProjectID
	case app.Push.FCM.ProjectID:
	default:
		return fmt.Errorf("sender %q is not the fcm project of app %s: %w", req.Sender, app.ID, ErrForeignSender)
	}
	return checkPush(req)
}

// checkPush reports what makes req impossible to send as a push, wrapping
// ErrInvalidRequest.
func checkPush(req *schemas.DispatchRequest) error {
	m := req.Push
	switch {
	case m == nil:
		return fmt.Errorf("%w: push is required", ErrInvalidRequest)
	case m.Title == "" && m.Body == "":
		return fmt.Errorf("%w: push.title or push.body is required", ErrInvalidRequest)
	case req.To == "" || len(req.To) > 4096 || strings.ContainsAny(req.To, " \t\r\n/"):
		return fmt.Errorf("%w: to is not an fcm registration token", ErrInvalidRequest)
	}
	size := len(m.Title) + len(m.Body)
	for k, v := range m.Data {
		lk := strings.ToLower(k)
		switch {
		case k == "":
			return fmt.Errorf("%w: push.data has an empty key", ErrInvalidRequest)
		case k == PushDataDispatchID:
			return fmt.Errorf("%w: push.data.%s is set by Herald", ErrInvalidRequest, k)
		case lk == "from" || lk == "notification" || lk == "message_type" || strings.HasPrefix(lk, "google") || strings.HasPrefix(lk, "gcm"):
			return fmt.Errorf("%w: push.data.%s is a key FCM reserves", ErrInvalidRequest, cut(k))
		}
		size += len(k) + len(v)
	}
	if size > maxPushPayload {
		return fmt.Errorf("%w: push title, body and data are %d bytes, FCM takes %d", ErrInvalidRequest, size, maxPushPayload)
	}
	return nil
}

// Wire shapes of messages:send.
type (
	fcmSend struct {
		Message fcmMessage `json:"message"`
	}
	fcmMessage struct {
		Token        string            `json:"token"`
		Notification *fcmNotification  `json:"notification,omitempty"`
		Data         map[string]string `json:"data,omitempty"`
	}
	fcmNotification struct {
		Title string `json:"title,omitempty"`
		Body  string `json:"body,omitempty"`
	}
	fcmAnswer struct {
		Name  string `json:"name"`
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
)

// Send sends req. Errors: ErrInvalidRequest, ErrUnsupportedChannel,
// ErrForeignSender (prepare), ErrPushToken, *FCMError for FCM's refusals,
// ErrUnreachable when nothing was written, ErrInDoubt when the request was
// written but no usable answer came back (FCM has no idempotency key).
func (p *Push) Send(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) (string, error) {
	if err := p.prepare(app, req); err != nil {
		return "", err
	}
	tok, err := p.tokens.Token(ctx, app)
	if err != nil {
		return "", err
	}
	data := make(map[string]string, len(req.Push.Data)+1)
	for k, v := range req.Push.Data {
		data[k] = v
	}
	data[PushDataDispatchID] = req.ID
	body, err := json.Marshal(fcmSend{Message: fcmMessage{
		Token:        req.To,
		Notification: &fcmNotification{Title: req.Push.Title, Body: req.Push.Body},
		Data:         data,
	}})
	if err != nil {
		return "", fmt.Errorf("%w: encoding push: %v", ErrInvalidRequest, err)
	}
	url := p.base + "/v1/projects/" + app.Push.FCM.ProjectID + "/messages:send"
	status, header, b, err := postJSON(ctx, p.client, url, bearerHeader(tok, "application/json; charset=utf-8"), body, "push "+req.ID)
	if err != nil {
		return "", err
	}
	return decodeFCM(status, header.Get("Retry-After"), b, time.Now())
}

// decodeFCM turns a messages:send answer into the message name or an
// error.
func decodeFCM(status int, retryAfterHdr string, body []byte, now time.Time) (string, error) {
	var a fcmAnswer
	jerr := json.Unmarshal(body, &a)
	if status/100 == 2 {
		switch {
		case jerr != nil:
			return "", fmt.Errorf("%w: http %d answer is not json: %v", ErrInDoubt, status, jerr)
		case a.Name == "":
			return "", fmt.Errorf("%w: http %d answer has no name", ErrInDoubt, status)
		}
		return a.Name, nil
	}
	fe := &FCMError{Status: status, RetryAfter: parseRetryAfter(retryAfterHdr, now)}
	if jerr == nil && a.Error != nil {
		fe.Code, fe.Message = a.Error.Status, a.Error.Message
		for _, d := range a.Error.Details {
			if strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "" {
				fe.Code = d.ErrorCode
			}
		}
	} else {
		fe.Message = snippet(body)
	}
	if len(fe.Message) > 200 {
		fe.Message = fe.Message[:200]
	}
	return "", fe
}

// maxRetryAfter caps a Retry-After: a provider asking for more than this
// gets its request retried later than the request's deadline anyway.
const maxRetryAfter = time.Hour

// parseRetryAfter reads Retry-After as seconds or an HTTP date; zero when
// absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}
