package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/jsonenc"
	"github.com/heraldhq/herald/schemas"
)

// Provider sends one dispatch request to one outside API.
type Provider interface {
	// Send sends req on behalf of app and returns the provider's message id.
	// Errors are classified by IsRetryable; ErrInDoubt says the message may
	// have been sent.
	Send(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) (providerID string, err error)
}

var _ Provider = (*WhatsApp)(nil)

// maxResponseBytes bounds how much of a Graph answer is read.
const maxResponseBytes = 1 << 20

// maxCallbackData is Meta's limit on biz_opaque_callback_data, in characters.
const maxCallbackData = 512

// WhatsApp sends through the WhatsApp Cloud API:
// POST {base}/{version}/{phone-number-id}/messages
// (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages).
type WhatsApp struct {
	base    string
	version string
	client  *http.Client
	// headers holds the request headers of each access token, read-only
	// once stored (net/http does not write a request's Header; a client
	// that must changes a copy), so that a call builds none: at most
	// maxCachedHeaders of them, later tokens get theirs built per call.
	headers  sync.Map // access token → http.Header
	nheaders atomic.Int32
}

// maxCachedHeaders bounds WhatsApp.headers (an app's token changes
// rarely; the bound is for a registry that rotates them often).
const maxCachedHeaders = 256

// NewWhatsApp returns a WhatsApp provider calling baseURL (e.g.
// https://graph.facebook.com, or a simulator) with Graph API version (e.g.
// v23.0) through client's Transport (http.DefaultClient when nil). Only
// the Transport is used: per-call timeouts come from the ctx given to
// Send, and redirects are not followed (Meta does not redirect sends; a
// 3xx is a failed call).
func NewWhatsApp(baseURL, version string, client *http.Client) *WhatsApp {
	if client == nil {
		client = http.DefaultClient
	}
	return &WhatsApp{base: strings.TrimRight(baseURL, "/"), version: version, client: client}
}

// Send sends req from req.Sender, which must be one of app's phone-number
// ids (else ErrForeignSender, without a call). It returns the message's wamid.
// Errors: ErrInvalidRequest, *GraphError for Graph answers, ErrUnreachable
// when nothing was written, ErrInDoubt when the request was written but no
// usable answer came back.
func (w *WhatsApp) Send(ctx context.Context, app *apps.App, req *schemas.DispatchRequest) (string, error) {
	if !ownsSender(app, req.Sender) {
		return "", fmt.Errorf("sending %s from %s for app %s: %w", req.ID, req.Sender, app.ID, ErrForeignSender)
	}
	body, err := encodeMessage(req)
	if err != nil {
		return "", err
	}
	url := w.base + "/" + w.version + "/" + req.Sender + "/messages"
	status, _, b, err := postJSON(ctx, w.client, url, w.header(app.WhatsApp.AccessToken), body, "message "+req.ID)
	if err != nil {
		return "", err
	}
	return decodeResponse(status, b)
}

// header returns the headers of a messages call with token.
func (w *WhatsApp) header(token string) http.Header {
	if h, ok := w.headers.Load(token); ok {
		return h.(http.Header)
	}
	h := bearerHeader(token, "application/json")
	if w.nheaders.Load() < maxCachedHeaders {
		if _, loaded := w.headers.LoadOrStore(token, h); !loaded {
			w.nheaders.Add(1)
		}
	}
	return h
}

// bearerHeader is the header of a JSON call with a bearer token. The
// canonical keys are set directly: Header.Set would canonicalize them on
// every call.
func bearerHeader(token, contentType string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {contentType}}
}

// postJSON posts body to url with header (bearerHeader) and returns the answer's
// status, headers and (bounded) body. Whether the request reached the wire
// decides between a safe retry and an in-doubt outcome (neither Meta nor
// FCM has an idempotency key): a failure before it is ErrUnreachable,
// after it ErrInDoubt, as is a 2xx answer that cannot be read (most likely
// accepted, its id lost). what names the call in errors.
func postJSON(ctx context.Context, client *http.Client, url string, header http.Header, body []byte, what string) (int, http.Header, []byte, error) {
	var written atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			written.Store(true)
		}
	}}
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: building http request: %v", ErrInvalidRequest, err)
	}
	hreq.Header = header
	// The transport's RoundTrip, not client.Do: Do would clone the header
	// for redirects (which are not followed: a 3xx is a failed call) and
	// arm a timer for client.Timeout (the call's ctx carries its timeout).
	rt := client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	resp, err := rt.RoundTrip(hreq)
	if err != nil {
		if written.Load() {
			return 0, nil, nil, fmt.Errorf("%w: posting %s: %w", ErrInDoubt, what, err)
		}
		return 0, nil, nil, fmt.Errorf("%w: posting %s: %w", ErrUnreachable, what, err)
	}
	defer resp.Body.Close()
	b, err := readAnswer(resp)
	if err != nil && resp.StatusCode/100 == 2 {
		return 0, nil, nil, fmt.Errorf("%w: reading answer to %s: %w", ErrInDoubt, what, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// readAnswer reads at most maxResponseBytes of an answer's body, as
// io.ReadAll does but into a buffer of its Content-Length (and a byte for
// the EOF) when it has one, where io.ReadAll would grow one from 512 bytes.
func readAnswer(resp *http.Response) ([]byte, error) {
	r := io.LimitReader(resp.Body, maxResponseBytes)
	n := 512
	if cl := resp.ContentLength; cl > 0 && cl < maxResponseBytes {
		n = int(cl) + 1
	}
	b := make([]byte, 0, n)
	for {
		k, err := r.Read(b[len(b):cap(b)])
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

// ownsSender reports whether sender is one of app's phone-number ids.
func ownsSender(app *apps.App, sender string) bool {
	return sender != "" && slices.Contains(app.WhatsApp.PhoneNumberIDs, sender)
}

// Wire shapes of the messages endpoint, field order as in Meta's docs.
type (
	waMessage struct {
		MessagingProduct string      `json:"messaging_product"`
		RecipientType    string      `json:"recipient_type"`
		To               string      `json:"to"`
		Type             string      `json:"type"`
		Template         *waTemplate `json:"template,omitempty"`
		Text             *waText     `json:"text,omitempty"`
		BizOpaque        string      `json:"biz_opaque_callback_data,omitempty"`
	}
	waTemplate struct {
		Name       string        `json:"name"`
		Language   waLanguage    `json:"language"`
		Components []waComponent `json:"components,omitempty"`
	}
	waLanguage struct {
		Code string `json:"code"`
	}
	waComponent struct {
		Type       string    `json:"type"`
		SubType    string    `json:"sub_type,omitempty"`
		Index      string    `json:"index,omitempty"`
		Parameters []waParam `json:"parameters"`
	}
	waParam struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	waText struct {
		Body       string `json:"body"`
		PreviewURL bool   `json:"preview_url"`
	}
)

// checkRequest reports what makes req impossible to send through WhatsApp,
// wrapping ErrInvalidRequest; nil when it can be sent.
func checkRequest(req *schemas.DispatchRequest) error {
	switch {
	case !validTo(req.To):
		return fmt.Errorf("%w: recipient %q is not digits or +E.164", ErrInvalidRequest, req.To)
	case utf8.RuneCountInString(req.ID) > maxCallbackData:
		return fmt.Errorf("%w: dispatch id is %d characters, biz_opaque_callback_data takes %d", ErrInvalidRequest, utf8.RuneCountInString(req.ID), maxCallbackData)
	case (req.Template == nil) == (req.Text == nil):
		return fmt.Errorf("%w: exactly one of template and text is required", ErrInvalidRequest)
	case req.Template != nil && (req.Template.Name == "" || req.Template.Language == ""):
		return fmt.Errorf("%w: template name and language are required", ErrInvalidRequest)
	case req.Text != nil && req.Text.Body == "":
		return fmt.Errorf("%w: text body is required", ErrInvalidRequest)
	}
	if req.Template != nil {
		for i := range req.Template.ButtonURL {
			// Meta: "Position index of the button (0-9)".
			if i < 0 || i > 9 {
				return fmt.Errorf("%w: button index %d is not 0 to 9", ErrInvalidRequest, i)
			}
		}
	}
	return nil
}

// validTo accepts what Meta's "to" takes for individuals: a phone number as
// digits, with or without the leading plus (E.164 has at most 15 digits).
func validTo(to string) bool {
	d := strings.TrimPrefix(to, "+")
	if len(d) < 3 || len(d) > 15 {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// encodeMessage builds the JSON body of a messages call: the shape of
// waMessage, written by hand (encoding/json's reflection was a few percent
// of a send's CPU). The bytes are json.Marshal's of the waMessage
// (TestEncodeMessageMatchesJSON), strings escaped as it does.
func encodeMessage(req *schemas.DispatchRequest) ([]byte, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	b := make([]byte, 0, messageSize(req))
	b = append(b, `{"messaging_product":"whatsapp","recipient_type":"individual","to":`...)
	b = jsonenc.String(b, req.To)
	if t := req.Template; t != nil {
		b = append(b, `,"type":"template","template":{"name":`...)
		b = jsonenc.String(b, t.Name)
		b = append(b, `,"language":{"code":`...)
		b = jsonenc.String(b, t.Language)
		b = append(b, '}')
		comps := 0
		comp := func(kind string) {
			if comps == 0 {
				b = append(b, `,"components":[`...)
			} else {
				b = append(b, ',')
			}
			comps++
			b = append(b, `{"type":"`...)
			b = append(b, kind...)
			b = append(b, '"')
		}
		if len(t.Header) > 0 {
			comp("header")
			b = appendTextParams(b, t.Header...)
		}
		if len(t.Body) > 0 {
			comp("body")
			b = appendTextParams(b, t.Body...)
		}
		if len(t.ButtonURL) > 0 {
			idx := make([]int, 0, len(t.ButtonURL))
			for i := range t.ButtonURL {
				idx = append(idx, i)
			}
			slices.Sort(idx)
			for _, i := range idx {
				comp("button")
				b = append(b, `,"sub_type":"url","index":`...)
				b = jsonenc.String(b, strconv.Itoa(i))
				b = appendTextParams(b, t.ButtonURL[i])
			}
		}
		if comps > 0 {
			b = append(b, ']')
		}
		b = append(b, '}')
	} else {
		b = append(b, `,"type":"text","text":{"body":`...)
		b = jsonenc.String(b, req.Text.Body)
		b = append(b, `,"preview_url":`...)
		b = strconv.AppendBool(b, req.Text.PreviewURL)
		b = append(b, '}')
	}
	if req.ID != "" {
		b = append(b, `,"biz_opaque_callback_data":`...)
		b = jsonenc.String(b, req.ID)
	}
	return append(b, '}'), nil
}

// messageSize is about the size of encodeMessage's body for req, unescaped:
// its buffer's capacity, so that the body needs no second one.
func messageSize(req *schemas.DispatchRequest) int {
	n := 200 + len(req.To) + len(req.ID)
	if t := req.Template; t != nil {
		// A component's own keys, then each parameter's.
		n += len(t.Name) + len(t.Language) + 48*min(len(t.Header), 1) + 48*min(len(t.Body), 1)
		for _, v := range t.Header {
			n += 32 + len(v)
		}
		for _, v := range t.Body {
			n += 32 + len(v)
		}
		for _, v := range t.ButtonURL {
			n += 112 + len(v)
		}
	} else if req.Text != nil {
		n += len(req.Text.Body)
	}
	return n
}

// appendTextParams appends the "parameters" of text values and closes the
// component.
func appendTextParams(b []byte, vals ...string) []byte {
	b = append(b, `,"parameters":[`...)
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"text","text":`...)
		b = jsonenc.String(b, v)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// graphResponse is the union of a messages answer and a Graph error answer.
type graphResponse struct {
	Messages []struct {
		ID string `json:"id"`
	} `json:"messages"`
	Error *struct {
		Message     string `json:"message"`
		Type        string `json:"type"`
		Code        int    `json:"code"`
		Subcode     int    `json:"error_subcode"`
		IsTransient bool   `json:"is_transient"`
		FBTraceID   string `json:"fbtrace_id"`
		ErrorData   *struct {
			Details string `json:"details"`
		} `json:"error_data"`
	} `json:"error"`
}

// decodeResponse turns a messages answer into the wamid or an error: a
// *GraphError for non-2xx answers (and 2xx answers carrying an error), an
// ErrInDoubt for a 2xx without a message id.
func decodeResponse(status int, body []byte) (string, error) {
	if status/100 == 2 {
		if id, ok := acceptedID(body); ok {
			return id, nil
		}
	}
	var r graphResponse
	jerr := json.Unmarshal(body, &r)
	if jerr == nil {
		if ge := graphError(status, &r); ge != nil {
			return "", ge
		}
	}
	if status/100 != 2 {
		return "", &GraphError{Status: status, Message: snippet(body)}
	}
	if jerr != nil {
		return "", fmt.Errorf("%w: http %d answer is not json: %v", ErrInDoubt, status, jerr)
	}
	if len(r.Messages) == 0 || r.Messages[0].ID == "" {
		return "", fmt.Errorf("%w: http %d answer has no messages[0].id", ErrInDoubt, status)
	}
	return r.Messages[0].ID, nil
}

// graphError is the *GraphError of an answer carrying Graph's error
// object, nil when it carries none.
func graphError(status int, r *graphResponse) *GraphError {
	if r.Error == nil {
		return nil
	}
	ge := &GraphError{
		Status:    status,
		Code:      r.Error.Code,
		Subcode:   r.Error.Subcode,
		Message:   r.Error.Message,
		Type:      r.Error.Type,
		Transient: r.Error.IsTransient,
		FBTraceID: r.Error.FBTraceID,
	}
	if d := r.Error.ErrorData; d != nil && d.Details != "" {
		ge.Message += ": " + d.Details
	}
	return ge
}

// snippet is the start of a non-Graph answer for error messages.
func snippet(b []byte) string {
	const n = 200
	s := strings.ToValidUTF8(string(b[:min(len(b), n)]), "?")
	if s == "" {
		return "empty body"
	}
	return strings.TrimSpace(s)
}
