package segmenter

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Filter limits.
const (
	// MaxFilterLen is the longest filter source Compile takes, in bytes.
	MaxFilterLen = 4096
	// MaxFilterDepth is how deep Compile lets parentheses nest.
	MaxFilterDepth = 32
)

// A Filter is a compiled segment filter in Pushwoosh's segmentation
// language. Compile builds one; Match evaluates it against a profile
// without allocating. A Filter is immutable and safe for concurrent use.
//
// # Conditions
//
//	T("tag", OP, value...)       a tag of the profile
//	A("app")                     the segment's own app: always true
//	Event("name")                the event happened at least once
//	Event("name", COUNT, OP, n)  its count (0 when it never happened)
//	Event("name", LAST, OP, t)   the time of its latest occurrence
//	Event("name", FIRST, OP, t)  the time of its earliest occurrence
//	Event("name", "attr", OP, v) an attribute of its latest occurrence,
//	                             typed like a tag: Event("OrderPlaced",
//	                             "cuisine", EQ, "asian")
//
// Operators (case-insensitive; printed upper-case):
//
//	EQ, NOTEQ        one value
//	IN, NOTIN        one or more values: T("Country", IN, ["BR", "PT"])
//	BETWEEN          two values, low then high, both inclusive
//	GTE, LTE         one value, inclusive
//	ANY, NOTSET      no value: the tag is set / is not set
//
// Values after the operator may be a bracketed list, as Pushwoosh writes
// them, or plain comma-separated: T("Age", BETWEEN, [18, 30]) and
// T("Age", BETWEEN, 18, 30) are the same condition. Strings take double or
// single quotes, with \" (or \') and \\ as the only escapes.
//
// NOTEQ and NOTIN are exactly the complement of EQ and IN, so they match
// profiles without the tag (and profiles whose tag has another type);
// intersect with T("tag", ANY) to require the tag.
//
// # Combining
//
//	a * b    intersection: both
//	a + b    union: either
//	a \ b    difference: a and not b
//
// '*' and '\' bind tighter than '+', as '*' and '/' do in arithmetic;
// operators of the same precedence group left to right, so a \ b * c is
// (a \ b) * c and a + b * c is a + (b * c).
// Parentheses override; they nest at most MaxFilterDepth deep. (Pushwoosh's
// documentation does not state a precedence; its client libraries always
// parenthesize, which means the same thing under this rule.)
//
// # Types
//
// The type of a literal decides the comparison; a profile whose tag has
// another type does not match (type mismatches in the filter itself are
// compile errors where they can be seen: GTE on a boolean, BETWEEN on two
// plain strings, a string on COUNT, a number on a default string tag):
//
//   - numbers (3, -2.5, 1e3) compare numerically with number tags; under
//     EQ, NOTEQ, IN and NOTIN they also match string and list tags holding
//     their decimal form ("28", "2.5"), as Pushwoosh converts them, but
//     never order strings;
//   - strings compare exactly and case-sensitively with string tags, and
//     with list tags by membership: IN matches when the list holds any of
//     the values, EQ when it holds the value;
//   - true and false match boolean tags, with EQ and NOTEQ only;
//   - under GTE, LTE and BETWEEN a string must be a date ("2025-06-01",
//     "2025-06-01 10:30", "2025-06-01 10:30:15", UTC), a version ("1.2.10")
//     or a relative time ("-30d"); a plain string is a compile error. Dates
//     compare with date tags (Pushwoosh's "YYYY-MM-DD HH:mm" or RFC 3339 in
//     UTC, as ingest stores them) and with the default time tags; a date
//     literal is an instant, so T("Signup", LTE, "2025-06-01") means up to
//     2025-06-01 00:00. Versions compare by dotted numeric parts (1.10 >
//     1.9, 1.2 = 1.2.0) with string tags that hold a version. EQ with a date
//     or version string is plain string equality.
//   - relative times, a sign, a whole number and a unit m, h, d or w, are
//     offsets from the now passed to Match: T("Last Purchase", GTE, -30d)
//     is "within the last 30 days", Event("OrderPlaced", LAST, BETWEEN,
//     [-14d, -7d]) "last ordered one to two weeks ago", T("Renewal", LTE,
//     +7d) "renews within a week (or is overdue)". They may also be quoted
//     ("-30d"), and mix with absolute dates in BETWEEN.
//
// # Default tags
//
// These Pushwoosh names read the profile's own fields rather than a tag
// (Language, Country and Timezone read a user tag of that name first, as
// getTags shows it; so does "Application Version"): Language, Country,
// Timezone, "Application Version", "User ID", "WhatsApp Number"
// (strings), "Device Type" (a number: 21 is WhatsApp), Registered, "Opted
// Out" (booleans), "First Install" (the earliest registration), "First
// Seen" (the earliest event), "Last Seen", "Last Inbound" (the latest
// inbound WhatsApp message) and "Last Application Open" (the latest
// PW_ApplicationOpen) (times). Other names, Pushwoosh's "Device Model"
// included, are user tags.
//
// # Examples
//
//	T("Country", IN, ["BR", "PT"]) * T("Language", EQ, "pt")
//	Event("OrderPlaced", COUNT, GTE, 3) * Event("OrderPlaced", LAST, GTE, -30d)
//	T("Cuisines", IN, "asian") \ T("Opted Out", EQ, true)
//	(T("Application Version", LTE, "1.9.9") + T("Last Seen", LTE, -90d)) * A("shop")
type Filter struct {
	root     *fnode
	tags     []string
	events   []string
	defaults []string
	usesNow  bool
	seen     bool // reads "First Seen" or "Last Seen"
	// other: reads something else (a tag, an event, another default tag)
	other bool
}

// FilterError is a filter Compile refused: Pos is the 1-based character
// column (in runes; a newline counts as one) of the offending token.
type FilterError struct {
	Pos int
	Msg string
}

func (e *FilterError) Error() string { return "column " + strconv.Itoa(e.Pos) + ": " + e.Msg }

// Compile compiles the filter src of a segment of app. A("app") of
// another app is an error: a segment reads the profiles of its own app
// only. Errors are *FilterError; Compile never panics.
//
// Compile checks the types of default tags only; CompileChecked checks user
// tags against the app's tag registry too.
func Compile(app, src string) (*Filter, error) { return CompileChecked(app, src, nil) }

// CompileChecked is Compile with the user tags' types from tags: a tag it
// does not know is an error, and so is comparing a tag with a value of
// another type. A nil tags checks nothing more than Compile.
func CompileChecked(app, src string, tags TagTypes) (*Filter, error) {
	root, err := parse(app, src, tags)
	if err != nil {
		return nil, err
	}
	f := &Filter{root: root}
	f.collect(root)
	slices.Sort(f.tags)
	f.tags = slices.Compact(f.tags)
	slices.Sort(f.events)
	f.events = slices.Compact(f.events)
	slices.Sort(f.defaults)
	f.defaults = slices.Compact(f.defaults)
	return f, nil
}

func (f *Filter) collect(n *fnode) {
	if n.op != opCond {
		f.collect(n.l)
		f.collect(n.r)
		return
	}
	c := n.c
	if c.kind != condApp && (c.kind != condTag || c.field != fieldFirstSeen && c.field != fieldLastSeen) {
		f.other = true
	}
	for _, v := range c.vals {
		if v.kind == litRel {
			f.usesNow = true
		}
	}
	switch c.kind {
	case condEvent:
		f.events = append(f.events, c.name)
	case condTag:
		switch c.field {
		case fieldNone:
			f.tags = append(f.tags, c.name)
		case fieldLanguage, fieldCountry, fieldTimezone, fieldAppVersion:
			f.tags = append(f.tags, c.name)
			f.defaults = append(f.defaults, c.name)
		case fieldLastAppOpen:
			f.events = append(f.events, appOpenEvent)
			f.defaults = append(f.defaults, c.name)
		case fieldFirstSeen, fieldLastSeen:
			// Every event but a status may move them, without changing a
			// default tag: a change of their own (change.seen).
			f.seen = true
			f.defaults = append(f.defaults, c.name)
		default:
			f.defaults = append(f.defaults, c.name)
		}
	}
}

// Fields reports what the filter reads, each sorted and without
// duplicates: user tag names, event names (their count or last time), and
// the default tags (Pushwoosh names, see Filter) it reads from the
// profile's fields. Language, Country and Timezone appear under both tags
// and defaults, "Last Application Open" also as the event
// PW_ApplicationOpen. A profile change that touches none of them cannot
// change the filter's result, unless UsesNow. The slices are the filter's
// own: do not modify them.
func (f *Filter) Fields() (tags, events, defaults []string) {
	return f.tags, f.events, f.defaults
}

// ReadsSeen reports whether the filter reads the first or last seen time,
// which most events move.
func (f *Filter) ReadsSeen() bool { return f.seen }

// SeenOnly reports whether the first and last seen times are all the
// filter reads of a profile (with A() conditions, which read nothing):
// "active in the last 7 days", T("Last Seen", GTE, -7d). Matching a
// profile with only those two fields set gives its result.
func (f *Filter) SeenOnly() bool { return f.seen && !f.other }

// UsesNow reports whether the filter has relative times, so that its
// result can change with the passing of time alone, with no profile
// change: such a segment must also be re-evaluated on a timer.
func (f *Filter) UsesNow() bool { return f.usesNow }

// Match reports whether p belongs to the segment at now (which relative
// times are offsets from). It does not allocate.
func (f *Filter) Match(p *Profile, now time.Time) bool { return f.root.eval(p, now) }

// String is the canonical form of the filter: Compile(app, f.String())
// gives a filter of the same canonical form.
func (f *Filter) String() string {
	var b strings.Builder
	f.root.format(&b)
	return b.String()
}

// Op is a comparison operator of the filter language.
type Op uint8

// Operators.
const (
	OpEQ Op = iota + 1
	OpNotEQ
	OpIn
	OpNotIn
	OpBetween
	OpGTE
	OpLTE
	OpAny
	OpNotSet
)

var opNames = [...]string{OpEQ: "EQ", OpNotEQ: "NOTEQ", OpIn: "IN", OpNotIn: "NOTIN", OpBetween: "BETWEEN", OpGTE: "GTE", OpLTE: "LTE", OpAny: "ANY", OpNotSet: "NOTSET"}

var opByName = func() map[string]Op {
	m := make(map[string]Op, len(opNames))
	for i, n := range opNames {
		if n != "" {
			m[n] = Op(i)
		}
	}
	return m
}()

const opList = "EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE, ANY, NOTSET"

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

type nodeOp uint8

const (
	opCond nodeOp = iota
	opUnion
	opIntersect
	opDiff
)

// fnode is a node of a compiled filter: a set operation on l and r, or a
// condition c.
type fnode struct {
	op   nodeOp
	l, r *fnode
	c    *cond
}

func (n *fnode) eval(p *Profile, now time.Time) bool {
	switch n.op {
	case opUnion:
		return n.l.eval(p, now) || n.r.eval(p, now)
	case opIntersect:
		return n.l.eval(p, now) && n.r.eval(p, now)
	case opDiff:
		return n.l.eval(p, now) && !n.r.eval(p, now)
	}
	return n.c.match(p, now)
}

func (n *fnode) prec() int {
	switch n.op {
	case opUnion:
		return 1
	case opIntersect, opDiff:
		return 2
	}
	return 3
}

func (n *fnode) format(b *strings.Builder) {
	if n.op == opCond {
		n.c.format(b)
		return
	}
	// Left operands group by precedence; a right operand of the same
	// precedence keeps its parentheses, so the tree round-trips.
	paren := func(c *fnode, yes bool) {
		if yes {
			b.WriteByte('(')
		}
		c.format(b)
		if yes {
			b.WriteByte(')')
		}
	}
	paren(n.l, n.l.prec() < n.prec())
	b.WriteString([...]string{opUnion: " + ", opIntersect: " * ", opDiff: ` \ `}[n.op])
	paren(n.r, n.r.prec() <= n.prec())
}

type condKind uint8

const (
	condTag condKind = iota + 1
	condApp
	condEvent
)

type evField uint8

const (
	evOccurred evField = iota + 1
	evCount
	evLast
	evFirst
	evAttr // an attribute of the latest event of the name: cond.attr
)

// cond is one condition of a filter.
type cond struct {
	kind    condKind
	name    string  // tag, app or event name
	field   fieldID // a default tag, or fieldNone
	evField evField
	attr    string // evAttr: the attribute name
	evTag   uint8  // condEvent: nameTag(name)
	op      Op
	// utype is a user tag's type from the tag registry (CompileChecked),
	// typeAny when unchecked.
	utype fieldType
	vals  []literal
}

func (c *cond) format(b *strings.Builder) {
	switch c.kind {
	case condApp:
		b.WriteString("A(" + quoteFilter(c.name) + ")")
		return
	case condEvent:
		b.WriteString("Event(" + quoteFilter(c.name))
		switch c.evField {
		case evOccurred:
			b.WriteString(")")
			return
		case evCount:
			b.WriteString(", COUNT, ")
		case evLast:
			b.WriteString(", LAST, ")
		case evFirst:
			b.WriteString(", FIRST, ")
		case evAttr:
			b.WriteString(", " + quoteFilter(c.attr) + ", ")
		}
	default:
		b.WriteString("T(" + quoteFilter(c.name) + ", ")
	}
	b.WriteString(c.op.String())
	switch c.op {
	case OpAny, OpNotSet:
	case OpIn, OpNotIn, OpBetween:
		b.WriteString(", [")
		for i, v := range c.vals {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v.String())
		}
		b.WriteString("]")
	default:
		b.WriteString(", " + c.vals[0].String())
	}
	b.WriteString(")")
}

// appOpenEvent is the event whose last time is "Last Application Open".
const appOpenEvent = "PW_ApplicationOpen"

// appOpenTag is nameTag(appOpenEvent).
var appOpenTag = nameTag(appOpenEvent)

// tagTime is the kind of a value read from a time field; it is no TagKind
// a profile stores.
const tagTime TagKind = 0xff

// fvalue is the operand of a condition, read from a profile.
type fvalue struct {
	kind TagKind // 0 when not set
	str  string
	num  float64
	b    bool
	list []string
	us   int64 // tagTime: Unix microseconds
}

func timeValue(t time.Time) fvalue {
	if t.IsZero() {
		return fvalue{}
	}
	return fvalue{kind: tagTime, us: t.UnixMicro()}
}

func strValue(s string) fvalue {
	if s == "" {
		return fvalue{}
	}
	return fvalue{kind: TagString, str: s}
}

// tagValue converts a stored tag.
func tagValue(t Tag) fvalue {
	return fvalue{kind: t.Kind, str: t.Str, num: t.Num, b: t.Bool, list: t.List}
}

// lookup reads the operand of a T condition.
func (c *cond) lookup(p *Profile) fvalue {
	switch c.field {
	case fieldNone:
		if t, ok := p.Tag(c.name); ok {
			return tagValue(t)
		}
		return fvalue{}
	case fieldLanguage, fieldCountry, fieldTimezone, fieldAppVersion:
		if p.rawTags != "" || !p.tagsPlain { // a tag of the name may take the field's place
			if t, ok := p.Tag(c.name); ok {
				return tagValue(t)
			}
		}
		switch c.field {
		case fieldLanguage:
			return strValue(p.Language)
		case fieldCountry:
			return strValue(p.Country)
		case fieldAppVersion:
			return strValue(p.AppVersion)
		}
		return strValue(p.Timezone)
	case fieldUserID:
		return strValue(p.UserID)
	case fieldWhatsApp:
		return strValue(p.WhatsApp)
	case fieldDeviceType:
		if p.DeviceType == 0 {
			return fvalue{}
		}
		return fvalue{kind: TagNumber, num: float64(p.DeviceType)}
	case fieldRegistered:
		return fvalue{kind: TagBool, b: p.Registered}
	case fieldOptedOut:
		return fvalue{kind: TagBool, b: p.OptedOut}
	case fieldFirstSeen:
		return timeValue(p.FirstSeen)
	case fieldFirstInstall:
		return timeValue(p.FirstInstall)
	case fieldLastSeen:
		return timeValue(p.LastSeen)
	case fieldLastInbound:
		return timeValue(p.LastInbound)
	case fieldLastAppOpen:
		if i := p.eventIndex(appOpenEvent, appOpenTag); i >= 0 {
			return timeValue(p.Events[i].Last)
		}
	}
	return fvalue{}
}

func (c *cond) match(p *Profile, now time.Time) bool {
	var v fvalue
	switch c.kind {
	case condApp:
		return true
	case condEvent:
		var ev *EventCount
		if i := p.eventIndex(c.name, c.evTag); i >= 0 {
			ev = &p.Events[i]
		}
		switch c.evField {
		case evOccurred:
			return ev != nil && ev.Count > 0
		case evCount:
			v = fvalue{kind: TagNumber}
			if ev != nil {
				v.num = float64(ev.Count)
			}
		case evLast:
			if ev != nil {
				v = timeValue(ev.Last)
			}
		case evFirst:
			if ev != nil {
				v = timeValue(ev.First)
			}
		case evAttr:
			if ev != nil {
				if t, ok := ev.Attr(c.attr); ok {
					v = tagValue(t)
				}
			}
		}
	default:
		v = c.lookup(p)
	}
	switch c.op {
	case OpAny:
		return v.kind != 0
	case OpNotSet:
		return v.kind == 0
	case OpNotEQ, OpNotIn:
		return !c.holds(v, now)
	}
	return c.holds(v, now)
}

// holds evaluates EQ, IN, BETWEEN, GTE and LTE (and the positive form of
// NOTEQ and NOTIN) on v.
func (c *cond) holds(v fvalue, now time.Time) bool {
	if v.kind == 0 {
		return false
	}
	switch c.vals[0].kind {
	case litStr:
		switch v.kind {
		case TagString:
			return c.hasStr(v.str)
		case TagList:
			for _, s := range v.list {
				if c.hasStr(s) {
					return true
				}
			}
		}
		return false
	case litBool:
		return v.kind == TagBool && v.b == c.vals[0].b
	case litNum:
		switch v.kind {
		case TagNumber:
		case TagString, TagList:
			// Pushwoosh compares numbers with string tags as strings.
			if c.op == OpGTE || c.op == OpLTE || c.op == OpBetween {
				return false
			}
			if v.kind == TagString {
				return c.hasStr(v.str)
			}
			for _, s := range v.list {
				if c.hasStr(s) {
					return true
				}
			}
			return false
		default:
			return false
		}
		switch c.op {
		case OpGTE:
			return v.num >= c.vals[0].num
		case OpLTE:
			return v.num <= c.vals[0].num
		case OpBetween:
			return v.num >= c.vals[0].num && v.num <= c.vals[1].num
		}
		for i := range c.vals {
			if v.num == c.vals[i].num {
				return true
			}
		}
		return false
	case litVer:
		if v.kind != TagString {
			return false
		}
		lo, ok := compareVersion(v.str, c.vals[0].ver)
		if !ok {
			return false
		}
		switch c.op {
		case OpGTE:
			return lo >= 0
		case OpLTE:
			return lo <= 0
		}
		hi, _ := compareVersion(v.str, c.vals[1].ver)
		return lo >= 0 && hi <= 0
	}
	// Times.
	var us int64
	switch v.kind {
	case tagTime:
		us = v.us
	case TagString:
		sec, ok := parseDate(v.str)
		if !ok {
			return false
		}
		us = sec * 1e6
	default:
		return false
	}
	switch c.op {
	case OpGTE:
		return us >= c.vals[0].micros(now)
	case OpLTE:
		return us <= c.vals[0].micros(now)
	}
	lo, hi := c.vals[0].micros(now), c.vals[1].micros(now)
	return us >= lo && us <= hi
}

func (c *cond) hasStr(s string) bool {
	for i := range c.vals {
		if c.vals[i].str == s {
			return true
		}
	}
	return false
}

type litKind uint8

const (
	litStr litKind = iota + 1
	litNum
	litBool
	litTime
	litRel
	litVer
)

func (k litKind) isTime() bool { return k == litTime || k == litRel }

func (k litKind) String() string {
	switch k {
	case litStr:
		return "a string"
	case litNum:
		return "a number"
	case litBool:
		return "a boolean"
	case litTime:
		return "a date"
	case litRel:
		return "a relative time"
	case litVer:
		return "a version"
	}
	return "a value"
}

// literal is a value of a condition.
type literal struct {
	kind litKind
	str  string // litStr; litNum: the number in decimal, as Tag.String
	num  float64
	b    bool
	sec  int64         // litTime: Unix seconds
	rel  time.Duration // litRel
	ver  []uint32      // litVer
}

// micros is a time literal in Unix microseconds at now.
func (l *literal) micros(now time.Time) int64 {
	if l.kind == litRel { // whole minutes (parseRel): now.Add(l.rel).UnixMicro(), without Add
		return now.UnixMicro() + int64(l.rel/time.Microsecond)
	}
	return l.sec * 1e6
}

func (l literal) String() string {
	switch l.kind {
	case litStr:
		return quoteFilter(l.str)
	case litNum:
		return strconv.FormatFloat(l.num, 'g', -1, 64)
	case litBool:
		return strconv.FormatBool(l.b)
	case litTime:
		return quoteFilter(formatDate(l.sec))
	case litRel:
		return formatRel(l.rel)
	case litVer:
		parts := make([]string, len(l.ver))
		for i, n := range l.ver {
			parts[i] = strconv.FormatUint(uint64(n), 10)
		}
		return quoteFilter(strings.Join(parts, "."))
	}
	return "?"
}

// compareLit orders two literals of one kind (BETWEEN bounds).
func compareLit(a, b literal) int {
	switch a.kind {
	case litNum:
		return cmpOrdered(a.num, b.num)
	case litTime:
		return cmpOrdered(a.sec, b.sec)
	case litRel:
		return cmpOrdered(a.rel, b.rel)
	case litVer:
		for i := 0; i < max(len(a.ver), len(b.ver)); i++ {
			var x, y uint32
			if i < len(a.ver) {
				x = a.ver[i]
			}
			if i < len(b.ver) {
				y = b.ver[i]
			}
			if x != y {
				return cmpOrdered(int64(x), int64(y))
			}
		}
	}
	return 0
}

func cmpOrdered[T int64 | float64 | time.Duration](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fieldType is the known type of a default tag; typeAny for user tags.
type fieldType uint8

const (
	typeAny fieldType = iota
	typeStr
	typeNum
	typeBool
	typeTime
)

func (t fieldType) String() string {
	return [...]string{typeAny: "any type", typeStr: "a string", typeNum: "a number", typeBool: "a boolean", typeTime: "a time"}[t]
}

// hint says which operators and values suit t.
func (t fieldType) hint() string {
	switch t {
	case typeStr:
		return "strings take EQ, NOTEQ, IN, NOTIN with strings, ANY, NOTSET"
	case typeNum:
		return "numbers take EQ, NOTEQ, IN, NOTIN, BETWEEN, GTE, LTE with numbers"
	case typeBool:
		return "booleans take EQ, NOTEQ with true or false"
	case typeTime:
		return "times take GTE, LTE, BETWEEN with dates or relative times, ANY, NOTSET"
	}
	return ""
}

// fieldID names a default tag read from a Profile field.
type fieldID uint8

const (
	fieldNone fieldID = iota
	fieldLanguage
	fieldCountry
	fieldTimezone
	fieldUserID
	fieldWhatsApp
	fieldDeviceType
	fieldRegistered
	fieldOptedOut
	fieldFirstInstall
	fieldFirstSeen
	fieldLastSeen
	fieldLastInbound
	fieldLastAppOpen
	fieldAppVersion
)

// fields are the default tags by their Pushwoosh (or Herald) names.
var fields = [...]struct {
	name string
	typ  fieldType
}{
	fieldLanguage:     {"Language", typeStr},
	fieldCountry:      {"Country", typeStr},
	fieldTimezone:     {"Timezone", typeStr},
	fieldUserID:       {"User ID", typeStr},
	fieldWhatsApp:     {"WhatsApp Number", typeStr},
	fieldDeviceType:   {"Device Type", typeNum},
	fieldRegistered:   {"Registered", typeBool},
	fieldOptedOut:     {"Opted Out", typeBool},
	fieldFirstInstall: {"First Install", typeTime},
	fieldFirstSeen:    {"First Seen", typeTime},
	fieldLastSeen:     {"Last Seen", typeTime},
	fieldLastInbound:  {"Last Inbound", typeTime},
	fieldLastAppOpen:  {"Last Application Open", typeTime},
	fieldAppVersion:   {"Application Version", typeAny}, // a version string, compared as versions or strings
}

// fieldOf is the default tag named name, or fieldNone.
func fieldOf(name string) fieldID {
	for i := range fields {
		if i > 0 && fields[i].name == name {
			return fieldID(i)
		}
	}
	return fieldNone
}

var _ fmt.Stringer = (*Filter)(nil)
