package segmenter

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// The segmenter reads schemas.TopicTemplates (written by the dispatcher's
// template sync and ingest's template webhooks) so that the campaign API
// refuses, when a campaign is created or previewed, a template the app's
// WhatsApp Business account does not have in that language, one that is
// not APPROVED (schemas.TemplateDef.EffectiveStatus, as the dispatcher
// decides it), or variables that do not fit it
// (schemas.TemplateDef.ParamProblems) — rather than accept a campaign
// whose every send the dispatcher would fail. The template's category is
// the campaign's. An app none of whose templates are on the topic (no
// WABA id, or never synced) is not checked: the dispatcher and Meta decide.

// templateView is the segmenter's copy of TopicTemplates.
type templateView struct {
	mu    sync.RWMutex
	byApp map[string]map[string]*viewEntry // app -> "name/language"
	keys  map[string]viewKey               // record key -> entry, for tombstones
	ready chan struct{}                    // closed once the topic was read
}

type viewEntry struct {
	def *schemas.TemplateDef
	sig *schemas.TemplateSignal
}

type viewKey struct {
	app, ref string
	signal   bool
}

func newTemplateView() *templateView {
	return &templateView{byApp: make(map[string]map[string]*viewEntry), keys: make(map[string]viewKey), ready: make(chan struct{})}
}

// entry returns ref's entry in app, made if new; mu is held.
func (v *templateView) entry(app, ref string) *viewEntry {
	m := v.byApp[app]
	if m == nil {
		m = make(map[string]*viewEntry)
		v.byApp[app] = m
	}
	e := m[ref]
	if e == nil {
		e = new(viewEntry)
		m[ref] = e
	}
	return e
}

// apply applies one TopicTemplates record.
func (v *templateView) apply(r *kgo.Record, log func(msg string, args ...any)) {
	signal := false
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderRecord {
			signal = string(h.Value) == schemas.RecordTemplateSignal
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(r.Value) == 0 {
		k, ok := v.keys[string(r.Key)]
		if !ok || k.signal != signal {
			return
		}
		delete(v.keys, string(r.Key))
		if e := v.byApp[k.app][k.ref]; e != nil {
			if signal {
				e.sig = nil
			} else {
				e.def = nil
			}
		}
		return
	}
	if signal {
		sig, err := schemas.DecodeTemplateSignal(r.Value)
		if err != nil {
			log("skipping a template signal", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		if sig.Template.Name == "" || sig.Template.Language == "" {
			return // known by id only: the sync it triggers lists it
		}
		ref := sig.Template.Name + "/" + sig.Template.Language
		e := v.entry(sig.App, ref)
		if e.sig == nil || !e.sig.Time.After(sig.Time) {
			e.sig = sig
		}
		v.keys[string(r.Key)] = viewKey{sig.App, ref, true}
		return
	}
	def, err := schemas.DecodeTemplateDef(r.Value)
	if err != nil {
		log("skipping a template definition", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	ref := def.Name + "/" + def.Language
	v.entry(def.App, ref).def = def
	v.keys[string(r.Key)] = viewKey{def.App, ref, false}
}

// lookup returns app's template name in language and its effective
// status, whether the view has app's templates at all (for its WABA), and
// the languages name exists in.
func (v *templateView) lookup(app *apps.App, name, language string) (def *schemas.TemplateDef, status string, known bool, languages []string) {
	waba := app.WhatsApp.WABAID
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, e := range v.byApp[app.ID] {
		if e.def == nil || e.def.WABAID != waba || waba == "" {
			continue
		}
		known = true
		if e.def.Name != name {
			continue
		}
		if e.def.Language == language {
			def, status = e.def, e.def.EffectiveStatus(e.sig)
		} else {
			languages = append(languages, e.def.Language)
		}
	}
	slices.Sort(languages)
	return def, status, known, languages
}

// runTemplatesFeed reads TopicTemplates from the start into s.tmpl until
// ctx is done, closing its ready channel once caught up.
func (s *Segmenter) runTemplatesFeed(ctx context.Context) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicTemplates,
		func(r *kgo.Record) { s.tmpl.apply(r, s.log.Warn) },
		func() { close(s.tmpl.ready) }); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}

// requestFields maps the template fields ParamProblems names to the
// campaign request's.
var requestFields = strings.NewReplacer("template.body", "request.content_variables", "template.header", "request.header_variables",
	"template.button_url", "request.button_url_variables")

// checkTemplate checks campaign c's template against the app's templates
// and returns the template's category ("" when the app's templates are not
// known: unchecked).
func (s *Segmenter) checkTemplate(ctx context.Context, app *apps.App, c *schemas.Campaign) (string, *apiError) {
	if aerr := viewReady(ctx, s.tmpl.ready, "the templates are still loading: retry"); aerr != nil {
		return "", aerr
	}
	t := &c.Template
	def, status, known, languages := s.tmpl.lookup(app, t.Name, t.Language)
	switch {
	case !known:
		return "", nil
	case def == nil && len(languages) > 0:
		return "", refuse(http.StatusBadRequest, "request.language", "template %q is not in %s; it is in %s", t.Name, t.Language, strings.Join(languages, ", "))
	case def == nil:
		return "", refuse(http.StatusBadRequest, "request.template", "%q is not a template of the app's WhatsApp Business account %s", t.Name, app.WhatsApp.WABAID)
	case status != schemas.TemplateApproved:
		return "", refuse(http.StatusBadRequest, "request.template", "template %q in %s is %s: only APPROVED templates send", t.Name, t.Language, status)
	}
	if problems := def.ParamProblems(t); len(problems) > 0 {
		field := "request.template"
		if f, _, ok := strings.Cut(requestFields.Replace(problems[0]), " "); ok && strings.HasPrefix(f, "request.") {
			field, _, _ = strings.Cut(f, "[")
		}
		return "", refuse(http.StatusBadRequest, field, "do not fit template %q in %s: %s", t.Name, t.Language, requestFields.Replace(strings.Join(problems, "; ")))
	}
	return def.Category, nil
}

// categoryFromTemplate: the app's template, as synced from Meta, names it.
const categoryFromTemplate = "template"

// templateCategoryOf settles c's category with its template's: the
// template's when known (a request naming another is refused), else what
// templateCategory decided.
func templateCategoryOf(c *schemas.Campaign, templateCat, source string) (string, *apiError) {
	if templateCat == "" {
		return source, nil
	}
	if source == categoryFromRequest && c.Template.Category != templateCat {
		return "", refuse(http.StatusBadRequest, "request.category", "is %s, but template %q is %s", c.Template.Category, c.Template.Name, templateCat)
	}
	c.Template.Category = templateCat
	return categoryFromTemplate, nil
}
