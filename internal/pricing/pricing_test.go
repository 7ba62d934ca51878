package pricing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testCard has round rates, so that every expected amount is plain.
const testCard = `Market,Currency,Marketing,Utility,Authentication,Authentication-International,Service
India,USD,0.01,0.002,0.003,0.03,0.0025
Morocco,USD,0.05,0.005,0.006,0.07,
Rest of Africa,USD,0.02,0.004,0.004,n/a,n/a
Other,USD,0.06,0.008,0.009,n/a,n/a
`

func parseTest(t *testing.T, card string, cfg Config) *Table {
	t.Helper()
	path := filepath.Join(t.TempDir(), "card.csv")
	if err := os.WriteFile(path, []byte(card), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.File = path
	tb, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tb
}

func TestCostRules(t *testing.T) {
	july := parseTest(t, testCard, Config{})
	oct := parseTest(t, testCard, Config{Rules: RulesOctober2026})
	intl := parseTest(t, testCard, Config{BusinessCountry: "gb"})
	home := parseTest(t, testCard, Config{BusinessCountry: "IN"})
	for _, tt := range []struct {
		name     string
		tb       *Table
		category string
		country  string
		inWindow bool
		amount   string
		billable bool
	}{
		{"marketing outside the window", july, "MARKETING", "IN", false, "0.01", true},
		{"marketing inside the window is still charged", july, "MARKETING", "IN", true, "0.01", true},
		{"authentication inside the window is still charged", july, "AUTHENTICATION", "IN", true, "0.003", true},
		{"utility outside the window", july, "UTILITY", "IN", false, "0.002", true},
		{"utility inside the window is free", july, "UTILITY", "IN", true, "0", false},
		{"service is free", july, "SERVICE", "IN", true, "0", false},
		{"2026-10: utility inside the window is charged", oct, "UTILITY", "IN", true, "0.002", true},
		{"2026-10: service at the service rate", oct, "SERVICE", "IN", true, "0.0025", true},
		{"2026-10: service without a service rate at the utility rate", oct, "SERVICE", "MA", true, "0.005", true},
		{"2026-10: marketing unchanged", oct, "MARKETING", "IN", false, "0.01", true},
		{"Meta's lower-case category", july, "marketing", "IN", false, "0.01", true},
		{"marketing_lite is priced as marketing", july, "marketing_lite", "IN", false, "0.01", true},
		{"authentication-international reported by Meta", july, "authentication-international", "IN", false, "0.03", true},
		{"authentication_international where the market has no such rate", july, "AUTHENTICATION_INTERNATIONAL", "KE", false, "0.004", true},
		{"business abroad: international rate", intl, "AUTHENTICATION", "IN", false, "0.03", true},
		{"business abroad, market without an international rate", intl, "AUTHENTICATION", "KE", false, "0.004", true},
		{"business at home: domestic rate", home, "AUTHENTICATION", "IN", false, "0.003", true},
		{"no business country: domestic rate", july, "AUTHENTICATION", "IN", false, "0.003", true},
		{"unknown category", july, "PROMOTIONAL", "IN", false, "0", false},
		{"lower-case country", july, "MARKETING", "in", false, "0.01", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			amount, cur, billable := tt.tb.Cost(tt.category, tt.country, tt.inWindow)
			if amount.String() != tt.amount || billable != tt.billable || cur != "USD" {
				t.Fatalf("Cost(%q, %q, %v) = %s %s %v, want %s USD %v", tt.category, tt.country, tt.inWindow, amount, cur, billable, tt.amount, tt.billable)
			}
		})
	}
}

func TestMarketFallback(t *testing.T) {
	tb := parseTest(t, testCard, Config{})
	f := func(country, market, marketing string) {
		t.Helper()
		if got := tb.Market(country); got != market {
			t.Fatalf("Market(%q) = %q, want %q", country, got, market)
		}
		p, ok := tb.Lookup("MARKETING", country)
		if !ok || p.Amount.String() != marketing || p.Market != market || p.Currency != "USD" {
			t.Fatalf("Lookup(MARKETING, %q) = %+v %v, want %s in %s", country, p, ok, marketing, market)
		}
	}
	f("IN", "India", "0.01")
	f("MA", "Morocco", "0.05")        // its own row beats its region, Rest of Africa
	f("KE", "Rest of Africa", "0.02") // a member of a region on the card
	f("NO", "Other", "0.06")          // its region (Rest of Western Europe) is not on this card
	f("EE", "Other", "0.06")          // in no region
	f("", "Other", "0.06")            // unknown country
	f("UK", "Other", "0.06")          // not an ISO code
	if _, ok := tb.Lookup("AUTHENTICATION_INTERNATIONAL", "KE"); ok {
		t.Fatal("Rest of Africa publishes no international authentication rate")
	}
	if p, ok := tb.Lookup("SERVICE", "IN"); !ok || p.Amount != 2500 {
		t.Fatalf("India's service rate %+v %v", p, ok)
	}
	if _, ok := tb.Lookup("SPAM", "IN"); ok {
		t.Fatal("an unknown category has a rate")
	}
}

// TestDefaultCard checks the embedded card: it loads, says what it is, and
// prices the markets it names as Meta's card of 2026-01-01 does.
func TestDefaultCard(t *testing.T) {
	tb, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if tb.Currency() != "USD" || tb.Markets() != 32 || tb.Rules() != RulesJuly2025 ||
		!strings.Contains(tb.Source(), "embedded") || !strings.Contains(tb.Source(), "effective January 1, 2026") {
		t.Fatalf("default card: %s, %d markets, rules %s, source %q", tb.Currency(), tb.Markets(), tb.Rules(), tb.Source())
	}
	for _, tt := range []struct {
		category, country, market, amount string
	}{
		{"MARKETING", "IN", "India", "0.0118"},
		{"UTILITY", "BR", "Brazil", "0.0068"},
		{"AUTHENTICATION", "US", "North America", "0.0034"},
		{"MARKETING", "CA", "North America", "0.025"},
		{"MARKETING", "NO", "Rest of Western Europe", "0.0592"},
		{"MARKETING", "MA", "Rest of Africa", "0.0225"},
		{"UTILITY", "PL", "Rest of Central & Eastern Europe", "0.0212"},
		{"MARKETING", "JP", "Rest of Asia Pacific", "0.0732"},
		{"MARKETING", "JM", "Rest of Latin America", "0.074"},
		{"MARKETING", "QA", "Rest of Middle East", "0.0341"},
		{"MARKETING", "EE", "Other", "0.0604"},
		{"MARKETING", "GG", "United Kingdom", "0.0529"},         // a +44 number
		{"MARKETING", "AX", "Rest of Western Europe", "0.0592"}, // +358, Finland's code
		{"AUTHENTICATION_INTERNATIONAL", "ID", "Indonesia", "0.136"},
	} {
		p, ok := tb.Lookup(tt.category, tt.country)
		if !ok || p.Market != tt.market || p.Amount.String() != tt.amount {
			t.Errorf("Lookup(%s, %s) = %+v %v, want %s in %s", tt.category, tt.country, p, ok, tt.amount, tt.market)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad rules", Config{Rules: "2024"}, `rules "2024"`},
		{"bad business country", Config{BusinessCountry: "UK"}, `business_country "UK"`},
		{"missing file", Config{File: "/nonexistent/card.csv"}, "opening the rate card"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %s", err, tt.want)
			}
		})
	}
	c := Config{BusinessCountry: " in "}
	if err := c.Validate(); err != nil || c.BusinessCountry != "IN" || c.Rules != RulesJuly2025 {
		t.Fatalf("Validate: %v %+v", err, c)
	}
	big := filepath.Join(t.TempDir(), "big.csv")
	if err := os.WriteFile(big, make([]byte, maxCardBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{File: big}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a huge file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("Market,Currency,Marketing,Utility,Authentication\nOther,USD,x,1,1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{File: bad}); err == nil || !strings.Contains(err.Error(), bad+": line 2") {
		t.Fatalf("a bad file's error names the file and the line: %v", err)
	}
}

func TestParseCategory(t *testing.T) {
	for in, want := range map[string]Category{
		"MARKETING": Marketing, " utility ": Utility, "Authentication": Authentication, "marketing_lite": Marketing,
		"authentication-international": AuthenticationInternational, "AUTHENTICATION_INTERNATIONAL": AuthenticationInternational,
		"service": Service,
	} {
		if got, err := ParseCategory(in); err != nil || got != want {
			t.Errorf("ParseCategory(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "TRANSACTIONAL", "referral_conversion", strings.Repeat("x", 1000)} {
		if _, err := ParseCategory(in); err == nil || len(err.Error()) > 200 {
			t.Errorf("ParseCategory(%.20q): %v", in, err)
		}
	}
}

// BenchmarkCost is the analytics sink's use: one Cost per send.
func BenchmarkCost(b *testing.B) {
	tb, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	countries := []string{"IN", "BR", "NO", "US", "EE", "", "MA"}
	b.ReportAllocs()
	var sum Micros
	for i := 0; b.Loop(); i++ {
		a, _, _ := tb.Cost("UTILITY", countries[i%len(countries)], i%2 == 0)
		sum += a
	}
	_ = sum
}
