package pricing

import (
	"strings"
	"testing"
)

func parse(t *testing.T, card string) *Table {
	t.Helper()
	tb, err := Parse(strings.NewReader(card))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return tb
}

// TestParseMetaLayout reads a card as Meta publishes it: a byte order mark
// and CRLF from the spreadsheet export, a title and a note before the
// header, a header cell broken over two lines, a column the loader does
// not know, symbols for the currency, "n/a" and "free".
func TestParseMetaLayout(t *testing.T) {
	card := "\ufeff\"Cost per message in USD on the WhatsApp Business Platform, effective October 1, 2026\",,,,,,,\r\n" +
		"Note: rates are per delivered message.,,,,,,,\r\n" +
		",,,,,,,\r\n" +
		"Market,Currency,Marketing,Utility,Authentication,\"Authentication-\r\nInternational\",Service,Meta Business Agent\r\n" +
		"India,$US,0.0118,0.0014,0.0014,0.0280,0.0014,$0.50 USD / 1 M (million) tokens\r\n" +
		"Türkiye,$US,0.0109,0.0053,0.0053,n/a,free,n/a\r\n" +
		"Rest of Central & Eastern Europe,$US,0.0860,0.0212,0.0212,n/a,0.0212,n/a\r\n" +
		"Other,$US,0.0604,0.0077,0.0077,n/a,0.0077,n/a\r\n"
	tb := parse(t, card)
	if tb.Currency() != "USD" || tb.Markets() != 4 || tb.Source() != "Cost per message in USD on the WhatsApp Business Platform, effective October 1, 2026" {
		t.Fatalf("currency %q, %d markets, source %q", tb.Currency(), tb.Markets(), tb.Source())
	}
	check := func(category, country, want string, wantOK bool) {
		t.Helper()
		p, ok := tb.Lookup(category, country)
		if ok != wantOK || (ok && p.Amount.String() != want) {
			t.Fatalf("Lookup(%s, %s) = %s %v, want %s %v", category, country, p.Amount, ok, want, wantOK)
		}
	}
	check("AUTHENTICATION_INTERNATIONAL", "IN", "0.028", true)
	check("SERVICE", "TR", "0", true) // "free"
	check("AUTHENTICATION_INTERNATIONAL", "TR", "", false)
	check("UTILITY", "PL", "0.0212", true)
	check("MARKETING", "FR", "0.0604", true)
}

func TestParseCountryLayout(t *testing.T) {
	tb := parse(t, "# my own rates, in euros\n"+
		"country,currency,marketing,utility,authentication\n"+
		"in,EUR,0.01,0.001,0.001\n"+
		"NO,eur,0.05,0.02,0.02\n"+
		"Other,EUR,\"1,000.5\",0.01,0.01\n")
	if tb.Currency() != "EUR" || tb.Source() != "" {
		t.Fatalf("currency %q source %q", tb.Currency(), tb.Source())
	}
	for country, want := range map[string]string{"IN": "0.01", "NO": "0.05", "SE": "1000.5", "": "1000.5"} {
		if a, cur, ok := tb.Cost("MARKETING", country, false); a.String() != want || cur != "EUR" || !ok {
			t.Errorf("Cost(MARKETING, %q) = %s %s %v, want %s", country, a, cur, ok, want)
		}
	}
	if m := tb.Market("in"); m != "IN" {
		t.Fatalf("a per-country row's market is its code, got %q", m)
	}
}

// TestParseErrors: every bad card is refused with the line, the column
// and what is wrong.
func TestParseErrors(t *testing.T) {
	const head = "Market,Currency,Marketing,Utility,Authentication,Authentication-International\n"
	const other = "Other,USD,0.06,0.008,0.008,n/a\n"
	for _, tt := range []struct {
		name, card, want string
	}{
		{"empty", "", "no header row"},
		{"no header", "India,USD,1,1,1\n", "no header row"},
		{"header without utility", "Market,Currency,Marketing,Authentication\n", `line 1: the header has no Utility column`},
		{"header without currency", "country,marketing,utility,authentication\n", `line 1: the header has no Currency column`},
		{"duplicate column", "Market,Currency,Marketing,Utility,Authentication,marketing\n", `line 1: columns 3 and 6 are both "marketing"`},
		{"no rows", head, "no rates after the header"},
		{"no Other", head + "India,USD,0.01,0.001,0.001,0.03\n", "no Other row"},
		{"bad amount", head + "India,USD,0.01,cheap,0.001,n/a\n" + other, `line 2, column 4 ("Utility"): "cheap" is not a decimal amount`},
		{"negative amount", head + "India,USD,-0.01,0.001,0.001,n/a\n" + other, `line 2, column 3 ("Marketing"): "-0.01" is not a decimal amount`},
		{"too many decimals", head + "India,USD,0.0000001,0.001,0.001,n/a\n" + other, `line 2, column 3 ("Marketing"): "0.0000001" has more than 6 decimals`},
		{"too dear", head + "India,USD,2000000,0.001,0.001,n/a\n" + other, `line 2, column 3 ("Marketing"): 2000000 is more than 1000000 a message`},
		{"required rate n/a", head + other + "India,USD,0.01,n/a,0.001,n/a\n", `line 3, column 4 ("Utility"): a rate is required`},
		{"required rate missing", head + other + "India,USD,0.01,0.001\n", `line 3, column 5 ("Authentication"): a rate is required`},
		{"bad grouping", head + "India,USD,\"1,00.5\",0.001,0.001,n/a\n" + other, `line 2, column 3 ("Marketing"): "1,00.5" is not a decimal amount`},
		{"unknown market", head + "Atlantis,USD,0.01,0.001,0.001,n/a\n" + other, `line 2, column 1 ("Market"): market "Atlantis" is neither a country nor one of Meta's regions`},
		{"empty market", head + ",USD,0.01,0.001,0.001,n/a\n" + other, `line 2, column 1 ("Market"): is empty`},
		{"market twice", head + other + "India,USD,0.01,0.001,0.001,n/a\n" + "india,USD,0.01,0.001,0.001,n/a\n", `line 4, column 1 ("Market"): india is listed twice (first as "India" on line 3)`},
		{"Other twice", head + other + other, `line 3, column 1 ("Market"): Other is listed twice`},
		{"two currencies", head + other + "India,INR,0.9,0.1,0.1,n/a\n", `line 3, column 2 ("Currency"): "INR" differs from the card's currency USD`},
		{"no currency", head + "India,,0.01,0.001,0.001,n/a\n" + other, `line 2, column 2 ("Currency"): is empty`},
		{"country layout, UK", "country,currency,marketing,utility,authentication\nUK,USD,0.05,0.02,0.02\n", `line 2, column 1 ("country"): "UK" is not an ISO 3166-1 alpha-2 country code (United Kingdom is GB)`},
		{"country layout, a name", "country,currency,marketing,utility,authentication\nNorway,USD,0.05,0.02,0.02\n", `(Norway is NO)`},
		{"bad quoting", head + "\"India,USD,0.01\n", `line 2, byte 17: extraneous or missing " in quoted-field`},
		{"line of a multi-line row", head + other + "\"Rest of\nAfrica\",USD,0.02,0.004,0.004,x\n", `line 4, column 6 ("Authentication-International"): "x" is not a decimal amount`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.card))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %s", err, tt.want)
			}
		})
	}
}
