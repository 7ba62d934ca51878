package pricing

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestEstimateIntegerSums: sums that floats get wrong come out exact.
func TestEstimateIntegerSums(t *testing.T) {
	tb := parse(t, "country,currency,marketing,utility,authentication\nIN,USD,0.1,0.2,0.3\nOther,USD,0.01,0.001,0.001\n")
	var counts []Count
	for range 10 { // ten parts of one message each: 0.1+0.1+... is not 1 in float64
		counts = append(counts, Count{Category: "MARKETING", Country: "IN", N: 1})
	}
	counts = append(counts, Count{Category: "UTILITY", Country: "IN", N: 3}, Count{Category: "UTILITY", Country: "in", InServiceWindow: true, N: 5})
	e, err := tb.Estimate(counts)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for range 10 {
		sum += 0.1
	}
	if sum == 1 {
		t.Fatal("floats add up here: the test proves nothing")
	}
	b, _ := json.Marshal(e)
	want := `{"currency":"USD","total":1.6,"rules":"2025-07","rate_card":"","lines":[` +
		`{"category":"MARKETING","country":"IN","market":"IN","count":10,"billable":10,"rate":0.1,"amount":1},` +
		`{"category":"UTILITY","country":"IN","market":"IN","count":8,"billable":3,"rate":0.2,"amount":0.6}]}`
	if string(b) != want {
		t.Fatalf("estimate\n got %s\nwant %s", b, want)
	}
}

func TestEstimateLines(t *testing.T) {
	tb := parse(t, testCard)
	e, err := tb.Estimate([]Count{
		{Category: "UTILITY", Country: "KE", N: 2},
		{Category: "MARKETING", Country: "NO", N: 1_000_000},
		{Category: "SERVICE", Country: "IN", InServiceWindow: true, N: 7},
		{Category: "UTILITY", Country: "", InServiceWindow: true, N: 4},
		{Category: "MARKETING", Country: "IN", N: 0},
		{Category: "marketing", Country: "", N: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range e.Lines {
		got = append(got, strings.Join([]string{string(l.Category), l.Country, l.Market, itoa(l.Count), itoa(l.Billable), l.Rate.String(), l.Amount.String()}, " "))
	}
	want := []string{
		"MARKETING  Other 3 3 0.06 0.18",
		"MARKETING NO Other 1000000 1000000 0.06 60000",
		"SERVICE IN India 7 0 0 0",
		"UTILITY  Other 4 0 0.008 0",
		"UTILITY KE Rest of Africa 2 2 0.004 0.008",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || e.Total.String() != "60000.188" {
		t.Fatalf("lines\n%s\nwant\n%s\ntotal %s", strings.Join(got, "\n"), strings.Join(want, "\n"), e.Total)
	}
	for _, bad := range []Count{{Category: "SPAM", N: 1}, {Category: "MARKETING", N: -1}, {Category: "MARKETING", N: math.MaxInt64}} {
		if _, err := tb.Estimate([]Count{bad}); err == nil {
			t.Errorf("Estimate(%+v) did not fail", bad)
		}
	}
	var nilTable *Table
	if _, err := nilTable.Estimate(nil); err == nil {
		t.Error("a nil table estimated")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
