package pricing

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the rate card loader: it must never
// panic, and a card it accepts must price every category for any country
// with a non-negative amount in its one currency.
func FuzzParse(f *testing.F) {
	f.Add(defaultCard)
	f.Add([]byte(testCard))
	for _, seed := range []string{
		"", "\ufeff", "Market\n", "country,currency,marketing,utility,authentication\nOther,USD,1,1,1\n",
		"Market,Currency,Marketing,Utility,Authentication\n\"Other\",$US,\"1,000\",free,n/a\n",
		"Market,Currency,Marketing,Utility,Authentication,\"Authentication-\nInternational\"\nOther,€,0.1,0.2,0.3,0.4\n",
		"# comment\n\"unterminated,\n", "Market,Currency,Marketing,Utility,Authentication,Service\nOther,USD,1,1,1,\xff\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := Parse(strings.NewReader(string(b)))
		if err != nil {
			if tb != nil {
				t.Fatal("a table with an error")
			}
			return
		}
		if tb.Currency() == "" || tb.other == nil {
			t.Fatalf("accepted without a currency or an Other row: %q", b)
		}
		for _, c := range []string{"MARKETING", "UTILITY", "AUTHENTICATION", "AUTHENTICATION_INTERNATIONAL", "SERVICE", "x"} {
			for _, country := range []string{"IN", "NO", "", "zz", "MA"} {
				for _, in := range []bool{false, true} {
					a, cur, _ := tb.Cost(c, country, in)
					if a < 0 || a > maxRate || cur != tb.Currency() {
						t.Fatalf("Cost(%s, %s, %v) = %d %s", c, country, in, a, cur)
					}
				}
			}
		}
		if _, err := tb.Estimate([]Count{{Category: "UTILITY", Country: "IN", N: 1 << 20}, {Category: "MARKETING", N: 3}}); err != nil {
			t.Fatalf("Estimate: %v", err)
		}
	})
}
