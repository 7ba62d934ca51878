// Package pricing estimates what Meta charges for WhatsApp messages: a
// price Table per message category and recipient country, loaded from a
// rate card CSV, and the rules of Meta's per-message pricing that decide
// which messages are charged. The segmenter's campaign preview sums it
// over an audience (Table.Estimate); the analytics sink can call
// Table.Cost once per send (about 55 ns, no allocation). Where Meta's
// status webhook carries a pricing block, it is Meta's own word on that
// message: pass its category (Cost reads Meta's spellings) and prefer its
// billable flag to the rules here.
//
// Every figure is an estimate: Meta bills from its own records, at the
// rates of the card in force on the day of delivery, in the currency of
// the WhatsApp Business Account, with volume-tier discounts this package
// does not apply (list rates are the most a message costs). The embedded
// default card (DefaultCardFile) is a copy with a date; users load the
// card of their own account currency with Config.File (flag
// -pricing.file). docs/PRICING.md is the user's guide.
//
// # Rules
//
// Meta charges per delivered message since 2025-07-01
// (https://developers.facebook.com/docs/whatsapp/pricing). Under
// RulesJuly2025, the default:
//
//   - MARKETING and AUTHENTICATION templates are charged, in or out of the
//     24-hour customer-service window;
//   - UTILITY templates are free inside the window and charged outside it;
//   - SERVICE messages (free-form replies, only possible in the window)
//     are free.
//
// Meta announced on 2026-07-01 that from 2026-10-01 utility templates in
// the window and service messages are charged too (service at the
// market's service rate, which the cards from that date publish, else at
// its utility rate): that is RulesOctober2026. AUTHENTICATION to a market with an
// authentication-international rate costs that rate when Meta bills the
// business so: Config.BusinessCountry set and the recipient elsewhere, or
// the category AUTHENTICATION_INTERNATIONAL (what Meta's status webhooks
// report then). Free-entry-point windows (72 hours after a
// click-to-WhatsApp ad) are not modelled.
//
// # Rate cards
//
// A card is a CSV file in one of two layouts, told apart by the first
// column of its header row; rows before the header (Meta's title and
// notes) and lines starting with '#' are skipped, columns the loader does
// not know are ignored, names are matched without regard to case, spaces
// or punctuation ("Authentication-\nInternational" is
// authentication_international):
//
//	Market,Currency,Marketing,Utility,Authentication,Authentication-International,Service
//	India,$US,0.0118,0.0014,0.0014,0.0280,n/a
//	Rest of Africa,$US,0.0225,0.0040,0.0040,n/a,n/a
//	Other,$US,0.0604,0.0077,0.0077,n/a,n/a
//
// is Meta's published layout: one row per market, a country (by its
// English name) or one of Meta's regions, mapped to countries by the table
// in markets.go; a country without a row of its own takes its region's
// row, and a country in no listed market takes Other's.
//
//	country,currency,marketing,utility,authentication,authentication_international,service
//	IN,USD,0.0118,0.0014,0.0014,0.0280,
//	Other,USD,0.0604,0.0077,0.0077,,
//
// is the per-country layout: ISO 3166-1 alpha-2 codes, and Other for the
// rest. Marketing, Utility and Authentication are required in every row;
// Authentication-International and Service may be empty or "n/a" (not
// published). Amounts are decimals with at most 6 places; "free" is 0.
// Every row has one currency (Meta's symbols such as "$US" or "₹" become
// ISO codes), and the Other row is required. A bad row is refused with its
// line, column and what is wrong; nothing is guessed.
//
// # Metrics
//
// The package has none; its users count what they estimate.
package pricing

import (
	"bytes"
	_ "embed" // the default rate card
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Category is a Meta pricing category.
type Category string

// The categories Meta prices.
const (
	Marketing                   Category = "MARKETING"
	Utility                     Category = "UTILITY"
	Authentication              Category = "AUTHENTICATION"
	AuthenticationInternational Category = "AUTHENTICATION_INTERNATIONAL"
	Service                     Category = "SERVICE"
)

// column indexes a category's rate in a card row.
func (c Category) column() int {
	switch c {
	case Marketing:
		return colMarketing
	case Utility:
		return colUtility
	case Authentication:
		return colAuthentication
	case AuthenticationInternational:
		return colAuthIntl
	case Service:
		return colService
	}
	return -1
}

// Rate columns of a card row.
const (
	colMarketing = iota
	colUtility
	colAuthentication
	colAuthIntl
	colService
	numCols
)

// ParseCategory parses a category as templates name it (MARKETING) or as
// Meta's status webhooks report it (marketing, authentication_international,
// authentication-international), in any case. Meta's marketing_lite
// (Marketing Messages Lite API) is priced as Marketing.
func ParseCategory(s string) (Category, error) {
	switch strings.ReplaceAll(strings.ToUpper(strings.TrimSpace(s)), "-", "_") {
	case "MARKETING", "MARKETING_LITE":
		return Marketing, nil
	case "UTILITY":
		return Utility, nil
	case "AUTHENTICATION":
		return Authentication, nil
	case "AUTHENTICATION_INTERNATIONAL":
		return AuthenticationInternational, nil
	case "SERVICE":
		return Service, nil
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "", fmt.Errorf("category %q is not MARKETING, UTILITY, AUTHENTICATION, AUTHENTICATION_INTERNATIONAL or SERVICE", s)
}

// Rules names which of Meta's pricing rules decide what is charged.
type Rules string

// The rule sets.
const (
	// RulesJuly2025: per-message pricing as introduced on 2025-07-01:
	// utility templates free in the customer-service window, service
	// messages free.
	RulesJuly2025 Rules = "2025-07"
	// RulesOctober2026: as announced for 2026-10-01: utility templates
	// charged in the window too, service messages charged (at the
	// market's service rate, else its utility rate).
	RulesOctober2026 Rules = "2026-10"
)

// Config chooses a Table.
type Config struct {
	// File is a rate card CSV (see the package doc for the layouts).
	// Default "": the embedded card, DefaultCardFile.
	File string `yaml:"file"`
	// Rules are the pricing rules, "2025-07" or "2026-10". Default
	// "2025-07".
	Rules Rules `yaml:"rules"`
	// BusinessCountry is the business's primary location as Meta set it
	// (ISO 3166-1 alpha-2), for businesses Meta bills
	// authentication-international rates: AUTHENTICATION messages to a
	// recipient in another country whose market has such a rate are
	// estimated at it. Default "": never (Meta applies those rates only
	// to businesses past 750K authentication messages a month to such a
	// country, after telling them).
	BusinessCountry string `yaml:"business_country"`
}

// Validate checks the config and fills defaults (not File: New reads it).
func (c *Config) Validate() error {
	switch c.Rules {
	case "":
		c.Rules = RulesJuly2025
	case RulesJuly2025, RulesOctober2026:
	default:
		return fmt.Errorf("pricing: rules %q is not %s or %s", c.Rules, RulesJuly2025, RulesOctober2026)
	}
	if c.BusinessCountry != "" {
		code := NormalizeCountry(c.BusinessCountry)
		if code == "" {
			return fmt.Errorf("pricing: business_country %q is not an ISO 3166-1 alpha-2 country code", c.BusinessCountry)
		}
		c.BusinessCountry = code
	}
	return nil
}

// DefaultCardFile is the name of the embedded rate card.
const DefaultCardFile = "meta_usd_2026-01-01.csv"

//go:embed meta_usd_2026-01-01.csv
var defaultCard []byte

// maxCardBytes bounds a rate card file: Meta's are a few KiB.
const maxCardBytes = 1 << 20

// New loads the table cfg names: cfg.File, or the embedded default card.
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name, b := DefaultCardFile+" (embedded)", defaultCard
	if cfg.File != "" {
		var err error
		if b, err = readCard(cfg.File); err != nil {
			return nil, err
		}
		name = cfg.File
	}
	t, err := Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("pricing: rate card %s: %w", name, err)
	}
	t.file = name
	t.rules, t.business = cfg.Rules, cfg.BusinessCountry
	return t, nil
}

// readCard reads a rate card file, at most maxCardBytes of it.
func readCard(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pricing: opening the rate card: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	b, err := io.ReadAll(io.LimitReader(f, maxCardBytes+1))
	if err != nil {
		return nil, fmt.Errorf("pricing: reading the rate card %s: %w", path, err)
	}
	if len(b) > maxCardBytes {
		return nil, fmt.Errorf("pricing: the rate card %s is larger than %d bytes", path, maxCardBytes)
	}
	return b, nil
}

// row is a card row: a market's rates.
type row struct {
	market string // as the card names it
	line   int
	rate   [numCols]Micros
	has    [numCols]bool
}

// Table is a loaded rate card with the rules to apply. It is immutable:
// safe for concurrent use.
type Table struct {
	currency string
	title    string // the card's first line before the header, if any
	file     string
	rules    Rules
	business string
	// byCountry holds the rows of single countries (a country market or
	// a per-country row), byRegion those of Meta's regions, by name.
	byCountry map[string]*row
	byRegion  map[string]*row
	other     *row
}

// Currency is the card's currency: an ISO 4217 code, or the card's symbol
// when it is none Herald knows.
func (t *Table) Currency() string { return t.currency }

// Rules are the pricing rules the table applies.
func (t *Table) Rules() Rules { return t.rules }

// Source describes the card: its file and its title line.
func (t *Table) Source() string {
	switch {
	case t.file == "":
		return t.title
	case t.title == "":
		return t.file
	}
	return t.file + ": " + t.title
}

// Markets is the number of markets (rows) of the card.
func (t *Table) Markets() int { return len(t.byCountry) + len(t.byRegion) + 1 }

// row returns the row that prices a recipient in country (any case; an
// unknown or empty code is priced as Other).
func (t *Table) row(country string) *row {
	code := NormalizeCountry(country)
	if r, ok := t.byCountry[code]; ok {
		return r
	}
	if c, ok := sharedCallingCode[code]; ok {
		code = c
		if r, ok := t.byCountry[code]; ok {
			return r
		}
	}
	if r, ok := t.byRegion[regionOf[code]]; ok {
		return r
	}
	return t.other
}

// Market returns the name of the market that prices a recipient in
// country, as the card names it ("India", "Rest of Africa", "Other").
func (t *Table) Market(country string) string { return t.row(country).market }

// Price is a card's rate for one message.
type Price struct {
	Amount   Micros
	Currency string
	// Market is the card's market that gave the rate.
	Market string
}

// Lookup returns the card's rate of category for a recipient in country
// (ISO 3166-1 alpha-2, any case; unknown codes are priced as Other). ok is
// false for a category the market publishes no rate for
// (authentication-international and service are often "n/a") and for a
// category ParseCategory refuses. Lookup ignores the rules: see Cost.
func (t *Table) Lookup(category, country string) (Price, bool) {
	c, err := ParseCategory(category)
	if err != nil {
		return Price{Currency: t.currency}, false
	}
	r := t.row(country)
	i := c.column()
	return Price{Amount: r.rate[i], Currency: t.currency, Market: r.market}, r.has[i]
}

// Cost returns what one delivered message of category to a recipient in
// country costs under the table's rules, given whether the recipient's
// 24-hour customer-service window is open when it is delivered: its
// amount and currency, and whether Meta charges it at all (amount 0 and
// billable false for a free message). A category ParseCategory refuses is
// not billable; callers with outside input check it with ParseCategory
// first.
func (t *Table) Cost(category, country string, inServiceWindow bool) (amount Micros, currency string, billable bool) {
	c, err := ParseCategory(category)
	if err != nil {
		return 0, t.currency, false
	}
	r := t.row(country)
	switch c {
	case Marketing:
		return r.rate[colMarketing], t.currency, true
	case Authentication:
		if t.business != "" && r.has[colAuthIntl] && NormalizeCountry(country) != t.business {
			return r.rate[colAuthIntl], t.currency, true
		}
		return r.rate[colAuthentication], t.currency, true
	case AuthenticationInternational:
		if r.has[colAuthIntl] {
			return r.rate[colAuthIntl], t.currency, true
		}
		return r.rate[colAuthentication], t.currency, true
	case Utility:
		if inServiceWindow && t.rules == RulesJuly2025 {
			return 0, t.currency, false
		}
		return r.rate[colUtility], t.currency, true
	case Service:
		if t.rules == RulesJuly2025 {
			return 0, t.currency, false
		}
		if r.has[colService] {
			return r.rate[colService], t.currency, true
		}
		return r.rate[colUtility], t.currency, true
	}
	return 0, t.currency, false
}

// errNoTable is returned by Estimate on a nil Table.
var errNoTable = errors.New("pricing: no rate card loaded")
