package segmenter

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"

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
)

var skipReasons = []string{skipOptedOut, skipEmptyParam, skipWindowClose, skipStale}

// rule is a validated KeywordRule with its placeholders parsed.
type rule struct {
	KeywordRule
	keyword string // canonical form: upper case
	params  []param
	text    param
}

// rules finds the rule for an app and a canonical keyword.
type rules struct {
	byApp map[string]map[string]*rule // app id or AnyApp -> keyword -> rule
}

func compileRules(in []KeywordRule) (*rules, error) {
	rs := &rules{byApp: make(map[string]map[string]*rule)}
	for i := range in {
		r := &rule{KeywordRule: in[i]}
		if err := validateRule(&r.KeywordRule); err != nil {
			return nil, fmt.Errorf("keywords[%d]: %w", i, err)
		}
		r.keyword = strings.ToUpper(r.Keyword)
		for j, p := range r.BodyParams {
			pp, err := parseParam(p)
			if err != nil {
				return nil, fmt.Errorf("keywords[%d] (%s): body_params[%d]: %w", i, r.Keyword, j, err)
			}
			r.params = append(r.params, pp)
		}
		if r.Text != "" {
			pp, err := parseParam(r.Text)
			if err != nil {
				return nil, fmt.Errorf("keywords[%d] (%s): text: %w", i, r.Keyword, err)
			}
			r.text = pp
		}
		m := rs.byApp[r.App]
		if m == nil {
			m = make(map[string]*rule)
			rs.byApp[r.App] = m
		}
		if _, dup := m[r.keyword]; dup {
			return nil, fmt.Errorf("keywords[%d]: keyword %q is defined twice for app %q", i, r.Keyword, r.App)
		}
		m[r.keyword] = r
	}
	return rs, nil
}

// match returns the rule for the first word of text in app: the app's own
// rule, else the "*" rule, else nil.
func (rs *rules) match(app, text string) *rule {
	if len(rs.byApp) == 0 {
		return nil
	}
	w := firstWord(text)
	if w == "" {
		return nil
	}
	w = strings.ToUpper(w)
	if r := rs.byApp[app][w]; r != nil {
		return r
	}
	return rs.byApp[AnyApp][w]
}

// firstWord returns the first whitespace-separated word of s that still has
// a letter or digit once the punctuation and symbols around it are trimmed
// ("!!! promo" and "🎉 Promo!" both give the word promo).
func firstWord(s string) string {
	for s != "" {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		if w := trimWord(s[:end]); w != "" {
			return w
		}
		s = s[end:]
	}
	return ""
}

// trimWord trims everything but letters and digits from both ends of w.
func trimWord(w string) string {
	return strings.TrimFunc(w, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
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
				v = prof.Tags[TagProfileName].String()
			}
		case s.tag != "":
			v = prof.Tags[s.tag].String()
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

// dispatchID is the deterministic id of a keyword reply: the same inbound
// event and keyword always give the same id, so a replayed batch produces
// duplicates the dispatcher can recognise.
func dispatchID(eventID, keyword string) string {
	sum := sha256.Sum256([]byte("kw|" + eventID + "|" + keyword))
	return hex.EncodeToString(sum[:16])
}

// keywordReply builds the reply of r to the inbound event e of profile p (p
// already has e applied). It returns the skip reason when r produces nothing.
func (s *Segmenter) keywordReply(e *schemas.Event, p *Profile, r *rule, now time.Time) (*schemas.DispatchRequest, string) {
	if now.Sub(e.Time) > s.cfg.DispatchTTL {
		return nil, skipStale
	}
	d := &schemas.DispatchRequest{
		ID:       dispatchID(e.ID, r.keyword),
		App:      e.App,
		Channel:  schemas.ChannelWhatsApp,
		Sender:   e.Inbound.PhoneNumberID,
		To:       e.Inbound.From,
		HWID:     e.HWID,
		Country:  p.Country,
		Source:   schemas.Source{Kind: SourceKeyword, Name: r.keyword, EventID: e.ID},
		Created:  now,
		Deadline: now.Add(s.cfg.DispatchTTL),
	}
	name := e.Inbound.ProfileName
	if r.Template != "" {
		if r.Category == CategoryMarketing && p.OptedOut {
			return nil, skipOptedOut
		}
		t := &schemas.Template{Name: r.Template, Language: r.Language, Category: r.Category}
		if len(r.params) > 0 {
			t.Body = make([]string, len(r.params))
			for i, pp := range r.params {
				v, ok := pp.expand(name, p)
				if !ok {
					return nil, skipEmptyParam
				}
				t.Body[i] = v
			}
		}
		d.Template = t
		return d, ""
	}
	// Free-form text only inside the service window: the request expires
	// when the window closes, whatever DispatchTTL says.
	if end := p.LastInbound.Add(serviceWindow); end.Before(d.Deadline) {
		d.Deadline = end
	}
	if !d.Deadline.After(now) {
		return nil, skipWindowClose
	}
	body, ok := r.text.expand(name, p)
	if !ok {
		return nil, skipEmptyParam
	}
	d.Text = &schemas.Text{Body: body}
	return d, ""
}

// SourceKeyword is the Source.Kind of keyword replies.
const SourceKeyword = "keyword"
