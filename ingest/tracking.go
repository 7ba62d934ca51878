package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/track"
	"github.com/heraldhq/herald/schemas"
)

// Email tracking: the dispatcher signs the links of the emails it sends
// (internal/track) and ingest serves them. Each verified hit becomes one
// KindEvent on TopicEvents, keyed like the user's other events (the token
// carries the app and the hwid or user id), with the attributes
// dispatch_id, source_kind, source_name and, for clicks, url:
//
//	GET  /t/o/{token}.gif  the open pixel: 200 image/gif         -> PW_EmailOpened
//	GET  /t/c/{token}      a click: 302 to the URL in the token  -> PW_EmailClicked
//	GET  /t/u/{token}      a page with an Unsubscribe button
//	POST /t/u/{token}      RFC 8058 one-click unsubscribe        -> PW_EmailUnsubscribed
//
// A click redirects only to the URL inside its signed token: there is no
// way to make ingest redirect anywhere else (no open redirect). Bad tokens
// are answered in JSON naming the field "token": 400 when malformed or used
// at another kind's path, 404 when no key signed them. HEAD requests
// (link scanners) are answered without an event.
//
// Opens and unsubscribes are answered after Kafka acknowledged the event
// (503 otherwise, as every route); a click is redirected even when Kafka
// does not acknowledge in time, since keeping the reader from the link
// would be worse: the lost event is counted in
// herald_ingest_tracking_lost_total and logged.

// Route names of the tracking routes.
const (
	routeTrackOpen        = "track_open"
	routeTrackClick       = "track_click"
	routeTrackUnsubscribe = "track_unsubscribe"
)

// pixelGIF is a transparent 1x1 GIF.
var pixelGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

// newTracker resolves the keys (env:, file:) and builds the verifier.
func newTracker(keys []string) (*track.Signer, error) {
	resolved := make([]string, len(keys))
	for i, k := range keys {
		v, err := apps.ResolveSecret(k)
		if err != nil {
			return nil, fmt.Errorf("ingest: tracking_keys[%d]: %w", i, err)
		}
		resolved[i] = v
	}
	t, err := track.NewSigner(resolved)
	if err != nil {
		return nil, fmt.Errorf("ingest: tracking_keys: %w", err)
	}
	return t, nil
}

// trackingRoute returns the route of a /t/ path.
func (s *Server) trackingRoute(path string) (*route, bool) {
	switch {
	case strings.HasPrefix(path, track.OpenPath):
		return &route{name: routeTrackOpen, allow: "GET, HEAD", methods: map[string]func(*statusWriter, *http.Request){
			http.MethodGet: s.trackOpen, http.MethodHead: s.trackOpen,
		}}, true
	case strings.HasPrefix(path, track.ClickPath):
		return &route{name: routeTrackClick, allow: "GET, HEAD", methods: map[string]func(*statusWriter, *http.Request){
			http.MethodGet: s.trackClick, http.MethodHead: s.trackClick,
		}}, true
	case strings.HasPrefix(path, track.UnsubscribePath):
		return &route{name: routeTrackUnsubscribe, allow: "GET, POST", anyBody: true, methods: map[string]func(*statusWriter, *http.Request){
			http.MethodGet: s.unsubscribePage, http.MethodPost: s.trackUnsubscribe,
		}}, true
	}
	return nil, false
}

// kindLabel is the kind label of herald_ingest_tracking_hits_total.
func kindLabel(k track.Kind) string {
	switch k {
	case track.KindOpen:
		return "open"
	case track.KindClick:
		return "click"
	}
	return "unsubscribe"
}

// verifyLink verifies the token at the end of r's path (after prefix,
// without suffix) and finds its app. On refusal it has answered already.
func (s *Server) verifyLink(w *statusWriter, r *http.Request, kind track.Kind, prefix, suffix string) (*track.Link, bool) {
	label := kindLabel(kind)
	if s.tracker == nil {
		s.m.tracked.WithLabelValues(label, "not_configured").Inc()
		writeError(w, &apiError{Code: http.StatusNotFound, Msg: "email tracking is not configured (ingest tracking_keys)"})
		return nil, false
	}
	tok := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, prefix), suffix)
	if tok == "" || strings.Contains(tok, "/") {
		s.m.tracked.WithLabelValues(label, "malformed").Inc()
		writeError(w, badField("token", "is missing or malformed: want %s<token>%s", prefix, suffix))
		return nil, false
	}
	l, err := s.tracker.Verify(kind, tok)
	switch {
	case errors.Is(err, track.ErrForged):
		s.m.tracked.WithLabelValues(label, "forged").Inc()
		writeError(w, &apiError{Code: http.StatusNotFound, Field: "token", Msg: "unknown link: its signature does not match"})
		return nil, false
	case err != nil:
		s.m.tracked.WithLabelValues(label, "malformed").Inc()
		writeError(w, badField("token", "%v", err))
		return nil, false
	}
	if _, ok := s.reg.ByID(l.App); !ok {
		s.m.tracked.WithLabelValues(label, "unknown_app").Inc()
		writeError(w, &apiError{Code: http.StatusNotFound, Field: "token", Msg: "the link's app is not served here"})
		return nil, false
	}
	// One link replayed in a loop must not flood the events topic: the
	// per-credential limit, keyed by the dispatch.
	if ok, wait := s.lim.allow("track:" + l.App + "|" + l.DispatchID); !ok {
		s.m.tracked.WithLabelValues(label, "throttled").Inc()
		s.m.throttled.Inc()
		writeError(w, throttled("token", wait))
		return nil, false
	}
	return l, true
}

// linkEvent is the event of a verified hit.
func linkEvent(l *track.Link, name string, now time.Time) *schemas.Event {
	attrs := map[string]any{"dispatch_id": l.DispatchID}
	if l.SourceKind != "" {
		attrs["source_kind"] = l.SourceKind
	}
	if l.SourceName != "" {
		attrs["source_name"] = l.SourceName
	}
	if l.URL != "" {
		attrs["url"] = l.URL
	}
	return &schemas.Event{
		ID: newEventID(), App: l.App, Kind: schemas.KindEvent, Name: name,
		Time: now, Received: now, HWID: l.HWID, UserID: l.UserID,
		DeviceType: schemas.DeviceEmail, Attributes: attrs,
	}
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store, private")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

// trackOpen is GET /t/o/{token}.gif.
func (s *Server) trackOpen(w *statusWriter, r *http.Request) {
	l, ok := s.verifyLink(w, r, track.KindOpen, track.OpenPath, track.PixelSuffix)
	if !ok {
		return
	}
	if r.Method == http.MethodGet {
		if err := s.produce(r.Context(), []*schemas.Event{linkEvent(l, schemas.EventEmailOpened, time.Now().UTC())}, nil); err != nil {
			writeError(w, s.produceError(routeTrackOpen, err))
			return
		}
		s.m.tracked.WithLabelValues("open", "event").Inc()
	}
	noStore(w)
	w.Header().Set("Content-Type", "image/gif")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(pixelGIF)
}

// trackClick is GET /t/c/{token}.
func (s *Server) trackClick(w *statusWriter, r *http.Request) {
	l, ok := s.verifyLink(w, r, track.KindClick, track.ClickPath, "")
	if !ok {
		return
	}
	if r.Method == http.MethodGet {
		if err := s.produce(r.Context(), []*schemas.Event{linkEvent(l, schemas.EventEmailClicked, time.Now().UTC())}, nil); err != nil {
			s.m.trackingLost.Inc()
			if ok, n := s.logProduce.allow(); ok {
				s.log.Warn("click redirected without its event: kafka did not acknowledge", "app", l.App,
					"dispatch_id", l.DispatchID, "err", err, "suppressed", n)
			}
		} else {
			s.m.tracked.WithLabelValues("click", "event").Inc()
		}
	}
	noStore(w)
	// l.URL was checked when signed and again by Verify (track.CheckURL):
	// absolute http(s), no user info, no characters a header must not hold.
	w.Header().Set("Location", l.URL)
	w.WriteHeader(http.StatusFound)
}

// unsubscribePage is GET /t/u/{token}: a button that POSTs the one-click
// form, so that a link scanner fetching the URL unsubscribes nobody.
func (s *Server) unsubscribePage(w *statusWriter, r *http.Request) {
	if _, ok := s.verifyLink(w, r, track.KindUnsubscribe, track.UnsubscribePath, ""); !ok {
		return
	}
	noStore(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self'")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head><body>`+
		`<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">`+
		`<p>Stop receiving these emails?</p><button type="submit">Unsubscribe</button></form></body></html>`)
}

// trackUnsubscribe is POST /t/u/{token}: the RFC 8058 one-click POST (body
// List-Unsubscribe=One-Click, from the mailbox provider) or the page's
// button.
func (s *Server) trackUnsubscribe(w *statusWriter, r *http.Request) {
	l, ok := s.verifyLink(w, r, track.KindUnsubscribe, track.UnsubscribePath, "")
	if !ok {
		return
	}
	if _, aerr := s.readBody(w, r); aerr != nil {
		writeError(w, aerr)
		return
	}
	if err := s.produce(r.Context(), []*schemas.Event{linkEvent(l, schemas.EventEmailUnsubscribed, time.Now().UTC())}, nil); err != nil {
		writeError(w, s.produceError(routeTrackUnsubscribe, err))
		return
	}
	s.m.tracked.WithLabelValues("unsubscribe", "event").Inc()
	noStore(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribed</title></head>`+
		`<body><p>You are unsubscribed.</p></body></html>`)
}
