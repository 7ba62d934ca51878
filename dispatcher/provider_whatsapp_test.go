package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func waRequest(id, to string) *schemas.DispatchRequest {
	return &schemas.DispatchRequest{
		ID: id, App: "shop", Channel: schemas.ChannelWhatsApp, Sender: "1001", To: to,
		Template: &schemas.Template{Name: "hello", Language: "en_US"},
		Source:   schemas.Source{Kind: "api"},
		Created:  time.Now().UTC(),
	}
}

func TestWhatsAppRequestJSON(t *testing.T) {
	tests := []struct {
		name string
		req  func(r *schemas.DispatchRequest)
		want string
	}{
		{
			name: "template with header, body and url buttons",
			req: func(r *schemas.DispatchRequest) {
				r.Template = &schemas.Template{
					Name: "order_shipped", Language: "en_US", Category: "UTILITY",
					Header:    []string{"Order 42"},
					Body:      []string{"John", "sushi set", "Friday"},
					ButtonURL: map[int]string{1: "help/42", 0: "track/42"},
				}
			},
			want: `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"template",
				"template":{"name":"order_shipped","language":{"code":"en_US"},"components":[
					{"type":"header","parameters":[{"type":"text","text":"Order 42"}]},
					{"type":"body","parameters":[{"type":"text","text":"John"},{"type":"text","text":"sushi set"},{"type":"text","text":"Friday"}]},
					{"type":"button","sub_type":"url","index":"0","parameters":[{"type":"text","text":"track/42"}]},
					{"type":"button","sub_type":"url","index":"1","parameters":[{"type":"text","text":"help/42"}]}]},
				"biz_opaque_callback_data":"d-1"}`,
		},
		{
			name: "template without parameters",
			req:  func(*schemas.DispatchRequest) {},
			want: `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"template",
				"template":{"name":"hello","language":{"code":"en_US"}},"biz_opaque_callback_data":"d-1"}`,
		},
		{
			name: "text with preview",
			req: func(r *schemas.DispatchRequest) {
				r.Template = nil
				r.Text = &schemas.Text{Body: "See https://example.com", PreviewURL: true}
			},
			want: `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"text",
				"text":{"body":"See https://example.com","preview_url":true},"biz_opaque_callback_data":"d-1"}`,
		},
		{
			name: "text without preview",
			req: func(r *schemas.DispatchRequest) {
				r.Template = nil
				r.Text = &schemas.Text{Body: "Thanks!"}
			},
			want: `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"text",
				"text":{"body":"Thanks!","preview_url":false},"biz_opaque_callback_data":"d-1"}`,
		},
	}
	reg := testRegistry(t)
	app, _ := reg.ByID("shop")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta := newFakeMeta(t)
			wa := NewWhatsApp(meta.srv.URL+"/", "v23.0", meta.srv.Client())
			req := waRequest("d-1", "+15551234567")
			tt.req(req)
			id, err := wa.Send(t.Context(), app, req)
			if err != nil {
				t.Fatal(err)
			}
			if id != "wamid.d-1" {
				t.Errorf("id = %q, want wamid.d-1", id)
			}
			calls := meta.allCalls()
			if len(calls) != 1 {
				t.Fatalf("got %d calls, want 1", len(calls))
			}
			c := calls[0]
			if c.Method != http.MethodPost || c.Path != "/v23.0/1001/messages" {
				t.Errorf("call = %s %s, want POST /v23.0/1001/messages", c.Method, c.Path)
			}
			if c.Auth != "Bearer tok-shop" || c.ContentType != "application/json" {
				t.Errorf("headers: Authorization %q, Content-Type %q", c.Auth, c.ContentType)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, []byte(tt.want)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.Raw, want.Bytes()) {
				t.Errorf("body\n got %s\nwant %s", c.Raw, want.Bytes())
			}
		})
	}
}

func TestWhatsAppGraphErrors(t *testing.T) {
	codes := []struct {
		status, code, subcode int
		transient, retry      bool
	}{
		{400, 131047, 2494010, false, false},
		{400, 131026, 0, false, false},
		{400, 131048, 0, false, false},
		{400, 131049, 0, false, false},
		{400, 131050, 0, false, false},
		{400, 132000, 0, false, false},
		{404, 132001, 0, false, false},
		{400, 368, 2446079, false, false},
		{400, 100, 33, false, false},
		{401, 190, 463, false, false},
		{400, 130429, 0, false, true},
		{400, 131056, 0, false, true},
		{400, 80007, 0, false, true},
		{400, 4, 0, true, true},
		{500, 131000, 0, false, true},
		{503, 2, 0, true, true},
		{500, 1, 0, false, true},
	}
	reg := testRegistry(t)
	app, _ := reg.ByID("shop")
	for _, c := range codes {
		t.Run(fmt.Sprintf("code %d http %d", c.code, c.status), func(t *testing.T) {
			meta := newFakeMeta(t)
			meta.script("+15551234567", graphErr(c.status, c.code, c.subcode, c.transient))
			wa := NewWhatsApp(meta.srv.URL, "v23.0", meta.srv.Client())
			id, err := wa.Send(t.Context(), app, waRequest("d-1", "+15551234567"))
			var ge *GraphError
			if !errors.As(err, &ge) {
				t.Fatalf("Send = %q, %v; want a *GraphError", id, err)
			}
			want := GraphError{
				Status: c.status, Code: c.code, Subcode: c.subcode, Type: "OAuthException",
				Message:   "(#" + strconv.Itoa(c.code) + ") error " + strconv.Itoa(c.code) + ": details of " + strconv.Itoa(c.code),
				Transient: c.transient, FBTraceID: "trace-" + strconv.Itoa(c.code),
			}
			if *ge != want {
				t.Errorf("GraphError\n got %+v\nwant %+v", *ge, want)
			}
			if got := IsRetryable(err); got != c.retry {
				t.Errorf("IsRetryable = %v, want %v", got, c.retry)
			}
			if got := errorCode(err); got != c.code {
				t.Errorf("errorCode = %d, want %d", got, c.code)
			}
		})
	}
}

func TestWhatsAppRefusesWithoutCalling(t *testing.T) {
	tests := []struct {
		name string
		req  func(r *schemas.DispatchRequest)
		want error
	}{
		{"sender of another app", func(r *schemas.DispatchRequest) { r.Sender = "2001" }, ErrForeignSender},
		{"unknown sender", func(r *schemas.DispatchRequest) { r.Sender = "9999" }, ErrForeignSender},
		{"empty sender", func(r *schemas.DispatchRequest) { r.Sender = "" }, ErrForeignSender},
		{"recipient not a number", func(r *schemas.DispatchRequest) { r.To = "+1555abc" }, ErrInvalidRequest},
		{"recipient too long", func(r *schemas.DispatchRequest) { r.To = "+1234567890123456" }, ErrInvalidRequest},
		{"dispatch id over 512 characters", func(r *schemas.DispatchRequest) { r.ID = strings.Repeat("é", 513) }, ErrInvalidRequest},
		{"button index 10", func(r *schemas.DispatchRequest) { r.Template.ButtonURL = map[int]string{10: "x"} }, ErrInvalidRequest},
		{"button index negative", func(r *schemas.DispatchRequest) { r.Template.ButtonURL = map[int]string{-1: "x"} }, ErrInvalidRequest},
		{"template and text", func(r *schemas.DispatchRequest) { r.Text = &schemas.Text{Body: "x"} }, ErrInvalidRequest},
		{"neither template nor text", func(r *schemas.DispatchRequest) { r.Template = nil }, ErrInvalidRequest},
	}
	reg := testRegistry(t)
	app, _ := reg.ByID("shop")
	meta := newFakeMeta(t)
	wa := NewWhatsApp(meta.srv.URL, "v23.0", meta.srv.Client())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := waRequest("d-1", "+15551234567")
			tt.req(req)
			_, err := wa.Send(t.Context(), app, req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Send error = %v, want %v", err, tt.want)
			}
			if IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true", err)
			}
		})
	}
	if n := len(meta.allCalls()); n != 0 {
		t.Errorf("meta got %d calls, want none", n)
	}
}

func TestWhatsAppTransportOutcomes(t *testing.T) {
	reg := testRegistry(t)
	app, _ := reg.ByID("shop")

	hang := newFakeMeta(t)
	hang.script("+15551234567", metaReply{hang: true})

	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf [512]byte
		_, _ = r.Body.Read(buf[:])
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(reset.Close)

	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close()

	answer := func(status int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(s.Close)
		return s.URL
	}

	tests := []struct {
		name      string
		url       string
		timeout   time.Duration
		want      error
		retryable bool
		code      int
	}{
		{"timeout after the request was written", hang.srv.URL, 200 * time.Millisecond, ErrInDoubt, false, 0},
		{"connection closed after the request was written", reset.URL, 5 * time.Second, ErrInDoubt, false, 0},
		{"connection refused", refusedURL, 5 * time.Second, ErrUnreachable, true, CodeUnreachable},
		{"2xx without message id", answer(200, `{"messaging_product":"whatsapp","messages":[]}`), 5 * time.Second, ErrInDoubt, false, 0},
		{"2xx not json", answer(200, `<html>ok</html>`), 5 * time.Second, ErrInDoubt, false, 0},
		{"502 html page", answer(502, `<html>Bad Gateway</html>`), 5 * time.Second, &GraphError{}, true, CodeHTTP},
		{"429 without body", answer(429, ``), 5 * time.Second, &GraphError{}, true, CodeHTTP},
		{"404 html page", answer(404, `not found`), 5 * time.Second, &GraphError{}, false, CodeHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wa := NewWhatsApp(tt.url, "v23.0", &http.Client{})
			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			id, err := wa.Send(ctx, app, waRequest("d-1", "+15551234567"))
			if ge, ok := tt.want.(*GraphError); ok {
				if !errors.As(err, &ge) {
					t.Fatalf("Send = %q, %v; want a *GraphError", id, err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Fatalf("Send = %q, %v; want %v", id, err, tt.want)
			}
			if got := IsRetryable(err); got != tt.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tt.retryable)
			}
			if got := errorCode(err); got != tt.code {
				t.Errorf("errorCode(%v) = %d, want %d", err, got, tt.code)
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	f := func(status int, body string, wantID string, wantErr error) {
		t.Helper()
		id, err := decodeResponse(status, []byte(body))
		if id != wantID {
			t.Errorf("decodeResponse(%d, %s) id = %q, want %q", status, body, id, wantID)
		}
		switch we := wantErr.(type) {
		case nil:
			if err != nil {
				t.Errorf("decodeResponse(%d, %s) = %v, want no error", status, body, err)
			}
		case *GraphError:
			var ge *GraphError
			if !errors.As(err, &ge) || !reflect.DeepEqual(ge, we) {
				t.Errorf("decodeResponse(%d, %s) = %#v, want %#v", status, body, err, we)
			}
		default:
			if !errors.Is(err, we) {
				t.Errorf("decodeResponse(%d, %s) = %v, want %v", status, body, err, we)
			}
		}
	}
	f(200, `{"messages":[{"id":"wamid.A"},{"id":"wamid.B"}]}`, "wamid.A", nil)
	f(201, `{"messages":[{"id":"wamid.A"}]}`, "wamid.A", nil)
	f(200, `{"messages":[{"id":""}]}`, "", ErrInDoubt)
	f(200, `{"messages":null}`, "", ErrInDoubt)
	f(200, ``, "", ErrInDoubt)
	f(200, `{"error":{"code":131000,"message":"Something went wrong","is_transient":true}}`, "",
		&GraphError{Status: 200, Code: 131000, Message: "Something went wrong", Transient: true})
	f(400, `{"error":{"code":"x"}}`, "", &GraphError{Status: 400, Message: `{"error":{"code":"x"}}`})
	f(400, `{"error":{"code":100,"error_subcode":33,"message":"Invalid parameter","error_data":{"details":"to"}}}`, "",
		&GraphError{Status: 400, Code: 100, Subcode: 33, Message: "Invalid parameter: to"})
	f(503, "\xff\xfe bad", "", &GraphError{Status: 503, Message: "? bad"})
	f(500, ``, "", &GraphError{Status: 500, Message: "empty body"})
}

// referenceMessage is the waMessage of req, for json.Marshal: what
// encodeMessage writes by hand.
func referenceMessage(req *schemas.DispatchRequest) waMessage {
	params := func(vals []string) []waParam {
		ps := make([]waParam, len(vals))
		for i, v := range vals {
			ps[i] = waParam{Type: "text", Text: v}
		}
		return ps
	}
	m := waMessage{MessagingProduct: "whatsapp", RecipientType: "individual", To: req.To, BizOpaque: req.ID}
	if t := req.Template; t != nil {
		m.Type = "template"
		wt := &waTemplate{Name: t.Name, Language: waLanguage{Code: t.Language}}
		if len(t.Header) > 0 {
			wt.Components = append(wt.Components, waComponent{Type: "header", Parameters: params(t.Header)})
		}
		if len(t.Body) > 0 {
			wt.Components = append(wt.Components, waComponent{Type: "body", Parameters: params(t.Body)})
		}
		var idx []int
		for i := range t.ButtonURL {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		for _, i := range idx {
			wt.Components = append(wt.Components, waComponent{
				Type: "button", SubType: "url", Index: strconv.Itoa(i),
				Parameters: []waParam{{Type: "text", Text: t.ButtonURL[i]}},
			})
		}
		m.Template = wt
	} else {
		m.Type = "text"
		m.Text = &waText{Body: req.Text.Body, PreviewURL: req.Text.PreviewURL}
	}
	return m
}

// TestEncodeMessageMatchesJSON: the hand-written body is byte for byte
// json.Marshal's of the waMessage, strings with every kind of escape
// included (HTML characters, controls, invalid UTF-8, U+2028/9, quotes).
func TestEncodeMessageMatchesJSON(t *testing.T) {
	odd := []string{
		"", "plain", `q"uo\te`, "<b>&amp;</b>", "\x00\x01\b\f\n\r\t\x1f\x7f", "caf\u00e9 \u2028\u2029 \U0001F600",
		"bad \xff\xfe utf8 \xe2\x82", "tab\there", "/slash/",
	}
	var reqs []*schemas.DispatchRequest
	for i, s := range odd {
		reqs = append(reqs,
			&schemas.DispatchRequest{ID: "d-" + s, To: "+15551234567", Text: &schemas.Text{Body: s, PreviewURL: i%2 == 0}},
			&schemas.DispatchRequest{ID: "d", To: "15551234567", Template: &schemas.Template{Name: "n" + s, Language: s}},
			&schemas.DispatchRequest{ID: "", To: "+1555", Template: &schemas.Template{
				Name: "promo", Language: "en_US",
				Header: []string{s}, Body: []string{s, "x", s}, ButtonURL: map[int]string{2: s, 0: "a" + s, 10: "z"},
			}},
			&schemas.DispatchRequest{ID: s + "-id", To: "+1555", Template: &schemas.Template{
				Name: "b", Language: "pt_BR",
				Body: []string{s}, ButtonURL: map[int]string{1: s},
			}},
		)
	}
	compared := 0
	for _, req := range reqs {
		got, err := encodeMessage(req)
		if err != nil {
			continue // refused by checkRequest (an empty template name, say)
		}
		compared++
		want, err := json.Marshal(referenceMessage(req))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("encodeMessage(%+v)\n got %s\nwant %s", req, got, want)
		}
	}
	if compared < 20 {
		t.Fatalf("only %d of %d requests passed checkRequest (25 do): the test compares too little", compared, len(reqs))
	}
}

// TestMessageSize checks that the body of the usual sends fits the
// buffer encodeMessage starts with.
func TestMessageSize(t *testing.T) {
	for _, req := range []*schemas.DispatchRequest{
		{ID: "b-12345", To: "+15550000001", Template: &schemas.Template{Name: "order_confirmation", Language: "en_US", Body: []string{"A1", "today"}}},
		{ID: "b-1", To: "+15550000001", Template: &schemas.Template{Name: "t", Language: "en", Header: []string{"h"}, Body: []string{"a", "b", "c"}, ButtonURL: map[int]string{0: "x", 1: "y"}}},
		{ID: "b-1", To: "15550000001", Text: &schemas.Text{Body: "hello there", PreviewURL: true}},
	} {
		b, err := encodeMessage(req)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > messageSize(req) {
			t.Errorf("body of %d bytes, messageSize %d: %s", len(b), messageSize(req), b)
		}
	}
}

func TestReadAnswer(t *testing.T) {
	f := func(body string, contentLength int64) {
		t.Helper()
		got, err := readAnswer(&http.Response{Body: io.NopCloser(strings.NewReader(body)), ContentLength: contentLength})
		if err != nil || string(got) != body {
			t.Fatalf("readAnswer(%d bytes, Content-Length %d) = %d bytes, %v", len(body), contentLength, len(got), err)
		}
	}
	long := strings.Repeat("x", 3000)
	f("", 0)
	f("abc", 3)
	f("abc", 1)
	f("abc", 100)
	f(long, -1)
	f(long, 3000)
	got, err := readAnswer(&http.Response{Body: io.NopCloser(strings.NewReader(strings.Repeat("y", maxResponseBytes+10))), ContentLength: -1})
	if err != nil || len(got) != maxResponseBytes {
		t.Fatalf("readAnswer of a long answer = %d bytes, %v; want %d", len(got), err, maxResponseBytes)
	}
}

// TestWhatsAppHeaderCache checks the headers of each token, cached up to
// maxCachedHeaders tokens and built per call past them.
func TestWhatsAppHeaderCache(t *testing.T) {
	w := NewWhatsApp("http://127.0.0.1:1", "v23.0", nil)
	for round := range 2 {
		for i := range maxCachedHeaders + 10 {
			tok := fmt.Sprintf("tok-%d", i)
			h := w.header(tok)
			if got := h.Get("Authorization"); got != "Bearer "+tok {
				t.Fatalf("round %d: Authorization %q for token %s", round, got, tok)
			}
			if got := h.Get("Content-Type"); got != "application/json" {
				t.Fatalf("Content-Type %q", got)
			}
		}
	}
	if n := w.nheaders.Load(); n != maxCachedHeaders {
		t.Errorf("%d headers cached, want %d", n, maxCachedHeaders)
	}
}
