// Package track signs and verifies the links Herald puts in the emails it
// sends: the open pixel, click redirects and the one-click unsubscribe link.
// The dispatcher signs (it writes the email), ingest verifies (it serves the
// links and turns each hit into an event on schemas.TopicEvents); they share
// nothing but the key.
//
// A token is
//
//	base64url(payload) "." base64url(HMAC-SHA256(key, "herald.track.v1." + kind + "." + base64url(payload))[:16])
//
// where payload is a small JSON object (Link) carrying everything the event
// needs: the app and the user's hwid or user id (the event's record key),
// the dispatch id and the request's source, and for clicks the target URL.
// Because the URL is inside the signed payload, ingest redirects only to URLs
// Herald itself signed: the click endpoint is no open redirect.
//
// Keys: Signer signs with its first key and verifies with any of them, so a
// key is rotated by putting the new one first and dropping the old one once
// the emails signed with it no longer matter. Keys are secrets: they come
// from the environment or a file (apps.ResolveSecret), never from a
// committed file, and are never logged.
package track

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/heraldhq/herald/schemas"
)

// Kind says what a link does.
type Kind string

// Link kinds.
const (
	// KindOpen is the open pixel: GET OpenPath + token + ".gif".
	KindOpen Kind = "o"
	// KindClick is a rewritten link: GET ClickPath + token redirects to
	// Link.URL.
	KindClick Kind = "c"
	// KindUnsubscribe is the List-Unsubscribe link (RFC 8058 one-click):
	// POST UnsubscribePath + token.
	KindUnsubscribe Kind = "u"
)

// Paths ingest serves the links under; the token follows.
const (
	OpenPath        = "/t/o/"
	ClickPath       = "/t/c/"
	UnsubscribePath = "/t/u/"
	// PixelSuffix ends open-pixel URLs, so that mail clients see an image.
	PixelSuffix = ".gif"
)

// Limits.
const (
	// MinKeyBytes is the shortest key Signer accepts.
	MinKeyBytes = 16
	// MaxTokenBytes bounds the tokens Verify decodes (browsers and mail
	// clients cope with URLs of 2 to 8 KB).
	MaxTokenBytes = 4096
	// MaxURLBytes bounds the target URL of a click link.
	MaxURLBytes = 2048
	macBytes    = 16
)

// Errors of Verify.
var (
	// ErrMalformed: the token is not base64url.base64url of a valid
	// payload, or is too long. Ingest answers 400.
	ErrMalformed = errors.New("malformed tracking token")
	// ErrForged: the token decodes but no key signed it (a forged or
	// altered link, or one signed with a key since dropped). Ingest
	// answers 404.
	ErrForged = errors.New("tracking token signature does not match")
	// ErrWrongKind: a valid token used at another kind's path (an open
	// token at the click route). Ingest answers 400.
	ErrWrongKind = errors.New("tracking token is for another kind of link")
)

// Link is what a token carries.
type Link struct {
	// Kind of the link; set by Sign and checked by Verify.
	Kind Kind `json:"k"`
	// App is the app id.
	App string `json:"a"`
	// DispatchID is the DispatchRequest.ID of the email.
	DispatchID string `json:"d"`
	// HWID and UserID identify the user (at least one is set): the
	// event's record key is schemas.EventKey(App, HWID, UserID).
	HWID   string `json:"h,omitempty"`
	UserID string `json:"u,omitempty"`
	// SourceKind and SourceName are the request's Source (campaign,
	// journey, keyword, api and its name).
	SourceKind string `json:"sk,omitempty"`
	SourceName string `json:"sn,omitempty"`
	// URL is the click target, absolute http or https; clicks only.
	URL string `json:"l,omitempty"`
}

// Validate reports what makes l unusable, naming the field.
func (l *Link) Validate() error {
	switch l.Kind {
	case KindOpen, KindClick, KindUnsubscribe:
	default:
		return fmt.Errorf("kind %q: want o, c or u", l.Kind)
	}
	switch {
	case !schemas.ValidAppID(l.App):
		return fmt.Errorf("app %q is not a valid app id", l.App)
	case l.DispatchID == "":
		return errors.New("dispatch id is required")
	case l.HWID == "" && l.UserID == "":
		return errors.New("hwid or user id is required")
	}
	if l.Kind == KindClick {
		return CheckURL(l.URL)
	}
	if l.URL != "" {
		return errors.New("url is for click links only")
	}
	return nil
}

// CheckURL reports whether u can be a click target: an absolute http or
// https URL with a host, without user info, at most MaxURLBytes.
func CheckURL(u string) error {
	if len(u) > MaxURLBytes {
		return fmt.Errorf("url is %d bytes, at most %d", len(u), MaxURLBytes)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	switch {
	case p.Scheme != "http" && p.Scheme != "https":
		return fmt.Errorf("url %q: want http or https", cut(u))
	case p.Host == "":
		return fmt.Errorf("url %q has no host", cut(u))
	case p.User != nil:
		return fmt.Errorf("url %q carries user info", cut(u))
	case strings.ContainsAny(u, "\r\n\t\\ <>\""):
		return fmt.Errorf("url %q has characters a redirect must not carry", cut(u))
	}
	return nil
}

// Signer signs and verifies tokens.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a signer that signs with keys[0] and verifies with any
// key. Keys are the secrets themselves (resolve env:/file: references
// first); each must be at least MinKeyBytes long.
func NewSigner(keys []string) (*Signer, error) {
	if len(keys) == 0 {
		return nil, errors.New("track: at least one key is required")
	}
	s := &Signer{}
	for i, k := range keys {
		if len(k) < MinKeyBytes {
			return nil, fmt.Errorf("track: key %d is %d bytes, want at least %d", i, len(k), MinKeyBytes)
		}
		s.keys = append(s.keys, []byte(k))
	}
	return s, nil
}

var b64 = base64.RawURLEncoding

// Sign returns the token of l with l.Kind set to kind.
func (s *Signer) Sign(kind Kind, l Link) (string, error) {
	l.Kind = kind
	if err := l.Validate(); err != nil {
		return "", fmt.Errorf("track: signing %s link: %w", kind, err)
	}
	js, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("track: encoding link: %w", err)
	}
	p := b64.EncodeToString(js)
	tok := p + "." + b64.EncodeToString(mac(s.keys[0], kind, p))
	if len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("track: token of %d bytes is above %d", len(tok), MaxTokenBytes)
	}
	return tok, nil
}

// Verify checks token's signature and returns its link, which must be of
// kind. Errors wrap ErrMalformed, ErrForged or ErrWrongKind.
func (s *Signer) Verify(kind Kind, token string) (*Link, error) {
	if len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(token), MaxTokenBytes)
	}
	p, m, ok := strings.Cut(token, ".")
	if !ok || p == "" || m == "" {
		return nil, fmt.Errorf("%w: want payload.signature", ErrMalformed)
	}
	sig, err := b64.DecodeString(m)
	if err != nil || len(sig) != macBytes {
		return nil, fmt.Errorf("%w: signature is not %d bytes of base64url", ErrMalformed, macBytes)
	}
	js, err := b64.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	signed := false
	for _, k := range s.keys {
		if hmac.Equal(sig, mac(k, kind, p)) {
			signed = true
			break
		}
	}
	if !signed {
		// Tell a valid token of another kind apart, for a clearer error.
		for _, other := range []Kind{KindOpen, KindClick, KindUnsubscribe} {
			if other != kind && hmac.Equal(sig, mac(s.keys[0], other, p)) {
				return nil, fmt.Errorf("%w: a %s token, not %s", ErrWrongKind, other, kind)
			}
		}
		return nil, ErrForged
	}
	l := new(Link)
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(l); err != nil || dec.More() {
		// Signed by us but not decodable: a bug or a newer format.
		return nil, fmt.Errorf("%w: payload does not decode", ErrMalformed)
	}
	if l.Kind != kind {
		return nil, fmt.Errorf("%w: a %s token, not %s", ErrWrongKind, l.Kind, kind)
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return l, nil
}

// mac is the truncated HMAC of a payload for kind: the kind is part of the
// signed text, so an open token cannot be replayed as a click.
func mac(key []byte, kind Kind, payload string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("herald.track.v1."))
	h.Write([]byte(kind))
	h.Write([]byte("."))
	h.Write([]byte(payload))
	return h.Sum(nil)[:macBytes]
}

// URL returns base (ingest's public root, e.g. https://t.example.com)
// joined with the path of kind and token.
func URL(base string, kind Kind, token string) string {
	base = strings.TrimRight(base, "/")
	switch kind {
	case KindOpen:
		return base + OpenPath + token + PixelSuffix
	case KindClick:
		return base + ClickPath + token
	default:
		return base + UnsubscribePath + token
	}
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
