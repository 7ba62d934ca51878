package segmenter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/schemas"
)

// The segment API, Pushwoosh-compatible (/json/1.3, {"request":{...}} in,
// {"status_code":200,"status_message":"OK","response":{...}} out), served
// by the segmenter stage because it compiles filters with the segmenter's
// language before saving them:
//
//	POST /json/1.3/createFilter  {"application","name","filter_expression"} -> {"name"}
//	POST /json/1.3/listFilters   {"application"}                            -> {"filters":[{"name","filter_expression"}]}
//	POST /json/1.3/deleteFilter  {"application","name"}                     -> {"name"}
//
// The API token (header "Authorization: Token <api_token>" or
// request.auth) must belong to request.application. createFilter with an
// existing name replaces the segment. A saved segment is a SegmentDef on
// TopicSegments; the answer comes after Kafka acknowledged it, and every
// segmenter replica applies it from the topic (this one at once).
// Refusals are JSON naming the field, a bad filter with its column:
//
//	{"status_code":400,"status_message":"request.filter_expression: column 14: expected ',' ...","field":"request.filter_expression"}

// maxAPIBody bounds a segment API request body.
const maxAPIBody = 64 << 10

// APIHandler serves the segment API, authorizing calls with reg. The
// Segmenter must have been built by New (it produces with its client).
func (s *Segmenter) APIHandler(reg *apps.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/json/1.3/createFilter", s.api(reg, s.createFilter))
	mux.HandleFunc("/json/1.3/listFilters", s.api(reg, s.listFilters))
	mux.HandleFunc("/json/1.3/deleteFilter", s.api(reg, s.deleteFilter))
	return mux
}

// apiRequest is the request object of the segment API.
type apiRequest struct {
	Application      string `json:"application"`
	Auth             string `json:"auth"`
	Name             string `json:"name"`
	FilterExpression string `json:"filter_expression"`
}

// apiError is a refusal: status, field, message.
type apiError struct {
	code  int
	field string
	msg   string
}

func refuse(code int, field, format string, args ...any) *apiError {
	return &apiError{code: code, field: field, msg: fmt.Sprintf(format, args...)}
}

// api decodes, authorizes and answers a call of the segment API.
func (s *Segmenter) api(reg *apps.Registry, h func(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, aerr := func() (any, *apiError) {
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				return nil, refuse(http.StatusMethodNotAllowed, "", "%s is not allowed: use POST", r.Method)
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return nil, refuse(http.StatusRequestEntityTooLarge, "body", "is larger than the %d bytes limit", maxAPIBody)
				}
				return nil, refuse(http.StatusBadRequest, "body", "reading: %v", err)
			}
			if !utf8.Valid(body) {
				return nil, refuse(http.StatusBadRequest, "body", "is not valid UTF-8")
			}
			var env struct {
				Request *apiRequest `json:"request"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				return nil, refuse(http.StatusBadRequest, "body", "is not the JSON {\"request\":{...}}: %v", err)
			}
			if env.Request == nil {
				return nil, refuse(http.StatusBadRequest, "request", `is required: the body is {"request":{...}}`)
			}
			app, _, authErr := reg.Authorize(r.Header.Get("Authorization"), env.Request.Auth, env.Request.Application)
			if authErr != nil {
				return nil, refuse(authErr.Code, authErr.Field, "%s", authErr.Msg)
			}
			return h(r.Context(), app, env.Request)
		}()
		if aerr != nil {
			if aerr.code == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "5")
			}
			writeAPI(w, aerr.code, apiErrBody{StatusCode: aerr.code, StatusMessage: strings.TrimPrefix(aerr.field+": "+aerr.msg, ": "), Field: aerr.field})
			return
		}
		writeAPI(w, http.StatusOK, apiOKBody{StatusCode: 200, StatusMessage: "OK", Response: resp})
	}
}

// The Pushwoosh envelopes, in Pushwoosh's field order.
type apiOKBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Response      any    `json:"response"`
}

type apiErrBody struct {
	StatusCode    int    `json:"status_code"`
	StatusMessage string `json:"status_message"`
	Field         string `json:"field,omitempty"`
}

func writeAPI(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func checkName(name string) *apiError {
	switch {
	case name == "":
		return refuse(http.StatusBadRequest, "request.name", "is required: the segment's name")
	case len(name) > schemas.MaxSegmentName:
		return refuse(http.StatusBadRequest, "request.name", "is %d bytes long, at most %d are allowed", len(name), schemas.MaxSegmentName)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return refuse(http.StatusBadRequest, "request.name", "contains control characters")
	}
	return nil
}

func (s *Segmenter) createFilter(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := checkName(req.Name); aerr != nil {
		return nil, aerr
	}
	if req.FilterExpression == "" {
		return nil, refuse(http.StatusBadRequest, "request.filter_expression", `is required, e.g. T("City", EQ, "Oslo")`)
	}
	d := &schemas.SegmentDef{App: app.ID, Name: req.Name, Filter: req.FilterExpression, Updated: time.Now().UTC()}
	sg, err := compileSegment(d)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "request.filter_expression", "%v", err)
	}
	b, err := d.Marshal()
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "", "internal error")
	}
	if aerr := s.produceSegment(ctx, &kgo.Record{Topic: schemas.TopicSegments, Key: d.Key(), Value: b}); aerr != nil {
		return nil, aerr
	}
	s.segs.put(sg)
	return map[string]string{"name": d.Name}, nil
}

func (s *Segmenter) listFilters(_ context.Context, app *apps.App, _ *apiRequest) (any, *apiError) {
	type filter struct {
		Name             string `json:"name"`
		FilterExpression string `json:"filter_expression"`
	}
	out := []filter{}
	for _, d := range s.List(app.ID) {
		out = append(out, filter{d.Name, d.Filter})
	}
	return map[string]any{"filters": out}, nil
}

func (s *Segmenter) deleteFilter(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	if aerr := checkName(req.Name); aerr != nil {
		return nil, aerr
	}
	found := false
	for _, sg := range s.segs.of(app.ID) {
		found = found || sg.name == req.Name
	}
	if !found {
		return nil, refuse(http.StatusNotFound, "request.name", "no segment %q in application %q", req.Name, app.ID)
	}
	if aerr := s.produceSegment(ctx, &kgo.Record{Topic: schemas.TopicSegments, Key: schemas.SegmentKey(app.ID, req.Name)}); aerr != nil {
		return nil, aerr
	}
	s.segs.remove(app.ID, req.Name)
	return map[string]string{"name": req.Name}, nil
}

// produceSegment writes a definition or tombstone and waits for Kafka.
func (s *Segmenter) produceSegment(ctx context.Context, rec *kgo.Record) *apiError {
	if s.cl == nil {
		return refuse(http.StatusServiceUnavailable, "", "the segment API needs the segmenter's Kafka client")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		s.log.Warn("kafka did not acknowledge a segment definition", "err", err)
		return refuse(http.StatusServiceUnavailable, "", "kafka did not acknowledge the segment: retry")
	}
	return nil
}
