package track

import (
	"errors"
	"strings"
	"testing"
)

const (
	key1 = "0123456789abcdef0123456789abcdef"
	key2 = "fedcba9876543210fedcba9876543210"
)

func signer(t testing.TB, keys ...string) *Signer {
	t.Helper()
	s, err := NewSigner(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func link() Link {
	return Link{App: "shop", DispatchID: "d-1", HWID: "ann@example.com", SourceKind: "journey", SourceName: "welcome"}
}

func TestSignVerify(t *testing.T) {
	s := signer(t, key1)
	l := link()
	l.URL = "https://shop.example/sushi?a=1&b=2"
	tok, err := s.Sign(KindClick, l)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(KindClick, tok)
	if err != nil {
		t.Fatal(err)
	}
	l.Kind = KindClick
	if *got != l {
		t.Fatalf("verified %+v, want %+v", *got, l)
	}
	if strings.ContainsAny(tok, "/+=?&#") {
		t.Fatalf("token %q is not URL-path safe", tok)
	}
}

func TestVerifyRefuses(t *testing.T) {
	s := signer(t, key1)
	open, err := s.Sign(KindOpen, link())
	if err != nil {
		t.Fatal(err)
	}
	p, m, _ := strings.Cut(open, ".")
	other := signer(t, key2)
	foreign, _ := other.Sign(KindOpen, link())
	// A payload changed to another app, with the original signature.
	evil := link()
	evil.App = "other"
	evilTok, _ := other.Sign(KindOpen, evil)
	evilPayload, _, _ := strings.Cut(evilTok, ".")

	f := func(name, kind Kind, tok string, want error) {
		t.Helper()
		t.Run(string(name), func(t *testing.T) {
			_, err := s.Verify(kind, tok)
			if !errors.Is(err, want) {
				t.Fatalf("Verify(%q) = %v, want %v", tok, err, want)
			}
		})
	}
	f("empty", KindOpen, "", ErrMalformed)
	f("no dot", KindOpen, p+m, ErrMalformed)
	f("bad base64 signature", KindOpen, p+".!!!", ErrMalformed)
	f("short signature", KindOpen, p+"."+m[:4], ErrMalformed)
	f("bad base64 payload", KindOpen, "%%%."+m, ErrMalformed)
	f("too long", KindOpen, strings.Repeat("a", MaxTokenBytes+1), ErrMalformed)
	f("other key", KindOpen, foreign, ErrForged)
	f("swapped payload", KindOpen, evilPayload+"."+m, ErrForged)
	f("open token as click", KindClick, open, ErrWrongKind)
	f("open token as unsubscribe", KindUnsubscribe, open, ErrWrongKind)
}

func TestKeyRotation(t *testing.T) {
	old := signer(t, key1)
	tok, err := old.Sign(KindOpen, link())
	if err != nil {
		t.Fatal(err)
	}
	rotated := signer(t, key2, key1)
	if _, err := rotated.Verify(KindOpen, tok); err != nil {
		t.Fatalf("token of the old key after rotation: %v", err)
	}
	fresh, _ := rotated.Sign(KindOpen, link())
	if _, err := old.Verify(KindOpen, fresh); !errors.Is(err, ErrForged) {
		t.Fatalf("old signer verified a token of the new key: %v", err)
	}
	dropped := signer(t, key2)
	if _, err := dropped.Verify(KindOpen, tok); !errors.Is(err, ErrForged) {
		t.Fatalf("token of a dropped key: %v", err)
	}
}

func TestSignRefusesBadLinks(t *testing.T) {
	s := signer(t, key1)
	f := func(name string, kind Kind, mut func(*Link), wantMsg string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			l := link()
			mut(&l)
			_, err := s.Sign(kind, l)
			if err == nil || !strings.Contains(err.Error(), wantMsg) {
				t.Fatalf("Sign = %v, want an error mentioning %q", err, wantMsg)
			}
		})
	}
	f("javascript url", KindClick, func(l *Link) { l.URL = "javascript:alert(1)" }, "want http or https")
	f("relative url", KindClick, func(l *Link) { l.URL = "/path" }, "want http or https")
	f("no host", KindClick, func(l *Link) { l.URL = "https:///x" }, "no host")
	f("user info", KindClick, func(l *Link) { l.URL = "https://a:b@evil.example/" }, "user info")
	f("header injection", KindClick, func(l *Link) { l.URL = "https://a.example/\r\nSet-Cookie: x" }, "url")
	f("url on open", KindOpen, func(l *Link) { l.URL = "https://a.example/" }, "click links only")
	f("no user", KindOpen, func(l *Link) { l.HWID = "" }, "hwid or user id")
	f("no dispatch", KindOpen, func(l *Link) { l.DispatchID = "" }, "dispatch id")
	f("bad app", KindOpen, func(l *Link) { l.App = "a|b" }, "app")
	f("bad kind", "x", func(*Link) {}, "kind")
}

func TestNewSignerRefusesShortKeys(t *testing.T) {
	if _, err := NewSigner(nil); err == nil {
		t.Fatal("no keys accepted")
	}
	if _, err := NewSigner([]string{key1, "short"}); err == nil || !strings.Contains(err.Error(), "key 1") {
		t.Fatalf("short key: %v", err)
	}
}

func TestURL(t *testing.T) {
	if got := URL("https://t.example/", KindOpen, "abc.def"); got != "https://t.example/t/o/abc.def.gif" {
		t.Fatal(got)
	}
	if got := URL("https://t.example", KindClick, "abc.def"); got != "https://t.example/t/c/abc.def" {
		t.Fatal(got)
	}
	if got := URL("https://t.example", KindUnsubscribe, "abc.def"); got != "https://t.example/t/u/abc.def" {
		t.Fatal(got)
	}
}

// FuzzVerify: Verify decodes what anyone can put in a URL; it must never
// panic, and what it accepts must be a valid link of the kind asked for.
func FuzzVerify(f *testing.F) {
	s := signer(f, key1)
	l := link()
	l.URL = "https://shop.example/x"
	tok, _ := s.Sign(KindClick, l)
	f.Add(tok)
	f.Add("")
	f.Add("a.b")
	f.Add("eyJrIjoiYyJ9.AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		for _, k := range []Kind{KindOpen, KindClick, KindUnsubscribe} {
			got, err := s.Verify(k, tok)
			if err != nil {
				continue
			}
			if got.Kind != k {
				t.Fatalf("Verify(%s) returned a %s link", k, got.Kind)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("accepted an invalid link: %v", err)
			}
		}
	})
}
