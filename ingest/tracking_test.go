package ingest

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/track"
	"github.com/heraldhq/herald/schemas"
)

const trackKey = "tracking-key-0123456789abcdef"

func signLink(t *testing.T, key string, kind track.Kind, l track.Link) string {
	t.Helper()
	s, err := track.NewSigner([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Sign(kind, l)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func shopLink() track.Link {
	return track.Link{App: "shop", DispatchID: "journey:omni:u1:step2", HWID: "ann@example.com", SourceKind: "journey", SourceName: "omni"}
}

func TestTrackingOpenAndClick(t *testing.T) {
	h := newHarness(t, Config{TrackingKeys: []string{trackKey}})
	from := time.Now().UTC()

	open := h.do(http.MethodGet, track.OpenPath+signLink(t, trackKey, track.KindOpen, shopLink())+track.PixelSuffix, "")
	if open.Code != 200 || open.Header().Get("Content-Type") != "image/gif" || !bytes.Equal(open.Body.Bytes(), pixelGIF) {
		t.Fatalf("open: %d %q %q", open.Code, open.Header().Get("Content-Type"), open.Body.Bytes())
	}
	if cc := open.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Fatalf("open Cache-Control %q", cc)
	}

	cl := shopLink()
	cl.URL = "https://shop.example/sushi?utm=a&b=1"
	clickTok := signLink(t, trackKey, track.KindClick, cl)
	click := h.do(http.MethodGet, track.ClickPath+clickTok, "")
	if click.Code != http.StatusFound || click.Header().Get("Location") != cl.URL {
		t.Fatalf("click: %d Location %q", click.Code, click.Header().Get("Location"))
	}
	// A link scanner's HEAD follows the redirect without an event.
	if head := h.do(http.MethodHead, track.ClickPath+clickTok, ""); head.Code != http.StatusFound {
		t.Fatalf("HEAD click: %d", head.Code)
	}
	to := time.Now().UTC()

	evs := h.events(2)
	wantAttrs := map[string]any{"dispatch_id": "journey:omni:u1:step2", "source_kind": "journey", "source_name": "omni"}
	sameEvent(t, evs[0], &schemas.Event{
		App: "shop", Kind: schemas.KindEvent, Name: schemas.EventEmailOpened,
		HWID: "ann@example.com", DeviceType: schemas.DeviceEmail, Attributes: wantAttrs,
	}, from, to)
	clickAttrs := map[string]any{"url": cl.URL}
	for k, v := range wantAttrs {
		clickAttrs[k] = v
	}
	sameEvent(t, evs[1], &schemas.Event{
		App: "shop", Kind: schemas.KindEvent, Name: schemas.EventEmailClicked,
		HWID: "ann@example.com", DeviceType: schemas.DeviceEmail, Attributes: clickAttrs,
	}, from, to)
	if string(evs[0].Key()) != "shop|ann@example.com" {
		t.Fatalf("event key %q: not the user's", evs[0].Key())
	}

	// A user known by user id only.
	byUser := shopLink()
	byUser.HWID, byUser.UserID = "", "user-42"
	if rec := h.do(http.MethodGet, track.OpenPath+signLink(t, trackKey, track.KindOpen, byUser)+track.PixelSuffix, ""); rec.Code != 200 {
		t.Fatalf("open by user id: %d %s", rec.Code, rec.Body)
	}
	var byUserEv *schemas.Event
	for _, ev := range h.events(3) { // partitions are read in any order
		if ev.UserID != "" {
			byUserEv = ev
		}
	}
	if byUserEv == nil || byUserEv.UserID != "user-42" || byUserEv.HWID != "" || string(byUserEv.Key()) != "shop|user:user-42" {
		t.Fatalf("event by user id: %+v", byUserEv)
	}
}

func TestTrackingRefusesBadTokens(t *testing.T) {
	h := newHarness(t, Config{TrackingKeys: []string{trackKey}})
	open := signLink(t, trackKey, track.KindOpen, shopLink())
	cl := shopLink()
	cl.URL = "https://shop.example/ok"
	click := signLink(t, trackKey, track.KindClick, cl)
	evil := cl
	evil.URL = "https://evil.example/phish"
	forgedClick := signLink(t, "another-key-0123456789abcdef", track.KindClick, evil)
	// The payload of a click to evil.example with the signature of the
	// genuine click.
	evilPayload, _, _ := strings.Cut(forgedClick, ".")
	_, goodSig, _ := strings.Cut(click, ".")
	ghost := shopLink()
	ghost.App = "ghost"

	f := func(name, method, path string, code int, field string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			rec := h.do(method, path, "")
			wantError(t, rec, code, field)
			if loc := rec.Header().Get("Location"); loc != "" {
				t.Fatalf("redirected to %q", loc)
			}
		})
	}
	f("forged click", http.MethodGet, track.ClickPath+forgedClick, 404, "token")
	f("swapped url", http.MethodGet, track.ClickPath+evilPayload+"."+goodSig, 404, "token")
	f("malformed", http.MethodGet, track.ClickPath+"not-a-token", 400, "token")
	f("empty", http.MethodGet, track.ClickPath, 400, "token")
	f("extra path", http.MethodGet, track.ClickPath+click+"/x", 400, "token")
	f("open token as click", http.MethodGet, track.ClickPath+open, 400, "token")
	f("click token as pixel", http.MethodGet, track.OpenPath+click+track.PixelSuffix, 400, "token")
	f("unknown app", http.MethodGet, track.OpenPath+signLink(t, trackKey, track.KindOpen, ghost)+track.PixelSuffix, 404, "token")
	f("post to pixel", http.MethodPost, track.OpenPath+open+track.PixelSuffix, 405, "")
	h.noRecords()

	off := newHarness(t, Config{})
	wantError(t, off.do(http.MethodGet, track.OpenPath+open+track.PixelSuffix, ""), 404, "")
}

func TestTrackingUnsubscribe(t *testing.T) {
	h := newHarness(t, Config{TrackingKeys: []string{"old-key-0123456789abcdef", trackKey}})
	tok := signLink(t, trackKey, track.KindUnsubscribe, shopLink())
	page := h.do(http.MethodGet, track.UnsubscribePath+tok, "")
	if page.Code != 200 || !strings.Contains(page.Body.String(), `<form method="post">`) {
		t.Fatalf("page: %d %s", page.Code, page.Body)
	}
	h.noRecords() // showing the page unsubscribes nobody
	// RFC 8058: the mailbox provider POSTs a form.
	rec := h.do(http.MethodPost, track.UnsubscribePath+tok, "List-Unsubscribe=One-Click",
		"Content-Type", "application/x-www-form-urlencoded")
	if rec.Code != 200 {
		t.Fatalf("one-click POST: %d %s", rec.Code, rec.Body)
	}
	ev := h.events(1)[0]
	if ev.Name != schemas.EventEmailUnsubscribed || ev.HWID != "ann@example.com" || ev.Attributes["dispatch_id"] != "journey:omni:u1:step2" {
		t.Fatalf("event %+v", ev)
	}
}

// TestPushOpenedEvent: push opens arrive from the app as postEvent
// PW_PushOpened with the notification's dispatch id; email feedback
// events are Herald's own.
func TestPushOpenedEvent(t *testing.T) {
	h := newHarness(t, Config{})
	rec := h.post("/json/1.3/postEvent", shopToken, `{"request":{"application":"shop","hwid":"device-1","event":"PW_PushOpened","attributes":{"dispatch_id":"journey:omni:u1:step1"}}}`)
	wantOK(t, rec)
	ev := h.events(1)[0]
	if ev.Name != schemas.EventPushOpened || ev.Attributes["dispatch_id"] != "journey:omni:u1:step1" || ev.HWID != "device-1" {
		t.Fatalf("event %+v", ev)
	}
	for _, name := range []string{schemas.EventEmailOpened, schemas.EventEmailClicked, "pw_emailunsubscribed"} {
		rec := h.post("/json/1.3/postEvent", shopToken, `{"request":{"application":"shop","hwid":"device-1","event":"`+name+`","attributes":{"dispatch_id":"x"}}}`)
		wantError(t, rec, 400, "request.event")
	}
}
