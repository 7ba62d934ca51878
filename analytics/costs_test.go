package analytics

import (
	"strconv"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/pricing"
)

// TestTablePricer: the costs of the dataset's billable statuses come from
// Meta's rate card (the embedded one), free in-window messages cost 0 and
// unknown categories stay unpriced.
func TestTablePricer(t *testing.T) {
	table, err := pricing.New(pricing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := TablePricer{Table: table}
	want, currency, billable := table.Cost("marketing", "BD", false)
	if !billable || want <= 0 {
		t.Fatalf("the card has no marketing rate for BD: %v %v", want, billable)
	}
	if got, cur, ok := p.Price("marketing", "BD", false); !ok || got != int64(want) || cur != currency {
		t.Fatalf("Price(marketing, BD) = %d %s %v, want %d %s", got, cur, ok, want, currency)
	}
	if got, _, ok := p.Price("utility", "BD", true); !ok || got != 0 {
		t.Fatalf("utility in the window = %d %v, want free", got, ok)
	}
	if _, _, ok := p.Price("bogus", "BD", false); ok {
		t.Fatal("an unknown category was priced")
	}
	if _, _, ok := (TablePricer{}).Price("marketing", "BD", false); ok {
		t.Fatal("a pricer without a table priced")
	}

	// Through the sink: the dataset's 3 billable wamids are marketing, to
	// a country its status events do not give (the card's Other market).
	want, currency, _ = table.Cost("marketing", "", false)
	_, conn := migratedDB(t)
	s, c, _ := newSink(t, Config{Pricer: p}, conn)
	if _, err := s.Write(t.Context(), dataset(t)); err != nil {
		t.Fatal(err)
	}
	countFacts(t, c, conn, Config{})
	if n := count(t, conn, "SELECT count() FROM costs FINAL WHERE price_known = 1 AND price_micros = ? AND currency = ?", int64(want), currency); n != 3 {
		t.Fatalf("%d priced cost rows, want 3", n)
	}
	q, _ := QueryByName("cost_by_source")
	res, err := q.Run(t.Context(), conn, Params{App: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	// welcome (d1, d2) and free-form text (d3), all from the keyword rule hi.
	got := format(res)
	wantRows := []string{
		"keyword hi welcome 2 0 " + strconv.FormatInt(2*int64(want), 10),
		`keyword hi "" 1 0 ` + strconv.FormatInt(int64(want), 10),
	}
	if strings.Join(got, "|") != strings.Join(wantRows, "|") {
		t.Fatalf("cost by source %q, want %q", got, wantRows)
	}
}
