package analytics

import (
	"github.com/heraldhq/herald/internal/pricing"
)

// TablePricer prices billable messages with a pricing.Table (Meta's rate
// card and its per-message rules): the costs table and the billed facts get
// Table.Cost of Meta's pricing category (as the status webhook spells it),
// the recipient's country and whether Meta priced the message inside the
// customer-service window. A category the table does not know is left
// unpriced; a message the rules make free is priced 0.
type TablePricer struct {
	Table *pricing.Table
}

var _ Pricer = TablePricer{}

// Price implements Pricer.
func (p TablePricer) Price(category, country string, inWindow bool) (micros int64, currency string, ok bool) {
	if p.Table == nil {
		return 0, "", false
	}
	if _, err := pricing.ParseCategory(category); err != nil {
		return 0, "", false
	}
	amount, currency, billable := p.Table.Cost(category, country, inWindow)
	if !billable {
		return 0, currency, true
	}
	return int64(amount), currency, true
}
