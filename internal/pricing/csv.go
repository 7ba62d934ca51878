package pricing

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxRate bounds one message's rate, in currency units: Meta's dearest
// (authentication-international in rupiah) are a few thousand.
const maxRate = 1_000_000 * microsPerUnit

// columnNames are the header names of the rate columns, normalised.
var columnNames = [numCols]string{"marketing", "utility", "authentication", "authentication_international", "service"}

// currencySymbols are the symbols Meta's cards print for their currencies.
var currencySymbols = map[string]string{
	"$US": "USD", "US$": "USD", "$": "USD", "€": "EUR", "£": "GBP", "₹": "INR", "Rp": "IDR", "R$": "BRL",
	"MX$": "MXN", "AR$": "ARS", "COL$": "COP", "CLP$": "CLP", "S/": "PEN", "S/.": "PEN", "RM": "MYR",
	"A$": "AUD", "AU$": "AUD", "S$": "SGD", "SG$": "SGD", "د.إ": "AED", "﷼": "SAR", "ر.س": "SAR",
}

// layout is how a card names its rows.
type layout int

const (
	byMarket  layout = iota // Meta's: market names (countries, regions, Other)
	byCountry               // ISO 3166-1 alpha-2 codes and Other
)

// header is a card's parsed header row.
type header struct {
	layout   layout
	names    []string // the header cells as written, for messages
	key      int      // the market or country column
	currency int
	rate     [numCols]int // -1: absent (optional columns only)
}

// Parse reads a rate card CSV (see the package doc for the layouts) into a
// Table with the default rules. Errors name the line and the column.
func Parse(r io.Reader) (*Table, error) {
	br := bufio.NewReader(r)
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		_, _ = br.Discard(3) // a UTF-8 byte order mark, as spreadsheet exports write
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	t := &Table{rules: RulesJuly2025, byCountry: map[string]*row{}, byRegion: map[string]*row{}}
	var h *header
	rows := 0 // after the header
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("line %d, byte %d: %w", pe.Line, pe.Column, pe.Err)
			}
			return nil, fmt.Errorf("reading: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if blank(rec) {
			continue
		}
		if h == nil {
			if h, err = parseHeader(rec, line); err != nil {
				return nil, err
			}
			if h == nil && t.title == "" { // a title or note before the header
				t.title = cleanText(strings.Join(nonEmpty(rec), " "))
			}
			continue
		}
		rows++
		if err := t.addRow(h, rec, func(col int) int { l, _ := cr.FieldPos(col); return l }); err != nil {
			return nil, err
		}
	}
	switch {
	case h == nil:
		return nil, errors.New("no header row: want a row whose first column is Market (Meta's layout) or Country (ISO codes)")
	case rows == 0:
		return nil, errors.New("no rates after the header row")
	case t.other == nil:
		return nil, errors.New("no Other row: it prices every country outside the card's markets")
	}
	return t, nil
}

// parseHeader returns the header rec is, nil when rec is not one (a line
// before the header), or an error for a header without a required column.
func parseHeader(rec []string, line int) (*header, error) {
	h := &header{key: 0, currency: -1}
	switch headerKey(rec[0]) {
	case "market":
		h.layout = byMarket
	case "country", "country_code":
		h.layout = byCountry
	default:
		return nil, nil
	}
	for i := range h.rate {
		h.rate[i] = -1
	}
	h.names = make([]string, len(rec))
	seen := map[string]int{}
	for i, cell := range rec {
		h.names[i] = cleanText(cell)
		k := headerKey(cell)
		if k == "" {
			continue
		}
		if j, dup := seen[k]; dup {
			return nil, fmt.Errorf("line %d: columns %d and %d are both %q", line, j+1, i+1, h.names[i])
		}
		seen[k] = i
		switch k {
		case "currency":
			h.currency = i
		default:
			for c, name := range columnNames {
				if k == name {
					h.rate[c] = i
				}
			}
		}
	}
	var missing []string
	if h.currency < 0 {
		missing = append(missing, "Currency")
	}
	for _, c := range []int{colMarketing, colUtility, colAuthentication} {
		if h.rate[c] < 0 {
			missing = append(missing, columnTitle(c))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("line %d: the header has no %s column", line, strings.Join(missing, ", no "))
	}
	return h, nil
}

// addRow adds card row rec (at the line fieldLine gives for each column).
func (t *Table) addRow(h *header, rec []string, fieldLine func(col int) int) error {
	cell := func(i int) string {
		if i < 0 || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	where := func(i int) string {
		name := ""
		if i < len(h.names) {
			name = h.names[i]
		}
		col := i
		if col >= len(rec) {
			col = 0
		}
		return fmt.Sprintf("line %d, column %d (%q)", fieldLine(col), i+1, name)
	}
	r := &row{market: cell(h.key), line: fieldLine(0)}
	// The market or country.
	var code, region string
	other := false
	switch k := nameKey(r.market); {
	case r.market == "":
		return fmt.Errorf("%s: is empty", where(h.key))
	case k == "other" || r.market == "*":
		other, r.market = true, OtherMarket
	case h.layout == byCountry:
		if code = NormalizeCountry(r.market); code == "" {
			hint := ""
			if c, ok := countryByName[k]; ok {
				hint = fmt.Sprintf(" (%s is %s)", countries[c], c)
			}
			return fmt.Errorf("%s: %q is not an ISO 3166-1 alpha-2 country code%s", where(h.key), r.market, hint)
		}
		r.market = code
	default:
		if region = regionByKey[k]; region == "" {
			if code = countryByName[k]; code == "" && len(r.market) == 2 {
				code = NormalizeCountry(r.market) // a code where a name was expected
			}
			if code == "" {
				return fmt.Errorf("%s: market %q is neither a country nor one of Meta's regions (%s, Other)", where(h.key), r.market, regionList())
			}
		}
	}
	// Its currency: the card's one.
	cur, err := normalizeCurrency(cell(h.currency))
	if err != nil {
		return fmt.Errorf("%s: %w", where(h.currency), err)
	}
	switch {
	case t.currency == "":
		t.currency = cur
	case cur != t.currency:
		return fmt.Errorf("%s: %q differs from the card's currency %s: a card has one currency", where(h.currency), cur, t.currency)
	}
	// Its rates.
	for c, i := range h.rate {
		if i < 0 {
			continue
		}
		v := cell(i)
		switch strings.ToLower(v) {
		case "", "n/a", "na", "-", "–", "—":
			if c <= colAuthentication {
				return fmt.Errorf("%s: a rate is required (%s messages are sent to every market)", where(i), columnTitle(c))
			}
			continue
		case "free":
			r.has[c] = true
			continue
		}
		m, err := ParseMicros(v)
		if err != nil {
			return fmt.Errorf("%s: %w", where(i), err)
		}
		if m > maxRate {
			return fmt.Errorf("%s: %s is more than %s a message", where(i), m, Micros(maxRate))
		}
		r.rate[c], r.has[c] = m, true
	}
	// Where it goes; a market listed twice is a mistake.
	var prev *row
	switch {
	case other:
		prev, t.other = t.other, r
	case region != "":
		prev = t.byRegion[region]
		t.byRegion[region] = r
	default:
		prev = t.byCountry[code]
		t.byCountry[code] = r
	}
	if prev != nil {
		return fmt.Errorf("%s: %s is listed twice (first as %q on line %d)", where(h.key), r.market, prev.market, prev.line)
	}
	return nil
}

// normalizeCurrency returns the ISO 4217 code of a card's currency cell:
// a code as written (in upper case), or the code of a symbol Meta's cards
// print; another symbol is kept as written.
func normalizeCurrency(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("is empty: every row names its currency")
	case len(s) > 16 || strings.ContainsFunc(s, unicode.IsControl) || !utf8.ValidString(s):
		return "", fmt.Errorf("%q is not a currency", cleanText(s))
	}
	if code, ok := currencySymbols[s]; ok {
		return code, nil
	}
	if len(s) == 3 && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsLetter(r) || r > unicode.MaxASCII }) < 0 {
		return strings.ToUpper(s), nil
	}
	return s, nil
}

// headerKey normalises a header cell: lower case, runs of anything but
// letters and digits as one "_" ("Authentication-\nInternational" is
// authentication_international).
func headerKey(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}), "_")
}

// cleanText makes a cell printable in one line: whitespace runs as one
// space, at most 160 bytes.
func cleanText(s string) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if len(s) > 160 {
		s = strings.ToValidUTF8(s[:160], "") + "..."
	}
	return s
}

func blank(rec []string) bool {
	for _, c := range rec {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

func nonEmpty(rec []string) []string {
	var out []string
	for _, c := range rec {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// columnTitle is the card column name of rate column c, as Meta writes it.
func columnTitle(c int) string {
	return [numCols]string{"Marketing", "Utility", "Authentication", "Authentication-International", "Service"}[c]
}

// regionList names Meta's regions, sorted.
func regionList() string {
	names := make([]string, 0, len(regions))
	for name := range regions {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
