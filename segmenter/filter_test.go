package segmenter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// filterNow is the clock of the filter tests.
var filterNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// filterProfiles are ana (a rich profile), bob (other types and values)
// and an empty profile, in the order of the want strings of the tests.
func filterProfiles() []*Profile {
	ago := func(d time.Duration) time.Time { return filterNow.Add(-d) }
	day := 24 * time.Hour
	ana := &Profile{
		Registered: true, DeviceType: 21, UserID: "u1", Language: "pt", Timezone: "America/Sao_Paulo",
		Country: "BR", WhatsApp: "+5511999990000",
		tags: map[string]Tag{
			"Name":          {Kind: TagString, Str: "Ana"},
			"Age":           {Kind: TagNumber, Num: 28},
			"VIP":           {Kind: TagBool, Bool: true},
			"Cuisines":      {Kind: TagList, List: []string{"asian", "italian"}},
			"Last Purchase": {Kind: TagString, Str: "2025-05-20 10:00"},
			"Signup":        {Kind: TagString, Str: "2025-01-10T08:00:00Z"},
			"App Version":   {Kind: TagString, Str: "1.10.2"},
			"Sizes":         {Kind: TagList, List: []string{"36", "40.5"}},
		},
		FirstSeen: ago(100 * day), LastSeen: ago(time.Hour), LastInbound: ago(2 * time.Hour), FirstInstall: ago(100 * day), AppVersion: "2.10.0",
		Events: []EventCount{
			{Name: "PW_ApplicationOpen", Count: 10, First: ago(100 * day), Last: ago(day)},
			{Name: "OrderPlaced", Count: 4, First: ago(60 * day), Last: ago(3 * day), attrs: []Attr{
				{"cuisine", Tag{Kind: TagString, Str: "asian"}},
				{"items", Tag{Kind: TagList, List: []string{"maki", "gyoza"}}},
				{"total", Tag{Kind: TagNumber, Num: 42.5}},
			}},
		},
	}
	bob := &Profile{
		Country: "US",
		tags: map[string]Tag{
			"Name":        {Kind: TagString, Str: "Bob"},
			"Age":         {Kind: TagString, Str: "28"},
			"VIP":         {Kind: TagBool},
			"Cuisines":    {Kind: TagList, List: []string{"mexican"}},
			"App Version": {Kind: TagString, Str: "1.9"},
			"Signup":      {Kind: TagString, Str: "not a date"},
		},
		Events: []EventCount{{Name: "OrderPlaced", Count: 1, Last: ago(45 * day)}},
	}
	return []*Profile{ana, bob, {}}
}

func TestFilterMatch(t *testing.T) {
	profiles := filterProfiles()
	f := func(src, want string) {
		t.Helper()
		t.Run(src, func(t *testing.T) {
			flt, err := Compile("shop", src)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			var got strings.Builder
			for _, p := range profiles {
				if flt.Match(p, filterNow) {
					got.WriteByte('1')
				} else {
					got.WriteByte('0')
				}
			}
			if got.String() != want {
				t.Errorf("ana, bob, empty: got %s, want %s", got.String(), want)
			}
			again, err := Compile("shop", flt.String())
			if err != nil {
				t.Fatalf("compiling the canonical form %s: %v", flt.String(), err)
			}
			if again.String() != flt.String() {
				t.Errorf("canonical form %s compiles to %s", flt.String(), again.String())
			}
		})
	}
	// Strings: exact, case-sensitive.
	f(`T("Name", EQ, "Ana")`, "100")
	f(`T("Name", EQ, "ana")`, "000")
	f(`T("Name", NOTEQ, "Ana")`, "011")
	f(`T("Country", IN, ["BR", "PT"])`, "100")
	f(`T("Country", IN, "US", "BR")`, "110")
	f(`T("Country", NOTIN, ["BR"])`, "011")
	// Lists: membership.
	f(`T("Cuisines", IN, ["asian", "thai"])`, "100")
	f(`T("Cuisines", EQ, "mexican")`, "010")
	f(`T("Cuisines", NOTIN, ["asian"])`, "011")
	f(`T("Cuisines", ANY)`, "110")
	// Numbers: numerically with number tags; EQ and IN also match string
	// and list tags by their decimal form (bob's "28" is a string).
	f(`T("Age", EQ, 28)`, "110")
	f(`T("Age", EQ, 28.0)`, "110")
	f(`T("Age", EQ, 2.8e1)`, "110")
	f(`T("Age", EQ, "28")`, "010")
	f(`T("Age", NOTEQ, 28)`, "001")
	f(`T("Age", GTE, 28)`, "100")
	f(`T("Age", GTE, 29)`, "000")
	f(`T("Age", LTE, 28)`, "100")
	f(`T("Age", LTE, 27.5)`, "000")
	f(`T("Age", BETWEEN, [18, 30])`, "100")
	f(`T("Age", BETWEEN, 29, 40)`, "000")
	f(`T("Age", BETWEEN, [28, 28])`, "100")
	f(`T("Age", IN, [27, 28])`, "110")
	f(`T("Age", NOTIN, [28])`, "001")
	f(`T("Sizes", IN, [38, 40.5])`, "100")
	f(`T("Sizes", GTE, 38)`, "000")
	// Booleans.
	f(`T("VIP", EQ, true)`, "100")
	f(`T("VIP", EQ, false)`, "010")
	f(`T("VIP", NOTEQ, true)`, "011")
	f(`T("VIP", ANY)`, "110")
	f(`T("VIP", NOTSET)`, "001")
	// Dates: Pushwoosh's format and RFC 3339; absolute and relative.
	f(`T("Last Purchase", GTE, "2025-05-20")`, "100")
	f(`T("Last Purchase", GTE, "2025-05-20 10:01")`, "000")
	f(`T("Last Purchase", LTE, "2025-05-20 10:00")`, "100")
	f(`T("Last Purchase", LTE, "2025-05-20 09:59:59")`, "000")
	f(`T("Last Purchase", GTE, -30d)`, "100")
	f(`T("Last Purchase", GTE, "-30d")`, "100")
	f(`T("Last Purchase", GTE, -7d)`, "000")
	f(`T("Last Purchase", BETWEEN, [-14d, -7d])`, "100")
	f(`T("Last Purchase", BETWEEN, [-2w, -288h])`, "100")
	f(`T("Last Purchase", LTE, +1m)`, "100")
	f(`T("Signup", BETWEEN, ["2025-01-01", "2025-02-01"])`, "100")
	f(`T("Signup", BETWEEN, ["2025-01-01", -30d])`, "100")
	f(`T("Signup", GTE, "2025-01-10T08:00:00Z")`, "100")
	f(`T("Name", GTE, -30d)`, "000") // not a date
	// Versions: by dotted parts.
	f(`T("App Version", GTE, "1.10")`, "100")
	f(`T("App Version", LTE, "1.9")`, "010")
	f(`T("App Version", LTE, "1.9.0")`, "010")
	f(`T("App Version", GTE, "1.9")`, "110")
	f(`T("App Version", BETWEEN, ["1.9", "1.10.2"])`, "110")
	f(`T("App Version", BETWEEN, ["1.9.1", "1.10.1"])`, "000")
	f(`T("App Version", EQ, "1.9")`, "010")
	f(`T("Name", GTE, "1")`, "000") // not a version
	// Default tags.
	f(`T("Language", EQ, "pt")`, "100")
	f(`T("Country", EQ, "US")`, "010")
	f(`T("Timezone", NOTSET)`, "011")
	f(`T("User ID", ANY)`, "100")
	f(`T("WhatsApp Number", EQ, "+5511999990000")`, "100")
	f(`T("Device Type", EQ, 21)`, "100")
	f(`T("Device Type", ANY)`, "100")
	f(`T("Registered", EQ, true)`, "100")
	f(`T("Registered", EQ, false)`, "011")
	f(`T("Opted Out", EQ, false)`, "111")
	f(`T("First Seen", LTE, -90d)`, "100")
	f(`T("First Install", BETWEEN, [-101d, -99d])`, "100")
	f(`T("First Seen", BETWEEN, [-101d, -99d])`, "100")
	f(`T("Application Version", GTE, "2.1")`, "100")
	f(`T("Application Version", EQ, "2.10.0")`, "100")
	f(`T("Last Seen", GTE, -2h)`, "100")
	f(`T("Last Inbound", GTE, -24h)`, "100")
	f(`T("Last Inbound", NOTSET)`, "011")
	f(`T("Last Application Open", GTE, -2d)`, "100")
	// Events.
	f(`Event("OrderPlaced")`, "110")
	f(`Event("Nope")`, "000")
	f(`Event("OrderPlaced", COUNT, GTE, 3)`, "100")
	f(`Event("OrderPlaced", COUNT, EQ, 0)`, "001")
	f(`Event("OrderPlaced", COUNT, NOTEQ, 1)`, "101")
	f(`Event("OrderPlaced", COUNT, LTE, 1)`, "011")
	f(`Event("OrderPlaced", COUNT, BETWEEN, [1, 2])`, "010")
	f(`Event("OrderPlaced", COUNT, IN, [1, 4])`, "110")
	f(`Event("OrderPlaced", LAST, GTE, -30d)`, "100")
	f(`Event("OrderPlaced", LAST, LTE, -30d)`, "010")
	f(`Event("OrderPlaced", LAST, BETWEEN, ["2025-04-01", "2025-04-30"])`, "010")
	f(`Event("OrderPlaced", LAST, ANY)`, "110")
	f(`Event("OrderPlaced", LAST, NOTSET)`, "001")
	f(`Event("OrderPlaced", FIRST, LTE, -30d)`, "100")
	f(`Event("OrderPlaced", FIRST, GTE, -30d)`, "000")
	// Attributes of the latest event of a name: the sushi example.
	f(`Event("OrderPlaced", "cuisine", EQ, "asian")`, "100")
	f(`Event("OrderPlaced", "cuisine", IN, ["asian", "thai"]) * Event("OrderPlaced", LAST, GTE, -90d)`, "100")
	f(`Event("OrderPlaced", "total", GTE, 40)`, "100")
	f(`Event("OrderPlaced", "items", IN, "gyoza")`, "100")
	f(`Event("OrderPlaced", "cuisine", NOTSET)`, "011")
	f(`Event("OrderPlaced", "cuisine", NOTEQ, "asian")`, "011")
	// App, case-insensitive keywords, single quotes.
	f(`A("shop")`, "111")
	f(`t('Name', eq, 'Ana')`, "100")
	f(`event("OrderPlaced", count, gte, 3)`, "100")
	// Set operations and precedence.
	f(`T("Name", EQ, "Ana") + T("Name", EQ, "Bob")`, "110")
	f(`T("Name", EQ, "Ana") * T("Country", EQ, "BR")`, "100")
	f(`A("shop") \ T("Country", EQ, "BR")`, "011")
	f(`T("Name", EQ, "Ana") + T("Country", EQ, "US") * T("VIP", EQ, true)`, "100")    // + is loosest
	f(`(T("Name", EQ, "Ana") + T("Country", EQ, "US")) * T("VIP", EQ, false)`, "010") // parentheses
	f(`A("shop") \ T("Country", EQ, "BR") \ T("Country", EQ, "US")`, "001")           // left to right
	f(`A("shop") \ (T("Country", EQ, "BR") \ T("Name", EQ, "Ana"))`, "111")
	f(`A("shop") \ T("Country", EQ, "BR") * T("Country", EQ, "US")`, "010") // (a \ b) * c
	f(`T("Country", EQ, "US") * A("shop") \ T("VIP", EQ, true)`, "010")
	f(`((((A("shop")))))`, "111")
	// The sushi example of PRODUCT.md: users who ordered Asian food before.
	// Profiles keep no event attributes yet, so the cuisine is a list tag.
	f(`T("Cuisines", IN, "asian") \ T("Opted Out", EQ, true)`, "100")
	f(`Event("OrderPlaced", LAST, GTE, -90d) * T("Cuisines", IN, ["asian", "japanese"]) * T("Registered", EQ, true)`, "100")
}

func TestFilterDefaultTagShadowed(t *testing.T) {
	// A user tag named like a default tag wins, as in getTags.
	p := &Profile{Language: "pt", tags: map[string]Tag{"Language": {Kind: TagString, Str: "es"}}}
	for src, want := range map[string]bool{`T("Language", EQ, "es")`: true, `T("Language", EQ, "pt")`: false} {
		f, err := Compile("shop", src)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(p, filterNow); got != want {
			t.Errorf("%s: got %v, want %v", src, got, want)
		}
	}
}

func TestFilterString(t *testing.T) {
	f := func(src, want string) {
		t.Helper()
		flt, err := Compile("shop", src)
		if err != nil {
			t.Fatalf("Compile(%s): %v", src, err)
		}
		if got := flt.String(); got != want {
			t.Errorf("Compile(%s).String() = %s, want %s", src, got, want)
		}
	}
	f(`t("a",eq,'x')`, `T("a", EQ, "x")`)
	f(`T("a", IN, "x", "y")`, `T("a", IN, ["x", "y"])`)
	f(`T("a", IN, "x")`, `T("a", IN, ["x"])`)
	f(`T("d", GTE, "-30d")`, `T("d", GTE, -30d)`)
	f(`T("d", GTE, -720h)`, `T("d", GTE, -30d)`)
	f(`T("d", LTE, +90m)`, `T("d", LTE, +90m)`)
	f(`T("d", BETWEEN, [-2w, -0d])`, `T("d", BETWEEN, [-14d, +0d])`)
	f(`T("d", GTE, "2025-06-01")`, `T("d", GTE, "2025-06-01 00:00")`)
	f(`T("d", GTE, "2025-06-01T10:30:15.5Z")`, `T("d", GTE, "2025-06-01 10:30:15")`)
	f(`T("v", GTE, "01.2")`, `T("v", GTE, "1.2")`)
	f(`T("n", EQ, 1e3)`, `T("n", EQ, 1000)`)
	f(`T("n", EQ, -2.50)`, `T("n", EQ, -2.5)`)
	f(`T("b", NOTEQ, TRUE)`, `T("b", NOTEQ, true)`)
	f(`T("a\"b", EQ, 'c\\d\'')`, `T("a\"b", EQ, "c\\d'")`)
	f(`T("a", notset)`, `T("a", NOTSET)`)
	f(`Event("x",count,gte,3)`, `Event("x", COUNT, GTE, 3)`)
	f(`Event("x", last, ANY)`, `Event("x", LAST, ANY)`)
	f(`(A("shop") + A("shop")) * A("shop")`, `(A("shop") + A("shop")) * A("shop")`)
	f(`A("shop") + (A("shop") * A("shop"))`, `A("shop") + A("shop") * A("shop")`)
	f(`(A("shop") * A("shop")) + A("shop")`, `A("shop") * A("shop") + A("shop")`)
	f(`A("shop") \ (A("shop") \ A("shop"))`, `A("shop") \ (A("shop") \ A("shop"))`)
	f(`(A("shop") \ A("shop")) \ A("shop")`, `A("shop") \ A("shop") \ A("shop")`)
	f(`A("shop") + (A("shop") + A("shop"))`, `A("shop") + (A("shop") + A("shop"))`)
	f("\tA(\"shop\")\n*\nA(\"shop\")  ", `A("shop") * A("shop")`)
}

func TestFilterFields(t *testing.T) {
	f, err := Compile("shop", `T("b", EQ, 1) * T("a", ANY) + T("Country", EQ, "BR") * Event("Z") \ Event("Y", COUNT, GTE, 2) * T("b", LTE, 3) * T("Last Seen", GTE, -1d) * T("Last Application Open", ANY) * A("shop")`)
	if err != nil {
		t.Fatal(err)
	}
	tags, events, defaults := f.Fields()
	if got, want := strings.Join(tags, ","), "Country,a,b"; got != want {
		t.Errorf("tags: got %s, want %s", got, want)
	}
	if got, want := strings.Join(events, ","), "PW_ApplicationOpen,Y,Z"; got != want {
		t.Errorf("events: got %s, want %s", got, want)
	}
	if got, want := strings.Join(defaults, ","), "Country,Last Application Open,Last Seen"; got != want {
		t.Errorf("defaults: got %s, want %s", got, want)
	}
	if !f.UsesNow() {
		t.Error("UsesNow: got false for a filter with -1d")
	}
	g, err := Compile("shop", `T("d", GTE, "2025-01-01")`)
	if err != nil {
		t.Fatal(err)
	}
	if g.UsesNow() {
		t.Error("UsesNow: got true for a filter without relative times")
	}
}

func TestFilterSeenOnly(t *testing.T) {
	for src, want := range map[string]bool{
		`T("Last Seen", GTE, -7d)`:                                   true,
		`T("First Seen", LTE, "2025-01-01") * A("shop")`:             true,
		`T("Last Seen", GTE, -7d) \ T("Last Seen", GTE, -1d)`:        true,
		`T("Last Seen", GTE, -7d) * T("tier", EQ, "gold")`:           false,
		`T("Last Seen", GTE, -7d) + Event("Purchase")`:               false,
		`T("Last Seen", GTE, -7d) * T("Country", EQ, "BR")`:          false,
		`T("Last Inbound", GTE, -1d)`:                                false,
		`A("shop")`:                                                  false, // reads nothing: every change
		`T("Last Seen", GTE, -7d) * T("Last Application Open", ANY)`: false,
	} {
		f, err := Compile("shop", src)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.SeenOnly(); got != want {
			t.Errorf("%s: SeenOnly %v, want %v", src, got, want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	f := func(src string, pos int, msg string) {
		t.Helper()
		name := src
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			_, err := Compile("shop", src)
			var fe *FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FilterError", err)
			}
			if fe.Pos != pos || fe.Msg != msg {
				t.Errorf("got %q\nwant %q", fe.Error(), (&FilterError{Pos: pos, Msg: msg}).Error())
			}
		})
	}
	f(``, 1, `empty filter: expected a condition such as T("tag", EQ, "value")`)
	f(`   `, 4, `empty filter: expected a condition such as T("tag", EQ, "value")`)
	f(`T("tag")`, 8, `expected ',' after the tag name, got ')'`)
	f(`T("Cuisines" IN, "asian")`, 14, `expected ',' after the tag name, got IN`)
	f(`T(Cuisines, IN, "asian")`, 3, `expected the tag name (a string) in T(, got Cuisines`)
	f(`T "a", ANY)`, 3, `expected '(' after T, got string "a"`)
	f(`T("", ANY)`, 3, `empty tag name`)
	f(`T("Age", GTX, 3)`, 10, `unknown operator GTX: expected one of EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE, ANY, NOTSET`)
	f(`T("Age", 3)`, 10, `expected an operator (EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE, ANY, NOTSET), got number 3`)
	f(`T("Age", EQ)`, 12, `expected ',' after EQ, got ')'`)
	f(`T("Age", EQ, )`, 14, `expected a value (a string, a number, true, false or a relative time such as -30d), got ')'`)
	f(`T("Age", EQ, 1, 2)`, 17, `EQ takes one value`)
	f(`T("Age", EQ, 1 2)`, 16, `expected ')' after the value, got number 2`)
	f(`T("Age", IN, [1, 2)`, 19, `expected ',' or ']' in the list of values, got ')'`)
	f(`T("Age", IN, [])`, 15, `IN needs at least one value`)
	f(`T("Age", IN, [true])`, 15, `IN takes no boolean: booleans go with EQ and NOTEQ`)
	f(`T("Age", IN, ["x", 1])`, 20, `IN values must be of one type: a string and a number`)
	f(`T("Age", ANY, 1)`, 13, `ANY takes no value`)
	f(`T("Age", GTE, true)`, 15, `GTE does not order booleans`)
	f(`T("Age", BETWEEN, ["a", "b"])`, 20, `BETWEEN needs a number, a date ("2025-06-01" or "2025-06-01 10:30"), a relative time (-30d) or a version ("1.2.10"), got string "a"`)
	f(`T("Age", BETWEEN, [30, 18])`, 20, `BETWEEN bounds are reversed: the low bound comes first`)
	f(`T("Age", BETWEEN, [1])`, 10, `BETWEEN takes two values, [low, high], got 1`)
	f(`T("Age", BETWEEN, 1, 2, 3)`, 25, `BETWEEN takes two values, [low, high], got 3`)
	f(`T("Age", BETWEEN, [1, "1.2"])`, 23, `BETWEEN values must be of one type: a number and a version`)
	f(`T("d", LTE, "yesterday")`, 13, `LTE needs a number, a date ("2025-06-01" or "2025-06-01 10:30"), a relative time (-30d) or a version ("1.2.10"), got string "yesterday"`)
	f(`T("d", LTE, "2025-02-30")`, 13, `LTE needs a number, a date ("2025-06-01" or "2025-06-01 10:30"), a relative time (-30d) or a version ("1.2.10"), got string "2025-02-30"`)
	f(`T("d", GTE, 30d)`, 13, `relative time 30d needs a sign: -30d is 30d ago, +30d is 30d ahead`)
	f(`T("d", GTE, -30y)`, 13, `unknown unit in -30y: relative times end in m, h, d or w (-30d)`)
	f(`T("d", GTE, -1.5d)`, 13, `malformed relative time -1.5d: the count is a whole number (-30d)`)
	f(`T("d", GTE, -99999999d)`, 13, `relative time -99999999d is beyond 100 years`)
	f(`T("d", GTE, "-3x")`, 13, `unknown unit in -3x: relative times end in m, h, d or w (-30d)`)
	f(`T("d", EQ, -30d)`, 12, `EQ takes no relative time (-30d): relative times go with GTE, LTE and BETWEEN`)
	f(`T("n", EQ, 1e999)`, 12, `number 1e999 is out of range`)
	f(`T("n", EQ, 1.)`, 12, `malformed number 1.`)
	f(`T("n", EQ, 3abc)`, 12, `malformed number 3abc`)
	f(`T("n", EQ, 3d)`, 12, `relative time 3d needs a sign: -3d is 3d ago, +3d is 3d ahead`)
	f(`T("Country", GTE, 3)`, 19, `tag "Country" is a string: GTE with a number never matches it (strings take EQ, NOTEQ, IN, NOTIN with strings, ANY, NOTSET)`)
	f(`T("Registered", EQ, 1)`, 21, `tag "Registered" is a boolean: EQ with a number never matches it (booleans take EQ, NOTEQ with true or false)`)
	f(`T("Device Type", EQ, "21")`, 22, `tag "Device Type" is a number: EQ with a string never matches it (numbers take EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE with numbers)`)
	f(`T("Last Seen", EQ, "2025-06-01")`, 20, `tag "Last Seen" is a time: EQ with a string never matches it (times take GTE, LTE, BETWEEN with dates or relative times, ANY, NOTSET)`)
	f(`Event("x", COUNT, EQ, "3")`, 23, `Event "x" COUNT is a number: EQ with a string never matches it (numbers take EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE with numbers)`)
	f(`Event("x", COUNT, GTE, -1d)`, 24, `Event "x" COUNT is a number: GTE with a relative time never matches it (numbers take EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE with numbers)`)
	f(`Event("x", COUNT, ANY)`, 19, `Event "x" COUNT: COUNT is always set (0 when the event never happened), use GTE 1 or EQ 0`)
	f(`Event("x", LAST, GTE, 3)`, 23, `Event "x" LAST is a time: GTE with a number never matches it (times take GTE, LTE, BETWEEN with dates or relative times, ANY, NOTSET)`)
	f(`Event("x", FIRST, GTE, 3)`, 24, `Event "x" FIRST is a time: GTE with a number never matches it (times take GTE, LTE, BETWEEN with dates or relative times, ANY, NOTSET)`)
	f(`Event("OrderPlaced", "", EQ, "asian")`, 22, `empty attribute name`)
	f(`Event("x", TIMES, GTE, 3)`, 12, `expected COUNT, FIRST, LAST or an attribute name (a string) after the event name, got TIMES`)
	f(`Event("x" COUNT)`, 11, `expected ',' or ')' after the event name, got COUNT`)
	f(`Event("")`, 7, `empty event name`)
	f(`A("other")`, 3, `A("other") names another app: this segment belongs to app "shop"`)
	f(`A("shop", ["iOS"])`, 9, `A(...) takes no platform list in Herald: use T("Device Type", EQ, 21) for WhatsApp`)
	f(`AT("shop", "a", EQ, 1)`, 1, `AT(...) is not supported: a Herald segment belongs to one app, use T(...) for its tags`)
	f(`X("a")`, 1, `expected a condition (T(...), A(...), Event(...)) or '(', got X`)
	f(`T("a", ANY) T("b", ANY)`, 13, `expected '*', '+', '\' or the end of the filter, got T`)
	f(`T("a", ANY) *`, 14, `expected a condition (T(...), A(...), Event(...)) or '(', got end of filter`)
	f(`T("a", ANY) & T("b", ANY)`, 13, `unexpected character '&'`)
	f(`(T("a", ANY)`, 13, `expected ')' to close the '(' at column 1, got end of filter`)
	f(`T("a", ANY))`, 12, `unbalanced ')'`)
	f(`T(“a”, ANY)`, 3, `curly quote '“': strings take straight quotes (")`)
	f(`T("a, ANY)`, 3, `unterminated string`)
	f(`T("a\n", ANY)`, 5, `unknown escape \n: only \" and \\ are escapes`)
	f(`T("é", ANY) * T("b", GTX)`, 22, `unknown operator GTX: expected one of EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE, ANY, NOTSET`) // columns count characters
	f("T(\"a\xff\", ANY)", 5, `invalid UTF-8`)
	f(strings.Repeat("(", 33)+`A("shop")`+strings.Repeat(")", 33), 33, `parentheses nested deeper than 32`)
	f(strings.Repeat(" ", MaxFilterLen+1), MaxFilterLen+1, `filter is 4097 bytes long, at most 4096 are allowed`)
}

func TestFilterLimits(t *testing.T) {
	src := strings.Repeat("(", MaxFilterDepth) + `A("shop")` + strings.Repeat(")", MaxFilterDepth)
	if _, err := Compile("shop", src); err != nil {
		t.Errorf("%d levels: %v", MaxFilterDepth, err)
	}
	// The longest filter compiles and matches, however deep its chain.
	cond := `A("shop")*`
	src = strings.Repeat(cond, (MaxFilterLen-len(`A("shop")`))/len(cond)) + `A("shop")`
	f, err := Compile("shop", src)
	if err != nil {
		t.Fatalf("%d bytes: %v", len(src), err)
	}
	if !f.Match(&Profile{}, filterNow) {
		t.Error("a chain of A(\"shop\") does not match")
	}
}

func TestFilterMatchAllocs(t *testing.T) {
	f, err := Compile("shop", benchFilter)
	if err != nil {
		t.Fatal(err)
	}
	p := filterProfiles()[0]
	if n := testing.AllocsPerRun(100, func() { f.Match(p, filterNow) }); n != 0 {
		t.Errorf("Match allocates %v times per call", n)
	}
}

func TestParseDate(t *testing.T) {
	f := func(s string, want string) {
		t.Helper()
		sec, ok := parseDate(s)
		got := ""
		if ok {
			got = time.Unix(sec, 0).UTC().Format(time.RFC3339)
		}
		if got != want {
			t.Errorf("parseDate(%q) = %q, want %q", s, got, want)
		}
	}
	f("2025-06-01", "2025-06-01T00:00:00Z")
	f("2025-06-01 10:30", "2025-06-01T10:30:00Z")
	f("2025-06-01T10:30:15Z", "2025-06-01T10:30:15Z")
	f("2025-06-01T10:30:15.123456Z", "2025-06-01T10:30:15Z")
	f("2025-06-01T10:30:15+00:00", "2025-06-01T10:30:15Z")
	f("2024-02-29", "2024-02-29T00:00:00Z")
	f("2025-02-29", "")
	f("2025-06-01T10:30:15+02:00", "") // only UTC, as tags are stored
	f("2025-13-01", "")
	f("2025-06-01 24:00", "")
	f("2025-06-01 10", "")
	f("2025-06-01T10:30:15.Z", "")
	f("20250601", "")
	f("", "")
}

func TestCompareVersion(t *testing.T) {
	f := func(s, lit string, want int, wantOK bool) {
		t.Helper()
		v, ok := parseVersionLit(lit)
		if !ok {
			t.Fatalf("parseVersionLit(%q) failed", lit)
		}
		got, ok := compareVersion(s, v)
		if got != want || ok != wantOK {
			t.Errorf("compareVersion(%q, %s) = %d, %v; want %d, %v", s, lit, got, ok, want, wantOK)
		}
	}
	f("1.10", "1.9", 1, true)
	f("1.9", "1.10", -1, true)
	f("1.2", "1.2.0", 0, true)
	f("1.2.0.0", "1.2", 0, true)
	f("1.2.1", "1.2", 1, true)
	f("1.2", "1.2.1", -1, true)
	f("2", "10", -1, true)
	f("1..2", "1", 0, false)
	f("1.2.", "1", 0, false)
	f("v1.2", "1", 0, false)
	f("", "1", 0, false)
	f("99999999999", "1", 0, false)
}

// FuzzCompile compiles arbitrary filters: Compile never panics, refuses
// with a *FilterError inside the source, and what compiles matches without
// panicking and round-trips through its canonical form.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		benchFilter,
		`T("Name", EQ, "Ana") + T("Country", EQ, "US") * T("VIP", EQ, true)`,
		`A("shop") \ (T("Country", IN, ["BR", "PT"]) \ T("Age", BETWEEN, 18, 30))`,
		`Event("OrderPlaced", LAST, BETWEEN, ["2025-01-01", -7d]) + Event("x")`,
		`T("App Version", GTE, "1.10") * T("Last Purchase", LTE, "-30d") * T("VIP", NOTSET)`,
		`t('a', notin, 1, 2e3, -4.5)`, `T("Language", ANY)`, `((A("shop"))`, `T("a\"", EQ, "\\")`,
		`T(“a”, ANY)`, "T(\"\xff\", ANY)", `Event("x", COUNT, NOTEQ, 0)`, `T("d", GTE, +99w)`,
	} {
		f.Add(s)
	}
	profiles := filterProfiles()
	f.Fuzz(func(t *testing.T, src string) {
		flt, err := Compile("shop", src)
		if err != nil {
			var fe *FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is no *FilterError", err)
			}
			if fe.Pos < 1 || fe.Pos > utf8.RuneCountInString(src)+1 || fe.Msg == "" {
				t.Fatalf("error %q: position outside the source of %d characters", fe.Error(), utf8.RuneCountInString(src))
			}
			return
		}
		for _, p := range profiles {
			flt.Match(p, filterNow)
			flt.Match(p, time.Time{})
		}
		flt.Fields()
		canon := flt.String()
		if len(canon) > MaxFilterLen {
			return // the canonical form can be longer (1e3 is 1000)
		}
		again, err := Compile("shop", canon)
		if err != nil {
			t.Fatalf("canonical form %s of %q does not compile: %v", canon, src, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form %s compiles to %s", canon, again.String())
		}
		for _, p := range profiles {
			if flt.Match(p, filterNow) != again.Match(p, filterNow) {
				t.Fatalf("%q and its canonical form %s disagree", src, canon)
			}
		}
	})
}

func ExampleCompile() {
	f, err := Compile("shop", `Event("OrderPlaced", last, GTE, "-90d") * T("Cuisines", IN, "asian") \ T("Opted Out", EQ, true)`)
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := &Profile{
		tags:   map[string]Tag{"Cuisines": {Kind: TagList, List: []string{"asian", "italian"}}},
		Events: []EventCount{{Name: "OrderPlaced", Count: 2, Last: now.Add(-72 * time.Hour)}},
	}
	fmt.Println(f)
	fmt.Println(f.Match(p, now))
	tags, events, defaults := f.Fields()
	fmt.Println(tags, events, defaults, f.UsesNow())

	_, err = Compile("shop", `T("Cuisines" IN, "asian")`)
	fmt.Println(err)
	// Output:
	// Event("OrderPlaced", LAST, GTE, -90d) * T("Cuisines", IN, ["asian"]) \ T("Opted Out", EQ, true)
	// true
	// [Cuisines] [OrderPlaced] [Opted Out] true
	// column 14: expected ',' after the tag name, got IN
}

// TestFieldOverrideTag: a user's own tag named like a default field
// (Language, Country, Timezone, Application Version) takes its place in
// filters, whether the tags are a map made by setTag, left encoded by a
// decode, or decoded from it; tagsPlain lets the lookup be skipped only
// where no such tag is.
func TestFieldOverrideTag(t *testing.T) {
	for _, tc := range []struct {
		field, def, own string
		set             func(p *Profile, v string)
	}{
		{"Language", "en", "nb", func(p *Profile, v string) { p.Language = v }},
		{"Country", "US", "BR", func(p *Profile, v string) { p.Country = v }},
		{"Timezone", "UTC", "Europe/Oslo", func(p *Profile, v string) { p.Timezone = v }},
		{"Application Version", "1.0", "2.0", func(p *Profile, v string) { p.AppVersion = v }},
	} {
		is := func(v string) *Filter {
			f, err := Compile(testApp, fmt.Sprintf("T(%q, EQ, %q)", tc.field, v))
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		check := func(form string, p *Profile, want string) {
			t.Helper()
			for _, v := range []string{tc.def, tc.own} {
				if got := is(v).Match(p, t0); got != (v == want) {
					t.Errorf("%s, %s: %s = %s matched %v, want %s", tc.field, form, tc.field, v, got, want)
				}
			}
		}
		decoded := func(p *Profile) *Profile {
			_, cb := appendProfiles(nil, nil, p, true)
			q, err := decodeProfile(cb)
			if err != nil {
				t.Fatal(err)
			}
			return q
		}

		p := &Profile{}
		tc.set(p, tc.def)
		p.setTag("City", Tag{Kind: TagString, Str: "Oslo"})
		check("no such tag, a map", p, tc.def)
		check("no such tag, encoded", decoded(p), tc.def)
		q := decoded(p)
		q.setTag("Plan", Tag{Kind: TagString, Str: "free"}) // decodes the tags into a map
		check("no such tag, decoded into a map", q, tc.def)

		p.setTag(tc.field, Tag{Kind: TagString, Str: tc.own})
		check("own tag set after another, a map", p, tc.own)
		check("own tag, encoded", decoded(p), tc.own)
		q = decoded(p)
		q.setTag("Plan", Tag{Kind: TagString, Str: "free"})
		check("own tag, decoded into a map", q, tc.own)

		first := &Profile{}
		tc.set(first, tc.def)
		first.setTag(tc.field, Tag{Kind: TagString, Str: tc.own})
		check("own tag set first, a map", first, tc.own)
		first.deleteTag(tc.field)
		check("own tag deleted", first, tc.def)
	}
}

// TestRelMicros checks that a relative time's bound is now plus the
// duration, to the microsecond, as time.Time.Add would give it: at times
// with nanoseconds, before 1970, and with a monotonic clock reading.
func TestRelMicros(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	nows := []time.Time{time.Now(), time.Unix(-86400*365*30, 999_999_999), time.Unix(0, 1), t0}
	for range 200 {
		nows = append(nows, time.Unix(rng.Int64N(1<<36)-1<<35, rng.Int64N(1e9)))
	}
	for _, rel := range []string{"-1m", "+1m", "-30d", "+2w", "-5h", "-36500d"} {
		d, msg := parseRel(rel)
		if msg != "" {
			t.Fatal(msg)
		}
		l := literal{kind: litRel, rel: d}
		for _, now := range nows {
			if got, want := l.micros(now), now.Add(d).UnixMicro(); got != want {
				t.Fatalf("%s at %v: %d, want %d", rel, now, got, want)
			}
		}
	}
}
