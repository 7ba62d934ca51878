package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

var testRules = []KeywordRule{
	{App: AnyApp, Keyword: "PROMO", Template: "promo_offer", Category: "marketing", BodyParams: []string{"{{profile_name|there}}"}},
	{App: AnyApp, Keyword: "help", Text: "generic help"},
	{App: testApp, Keyword: "Help", Text: "shop help"},
	{App: AnyApp, Keyword: "E-BOOK", Template: "ebook", Category: CategoryUtility},
	{App: AnyApp, Keyword: "ayuda", Text: "ayuda"},
}

func TestKeywordMatching(t *testing.T) {
	tests := []struct {
		name string
		app  string
		text string
		want string // Source.Name of the reply, "" for none
		body string // text body, for text replies
	}{
		{name: "exact", app: testApp, text: "PROMO", want: "PROMO"},
		{name: "lower case", app: testApp, text: "promo", want: "PROMO"},
		{name: "mixed case and spaces", app: testApp, text: "  \tPrOmO  ", want: "PROMO"},
		{name: "trailing punctuation", app: testApp, text: "Promo!!", want: "PROMO"},
		{name: "surrounding symbols", app: testApp, text: "*promo*", want: "PROMO"},
		{name: "first word of a sentence", app: testApp, text: "promo please, what is it?", want: "PROMO"},
		{name: "leading punctuation-only word skipped", app: testApp, text: "!!! promo", want: "PROMO"},
		{name: "leading emoji", app: testApp, text: "🎉 PROMO", want: "PROMO"},
		{name: "inverted marks", app: testApp, text: "¿Ayuda?", want: "AYUDA", body: "ayuda"},
		{name: "newline after word", app: testApp, text: "promo\nthanks", want: "PROMO"},
		{name: "inner punctuation is part of the word", app: testApp, text: "e-book", want: "E-BOOK"},
		{name: "not the first word", app: testApp, text: "please promo", want: ""},
		{name: "prefix is not a match", app: testApp, text: "promotion", want: ""},
		{name: "word with suffix", app: testApp, text: "promo-2024", want: ""},
		{name: "empty text", app: testApp, text: "", want: ""},
		{name: "whitespace only", app: testApp, text: " \n ", want: ""},
		{name: "app rule wins over *", app: testApp, text: "help", want: "HELP", body: "shop help"},
		{name: "* rule for other apps", app: "other", text: "HELP!", want: "HELP", body: "generic help"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTest(t, Config{Keywords: testRules})
			out := s.process(t, record(t, inbound("i1", tt.app, tt.text, "Ana", t0)))
			ds, dls := decodeOutputs(t, out)
			if len(dls) != 0 {
				t.Fatalf("dead letters: %+v", dls[0])
			}
			if tt.want == "" {
				if len(ds) != 0 {
					t.Fatalf("got reply %q, want none", ds[0].Source.Name)
				}
				return
			}
			if len(ds) != 1 {
				t.Fatalf("got %d replies, want 1", len(ds))
			}
			if ds[0].Source.Name != tt.want {
				t.Errorf("keyword %q, want %q", ds[0].Source.Name, tt.want)
			}
			if tt.body != "" && (ds[0].Text == nil || ds[0].Text.Body != tt.body) {
				t.Errorf("text %+v, want body %q", ds[0].Text, tt.body)
			}
		})
	}
}

func TestKeywordReplyContent(t *testing.T) {
	s := newTest(t, Config{Keywords: testRules, DispatchTTL: 48 * time.Hour})
	now := t0.Add(testNow)
	out := s.process(t, records(t,
		inbound("i1", testApp, "promo!", "Ana", t0),
		inbound("i2", testApp, "help", "Ana", t0.Add(-time.Hour)), // late: the window still ends at t0+24h
	)...)
	ds, _ := decodeOutputs(t, out)
	want := []*schemas.DispatchRequest{
		{
			V: schemas.V1, ID: wantID("i1", "PROMO"), App: testApp, Channel: schemas.ChannelWhatsApp,
			Sender: testPNID, To: testPhone, HWID: testHWID, Country: "US",
			Template: &schemas.Template{Name: "promo_offer", Language: "en_US", Category: "MARKETING", Body: []string{"Ana"}},
			Source:   schemas.Source{Kind: "keyword", Name: "PROMO", EventID: "i1"},
			Created:  now, Deadline: now.Add(48 * time.Hour),
		},
		{
			V: schemas.V1, ID: wantID("i2", "HELP"), App: testApp, Channel: schemas.ChannelWhatsApp,
			Sender: testPNID, To: testPhone, HWID: testHWID, Country: "US",
			Text:   &schemas.Text{Body: "shop help"},
			Source: schemas.Source{Kind: "keyword", Name: "HELP", EventID: "i2"},
			// The window of the latest inbound (i1, t0) closes before
			// Created+DispatchTTL.
			Created: now, Deadline: t0.Add(24 * time.Hour),
		},
	}
	if !reflect.DeepEqual(ds, want) {
		t.Fatalf("replies\n got %s\nwant %s", dump(ds), dump(want))
	}
	if string(out[0].Key) != testApp+"|"+testPhone {
		t.Errorf("record key %q", out[0].Key)
	}
}

func TestKeywordTextDeadlineIsWindowEnd(t *testing.T) {
	// DispatchTTL of 48h: the text reply must still expire when the 24 h
	// window of the last inbound message closes.
	s := newTest(t, Config{Keywords: testRules, DispatchTTL: 48 * time.Hour})
	in := t0.Add(-20 * time.Hour)
	ds, _ := decodeOutputs(t, s.process(t, record(t, inbound("i1", testApp, "help", "", in))))
	if len(ds) != 1 {
		t.Fatalf("got %d replies", len(ds))
	}
	if want := in.Add(24 * time.Hour); !ds[0].Deadline.Equal(want) {
		t.Errorf("deadline %s, want %s (window end)", ds[0].Deadline, want)
	}
}

func TestKeywordSkips(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, s *testSegmenter)
		event   *schemas.Event
		rules   []KeywordRule
		ttl     time.Duration
		reason  string // "" when a reply is expected
	}{
		{
			name:    "opted out gets no marketing template",
			prepare: optOut,
			event:   inbound("i1", testApp, "promo", "Ana", t0),
			reason:  skipOptedOut,
		},
		{
			name:    "opted out still gets utility templates",
			prepare: optOut,
			event:   inbound("i1", testApp, "e-book", "Ana", t0),
		},
		{
			name:    "opted out still gets a text reply",
			prepare: optOut,
			event:   inbound("i1", testApp, "help", "Ana", t0),
		},
		{
			name:   "stale inbound message",
			event:  inbound("i1", testApp, "promo", "Ana", t0.Add(testNow-3*time.Hour)),
			ttl:    2 * time.Hour,
			reason: skipStale,
		},
		{
			name:   "text after the window closed",
			event:  inbound("i1", testApp, "help", "Ana", t0.Add(testNow-25*time.Hour)),
			ttl:    48 * time.Hour,
			reason: skipWindowClose,
		},
		{
			name:   "missing tag without fallback",
			rules:  []KeywordRule{{App: AnyApp, Keyword: "GO", Template: "t", BodyParams: []string{"{{tag:first_name}}"}}},
			event:  inbound("i1", testApp, "go", "Ana", t0),
			reason: skipEmptyParam,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := tt.rules
			if rules == nil {
				rules = testRules
			}
			s := newTest(t, Config{Keywords: rules, DispatchTTL: tt.ttl})
			if tt.prepare != nil {
				tt.prepare(t, s)
			}
			ds, dls := decodeOutputs(t, s.process(t, record(t, tt.event)))
			if len(dls) != 0 {
				t.Fatalf("dead letter: %s", dls[0].Reason)
			}
			if tt.reason == "" {
				if len(ds) != 1 {
					t.Fatalf("got %d replies, want 1", len(ds))
				}
				return
			}
			if len(ds) != 0 {
				t.Fatalf("got a reply, want none (%s)", tt.reason)
			}
			if got := s.metric(t, "herald_segmenter_keyword_skipped_total", "reason", tt.reason); got != 1 {
				t.Errorf("skipped{reason=%s} = %v, want 1", tt.reason, got)
			}
			// The event itself was still applied.
			if p, ok := s.Profile(testApp, testHWID); !ok || p.LastInbound.IsZero() {
				t.Errorf("inbound not applied: %+v", p)
			}
		})
	}
}

// optOut stores an opted-out profile (nothing sets the flag yet: the STOP
// keyword is a later issue).
func optOut(t *testing.T, s *testSegmenter) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.save(schemas.EventKey(testApp, testHWID, ""), &Profile{OptedOut: true}); err != nil {
		t.Fatal(err)
	}
}

func TestTemplateParams(t *testing.T) {
	tags := map[string]any{"first_name": "Ana", "points": 1250.0, "vip": true, "cities": []any{"Oslo", "Rome"}, "blank": "  "}
	tests := []struct {
		name        string
		params      []string
		profileName string // of the inbound message
		earlierName string // of an earlier inbound message
		want        []string
	}{
		{name: "profile name from the message", params: []string{"{{profile_name}}"}, profileName: "Ana B", want: []string{"Ana B"}},
		{name: "profile name from the profile", params: []string{"{{profile_name}}"}, earlierName: "Old Name", want: []string{"Old Name"}},
		{name: "message name wins", params: []string{"{{profile_name}}"}, profileName: "New", earlierName: "Old", want: []string{"New"}},
		{name: "fallback", params: []string{"{{profile_name|there}}"}, want: []string{"there"}},
		{name: "typed tags", params: []string{"{{tag:first_name}}", "{{tag:points}}", "{{tag:vip}}", "{{tag:cities}}"}, want: []string{"Ana", "1250", "true", "Oslo, Rome"}},
		{name: "literal around placeholders", params: []string{"Hi {{tag:first_name}}, you have {{ tag:points }} points!", "plain"}, want: []string{"Hi Ana, you have 1250 points!", "plain"}},
		{name: "blank tag takes the fallback", params: []string{"{{tag:blank|friend}}"}, want: []string{"friend"}},
		{name: "missing tag takes the fallback", params: []string{"{{tag:nope|x}}"}, want: []string{"x"}},
		{name: "missing tag without fallback cancels", params: []string{"ok", "{{tag:nope}}"}, want: nil},
		{name: "blank tag without fallback cancels", params: []string{"{{tag:blank}}"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTest(t, Config{Keywords: []KeywordRule{{App: AnyApp, Keyword: "GO", Template: "t", BodyParams: tt.params}}})
			evs := []*schemas.Event{register("r1", t0, tags)}
			if tt.earlierName != "" {
				evs = append(evs, inbound("i0", testApp, "hi", tt.earlierName, t0))
			}
			evs = append(evs, inbound("i1", testApp, "go", tt.profileName, t0))
			ds, _ := decodeOutputs(t, s.process(t, records(t, evs...)...))
			if tt.want == nil {
				if len(ds) != 0 {
					t.Fatalf("got body %q, want no reply", ds[0].Template.Body)
				}
				return
			}
			if len(ds) != 1 {
				t.Fatalf("got %d replies, want 1", len(ds))
			}
			if !reflect.DeepEqual(ds[0].Template.Body, tt.want) {
				t.Errorf("body %q, want %q", ds[0].Template.Body, tt.want)
			}
		})
	}
}

func TestTextPlaceholders(t *testing.T) {
	s := newTest(t, Config{Keywords: []KeywordRule{{App: AnyApp, Keyword: "HI", Text: "Hello {{profile_name|friend}}, welcome back!"}}})
	ds, _ := decodeOutputs(t, s.process(t, record(t, inbound("i1", testApp, "hi", "Ana", t0))))
	if len(ds) != 1 || ds[0].Text.Body != "Hello Ana, welcome back!" {
		t.Fatalf("got %s", dump(ds))
	}
}

func TestDispatchIDDeterministic(t *testing.T) {
	ev := inbound("0123456789abcdef0123456789abcdef", testApp, "PROMO", "Ana", t0)
	var ids []string
	for range 2 { // two segmenters: a replay after a restart
		s := newTest(t, Config{})
		for range 2 { // the same batch twice: a redelivery
			ds, _ := decodeOutputs(t, s.process(t, record(t, ev)))
			if len(ds) != 1 {
				t.Fatalf("got %d replies", len(ds))
			}
			ids = append(ids, ds[0].ID)
		}
	}
	want := wantID(ev.ID, "PROMO")
	for i, id := range ids {
		if id != want {
			t.Errorf("run %d: id %s, want %s", i, id, want)
		}
	}
	if len(want) != 32 {
		t.Errorf("id length %d, want 32", len(want))
	}
	s := newTest(t, Config{})
	ds, _ := decodeOutputs(t, s.process(t, record(t, inbound("other", testApp, "PROMO", "Ana", t0))))
	if ds[0].ID == want {
		t.Error("another event got the same id")
	}
}

// wantID is the documented id formula, computed independently.
func wantID(eventID, keyword string) string {
	sum := sha256.Sum256([]byte("kw|" + eventID + "|" + keyword))
	return hex.EncodeToString(sum[:])[:32]
}

func dump(ds []*schemas.DispatchRequest) string {
	var b strings.Builder
	for _, d := range ds {
		v, _ := d.Marshal()
		b.Write(v)
		b.WriteByte('\n')
	}
	return b.String()
}
