package pricing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Micros is an amount of money in millionths of its currency's unit
// (USD 0.0250 is 25000): sums and products stay exact integers, never
// floats. Meta's rate cards print at most 4 decimals; 6 leave room for
// the cards of other currencies and for the per-message rates of volume
// tiers.
type Micros int64

// microsPerUnit is the scale of Micros.
const microsPerUnit = 1_000_000

// maxUnitDigits bounds the integer part ParseMicros accepts: 12 digits
// keep every amount below 10^18 micros, far from int64's end.
const maxUnitDigits = 12

// ParseMicros parses a decimal amount: digits with at most 6 decimals
// ("0.0250", "12", "1,250.5": grouping commas in threes are allowed in the
// integer part). Signs, exponents and currency symbols are refused.
func ParseMicros(s string) (Micros, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("is empty")
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	if hasDot && frac == "" {
		return 0, fmt.Errorf("%q has no digits after the decimal point", s)
	}
	if intPart == "" {
		intPart = "0" // ".5"
	}
	digits, err := ungroup(intPart)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal amount: %w", s, err)
	}
	if len(strings.TrimLeft(digits, "0")) > maxUnitDigits {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("%q has more than 6 decimals", s)
	}
	for _, r := range frac {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a decimal amount", s)
		}
	}
	units, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal amount", s)
	}
	var sub int64
	if frac != "" {
		sub, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64) // digits only, checked above
	}
	return Micros(units*microsPerUnit + sub), nil
}

// ungroup checks the integer part of an amount (digits, optionally grouped
// in threes by commas) and returns its digits.
func ungroup(s string) (string, error) {
	if !strings.Contains(s, ",") {
		for _, r := range s {
			if r < '0' || r > '9' {
				return "", errors.New("only digits, a decimal point and grouping commas are allowed")
			}
		}
		return s, nil
	}
	groups := strings.Split(s, ",")
	for i, g := range groups {
		if (i == 0 && (len(g) == 0 || len(g) > 3)) || (i > 0 && len(g) != 3) {
			return "", errors.New("grouping commas must separate groups of three digits")
		}
	}
	return ungroup(strings.Join(groups, ""))
}

// String formats m as a decimal without trailing zeros ("0.025", "3",
// "-1.5").
func (m Micros) String() string {
	return string(m.appendText(nil))
}

// MarshalJSON writes m as a JSON number in exact decimal text (0.025), so
// that no float ever holds the amount on this side.
func (m Micros) MarshalJSON() ([]byte, error) {
	return m.appendText(nil), nil
}

func (m Micros) appendText(b []byte) []byte {
	u := uint64(m)
	if m < 0 {
		b = append(b, '-')
		u = uint64(-m) // math.MinInt64 wraps to itself, which is its magnitude as a uint64
	}
	b = strconv.AppendUint(b, u/microsPerUnit, 10)
	frac := u % microsPerUnit
	if frac == 0 {
		return b
	}
	s := strconv.FormatUint(frac+microsPerUnit, 10)[1:] // six digits, leading zeros kept
	return append(append(b, '.'), strings.TrimRight(s, "0")...)
}

// errOverflow is returned by mul and add when an amount leaves int64.
var errOverflow = errors.New("the amount overflows")

// mul returns m*n, or errOverflow.
func (m Micros) mul(n int64) (Micros, error) {
	if m == 0 || n == 0 {
		return 0, nil
	}
	if m < 0 || n < 0 || int64(m) > math.MaxInt64/n {
		return 0, errOverflow
	}
	return m * Micros(n), nil
}

// add returns m+o, or errOverflow.
func (m Micros) add(o Micros) (Micros, error) {
	if (o > 0 && m > math.MaxInt64-o) || (o < 0 && m < math.MinInt64-o) {
		return 0, errOverflow
	}
	return m + o, nil
}
