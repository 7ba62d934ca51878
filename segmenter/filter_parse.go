package segmenter

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// This file turns filter source into a tree of fnodes (see filter.go for the
// language). It never panics: every malformed input is a *FilterError.

// tokKind is the kind of a lexical token of a filter.
type tokKind uint8

const (
	tokEOF tokKind = iota
	tokLParen
	tokRParen
	tokLBrack
	tokRBrack
	tokComma
	tokStar
	tokPlus
	tokBackslash
	tokString
	tokNumber
	tokRel
	tokIdent
)

type token struct {
	kind tokKind
	off  int    // byte offset in the source
	text string // source text (the unquoted value of a string)
	num  float64
	rel  time.Duration
}

// describe names t in an error message: "')'", "string \"x\"", "end of filter".
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of filter"
	case tokString:
		return "string " + quoteFilter(clip(t.text))
	case tokNumber, tokRel:
		return "number " + t.text
	case tokIdent:
		return clip(t.text)
	}
	return "'" + t.text + "'"
}

// clip shortens s for an error message.
func clip(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// lexer splits a filter into tokens.
type lexer struct {
	src string
	off int
}

func (l *lexer) errAt(off int, format string, args ...any) *FilterError {
	return &FilterError{Pos: column(l.src, off), Msg: fmt.Sprintf(format, args...)}
}

// column is the 1-based character position of byte offset off in src.
func column(src string, off int) int {
	if off > len(src) {
		off = len(src)
	}
	return utf8.RuneCountInString(src[:off]) + 1
}

func punct(c byte) (tokKind, bool) {
	switch c {
	case '(':
		return tokLParen, true
	case ')':
		return tokRParen, true
	case '[':
		return tokLBrack, true
	case ']':
		return tokRBrack, true
	case ',':
		return tokComma, true
	case '*':
		return tokStar, true
	case '\\':
		return tokBackslash, true
	}
	return 0, false
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func (l *lexer) next() (token, *FilterError) {
	for l.off < len(l.src) {
		switch l.src[l.off] {
		case ' ', '\t', '\n', '\r':
			l.off++
			continue
		}
		break
	}
	start := l.off
	if start >= len(l.src) {
		return token{kind: tokEOF, off: start}, nil
	}
	c := l.src[start]
	if k, ok := punct(c); ok {
		l.off++
		return token{kind: k, off: start, text: l.src[start:l.off]}, nil
	}
	switch {
	case c == '"' || c == '\'':
		return l.str(c)
	case isDigit(c), (c == '-' || c == '+') && start+1 < len(l.src) && isDigit(l.src[start+1]):
		return l.number()
	case c == '+':
		l.off++
		return token{kind: tokPlus, off: start, text: "+"}, nil
	case isLetter(c):
		for l.off < len(l.src) && (isLetter(l.src[l.off]) || isDigit(l.src[l.off])) {
			l.off++
		}
		return token{kind: tokIdent, off: start, text: l.src[start:l.off]}, nil
	}
	r, _ := utf8.DecodeRuneInString(l.src[start:])
	switch r {
	case '“', '”', '‘', '’', '„', '«', '»':
		return token{}, l.errAt(start, "curly quote %q: strings take straight quotes (\")", r)
	}
	return token{}, l.errAt(start, "unexpected character %q", r)
}

// str lexes a string quoted by q; \q and \\ are the only escapes.
func (l *lexer) str(q byte) (token, *FilterError) {
	start := l.off
	l.off++
	var b strings.Builder
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch c {
		case q:
			l.off++
			return token{kind: tokString, off: start, text: b.String()}, nil
		case '\\':
			if l.off+1 >= len(l.src) {
				return token{}, l.errAt(start, "unterminated string")
			}
			e := l.src[l.off+1]
			if e != q && e != '\\' {
				return token{}, l.errAt(l.off, "unknown escape \\%c: only \\%c and \\\\ are escapes", e, q)
			}
			b.WriteByte(e)
			l.off += 2
		default:
			b.WriteByte(c)
			l.off++
		}
	}
	return token{}, l.errAt(start, "unterminated string")
}

// number lexes a number (-2.5, 1e3) or a relative time (-30d, +12h).
func (l *lexer) number() (token, *FilterError) {
	start := l.off
	s := l.src
	i := start
	if s[i] == '-' || s[i] == '+' {
		i++
	}
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	intEnd := i
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(s[i]) {
			return token{}, l.errAt(start, "malformed number %s", s[start:i])
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') && i+1 < len(s) && (isDigit(s[i+1]) || (s[i+1] == '-' || s[i+1] == '+') && i+2 < len(s) && isDigit(s[i+2])) {
		i += 2
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	end := i
	for i < len(s) && (isLetter(s[i]) || isDigit(s[i])) {
		i++
	}
	text := s[start:i]
	l.off = i
	if i > end { // a unit follows
		if i != end+1 || !isLetter(s[end]) {
			return token{}, l.errAt(start, "malformed number %s", clip(text))
		}
		if end != intEnd {
			return token{}, l.errAt(start, "malformed relative time %s: the count is a whole number (-30d)", clip(text))
		}
		d, err := parseRel(text)
		if err != "" {
			return token{}, l.errAt(start, "%s", err)
		}
		return token{kind: tokRel, off: start, text: text, rel: d}, nil
	}
	n, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(n, 0) {
		return token{}, l.errAt(start, "number %s is out of range", clip(text))
	}
	return token{kind: tokNumber, off: start, text: text, num: n}, nil
}

// maxRel bounds relative times (about 100 years) so that now+d never
// overflows.
const maxRel = 36600 * 24 * time.Hour

// parseRel parses a relative time: a sign, a whole number and a unit m
// (minutes), h, d or w. err is "" when s is one.
func parseRel(s string) (time.Duration, string) {
	if len(s) < 3 || (s[0] != '-' && s[0] != '+') {
		if len(s) >= 2 && isDigit(s[0]) {
			return 0, fmt.Sprintf("relative time %s needs a sign: -%s is %s ago, +%s is %s ahead", clip(s), clip(s), clip(s), clip(s), clip(s))
		}
		return 0, fmt.Sprintf("malformed relative time %s", clip(s))
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	case 'w':
		unit = 7 * 24 * time.Hour
	default:
		return 0, fmt.Sprintf("unknown unit in %s: relative times end in m, h, d or w (-30d)", clip(s))
	}
	digits := s[1 : len(s)-1]
	var n int64
	for i := 0; i < len(digits); i++ {
		if !isDigit(digits[i]) {
			return 0, fmt.Sprintf("malformed relative time %s", clip(s))
		}
		n = n*10 + int64(digits[i]-'0')
		if time.Duration(n)*unit > maxRel {
			return 0, fmt.Sprintf("relative time %s is beyond 100 years", clip(s))
		}
	}
	d := time.Duration(n) * unit
	if s[0] == '-' {
		d = -d
	}
	return d, ""
}

// formatRel is the canonical form of d: the largest of d, h, m that
// divides it.
func formatRel(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	switch {
	case d%(24*time.Hour) == 0:
		return sign + strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return sign + strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return sign + strconv.FormatInt(int64(d/time.Minute), 10) + "m"
}

// parser is a recursive-descent parser over the tokens of one filter.
type parser struct {
	src  string
	app  string
	toks []token
	i    int
	// tags, when set, gives the type of a user tag of the app, and
	// refuses unknown ones with a hint (the tag registry).
	tags TagTypes
}

// TagTypes looks up the tags of an app for a filter's type checks: the
// type of name, or ok false and a hint (a close known name) when the app
// has no such tag.
type TagTypes func(name string) (t fieldType, ok bool, hint string)

func (p *parser) tok() token { return p.toks[p.i] }

func (p *parser) errAt(t token, format string, args ...any) *FilterError {
	return &FilterError{Pos: column(p.src, t.off), Msg: fmt.Sprintf(format, args...)}
}

// expect consumes a token of kind k or fails with "expected <what> <where>,
// got <token>".
func (p *parser) expect(k tokKind, what, where string) (token, *FilterError) {
	t := p.tok()
	if t.kind != k {
		return t, p.errAt(t, "expected %s %s, got %s", what, where, t.describe())
	}
	p.i++
	return t, nil
}

func parse(app, src string, tags TagTypes) (*fnode, *FilterError) {
	if len(src) > MaxFilterLen {
		return nil, &FilterError{Pos: column(src, MaxFilterLen), Msg: fmt.Sprintf("filter is %d bytes long, at most %d are allowed", len(src), MaxFilterLen)}
	}
	if !utf8.ValidString(src) {
		off := 0
		for off < len(src) {
			r, n := utf8.DecodeRuneInString(src[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return nil, &FilterError{Pos: column(src, off), Msg: "invalid UTF-8"}
	}
	l := &lexer{src: src}
	p := &parser{src: src, app: app, tags: tags}
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		p.toks = append(p.toks, t)
		if t.kind == tokEOF {
			break
		}
	}
	if p.toks[0].kind == tokEOF {
		return nil, p.errAt(p.toks[0], "empty filter: expected a condition such as T(\"tag\", EQ, \"value\")")
	}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if t := p.tok(); t.kind != tokEOF {
		if t.kind == tokRParen {
			return nil, p.errAt(t, "unbalanced ')'")
		}
		return nil, p.errAt(t, "expected '*', '+', '\\' or the end of the filter, got %s", t.describe())
	}
	return n, nil
}

// expr := term { '+' term }
func (p *parser) expr(depth int) (*fnode, *FilterError) {
	n, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for p.tok().kind == tokPlus {
		p.i++
		r, err := p.term(depth)
		if err != nil {
			return nil, err
		}
		n = &fnode{op: opUnion, l: n, r: r}
	}
	return n, nil
}

// term := factor { ('*' | '\') factor }
func (p *parser) term(depth int) (*fnode, *FilterError) {
	n, err := p.factor(depth)
	if err != nil {
		return nil, err
	}
	for {
		var op nodeOp
		switch p.tok().kind {
		case tokStar:
			op = opIntersect
		case tokBackslash:
			op = opDiff
		default:
			return n, nil
		}
		p.i++
		r, err := p.factor(depth)
		if err != nil {
			return nil, err
		}
		n = &fnode{op: op, l: n, r: r}
	}
}

// factor := '(' expr ')' | T(...) | A(...) | Event(...)
func (p *parser) factor(depth int) (*fnode, *FilterError) {
	t := p.tok()
	switch t.kind {
	case tokLParen:
		if depth >= MaxFilterDepth {
			return nil, p.errAt(t, "parentheses nested deeper than %d", MaxFilterDepth)
		}
		p.i++
		n, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tokRParen, "')'", "to close the '(' at column "+strconv.Itoa(column(p.src, t.off))); err != nil {
			return nil, err
		}
		return n, nil
	case tokIdent:
		switch strings.ToUpper(t.text) {
		case "T":
			return p.tagCond()
		case "A":
			return p.appCond()
		case "EVENT":
			return p.eventCond()
		case "AT", "G":
			return nil, p.errAt(t, "%s(...) is not supported: a Herald segment belongs to one app, use T(...) for its tags", t.text)
		}
	}
	return nil, p.errAt(t, "expected a condition (T(...), A(...), Event(...)) or '(', got %s", t.describe())
}

// appCond := 'A' '(' string ')'
func (p *parser) appCond() (*fnode, *FilterError) {
	p.i++
	if _, err := p.expect(tokLParen, "'('", "after A"); err != nil {
		return nil, err
	}
	name, err := p.expect(tokString, "the app code (a string)", "in A(")
	if err != nil {
		return nil, err
	}
	if t := p.tok(); t.kind == tokComma {
		return nil, p.errAt(t, "A(...) takes no platform list in Herald: use T(\"Device Type\", EQ, 21) for WhatsApp")
	}
	if _, err := p.expect(tokRParen, "')'", "after the app code"); err != nil {
		return nil, err
	}
	if name.text != p.app {
		return nil, p.errAt(name, "A(%s) names another app: this segment belongs to app %s", quoteFilter(clip(name.text)), quoteFilter(clip(p.app)))
	}
	return &fnode{op: opCond, c: &cond{kind: condApp, name: name.text}}, nil
}

// tagCond := 'T' '(' string ',' OP [',' values] ')'
func (p *parser) tagCond() (*fnode, *FilterError) {
	p.i++
	if _, err := p.expect(tokLParen, "'('", "after T"); err != nil {
		return nil, err
	}
	name, err := p.expect(tokString, "the tag name (a string)", "in T(")
	if err != nil {
		return nil, err
	}
	if name.text == "" {
		return nil, p.errAt(name, "empty tag name")
	}
	if _, err := p.expect(tokComma, "','", "after the tag name"); err != nil {
		return nil, err
	}
	c := &cond{kind: condTag, name: name.text, field: fieldOf(name.text)}
	if c.field == fieldNone && p.tags != nil {
		t, ok, hint := p.tags(name.text)
		if !ok {
			return nil, p.errAt(name, "unknown tag %s: no profile of the app has it and it was not declared with addTag%s", quoteFilter(clip(name.text)), hint)
		}
		c.utype = t
	}
	return p.opAndValues(c, "tag "+quoteFilter(clip(name.text)))
}

// eventCond := 'Event' '(' string [',' FIELD ',' OP [',' values]] ')'
func (p *parser) eventCond() (*fnode, *FilterError) {
	p.i++
	if _, err := p.expect(tokLParen, "'('", "after Event"); err != nil {
		return nil, err
	}
	name, err := p.expect(tokString, "the event name (a string)", "in Event(")
	if err != nil {
		return nil, err
	}
	if name.text == "" {
		return nil, p.errAt(name, "empty event name")
	}
	c := &cond{kind: condEvent, name: name.text, evField: evOccurred, evTag: nameTag(name.text)}
	if t := p.tok(); t.kind == tokRParen {
		p.i++
		return &fnode{op: opCond, c: c}, nil
	}
	if _, err := p.expect(tokComma, "',' or ')'", "after the event name"); err != nil {
		return nil, err
	}
	f := p.tok()
	switch {
	case f.kind == tokIdent && strings.EqualFold(f.text, "COUNT"):
		c.evField = evCount
	case f.kind == tokIdent && strings.EqualFold(f.text, "LAST"):
		c.evField = evLast
	case f.kind == tokIdent && strings.EqualFold(f.text, "FIRST"):
		c.evField = evFirst
	case f.kind == tokString:
		if f.text == "" {
			return nil, p.errAt(f, "empty attribute name")
		}
		c.evField, c.attr = evAttr, f.text
	default:
		return nil, p.errAt(f, "expected COUNT, FIRST, LAST or an attribute name (a string) after the event name, got %s", f.describe())
	}
	p.i++
	after := strings.ToUpper(f.text)
	if c.evField == evAttr {
		after = "the attribute name"
	}
	if _, err := p.expect(tokComma, "','", "after "+after); err != nil {
		return nil, err
	}
	what := strings.ToUpper(f.text)
	if c.evField == evAttr {
		what = "attribute " + quoteFilter(clip(f.text))
	}
	return p.opAndValues(c, "Event "+quoteFilter(clip(name.text))+" "+what)
}

// opAndValues parses OP [',' values] ')' into c and type-checks them; what
// names the operand in messages.
func (p *parser) opAndValues(c *cond, what string) (*fnode, *FilterError) {
	opTok := p.tok()
	if opTok.kind != tokIdent {
		return nil, p.errAt(opTok, "expected an operator (%s), got %s", opList, opTok.describe())
	}
	op, ok := opByName[strings.ToUpper(opTok.text)]
	if !ok {
		return nil, p.errAt(opTok, "unknown operator %s: expected one of %s", clip(opTok.text), opList)
	}
	p.i++
	c.op = op
	var vals []token
	if op == OpAny || op == OpNotSet {
		if t := p.tok(); t.kind == tokComma {
			return nil, p.errAt(t, "%s takes no value", op)
		}
	} else {
		if _, err := p.expect(tokComma, "','", "after "+op.String()); err != nil {
			return nil, err
		}
		var err *FilterError
		if vals, err = p.values(op); err != nil {
			return nil, err
		}
	}
	if _, err := p.expect(tokRParen, "')'", "after the "+valuesWord(op)); err != nil {
		return nil, err
	}
	if err := p.check(c, what, opTok, vals); err != nil {
		return nil, err
	}
	return &fnode{op: opCond, c: c}, nil
}

func valuesWord(op Op) string {
	switch op {
	case OpAny, OpNotSet:
		return "operator"
	case OpIn, OpNotIn, OpBetween:
		return "values"
	}
	return "value"
}

// values := '[' [value {',' value}] ']' | value {',' value}
func (p *parser) values(op Op) ([]token, *FilterError) {
	var vals []token
	if t := p.tok(); t.kind == tokLBrack {
		p.i++
		if p.tok().kind == tokRBrack {
			return nil, p.errAt(p.tok(), "%s needs at least one value", op)
		}
		for {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			vals = append(vals, v)
			if p.tok().kind != tokComma {
				break
			}
			p.i++
		}
		if _, err := p.expect(tokRBrack, "',' or ']'", "in the list of values"); err != nil {
			return nil, err
		}
		return vals, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		if p.tok().kind != tokComma {
			return vals, nil
		}
		p.i++
	}
}

func (p *parser) value() (token, *FilterError) {
	t := p.tok()
	switch t.kind {
	case tokString, tokNumber, tokRel:
		p.i++
		return t, nil
	case tokIdent:
		if strings.EqualFold(t.text, "true") || strings.EqualFold(t.text, "false") {
			p.i++
			return t, nil
		}
	}
	return t, p.errAt(t, "expected a value (a string, a number, true, false or a relative time such as -30d), got %s", t.describe())
}

// toLit converts a value token to a literal; ordered asks for an ordered
// type, so a string must be a date, a relative time or a version.
func (p *parser) toLit(t token, op Op, ordered bool) (literal, *FilterError) {
	switch t.kind {
	case tokNumber:
		return literal{kind: litNum, num: t.num, str: strconv.FormatFloat(t.num, 'f', -1, 64)}, nil
	case tokRel:
		if !ordered {
			return literal{}, p.errAt(t, "%s takes no relative time (%s): relative times go with GTE, LTE and BETWEEN", op, t.text)
		}
		return literal{kind: litRel, rel: t.rel}, nil
	case tokIdent:
		if ordered {
			return literal{}, p.errAt(t, "%s does not order booleans", op)
		}
		return literal{kind: litBool, b: strings.EqualFold(t.text, "true")}, nil
	}
	if !ordered {
		return literal{kind: litStr, str: t.text}, nil
	}
	if sec, ok := parseDate(t.text); ok {
		return literal{kind: litTime, sec: sec}, nil
	}
	if len(t.text) > 0 && (t.text[0] == '-' || t.text[0] == '+') {
		d, err := parseRel(t.text)
		if err != "" {
			return literal{}, p.errAt(t, "%s", err)
		}
		return literal{kind: litRel, rel: d}, nil
	}
	if v, ok := parseVersionLit(t.text); ok {
		return literal{kind: litVer, ver: v}, nil
	}
	return literal{}, p.errAt(t, "%s needs a number, a date (\"2025-06-01\" or \"2025-06-01 10:30\"), a relative time (-30d) or a version (\"1.2.10\"), got string %s",
		op, quoteFilter(clip(t.text)))
}

// check type-checks the operator and values of c against what is known of
// its operand, and stores the literals.
func (p *parser) check(c *cond, what string, opTok token, vals []token) *FilterError {
	op := c.op
	ordered := op == OpGTE || op == OpLTE || op == OpBetween
	switch op {
	case OpEQ, OpNotEQ, OpGTE, OpLTE:
		if len(vals) != 1 {
			return p.errAt(vals[1], "%s takes one value", op)
		}
	case OpBetween:
		if len(vals) != 2 {
			at := opTok
			if len(vals) > 2 {
				at = vals[2]
			}
			return p.errAt(at, "BETWEEN takes two values, [low, high], got %d", len(vals))
		}
	}
	for _, v := range vals {
		l, err := p.toLit(v, op, ordered)
		if err != nil {
			return err
		}
		c.vals = append(c.vals, l)
	}
	// All values of one kind, relative and absolute times mixing.
	for i := 1; i < len(c.vals); i++ {
		a, b := c.vals[0].kind, c.vals[i].kind
		if a != b && !(a.isTime() && b.isTime()) {
			return p.errAt(vals[i], "%s values must be of one type: %s and %s", op, a, b)
		}
	}
	if len(c.vals) > 0 {
		k := c.vals[0].kind
		if k == litBool && op != OpEQ && op != OpNotEQ {
			return p.errAt(vals[0], "%s takes no boolean: booleans go with EQ and NOTEQ", op)
		}
		if op == OpBetween && c.vals[0].kind == c.vals[1].kind && compareLit(c.vals[0], c.vals[1]) > 0 {
			return p.errAt(vals[0], "BETWEEN bounds are reversed: the low bound comes first")
		}
	}
	// The operand's own type, when known.
	var want fieldType
	switch c.kind {
	case condTag:
		want = c.utype
		if c.field != fieldNone {
			want = fields[c.field].typ
		}
	case condEvent:
		switch c.evField {
		case evLast, evFirst:
			want = typeTime
		case evAttr:
			want = typeAny // attributes are typed like user tags
		default:
			want = typeNum
		}
		if c.evField == evCount && (op == OpAny || op == OpNotSet) {
			return p.errAt(opTok, "%s: COUNT is always set (0 when the event never happened), use GTE 1 or EQ 0", what)
		}
	}
	if want == typeAny {
		return nil
	}
	if op == OpAny || op == OpNotSet {
		return nil
	}
	k := c.vals[0].kind
	ok := false
	switch want {
	case typeStr:
		ok = k == litStr
	case typeNum:
		ok = k == litNum
	case typeBool:
		ok = k == litBool
	case typeTime:
		ok = k.isTime()
	}
	if !ok {
		return p.errAt(vals[0], "%s is %s: %s with %s never matches it (%s)", what, want, op, k, want.hint())
	}
	return nil
}

// parseDate parses a date as tags carry them, without allocating:
// "YYYY-MM-DD", "YYYY-MM-DD HH:mm", "YYYY-MM-DD HH:mm:ss", the same with a
// 'T', and RFC 3339 in UTC ("2025-06-01T10:30:00Z", fractions ignored). It
// returns Unix seconds.
func parseDate(s string) (int64, bool) {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return 0, false
	}
	num := func(s string) (int, bool) {
		n := 0
		for i := 0; i < len(s); i++ {
			if !isDigit(s[i]) {
				return 0, false
			}
			n = n*10 + int(s[i]-'0')
		}
		return n, true
	}
	y, ok1 := num(s[:4])
	mo, ok2 := num(s[5:7])
	d, ok3 := num(s[8:10])
	if !ok1 || !ok2 || !ok3 || mo < 1 || mo > 12 || d < 1 || d > 31 {
		return 0, false
	}
	h, mi, sec := 0, 0, 0
	rest := s[10:]
	if rest != "" {
		if len(rest) < 6 || (rest[0] != ' ' && rest[0] != 'T') || rest[3] != ':' {
			return 0, false
		}
		var ok4, ok5 bool
		h, ok4 = num(rest[1:3])
		mi, ok5 = num(rest[4:6])
		if !ok4 || !ok5 || h > 23 || mi > 59 {
			return 0, false
		}
		rest = rest[6:]
		if len(rest) >= 3 && rest[0] == ':' {
			var ok6 bool
			sec, ok6 = num(rest[1:3])
			if !ok6 || sec > 59 {
				return 0, false
			}
			rest = rest[3:]
			if len(rest) > 1 && rest[0] == '.' {
				i := 1
				for i < len(rest) && isDigit(rest[i]) {
					i++
				}
				if i == 1 {
					return 0, false
				}
				rest = rest[i:]
			}
		}
		if rest == "Z" || rest == "+00:00" {
			rest = ""
		}
		if rest != "" {
			return 0, false
		}
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if t.Day() != d { // 2025-02-30
		return 0, false
	}
	return t.Unix(), true
}

// formatDate is the canonical form of a date literal.
func formatDate(sec int64) string {
	t := time.Unix(sec, 0).UTC()
	if t.Second() != 0 {
		return t.Format(time.DateTime)
	}
	return t.Format("2006-01-02 15:04")
}

// maxVerParts is how many parts a version literal may have.
const maxVerParts = 8

// parseVersionLit parses a version literal "1.2.10": 1 to 8 numbers of at
// most 9 digits, dot-separated.
func parseVersionLit(s string) ([]uint32, bool) {
	var v []uint32
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || len(part) > 9 || len(v) == maxVerParts {
			return nil, false
		}
		n := uint32(0)
		for i := 0; i < len(part); i++ {
			if !isDigit(part[i]) {
				return nil, false
			}
			n = n*10 + uint32(part[i]-'0')
		}
		v = append(v, n)
	}
	return v, len(v) > 0
}

// compareVersion compares the version in the tag value s with v: -1, 0 or
// 1; ok is false when s is not a version. Missing parts are zeros, so 1.2
// equals 1.2.0. It does not allocate.
func compareVersion(s string, v []uint32) (int, bool) {
	if s == "" {
		return 0, false
	}
	i, part := 0, 0
	res := 0
	for i <= len(s) {
		j := i
		n := uint64(0)
		for j < len(s) && isDigit(s[j]) {
			n = n*10 + uint64(s[j]-'0')
			if n > math.MaxUint32 {
				return 0, false
			}
			j++
		}
		if j == i || (j < len(s) && s[j] != '.') {
			return 0, false
		}
		var w uint64
		if part < len(v) {
			w = uint64(v[part])
		}
		if res == 0 {
			if n < w {
				res = -1
			} else if n > w {
				res = 1
			}
		}
		part++
		i = j + 1
		if j == len(s) {
			break
		}
	}
	for ; res == 0 && part < len(v); part++ {
		if v[part] > 0 {
			res = -1
		}
	}
	return res, true
}

// quoteFilter quotes s as a filter string.
func quoteFilter(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	b := make([]byte, 0, len(s)+8)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(append(b, '"'))
}
