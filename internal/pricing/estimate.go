package pricing

import (
	"cmp"
	"fmt"
	"slices"
)

// Count is a number of messages of one category to one country, all in or
// all out of the customer-service window: what Table.Estimate prices.
type Count struct {
	Category        string
	Country         string
	InServiceWindow bool
	N               int64
}

// Estimate is the estimated cost of a set of messages, by category and
// country, in the card's currency.
type Estimate struct {
	Currency string `json:"currency"`
	// Total is the sum of the lines' amounts.
	Total Micros `json:"total"`
	// Rules and RateCard say what the estimate rests on (Table.Rules,
	// Table.Source).
	Rules    Rules  `json:"rules"`
	RateCard string `json:"rate_card"`
	// Lines are sorted by category, then country.
	Lines []Line `json:"lines"`
}

// Line is the estimated cost of the messages of one category to one
// country.
type Line struct {
	Category Category `json:"category"`
	// Country is the recipients' ISO 3166-1 alpha-2 code, "" when unknown
	// (priced as Other).
	Country string `json:"country"`
	// Market is the card's market that priced them.
	Market string `json:"market"`
	// Count messages, Billable of them charged (the others are free under
	// the rules: utility templates in the service window, say).
	Count    int64 `json:"count"`
	Billable int64 `json:"billable"`
	// Rate is the price of one billable message; Amount is Billable times
	// Rate.
	Rate   Micros `json:"rate"`
	Amount Micros `json:"amount"`
}

// Estimate prices counts under the table's rules, summing them by category
// and country in integer micro-units. A count with a category
// ParseCategory refuses or a negative N is an error, as is a total past
// int64 (never near with real audiences).
func (t *Table) Estimate(counts []Count) (*Estimate, error) {
	if t == nil {
		return nil, errNoTable
	}
	type key struct {
		c       Category
		country string
	}
	lines := map[key]*Line{}
	for _, n := range counts {
		c, err := ParseCategory(n.Category)
		if err != nil {
			return nil, err
		}
		if n.N < 0 {
			return nil, fmt.Errorf("pricing: a count of %d %s messages", n.N, c)
		}
		if n.N == 0 {
			continue
		}
		country := NormalizeCountry(n.Country)
		k := key{c, country}
		l := lines[k]
		if l == nil {
			l = &Line{Category: c, Country: country, Market: t.Market(country)}
			lines[k] = l
		}
		l.Count += n.N
		amount, _, billable := t.Cost(string(c), country, n.InServiceWindow)
		if !billable {
			continue
		}
		add, err := amount.mul(n.N)
		if err == nil {
			l.Amount, err = l.Amount.add(add)
		}
		if err != nil {
			return nil, fmt.Errorf("pricing: estimating %d %s messages to %q: %w", n.N, c, country, err)
		}
		l.Billable += n.N
		l.Rate = amount
	}
	e := &Estimate{Currency: t.currency, Rules: t.rules, RateCard: t.Source(), Lines: make([]Line, 0, len(lines))}
	for _, l := range lines {
		if l.Billable == 0 { // the rate it would have, for the reader
			l.Rate, _, _ = t.Cost(string(l.Category), l.Country, false)
		}
		e.Lines = append(e.Lines, *l)
		var err error
		if e.Total, err = e.Total.add(l.Amount); err != nil {
			return nil, fmt.Errorf("pricing: summing the estimate: %w", err)
		}
	}
	slices.SortFunc(e.Lines, func(a, b Line) int {
		return cmp.Or(cmp.Compare(a.Category, b.Category), cmp.Compare(a.Country, b.Country))
	})
	return e, nil
}
