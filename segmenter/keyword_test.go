package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

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
			Created:  now, Deadline: now.Add(48 * time.Hour), WindowUntil: t0.Add(24 * time.Hour),
		},
		{
			V: schemas.V1, ID: wantID("i2", "HELP"), App: testApp, Channel: schemas.ChannelWhatsApp,
			Sender: testPNID, To: testPhone, HWID: testHWID, Country: "US",
			Text:   &schemas.Text{Body: "shop help"},
			Source: schemas.Source{Kind: "keyword", Name: "HELP", EventID: "i2"},
			// The window of the latest inbound (i1, t0) closes before
			// Created+DispatchTTL.
			Created: now, Deadline: t0.Add(24 * time.Hour), WindowUntil: t0.Add(24 * time.Hour),
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

// optOut stores an opted-out profile directly (TestStopStart opts out
// through STOP).
func optOut(t *testing.T, s *testSegmenter) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.owner(schemas.EventKey(testApp, testHWID, "")).save(schemas.EventKey(testApp, testHWID, ""), &Profile{OptedOut: true}); err != nil {
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

func TestNormalize(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
	f("", "")
	f("promo", "promo")
	f("PROMO", "promo")
	f("  Opening \t\n HOURS  ", "opening hours")
	f("AYÚDA", "ayuda")
	f("¿Ayúda?", "¿ayuda?")
	f("Ça va, crème brûlée", "ca va, creme brulee")
	f("STRAßE", "strasse")
	f("Ünïcödé\u00a0spaces", "unicode spaces") // no-break space is whitespace
	f("e\u0301", "e")                          // decomposed already
	f("🎉 PROMO", "🎉 promo")
	f("help \xff", "help \ufffd") // invalid UTF-8: replacement character
}

// TestKeywordASCIIPaths checks the table-driven ASCII paths of
// collapseSpace, firstWord and trimWord against their rune forms on random
// texts of ASCII whitespace, punctuation, letters and digits, with a
// non-ASCII rune in some (whitespace, letters, a symbol, invalid UTF-8).
func TestKeywordASCIIPaths(t *testing.T) {
	pieces := []string{
		" ", "  ", "\t", "\n", "\v", "\f", "\r", "a", "Z", "7", "!", "?", ".", "-", "_", "#", "\x00", "\x7f",
		"\u00a0", "\u0085", "é", "ß", "🎉", "٣", "\xff",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50_000 {
		var b strings.Builder
		for range rng.IntN(9) {
			p := pieces[rng.IntN(len(pieces))]
			if i%2 == 0 && p[0] >= utf8.RuneSelf { // half the texts stay ASCII
				p = "x"
			}
			b.WriteString(p)
		}
		s := b.String()
		if got, want := collapseSpace(s), collapseSpaceRunes(s); got != want {
			t.Fatalf("collapseSpace(%q) = %q, the rune form %q", s, got, want)
		}
		if got, want := firstWord(s), firstWordRunes(s); got != want {
			t.Fatalf("firstWord(%q) = %q, the rune form %q", s, got, want)
		}
		if got, want := trimWord(s), trimWordRunes(s); got != want {
			t.Fatalf("trimWord(%q) = %q, the rune form %q", s, got, want)
		}
	}
}

// collapseSpaceRunes is collapseSpace as it was before its ASCII table:
// TestKeywordASCIIPaths's reference.
func collapseSpaceRunes(s string) string {
	prev := true
	for _, c := range s {
		sp := unicode.IsSpace(c)
		if sp && (prev || c != ' ') {
			return strings.Join(strings.Fields(s), " ")
		}
		prev = sp
	}
	if prev && s != "" {
		return strings.Join(strings.Fields(s), " ")
	}
	return s
}

// inboundTo is inbound received by the business number pnid.
func inboundTo(id, app, pnid, text string) *schemas.Event {
	e := inbound(id, app, text, "Ana", t0)
	e.Inbound.PhoneNumberID = pnid
	return e
}

// firedRule processes one inbound text with rules and returns the name of
// the rule that replied ("" for none).
func firedRule(t *testing.T, rules []KeywordRule, e *schemas.Event) string {
	t.Helper()
	s := newTest(t, Config{Keywords: rules})
	ds, dls := decodeOutputs(t, s.process(t, record(t, e)))
	if len(dls) != 0 {
		t.Fatalf("dead letter: %s", dls[0].Reason)
	}
	switch len(ds) {
	case 0:
		return ""
	case 1:
		return ds[0].Source.Name
	}
	t.Fatalf("%d replies to one message", len(ds))
	return ""
}

func TestKeywordModes(t *testing.T) {
	rules := []KeywordRule{
		{App: AnyApp, Mode: ModeExact, Keyword: "opening hours", Phrases: []string{"when are you open", "horário"}, Text: "9-18", Name: "HOURS"},
		{App: AnyApp, Mode: ModeFirstWord, Keyword: "ayuda", Phrases: []string{"socorro"}, Text: "ayuda"},
		{App: AnyApp, Mode: ModePattern, Keyword: `^order #?\d{4,}$`, Text: "status", Name: "ORDER"},
		{App: AnyApp, Mode: ModePattern, Keyword: `\brefund\b`, Text: "refund"},
		{App: AnyApp, Mode: ModeExact, Keyword: "Crème", Text: "dessert"},
	}
	tests := []struct {
		name, text, want string
	}{
		{"exact", "opening hours", "HOURS"},
		{"exact case and whitespace", "  OPENING\t\tHours\n", "HOURS"},
		{"exact punctuation at the ends", "Opening hours?!", "HOURS"},
		{"exact phrase", "When are you OPEN?", "HOURS"},
		{"exact phrase with accent written", "HORÁRIO", "HOURS"},
		{"exact phrase without the accent", "horario", "HOURS"},
		{"exact accent in keyword, none in text", "CREME", "CRÈME"},
		{"exact is not a prefix", "opening hours please", ""},
		{"exact is not a first word", "opening", ""},
		{"exact inner punctuation counts", "opening, hours", ""},
		{"first word with accent", "AYÚDA por favor", "AYUDA"},
		{"first word phrase", "¡Socorro!", "AYUDA"},
		{"first word not later", "por favor ayuda", ""},
		{"pattern", "Order #12345", "ORDER"},
		{"pattern collapsed whitespace", "order    12345", "ORDER"},
		{"pattern anchored", "my order 12345", ""},
		{"pattern searched, named as written", "I want a REFUND now", `\brefund\b`},
		{"pattern word boundary", "refunded", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firedRule(t, rules, inbound("i1", testApp, tt.text, "Ana", t0)); got != tt.want {
				t.Errorf("rule %q fired, want %q", got, tt.want)
			}
		})
	}
}

func TestKeywordScopeAndPriority(t *testing.T) {
	const otherPNID = "2000"
	tests := []struct {
		name  string
		rules []KeywordRule
		event *schemas.Event
		want  string
	}{
		{
			name: "number rule wins over app rule",
			rules: []KeywordRule{
				{App: testApp, Keyword: "promo", Text: "app", Name: "APP"},
				{App: testApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num", Name: "NUMBER"},
			},
			event: inboundTo("i1", testApp, testPNID, "promo"),
			want:  "NUMBER",
		},
		{
			name: "number rule only for its number",
			rules: []KeywordRule{
				{App: testApp, Keyword: "promo", Text: "app", Name: "APP"},
				{App: testApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num", Name: "NUMBER"},
			},
			event: inboundTo("i1", testApp, otherPNID, "promo"),
			want:  "APP",
		},
		{
			name:  "number rule alone, other number",
			rules: []KeywordRule{{App: testApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num"}},
			event: inboundTo("i1", testApp, otherPNID, "promo"),
			want:  "",
		},
		{
			name: "any-app rule of a number",
			rules: []KeywordRule{
				{App: AnyApp, Keyword: "promo", Text: "any", Name: "ANY"},
				{App: AnyApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num", Name: "ANYNUMBER"},
			},
			event: inboundTo("i1", "other", testPNID, "promo"),
			want:  "ANYNUMBER",
		},
		{
			name: "specificity order: app beats any-app number",
			rules: []KeywordRule{
				{App: AnyApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num", Name: "ANYNUMBER"},
				{App: testApp, Keyword: "promo", Text: "app", Name: "APP"},
			},
			event: inboundTo("i1", testApp, testPNID, "promo"),
			want:  "APP",
		},
		{
			name: "priority beats specificity",
			rules: []KeywordRule{
				{App: testApp, PhoneNumberID: testPNID, Keyword: "promo", Text: "num", Name: "NUMBER"},
				{App: AnyApp, Keyword: "promo", Text: "any", Name: "ANY", Priority: 1},
			},
			event: inboundTo("i1", testApp, testPNID, "promo"),
			want:  "ANY",
		},
		{
			name: "priority across modes",
			rules: []KeywordRule{
				{App: testApp, Keyword: "promo", Text: "word", Name: "WORD"},
				{App: testApp, Mode: ModePattern, Keyword: "promo", Text: "pattern", Name: "PATTERN", Priority: 5},
				{App: testApp, Mode: ModeExact, Keyword: "promo code", Text: "exact", Name: "EXACT", Priority: 3},
			},
			event: inbound("i1", testApp, "promo code", "Ana", t0),
			want:  "PATTERN",
		},
		{
			name: "negative priority loses",
			rules: []KeywordRule{
				{App: testApp, Mode: ModePattern, Keyword: "promo", Text: "pattern", Name: "PATTERN", Priority: -1},
				{App: testApp, Mode: ModeExact, Keyword: "promo code", Text: "exact", Name: "EXACT"},
			},
			event: inbound("i1", testApp, "promo code", "Ana", t0),
			want:  "EXACT",
		},
		{
			name: "tie in the same scope: config order",
			rules: []KeywordRule{
				{App: testApp, Mode: ModeExact, Keyword: "promo code", Text: "exact", Name: "EXACT"},
				{App: testApp, Keyword: "promo", Text: "word", Name: "WORD"},
			},
			event: inbound("i1", testApp, "promo code", "Ana", t0),
			want:  "EXACT",
		},
		{
			name: "tie among patterns: config order",
			rules: []KeywordRule{
				{App: testApp, Mode: ModePattern, Keyword: "code", Text: "b", Name: "B"},
				{App: testApp, Mode: ModePattern, Keyword: "promo", Text: "a", Name: "A"},
			},
			event: inbound("i1", testApp, "promo code", "Ana", t0),
			want:  "B",
		},
		{
			name: "higher-priority pattern after a lower one",
			rules: []KeywordRule{
				{App: testApp, Mode: ModePattern, Keyword: "code", Text: "b", Name: "B"},
				{App: testApp, Mode: ModePattern, Keyword: "promo", Text: "a", Name: "A", Priority: 2},
			},
			event: inbound("i1", testApp, "promo code", "Ana", t0),
			want:  "A",
		},
		{
			name: "catch-all when nothing matched",
			rules: []KeywordRule{
				{App: testApp, Keyword: "promo", Text: "word"},
				{App: testApp, Keyword: "*", Text: "fallback"},
			},
			event: inbound("i1", testApp, "what are your opening hours?", "Ana", t0),
			want:  "*",
		},
		{
			name: "catch-all loses to any match, whatever its priority",
			rules: []KeywordRule{
				{App: testApp, Mode: ModeAny, Text: "fallback", Priority: 100},
				{App: AnyApp, Keyword: "promo", Text: "word", Name: "WORD", Priority: -100},
			},
			event: inbound("i1", testApp, "promo", "Ana", t0),
			want:  "WORD",
		},
		{
			name: "catch-all of the number before the app's",
			rules: []KeywordRule{
				{App: testApp, Mode: ModeAny, Text: "app", Name: "APP*"},
				{App: testApp, PhoneNumberID: testPNID, Mode: ModeAny, Text: "number", Name: "NUMBER*"},
				{App: AnyApp, Mode: ModeAny, Text: "any", Name: "ANY*"},
			},
			event: inboundTo("i1", testApp, testPNID, "hello"),
			want:  "NUMBER*",
		},
		{
			name:  "catch-all of another app",
			rules: []KeywordRule{{App: "other", Mode: ModeAny, Text: "x"}},
			event: inbound("i1", testApp, "hello", "Ana", t0),
			want:  "",
		},
		{
			name:  "catch-all ignores blank text",
			rules: []KeywordRule{{App: testApp, Mode: ModeAny, Text: "x"}},
			event: inbound("i1", testApp, " \n\t ", "Ana", t0),
			want:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firedRule(t, tt.rules, tt.event); got != tt.want {
				t.Errorf("rule %q fired, want %q", got, tt.want)
			}
		})
	}
}

func TestBuiltinKeywords(t *testing.T) {
	on := true
	tests := []struct {
		name  string
		rules []KeywordRule
		event *schemas.Event
		want  string // Source.Name
		body  string
	}{
		{name: "stop", event: inbound("i1", testApp, "STOP", "", t0), want: "STOP", body: TextUnsubscribed},
		{name: "stop as first word", event: inbound("i1", testApp, "stop sending me this", "", t0), want: "STOP", body: TextUnsubscribed},
		{name: "unsubscribe", event: inbound("i1", testApp, "Unsubscribe.", "", t0), want: "UNSUBSCRIBE", body: TextUnsubscribed},
		{name: "start", event: inbound("i1", testApp, "start", "", t0), want: "START", body: TextSubscribed},
		{
			name:  "wins over a pattern of higher priority",
			rules: []KeywordRule{{App: AnyApp, Mode: ModePattern, Keyword: "stop", Text: "x", Priority: 100}},
			event: inbound("i1", testApp, "stop", "", t0), want: "STOP", body: TextUnsubscribed,
		},
		{
			name:  "wins over a catch-all",
			rules: []KeywordRule{{App: testApp, Mode: ModeAny, Text: "x"}},
			event: inbound("i1", testApp, "stop", "", t0), want: "STOP", body: TextUnsubscribed,
		},
		{
			name:  "replaced by an app rule",
			rules: []KeywordRule{{App: testApp, Keyword: "stop", Text: "Vous êtes désinscrit.", OptOut: &on, Name: "STOP_FR"}},
			event: inbound("i1", testApp, "STOP", "", t0), want: "STOP_FR", body: "Vous êtes désinscrit.",
		},
		{
			name:  "app rule does not replace it for other apps",
			rules: []KeywordRule{{App: testApp, Keyword: "stop", Text: "x", OptOut: &on}},
			event: inbound("i1", "other", "STOP", "", t0), want: "STOP", body: TextUnsubscribed,
		},
		{
			name:  "replaced by an exact rule, even for a longer text",
			rules: []KeywordRule{{App: testApp, Mode: ModeExact, Keyword: "stop", Text: "x", Name: "MINE"}, {App: testApp, Mode: ModeAny, Text: "y", Name: "ANY"}},
			event: inbound("i1", testApp, "stop it", "", t0), want: "ANY", body: "y",
		},
		{
			name:  "replaced for one number",
			rules: []KeywordRule{{App: testApp, PhoneNumberID: "2000", Keyword: "stop", Text: "x", Name: "MINE"}},
			event: inboundTo("i1", testApp, "2000", "stop"), want: "MINE", body: "x",
		},
		{
			name:  "not replaced by another number's rule",
			rules: []KeywordRule{{App: testApp, PhoneNumberID: "2000", Keyword: "stop", Text: "x", Name: "MINE"}},
			event: inboundTo("i1", testApp, testPNID, "stop"), want: "STOP", body: TextUnsubscribed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := tt.rules
			if rules == nil {
				rules = testRules
			}
			s := newTest(t, Config{Keywords: rules})
			ds, _ := decodeOutputs(t, s.process(t, record(t, tt.event)))
			if len(ds) != 1 {
				t.Fatalf("got %d replies, want 1", len(ds))
			}
			if ds[0].Source.Name != tt.want || ds[0].Text == nil || ds[0].Text.Body != tt.body {
				t.Errorf("reply %s, want %s with %q", dump(ds), tt.want, tt.body)
			}
		})
	}
	t.Run("off with an empty rule list", func(t *testing.T) {
		if got := firedRule(t, []KeywordRule{}, inbound("i1", testApp, "stop", "", t0)); got != "" {
			t.Errorf("rule %q fired", got)
		}
	})
}

// optedOut returns the opt-out flag of the test profile, from the cache
// and from the latest changelog record.
func optedOut(t *testing.T, s *testSegmenter) (cache, changelog bool) {
	t.Helper()
	p, ok := s.Profile(testApp, testHWID)
	if !ok {
		t.Fatal("no profile")
	}
	if len(s.changelog) != 1 {
		t.Fatalf("%d changelog records, want 1", len(s.changelog))
	}
	return p.OptedOut, s.changelog[0].OptedOut
}

func TestStopStart(t *testing.T) {
	s := newTest(t, Config{Keywords: testRules})
	reply := func(id, text string) *schemas.DispatchRequest {
		t.Helper()
		ds, _ := decodeOutputs(t, s.process(t, record(t, inbound(id, testApp, text, "Ana", t0))))
		switch len(ds) {
		case 0:
			return nil
		case 1:
			return ds[0]
		}
		t.Fatalf("%d replies", len(ds))
		return nil
	}
	if d := reply("i1", "promo"); d == nil || d.Template == nil {
		t.Fatalf("PROMO before STOP: %v", d)
	}

	d := reply("i2", "Stop")
	if d == nil || d.Text == nil || d.Text.Body != TextUnsubscribed || d.ID != wantID("i2", "STOP") || d.To != testPhone || d.Sender != testPNID {
		t.Fatalf("STOP confirmation: %s", dump([]*schemas.DispatchRequest{d}))
	}
	if c, cl := optedOut(t, s); !c || !cl {
		t.Fatalf("after STOP: opted out in cache %v, in changelog %v", c, cl)
	}
	if d := reply("i3", "PROMO"); d != nil {
		t.Fatalf("PROMO after STOP sent %s", dump([]*schemas.DispatchRequest{d}))
	}
	if got := s.metric(t, "herald_segmenter_keyword_skipped_total", "reason", skipOptedOut); got != 1 {
		t.Errorf("skipped{opted_out} = %v, want 1", got)
	}
	// Opted out: confirmations, texts and utility templates still go.
	for _, tt := range []struct{ id, text, name string }{{"i4", "stop", "STOP"}, {"i5", "unsubscribe", "UNSUBSCRIBE"}, {"i6", "help", "HELP"}, {"i7", "e-book", "E-BOOK"}} {
		if d := reply(tt.id, tt.text); d == nil || d.Source.Name != tt.name {
			t.Errorf("%s while opted out: %v", tt.text, d)
		}
	}

	d = reply("i8", "START please")
	if d == nil || d.Text == nil || d.Text.Body != TextSubscribed || d.ID != wantID("i8", "START") {
		t.Fatalf("START confirmation: %v", d)
	}
	if c, cl := optedOut(t, s); c || cl {
		t.Fatalf("after START: opted out in cache %v, in changelog %v", c, cl)
	}
	if d := reply("i9", "promo"); d == nil || d.Template == nil || d.Template.Category != CategoryMarketing {
		t.Fatalf("PROMO after START: %v", d)
	}
	for _, tt := range []struct {
		action string
		want   float64
	}{{actionOptOut, 3}, {actionOptIn, 1}, {actionText, 5}, {actionTemplate, 3}} {
		if got := s.metric(t, "herald_segmenter_keyword_actions_total", "action", tt.action); got != tt.want {
			t.Errorf("actions{%s} = %v, want %v", tt.action, got, tt.want)
		}
	}
	if got := s.metric(t, "herald_segmenter_keyword_matches_total", "mode", modeBuiltin); got != 4 {
		t.Errorf("matches{builtin} = %v, want 4", got)
	}
}

// TestStopStartSuppressions: STOP writes a marketing_opt_out suppression
// for the sender to the suppressions topic and START lifts it (for the
// dispatcher, which keeps the opt-outs Meta taught it there), dated by the
// inbound message, also when the profile's flag did not change; a
// redelivered START writes nothing again.
func TestStopStartSuppressions(t *testing.T) {
	s := newTest(t, Config{Keywords: testRules})
	sups := func(e *schemas.Event) []*schemas.Suppression {
		t.Helper()
		var out []*schemas.Suppression
		for _, r := range s.process(t, record(t, e)) {
			if r.Topic != schemas.TopicSuppressions {
				continue
			}
			sup, err := schemas.DecodeSuppression(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sup)
		}
		return out
	}
	// START without a STOP before: the profile is not opted out, but Meta
	// may have taught the dispatcher 131050.
	start := inbound("i1", testApp, "start", "Ana", t0)
	got := sups(start)
	if len(got) != 1 || !got[0].Lifted || got[0].App != testApp || got[0].To != testPhone || got[0].Keyword != "START" ||
		got[0].Reason != schemas.SuppressMarketingOptOut || !got[0].Time.Equal(t0) {
		t.Fatalf("START wrote %+v, want one lifted suppression of %s dated %v", got, testPhone, t0)
	}
	stop := inbound("i2", testApp, "STOP", "Ana", t0.Add(time.Minute))
	if got := sups(stop); len(got) != 1 || got[0].Lifted || got[0].Keyword != "STOP" || !got[0].Time.Equal(t0.Add(time.Minute)) {
		t.Fatalf("STOP wrote %+v, want one suppression", got)
	}
	if got := sups(inbound("i3", testApp, "promo", "Ana", t0.Add(2*time.Minute))); len(got) != 0 {
		t.Fatalf("PROMO wrote suppressions %+v", got)
	}
	if got := sups(start); len(got) != 0 {
		t.Fatalf("the START delivered again wrote %+v", got)
	}
}

func TestStopInOneBatch(t *testing.T) {
	// STOP then PROMO in one batch: the second message sees the opt-out,
	// and the batch's one changelog record carries it.
	s := newTest(t, Config{Keywords: testRules})
	ds, _ := decodeOutputs(t, s.process(t, records(t,
		inbound("i1", testApp, "stop", "Ana", t0),
		inbound("i2", testApp, "promo", "Ana", t0),
	)...))
	if len(ds) != 1 || ds[0].Source.Name != "STOP" {
		t.Fatalf("replies %s, want the STOP confirmation only", dump(ds))
	}
	if c, cl := optedOut(t, s); !c || !cl {
		t.Fatalf("opted out in cache %v, in changelog %v", c, cl)
	}
}

func TestStaleStopStillOptsOut(t *testing.T) {
	s := newTest(t, Config{Keywords: testRules, DispatchTTL: time.Hour})
	ds, _ := decodeOutputs(t, s.process(t, record(t, inbound("i1", testApp, "stop", "Ana", t0.Add(-2*time.Hour)))))
	if len(ds) != 0 {
		t.Fatalf("stale STOP answered: %s", dump(ds))
	}
	if c, cl := optedOut(t, s); !c || !cl {
		t.Fatalf("opted out in cache %v, in changelog %v", c, cl)
	}
	if got := s.metric(t, "herald_segmenter_keyword_skipped_total", "reason", skipStale); got != 1 {
		t.Errorf("skipped{stale} = %v, want 1", got)
	}
}

func TestKeywordActionsNotReappliedOnRedelivery(t *testing.T) {
	s := newTest(t, Config{Keywords: testRules})
	stop := record(t, inbound("i1", testApp, "stop", "Ana", t0))
	start := record(t, inbound("i2", testApp, "start", "Ana", t0))
	s.process(t, stop, start)
	// A producer retry of the STOP (same event id, later offset) is a
	// duplicate: its confirmation goes again (same id), the opt-out does not.
	retry := record(t, inbound("i1", testApp, "stop", "Ana", t0))
	ds, _ := decodeOutputs(t, s.process(t, retry))
	if len(ds) != 1 || ds[0].ID != wantID("i1", "STOP") {
		t.Fatalf("replies %s, want the STOP confirmation again", dump(ds))
	}
	if p, _ := s.Profile(testApp, testHWID); p.OptedOut {
		t.Fatal("duplicate STOP opted the user out again")
	}
	if got := s.metric(t, "herald_segmenter_keyword_actions_total", "action", actionOptOut); got != 1 {
		t.Errorf("actions{opt_out} = %v, want 1", got)
	}
}

func TestSetTags(t *testing.T) {
	rules := []KeywordRule{
		{App: testApp, Keyword: "vip", SetTags: map[string]any{"vip": true, "level": 3, "source": "whatsapp"}, Text: "Welcome, level {{tag:level}}!"},
		{App: testApp, Mode: ModeExact, Keyword: "no more vip", SetTags: map[string]any{"vip": false}},
	}
	s := newTest(t, Config{Keywords: rules})
	ds, _ := decodeOutputs(t, s.process(t, records(t, register("r1", t0, map[string]any{"city": "Oslo"}), inbound("i1", testApp, "VIP!", "Ana", t0))...))
	if len(ds) != 1 || ds[0].Text.Body != "Welcome, level 3!" {
		t.Fatalf("replies %s: the reply must see the tags just set", dump(ds))
	}
	want := map[string]Tag{
		"city": {Kind: TagString, Str: "Oslo"}, TagProfileName: {Kind: TagString, Str: "Ana"},
		"vip": {Kind: TagBool, Bool: true}, "level": {Kind: TagNumber, Num: 3}, "source": {Kind: TagString, Str: "whatsapp"},
	}
	p, _ := s.Profile(testApp, testHWID)
	if !reflect.DeepEqual(p.Tags(), want) {
		t.Errorf("profile tags %v, want %v", p.Tags(), want)
	}
	if len(s.changelog) != 1 || !reflect.DeepEqual(s.changelog[0].Tags(), want) {
		t.Errorf("changelog %+v", s.changelog)
	}
	if len(s.tags) != 1 || s.tags[0].Tags["vip"] != true || s.tags[0].Tags["level"] != 3.0 {
		t.Errorf("tags records %+v", s.tags)
	}

	// A rule with tags only: no reply, tags record produced.
	ds, _ = decodeOutputs(t, s.process(t, record(t, inbound("i2", testApp, "no more VIP", "Ana", t0))))
	if len(ds) != 0 {
		t.Fatalf("replies %s, want none", dump(ds))
	}
	if p, _ := s.Profile(testApp, testHWID); !reflect.DeepEqual(p.Tags()["vip"], Tag{Kind: TagBool, Bool: false}) {
		t.Errorf("vip %+v", p.Tags()["vip"])
	}
	if len(s.tags) != 1 || s.tags[0].Tags["vip"] != false {
		t.Errorf("tags records %+v", s.tags)
	}
	if got := s.metric(t, "herald_segmenter_keyword_actions_total", "action", actionSetTags); got != 2 {
		t.Errorf("actions{set_tags} = %v, want 2", got)
	}

	// Nothing changes: no tags record.
	s.process(t, record(t, inbound("i3", testApp, "no more vip", "Ana", t0)))
	if len(s.tags) != 0 {
		t.Errorf("tags records %+v for an unchanged profile", s.tags)
	}
}

func TestSetTagsProfileFull(t *testing.T) {
	big := strings.Repeat("x", 40<<10)
	s := newTest(t, Config{Keywords: []KeywordRule{{App: testApp, Keyword: "big", SetTags: map[string]any{"big": big}, OptOut: new(bool), Text: "done"}}})
	s.process(t, record(t, register("r1", t0, map[string]any{"blob": big})))
	ds, dls := decodeOutputs(t, s.process(t, record(t, inbound("i1", testApp, "big", "Ana", t0))))
	if len(ds) != 0 || len(dls) != 0 {
		t.Fatalf("%d replies, %d dead letters, want none", len(ds), len(dls))
	}
	if got := s.metric(t, "herald_segmenter_keyword_skipped_total", "reason", skipProfileFull); got != 1 {
		t.Errorf("skipped{profile_full} = %v, want 1", got)
	}
	p, _ := s.Profile(testApp, testHWID)
	if _, set := p.Tags()["big"]; set || p.LastInbound.IsZero() {
		t.Errorf("profile: big tag set %v, inbound applied %v", set, !p.LastInbound.IsZero())
	}
	if len(s.changelog) != 1 || s.changelog[0].LastInbound.IsZero() {
		t.Fatalf("changelog %+v, want the inbound message applied", s.changelog)
	}
	if _, set := s.changelog[0].Tags()["big"]; set {
		t.Error("changelog record has the tag that did not fit")
	}
}

func TestPatternAndCatchAllIDs(t *testing.T) {
	rules := []KeywordRule{
		{App: testApp, Mode: ModePattern, Keyword: `^order \d+$`, Text: "status"},
		{App: testApp, Mode: ModeAny, Text: "fallback"},
		{App: testApp, Mode: ModePattern, Keyword: `^track`, Name: "TRACK", Text: "tracking"},
	}
	s := newTest(t, Config{Keywords: rules})
	ds, _ := decodeOutputs(t, s.process(t, records(t,
		inbound("i1", testApp, "order 42", "Ana", t0),
		inbound("i2", testApp, "hello", "Ana", t0),
		inbound("i3", testApp, "track my parcel", "Ana", t0),
	)...))
	want := []string{wantID("i1", `^order \d+$`), wantID("i2", "*"), wantID("i3", "TRACK")}
	if len(ds) != len(want) {
		t.Fatalf("%d replies", len(ds))
	}
	for i, d := range ds {
		if d.ID != want[i] {
			t.Errorf("reply %d (%s): id %s, want %s", i, d.Source.Name, d.ID, want[i])
		}
	}
	for _, mode := range []string{ModePattern, ModeAny} {
		want := map[string]float64{ModePattern: 2, ModeAny: 1}[mode]
		if got := s.metric(t, "herald_segmenter_keyword_matches_total", "mode", mode); got != want {
			t.Errorf("matches{%s} = %v, want %v", mode, got, want)
		}
	}
}
