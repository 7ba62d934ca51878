package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/text/cases"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/heraldhq/herald/schemas"
)

// serviceWindow is WhatsApp's customer-service window: free-form messages may
// be sent only within 24 hours of the user's last inbound message (Meta error
// 131047 otherwise).
const serviceWindow = 24 * time.Hour

// Reasons a matched keyword produced no request, the reason label of
// herald_segmenter_keyword_skipped_total.
const (
	skipOptedOut    = "opted_out"     // MARKETING template to a user who opted out
	skipEmptyParam  = "empty_param"   // a placeholder resolved to nothing and had no fallback
	skipWindowClose = "window_closed" // free-form text after the service window closed
	skipStale       = "stale"         // inbound message older than DispatchTTL
	skipProfileFull = "profile_full"  // set_tags would grow the profile past its size limit
)

var skipReasons = []string{skipOptedOut, skipEmptyParam, skipWindowClose, skipStale, skipProfileFull}

// modeBuiltin is the mode label of herald_segmenter_keyword_matches_total
// for the built-in keywords.
const modeBuiltin = "builtin"

var matchModes = []string{ModeFirstWord, ModeExact, ModePattern, ModeAny, modeBuiltin}

// Actions, the action label of herald_segmenter_keyword_actions_total.
const (
	actionTemplate = "template" // a template reply produced
	actionText     = "text"     // a text reply produced
	actionSetTags  = "set_tags" // tags set on the profile
	actionOptOut   = "opt_out"  // marketing opt-out set
	actionOptIn    = "opt_in"   // marketing opt-out cleared
)

var keywordActions = []string{actionTemplate, actionText, actionSetTags, actionOptOut, actionOptIn}

// Confirmations of the built-in keywords.
const (
	// TextUnsubscribed is the reply to STOP and UNSUBSCRIBE.
	TextUnsubscribed = "You have been unsubscribed from marketing messages. Reply START to subscribe again."
	// TextSubscribed is the reply to START.
	TextSubscribed = "You are subscribed to marketing messages again. Reply STOP to unsubscribe."
)

// BuiltinKeywords are the rules every config has unless its keyword list is
// empty: STOP and UNSUBSCRIBE set the marketing opt-out, START clears it,
// each confirmed by a free-form text (the user just wrote: the window is
// open; opted-out users get it too, it is no marketing). They match the
// first word (so the whole message too) in every app and win over every
// other rule, except where a rule in scope (same app or "*", same or no
// phone number) has the same word as keyword or phrase in mode first_word
// or exact: that rule replaces the built-in there (give it opt_out to keep
// the opt-out).
func BuiltinKeywords() []KeywordRule {
	on, off := true, false
	return []KeywordRule{
		{App: AnyApp, Mode: ModeFirstWord, Keyword: "STOP", Text: TextUnsubscribed, OptOut: &on},
		{App: AnyApp, Mode: ModeFirstWord, Keyword: "UNSUBSCRIBE", Text: TextUnsubscribed, OptOut: &on},
		{App: AnyApp, Mode: ModeFirstWord, Keyword: "START", Text: TextSubscribed, OptOut: &off},
	}
}

// rule is a validated KeywordRule, compiled.
type rule struct {
	KeywordRule
	index int    // in Config.Keywords; -1 for built-ins
	name  string // Source.Name and the dispatch id's part
	label string // mode label of the matches metric
	spec  int    // scope specificity: 3 app and number, 2 app, 1 "*" and number, 0 "*"
	re    *regexp.Regexp
	tags  map[string]Tag
	// params and text are the parsed BodyParams and Text.
	params []param
	text   param
}

// before reports whether r is tried before o: higher priority, then more
// specific scope, then earlier in the config.
func (r *rule) before(o *rule) bool {
	if r.Priority != o.Priority {
		return r.Priority > o.Priority
	}
	if r.spec != o.spec {
		return r.spec > o.spec
	}
	return r.index < o.index
}

// scopeKey is an app id (or AnyApp) and a phone number id (or "").
type scopeKey struct{ app, number string }

// scope holds the rules of one scopeKey.
type scope struct {
	first    map[string]*rule // normalised word -> first_word rule
	exact    map[string]*rule // normalised phrase -> exact rule
	patterns []*rule          // in the order of rule.before
	catchAll *rule
}

// rules finds the rule that fires for a message.
type rules struct {
	scopes  map[scopeKey]*scope
	builtin map[string]*rule // normalised word -> built-in rule
}

// compileRules validates and compiles the rules of a config (defaults
// filled by Config.Validate) and adds the built-ins unless in is empty.
// Errors name the rule's index and field.
func compileRules(in []KeywordRule) (*rules, error) {
	rs := &rules{scopes: make(map[scopeKey]*scope)}
	if len(in) == 0 {
		return rs, nil
	}
	for i := range in {
		r, err := compileRule(i, in[i])
		if err != nil {
			return nil, fmt.Errorf("keywords[%d]%w", i, err)
		}
		k := scopeKey{r.App, r.PhoneNumberID}
		sc := rs.scopes[k]
		if sc == nil {
			sc = &scope{first: make(map[string]*rule), exact: make(map[string]*rule)}
			rs.scopes[k] = sc
		}
		if err := sc.add(r); err != nil {
			return nil, fmt.Errorf("keywords[%d]%w", i, err)
		}
	}
	for _, sc := range rs.scopes {
		slices.SortStableFunc(sc.patterns, func(a, b *rule) int {
			if a.before(b) {
				return -1
			}
			return 1
		})
	}
	rs.builtin = make(map[string]*rule)
	for _, b := range BuiltinKeywords() {
		r, err := compileRule(-1, b)
		if err != nil { // cannot happen: they are constants
			return nil, fmt.Errorf("built-in keyword %s%w", b.Keyword, err)
		}
		r.label = modeBuiltin
		rs.builtin[normalize(b.Keyword)] = r
	}
	return rs, nil
}

// add adds r to sc, refusing a rule that another one of the scope shadows.
func (sc *scope) add(r *rule) error {
	dup := func(field string, o *rule, kw string) error {
		return fmt.Errorf("%s: duplicates keywords[%d]: same app %q, phone_number_id %q, mode %s and keyword %q", field, o.index, r.App, r.PhoneNumberID, r.Mode, kw)
	}
	switch r.Mode {
	case ModeAny:
		if sc.catchAll != nil {
			return dup(".keyword", sc.catchAll, AnyKeyword)
		}
		sc.catchAll = r
	case ModePattern:
		for _, o := range sc.patterns {
			if o.Keyword == r.Keyword {
				return dup(".keyword", o, r.Keyword)
			}
		}
		sc.patterns = append(sc.patterns, r)
	default:
		m := sc.first
		if r.Mode == ModeExact {
			m = sc.exact
		}
		for j, w := range append([]string{r.Keyword}, r.Phrases...) {
			field := ".keyword"
			if j > 0 {
				field = fmt.Sprintf(".phrases[%d]", j-1)
			}
			n := normalizeWord(w)
			if o := m[n]; o != nil {
				return dup(field, o, n)
			}
			m[n] = r
		}
	}
	return nil
}

// compileRule checks and compiles rule i. Its errors start with the field
// (".keyword: ...") or ": " for the rule as a whole.
func compileRule(i int, in KeywordRule) (*rule, error) {
	r := &rule{KeywordRule: in, index: i}
	if r.App != AnyApp && !schemas.ValidAppID(r.App) {
		return nil, fmt.Errorf(".app: %q must be an app id or %q", r.App, AnyApp)
	}
	if strings.ContainsFunc(r.PhoneNumberID, unicode.IsSpace) {
		return nil, fmt.Errorf(".phone_number_id: %q must not contain spaces", r.PhoneNumberID)
	}
	switch {
	case r.App != AnyApp && r.PhoneNumberID != "":
		r.spec = 3
	case r.App != AnyApp:
		r.spec = 2
	case r.PhoneNumberID != "":
		r.spec = 1
	}
	kw := strings.TrimSpace(r.Keyword)
	switch r.Mode {
	case ModeFirstWord, ModeExact:
		if kw == AnyKeyword {
			r.Mode = ModeAny // keyword "*" is the catch-all in any mode
		}
	case ModePattern, ModeAny:
	default:
		return nil, fmt.Errorf(".mode: unknown mode %q: want %s, %s, %s or %s", r.Mode, ModeFirstWord, ModeExact, ModePattern, ModeAny)
	}
	if err := r.compileMatch(kw); err != nil {
		return nil, err
	}
	if err := r.compileActions(); err != nil {
		return nil, err
	}
	r.label = r.Mode
	return r, nil
}

// compileMatch checks Keyword and Phrases for r's mode and sets r.name and
// r.re.
func (r *rule) compileMatch(kw string) error {
	if r.Mode == ModeAny {
		if kw != "" && kw != AnyKeyword {
			return fmt.Errorf(".keyword: %q given with mode any: a catch-all takes no keyword (or %q)", r.Keyword, AnyKeyword)
		}
		if len(r.Phrases) > 0 {
			return errors.New(".phrases: not allowed in a catch-all")
		}
		r.name = AnyKeyword
	} else if kw == "" {
		return fmt.Errorf(".keyword: required in mode %s (a catch-all has mode any or keyword %q)", r.Mode, AnyKeyword)
	}
	switch r.Mode {
	case ModePattern:
		if len(r.Phrases) > 0 {
			return errors.New(".phrases: not allowed in mode pattern (use alternation in the pattern)")
		}
		re, err := regexp.Compile(r.Keyword)
		if err != nil {
			return fmt.Errorf(".keyword: compiling pattern: %w", err)
		}
		r.re = re
		r.name = r.Keyword
	case ModeFirstWord, ModeExact:
		for j, w := range append([]string{r.Keyword}, r.Phrases...) {
			field := ".keyword"
			if j > 0 {
				field = fmt.Sprintf(".phrases[%d]", j-1)
			}
			n := normalize(w)
			switch {
			case n == "":
				return fmt.Errorf("%s: empty", field)
			case r.Mode == ModeFirstWord && strings.Contains(n, " "):
				return fmt.Errorf("%s: %q must be one word in mode first_word (use mode exact for a phrase)", field, w)
			case trimWord(n) != n:
				return fmt.Errorf("%s: %q must start and end with a letter or digit", field, w)
			}
		}
		r.name = strings.ToUpper(strings.TrimSpace(r.Keyword))
	}
	if r.Name != "" {
		if strings.TrimSpace(r.Name) == "" {
			return errors.New(".name: blank")
		}
		r.name = r.Name
	}
	return nil
}

// compileActions checks the actions of r and parses its placeholders and
// tags.
func (r *rule) compileActions() error {
	if r.Template == "" && r.Text == "" && len(r.SetTags) == 0 && r.OptOut == nil {
		return errors.New(": no action: want template, text, set_tags or opt_out")
	}
	if r.Template != "" && r.Text != "" {
		return errors.New(".text: conflicts with template: a rule sends one reply, a template or a text")
	}
	if r.Template == "" {
		switch {
		case len(r.BodyParams) > 0:
			return errors.New(".body_params: needs a template")
		case r.Language != "":
			return errors.New(".language: needs a template")
		case r.Category != "":
			return errors.New(".category: needs a template")
		}
	}
	switch r.Category {
	case "", CategoryUtility, CategoryAuthentication:
	case CategoryMarketing:
		if r.OptOut != nil && *r.OptOut {
			return errors.New(".category: a MARKETING template is never sent to a user who opted out, and opt_out: true opts the user out first")
		}
	default:
		return fmt.Errorf(".category: %q is not MARKETING, UTILITY or AUTHENTICATION", r.Category)
	}
	for j, p := range r.BodyParams {
		pp, err := parseParam(p)
		if err != nil {
			return fmt.Errorf(".body_params[%d]: %w", j, err)
		}
		r.params = append(r.params, pp)
	}
	if r.Text != "" {
		pp, err := parseParam(r.Text)
		if err != nil {
			return fmt.Errorf(".text: %w", err)
		}
		r.text = pp
	}
	if len(r.SetTags) > 0 {
		r.tags = make(map[string]Tag, len(r.SetTags))
		names := slices.Sorted(maps.Keys(r.SetTags)) // the first bad one, always the same
		for _, name := range names {
			if strings.TrimSpace(name) == "" {
				return errors.New(".set_tags: empty tag name")
			}
			t, err := scalarTag(r.SetTags[name])
			if err != nil {
				return fmt.Errorf(".set_tags.%s: %w", name, err)
			}
			r.tags[name] = t
		}
	}
	return nil
}

// scalarTag converts a set_tags value, as YAML or Go code gives it.
func scalarTag(v any) (Tag, error) {
	num := func(f float64) (Tag, error) {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return Tag{}, fmt.Errorf("%v is not a finite number", f)
		}
		return Tag{Kind: TagNumber, Num: f}, nil
	}
	switch v := v.(type) {
	case string:
		return Tag{Kind: TagString, Str: v}, nil
	case bool:
		return Tag{Kind: TagBool, Bool: v}, nil
	case int:
		return num(float64(v))
	case int64:
		return num(float64(v))
	case uint64:
		return num(float64(v))
	case float64:
		return num(v)
	case float32:
		return num(float64(v))
	case nil:
		return Tag{}, errors.New("null is not a value: want a string, number or boolean")
	}
	return Tag{}, fmt.Errorf("a %T is not a scalar: want a string, number or boolean", v)
}

// match returns the rule that fires for text received by the number
// phoneNumberID of app, or nil.
func (rs *rules) match(app, phoneNumberID, text string) *rule {
	if len(rs.scopes) == 0 {
		return nil
	}
	n := normalize(text)
	if n == "" {
		return nil
	}
	w, x := firstWord(n), trimWord(n)
	var scopes [4]*scope
	scopes[0] = rs.scopes[scopeKey{app, ""}]
	scopes[1] = rs.scopes[scopeKey{AnyApp, ""}]
	if phoneNumberID != "" {
		scopes[2] = rs.scopes[scopeKey{app, phoneNumberID}]
		scopes[3] = rs.scopes[scopeKey{AnyApp, phoneNumberID}]
	}
	if b := rs.builtin[w]; b != nil {
		overridden := false
		for _, sc := range scopes {
			if sc != nil && (sc.first[w] != nil || sc.exact[w] != nil) {
				overridden = true
			}
		}
		if !overridden {
			return b
		}
	}
	var best *rule
	consider := func(r *rule) {
		if r != nil && (best == nil || r.before(best)) {
			best = r
		}
	}
	for _, sc := range scopes {
		if sc == nil {
			continue
		}
		if w != "" {
			consider(sc.first[w])
		}
		if x != "" {
			consider(sc.exact[x])
		}
		for _, r := range sc.patterns {
			if best != nil && !r.before(best) {
				break // the rest come after best
			}
			if r.re.MatchString(n) {
				consider(r)
				break
			}
		}
	}
	if best != nil {
		return best
	}
	for _, sc := range scopes {
		if sc != nil {
			consider(sc.catchAll)
		}
	}
	return best
}

// normalize folds the case of s, removes its accents (NFD, then combining
// marks dropped) and collapses and trims its whitespace: the form every
// keyword and message is compared in.
func normalize(s string) string {
	if isASCII(s) {
		s = strings.ToLower(s)
	} else {
		s = cases.Fold().String(s)
		// The transformer is stateful: one per call (non-ASCII texts only).
		t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
		if out, _, err := transform.String(t, s); err == nil {
			s = out
		}
	}
	return collapseSpace(s)
}

// normalizeWord is the map key of a first_word or exact keyword: normalised
// and trimmed like the message it is compared with.
func normalizeWord(s string) string { return trimWord(normalize(s)) }

// asciiSpace and asciiWord mark the ASCII bytes unicode.IsSpace reports,
// and those unicode.IsLetter or unicode.IsNumber do: the ASCII paths of
// collapseSpace, firstWord and trimWord (most messages are ASCII) read a
// table where the rune paths call the unicode functions.
var asciiSpace, asciiWord = func() (sp, w [utf8.RuneSelf]bool) {
	for c := range rune(utf8.RuneSelf) {
		sp[c] = unicode.IsSpace(c)
		w[c] = unicode.IsLetter(c) || unicode.IsNumber(c)
	}
	return sp, w
}()

// collapseSpace replaces every run of whitespace in s by one space and trims
// it at both ends; s is returned as is when already so.
func collapseSpace(s string) string {
	prev := true // the start counts as whitespace: leading whitespace is trimmed
	for i := 0; i < len(s); {
		c, size := rune(s[i]), 1
		var sp bool
		if c < utf8.RuneSelf {
			sp = asciiSpace[c]
		} else {
			c, size = utf8.DecodeRuneInString(s[i:])
			sp = unicode.IsSpace(c)
		}
		if sp && (prev || c != ' ') {
			return strings.Join(strings.Fields(s), " ")
		}
		prev = sp
		i += size
	}
	if prev && s != "" { // trailing whitespace
		return strings.Join(strings.Fields(s), " ")
	}
	return s
}

// firstWord returns the first whitespace-separated word of s that still has
// a letter or digit once the punctuation and symbols around it are trimmed
// ("!!! promo" and "🎉 Promo!" both give the word promo).
func firstWord(s string) string {
	if !isASCII(s) {
		return firstWordRunes(s)
	}
	for s != "" {
		i := 0
		for i < len(s) && asciiSpace[s[i]] {
			i++
		}
		s = s[i:]
		end := 0
		for end < len(s) && !asciiSpace[s[end]] {
			end++
		}
		if w := trimWord(s[:end]); w != "" {
			return w
		}
		s = s[end:]
	}
	return ""
}

// firstWordRunes is firstWord for any UTF-8.
func firstWordRunes(s string) string {
	for s != "" {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		if w := trimWordRunes(s[:end]); w != "" {
			return w
		}
		s = s[end:]
	}
	return ""
}

// trimWord trims everything but letters and digits from both ends of w.
func trimWord(w string) string {
	i, j := 0, len(w)
	for i < j && w[i] < utf8.RuneSelf && !asciiWord[w[i]] {
		i++
	}
	for j > i && w[j-1] < utf8.RuneSelf && !asciiWord[w[j-1]] {
		j--
	}
	if i < j && (w[i] >= utf8.RuneSelf || w[j-1] >= utf8.RuneSelf) {
		return trimWordRunes(w[i:j]) // a non-ASCII rune at an end
	}
	return w[i:j]
}

// trimWordRunes is trimWord for any UTF-8.
func trimWordRunes(w string) string {
	return strings.TrimFunc(w, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
}

// isASCII reports whether s is all ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// param is a parsed body parameter or text: literals and placeholders.
type param []segment

type segment struct {
	lit      string // literal text, when tag and profileName are unset
	tag      string // {{tag:NAME}}
	profile  bool   // {{profile_name}}
	fallback string // after "|"
}

// TagProfileName is the tag an inbound message sets to the sender's WhatsApp
// profile name; {{profile_name}} reads it when the message carries none.
const TagProfileName = "profile_name"

// parseParam parses the placeholders of s.
func parseParam(s string) (param, error) {
	var p param
	for s != "" {
		i := strings.Index(s, "{{")
		if i < 0 {
			p = append(p, segment{lit: s})
			break
		}
		if i > 0 {
			p = append(p, segment{lit: s[:i]})
		}
		s = s[i+2:]
		j := strings.Index(s, "}}")
		if j < 0 {
			return nil, fmt.Errorf("unterminated placeholder %q", "{{"+s)
		}
		expr := s[:j]
		s = s[j+2:]
		var seg segment
		if k := strings.IndexByte(expr, '|'); k >= 0 {
			seg.fallback = expr[k+1:]
			expr = expr[:k]
		}
		expr = strings.TrimSpace(expr)
		switch {
		case expr == "profile_name":
			seg.profile = true
		case strings.HasPrefix(expr, "tag:") && strings.TrimSpace(expr[4:]) != "":
			seg.tag = strings.TrimSpace(expr[4:])
		default:
			return nil, fmt.Errorf("unknown placeholder {{%s}}: want {{profile_name}} or {{tag:NAME}}", expr)
		}
		p = append(p, seg)
	}
	return p, nil
}

// expand substitutes the placeholders of p. ok is false when a placeholder
// without fallback resolved to an empty value or the result is empty.
func (p param) expand(profileName string, prof *Profile) (string, bool) {
	if len(p) == 1 && p[0].lit != "" {
		return p[0].lit, true // the common case: no placeholder
	}
	var b strings.Builder
	for _, s := range p {
		v := s.lit
		switch {
		case s.profile:
			v = profileName
			if v == "" {
				v = prof.tagValue(TagProfileName).String()
			}
		case s.tag != "":
			v = prof.tagValue(s.tag).String()
		}
		if (s.profile || s.tag != "") && strings.TrimSpace(v) == "" {
			if s.fallback == "" {
				return "", false
			}
			v = s.fallback
		}
		b.WriteString(v)
	}
	out := b.String()
	return out, strings.TrimSpace(out) != ""
}

// dispatchID is the deterministic id of a keyword reply:
// hex(sha256("kw|"+event id+"|"+rule name))[:32], the rule name being
// KeywordRule.Name or its default (the upper-case keyword for first_word and
// exact rules, so the ids of rules written before modes existed did not
// change). Exactly one rule fires per message, so the same inbound event
// always gives the same id (as long as the config is the same): a replayed
// batch produces duplicates the dispatcher can recognise.
func dispatchID(eventID, name string) string {
	return hashID("kw", eventID, name)
}

// hashID is the id the segmenter derives from parts, for the records a
// replay must produce again the same: hex(sha256(parts joined by "|"))
// [:32]. The joined input is hashed from a stack buffer when it fits.
func hashID(parts ...string) string {
	var buf [160]byte
	b := buf[:0]
	for i, part := range parts {
		if i > 0 {
			b = append(b, '|')
		}
		b = append(b, part...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// applyTo applies the profile actions of r (OptOut, SetTags) to p. It
// reports whether p changed, and whether its tags did.
func (r *rule) applyTo(p *Profile) (changed, tags bool) {
	if r.OptOut != nil && p.OptedOut != *r.OptOut {
		p.OptedOut = *r.OptOut
		changed = true
	}
	for name, t := range r.tags {
		if old, ok := p.Tag(name); ok && old.Kind == t.Kind && old.Str == t.Str && old.Num == t.Num && old.Bool == t.Bool {
			continue
		}
		p.setTag(name, t) // scalar: shares nothing with r
		changed, tags = true, true
	}
	return changed, tags
}

// applyRule applies the profile actions of r, fired by the inbound event e
// (applied to p, saved under key), and saves p again when they changed it.
// It returns the skip reason when they could not be applied: p is then as
// e left it.
func (s *Segmenter) applyRule(out []*kgo.Record, key []byte, partition int32, e *schemas.Event, p *Profile, r *rule, now time.Time) ([]*kgo.Record, string) {
	changed, tags := r.applyTo(p)
	if changed {
		// The actions change tags and the opt-out: segments reading them
		// are evaluated again, as for any profile change.
		c := change{defaults: r.OptOut != nil}
		if len(r.tags) > 0 {
			c.tags = make(map[string]any, len(r.tags))
			for name := range r.tags {
				c.tags[name] = nil
			}
		}
		mark := len(out)
		out = s.evalSegments(out, e, p, c, now)
		if err := s.save(key, p); err != nil {
			s.revert(key, p) // back to the state e left, saved just before
			s.log.Warn("keyword actions not applied", "app", e.App, "keyword", r.name, "event_id", e.ID, "err", err)
			return out[:mark], skipProfileFull
		}
		s.noteChanged(key, partition, e, p, tags)
	}
	if r.OptOut != nil {
		if *r.OptOut {
			s.m.keywordActions[actionOptOut].Inc()
		} else {
			s.m.keywordActions[actionOptIn].Inc()
		}
		// The dispatcher keeps its own opt-outs (learned from Meta's
		// 131050) on the suppressions topic: STOP sets one, START lifts
		// it, whether or not the profile's flag changed.
		if rec := optOutRecord(e, r.name, *r.OptOut); rec != nil {
			out = append(out, rec)
		}
	}
	if len(r.tags) > 0 {
		s.m.keywordActions[actionSetTags].Inc()
	}
	return out, ""
}

// optOutRecord is the schemas.TopicSuppressions record of a keyword that
// sets (on) or clears the marketing opt-out of e's sender: a
// marketing_opt_out suppression, or one Lifted, dated by e, so that the
// dispatcher keeps the latest of it and of what Meta told it. Nil when e
// names no sender.
func optOutRecord(e *schemas.Event, keyword string, on bool) *kgo.Record {
	if e.Inbound == nil || e.Inbound.From == "" {
		return nil
	}
	sup := &schemas.Suppression{
		App: e.App, To: e.Inbound.From, Reason: schemas.SuppressMarketingOptOut,
		Keyword: keyword, Lifted: !on, Time: e.Time.UTC(),
	}
	b, err := sup.Marshal()
	if err != nil || sup.Validate() != nil {
		return nil
	}
	return &kgo.Record{Topic: schemas.TopicSuppressions, Key: sup.Key(), Value: b}
}

// replies reports whether r sends a reply.
func (r *rule) replies() bool { return r.Template != "" || r.Text != "" }

// keywordReply builds the reply of r (which replies) to the inbound event e
// of profile p (p already has e and r's profile actions applied). It returns the skip reason when r produces nothing.
func (s *Segmenter) keywordReply(d *schemas.DispatchRequest, e *schemas.Event, p *Profile, r *rule, now time.Time) (skip string) {
	if now.Sub(e.Time) > s.cfg.DispatchTTL {
		return skipStale
	}
	*d = schemas.DispatchRequest{
		ID:       dispatchID(e.ID, r.name),
		App:      e.App,
		Channel:  schemas.ChannelWhatsApp,
		Sender:   e.Inbound.PhoneNumberID,
		To:       e.Inbound.From,
		HWID:     e.HWID,
		Country:  p.Country,
		Source:   schemas.Source{Kind: SourceKeyword, Name: r.name, EventID: e.ID},
		Created:  now,
		Deadline: now.Add(s.cfg.DispatchTTL),
		// The inbound message of e opened the window (p has it applied).
		WindowUntil: p.WindowUntil(),
	}
	name := e.Inbound.ProfileName
	if r.Template != "" {
		if r.Category == CategoryMarketing && p.OptedOut {
			return skipOptedOut
		}
		t := &schemas.Template{Name: r.Template, Language: r.Language, Category: r.Category}
		if len(r.params) > 0 {
			t.Body = make([]string, len(r.params))
			for i, pp := range r.params {
				v, ok := pp.expand(name, p)
				if !ok {
					return skipEmptyParam
				}
				t.Body[i] = v
			}
		}
		d.Template = t
		return ""
	}
	// Free-form text only inside the service window: the request expires
	// when the window closes, whatever DispatchTTL says.
	if end := p.LastInbound.Add(serviceWindow); end.Before(d.Deadline) {
		d.Deadline = end
	}
	if !d.Deadline.After(now) {
		return skipWindowClose
	}
	body, ok := r.text.expand(name, p)
	if !ok {
		return skipEmptyParam
	}
	d.Text = &schemas.Text{Body: body}
	return ""
}

// SourceKeyword is the Source.Kind of keyword replies.
const SourceKeyword = "keyword"
