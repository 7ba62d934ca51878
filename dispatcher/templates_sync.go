package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

const (
	// maxListingBytes bounds one page of the template listing.
	maxListingBytes = 16 << 20
	// maxListingPages bounds the pages of one app's listing (a cursor that
	// never ends is an error, not a loop).
	maxListingPages = 10_000
	// applyTimeout bounds the wait for the store to read back what a sync
	// wrote.
	applyTimeout = 30 * time.Second
	// listingFields are the template fields a sync asks for.
	listingFields = "id,name,language,status,category,parameter_format,components"
)

// templates is the dispatcher's template component: the store, the client
// following schemas.TopicTemplates into it, and the sync writing Meta's
// listings to the topic.
type templates struct {
	store *templateStore
	sync  *templateSync
	cl    *kgo.Client // follows TopicTemplates
}

// newTemplates builds the template component; producer writes the sync's
// records, hc calls the Graph API.
func newTemplates(cfg Config, kcfg kafka.Config, reg *apps.Registry, producer *kgo.Client, hc *http.Client,
	log *slog.Logger, m *templateMetrics,
) (*templates, error) {
	cl, err := kgo.NewClient(append(kcfg.Opts(log), kafka.FollowOpts(schemas.TopicTemplates)...)...)
	if err != nil {
		return nil, fmt.Errorf("dispatcher: creating template kafka client: %w", err)
	}
	log = log.With("component", "templates")
	store := newTemplateStore(log, m)
	return &templates{
		store: store,
		cl:    cl,
		sync: &templateSync{
			cfg: cfg.Templates, reg: reg, store: store, cl: producer, http: hc, log: log, m: m,
			base:    strings.TrimRight(cfg.WhatsAppBaseURL, "/") + "/" + cfg.GraphVersion,
			timeout: cfg.RequestTimeout,
			kick:    make(chan struct{}, 1),
			pending: make(map[string]bool),
			later:   make(map[string]time.Time),
			logErr:  newThrottle(time.Minute),
		},
	}, nil
}

// run follows the topic and, once the store caught up, syncs; it returns
// when ctx is done.
func (t *templates) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		t.store.follow(ctx, t.cl, func(app string) {
			// Signals read while catching up are older than the first sync.
			if t.store.ready.Load() {
				t.sync.resyncLater(app)
			}
		})
	})
	wg.Go(func() {
		if t.waitReady(ctx) {
			t.sync.run(ctx)
		}
	})
	wg.Wait()
}

// waitReady waits until the store caught up with the topic (true) or ctx
// is done (false).
func (t *templates) waitReady(ctx context.Context) bool {
	select {
	case <-t.store.readyCh:
		return true
	case <-ctx.Done():
		return false
	}
}

func (t *templates) close() { t.cl.Close() }

// templateSync lists every app's templates from the Graph API and writes
// what changed to TopicTemplates.
type templateSync struct {
	cfg     TemplatesConfig
	reg     *apps.Registry
	store   *templateStore
	cl      *kgo.Client
	http    *http.Client
	log     *slog.Logger
	m       *templateMetrics
	base    string // {WhatsAppBaseURL}/{GraphVersion}
	timeout time.Duration

	kick    chan struct{}
	mu      sync.Mutex
	pending map[string]bool      // app ids to sync
	later   map[string]time.Time // app ids to sync at a time (resyncLater)
	logErr  *throttle
}

// run syncs every app at once, then every SyncInterval (jittered, so that
// replicas spread their calls) and each app ResyncDelay after its template
// webhooks, until ctx is done.
func (y *templateSync) run(ctx context.Context) {
	y.requestAll()
	var tick <-chan time.Time
	var timer *time.Timer
	if y.cfg.SyncInterval > 0 {
		timer = time.NewTimer(jitter(y.cfg.SyncInterval))
		defer timer.Stop()
		tick = timer.C
	}
	for {
		y.promoteDue(time.Now())
		y.drain(ctx)
		var due <-chan time.Time
		var resync *time.Timer
		if wait, ok := y.promoteDue(time.Now()); ok {
			resync = time.NewTimer(wait)
			due = resync.C
		}
		select {
		case <-ctx.Done():
		case <-tick:
			y.requestAll()
			timer.Reset(jitter(y.cfg.SyncInterval))
		case <-y.kick:
		case <-due:
		}
		if resync != nil {
			resync.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// promoteDue makes the apps whose resync is due pending, and returns the
// wait until the next resync (false: none is scheduled).
func (y *templateSync) promoteDue(now time.Time) (wait time.Duration, ok bool) {
	y.mu.Lock()
	defer y.mu.Unlock()
	for app, due := range y.later {
		if !due.After(now) {
			y.pending[app] = true
			delete(y.later, app)
			continue
		}
		if w := due.Sub(now); !ok || w < wait {
			wait, ok = w, true
		}
	}
	return wait, ok
}

// jitter is d ± 10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

func (y *templateSync) requestAll() {
	y.mu.Lock()
	for _, a := range y.reg.All() {
		if a.WhatsApp.WABAID != "" {
			y.pending[a.ID] = true
		}
	}
	y.mu.Unlock()
	y.wake()
}

func (y *templateSync) request(app string) {
	y.mu.Lock()
	y.pending[app] = true
	y.mu.Unlock()
	y.wake()
}

func (y *templateSync) wake() {
	select {
	case y.kick <- struct{}{}:
	default:
	}
}

// resyncLater syncs app ResyncDelay (jittered) from now: after a template
// webhook, Meta's listing has caught up, and another replica's sync has
// likely written the change already (this one then writes nothing).
func (y *templateSync) resyncLater(app string) {
	y.mu.Lock()
	if _, ok := y.later[app]; !ok {
		y.later[app] = time.Now().Add(jitter(y.cfg.ResyncDelay))
	}
	y.mu.Unlock()
	y.wake()
}

// drain syncs the pending apps, one at a time.
func (y *templateSync) drain(ctx context.Context) {
	for ctx.Err() == nil {
		y.mu.Lock()
		var id string
		for a := range y.pending {
			id = a
			break
		}
		delete(y.pending, id)
		y.mu.Unlock()
		if id == "" {
			return
		}
		app, ok := y.reg.ByID(id)
		if !ok || app.WhatsApp.WABAID == "" {
			continue
		}
		if err := y.syncApp(ctx, app); err != nil && ctx.Err() == nil {
			y.m.syncs.WithLabelValues("error").Inc()
			if y.logErr.allow(app.ID) {
				y.log.Warn("syncing templates failed; the templates known stay as they were", "app", app.ID,
					"waba_id", app.WhatsApp.WABAID, "err", err)
			}
			var ge *GraphError
			if errors.As(err, &ge) && ge.Code == codeAccessToken {
				y.log.Error("whatsapp access token refused (code 190) listing templates: the app needs a new token", "app", app.ID)
			}
		}
	}
}

// syncApp lists app's templates, writes what changed since the store's
// copy (a record per new or changed template, tombstones for templates no
// longer listed) and waits until the store read it back. On any error
// nothing is written: the store keeps what it had.
func (y *templateSync) syncApp(ctx context.Context, app *apps.App) error {
	start := time.Now().UTC()
	defs, err := y.list(ctx, app, start)
	if err != nil {
		return err
	}
	recs := diffTemplates(y.store.snapshot(app.ID), defs, start)
	if len(recs) > 0 {
		if err := kafka.ProduceAll(ctx, y.cl, recs); err != nil {
			return fmt.Errorf("writing %d template records of app %s: %w", len(recs), app.ID, err)
		}
		if err := y.store.waitApplied(ctx, recs, applyTimeout); err != nil {
			return fmt.Errorf("syncing templates of app %s: %w", app.ID, err)
		}
		for _, r := range recs {
			if r.Value == nil {
				y.m.changes.WithLabelValues("deleted").Inc()
			} else {
				y.m.changes.WithLabelValues("written").Inc()
			}
		}
	}
	y.store.markKnown(app.ID, app.WhatsApp.WABAID)
	y.m.syncs.WithLabelValues("ok").Inc()
	y.log.Debug("templates synced", "app", app.ID, "templates", len(defs), "records", len(recs))
	return nil
}

// diffTemplates returns the records that bring the store's copy of an app
// (have) to a listing started at start (listed): each new or changed
// template, and tombstones for the templates and signals the listing no
// longer has. A template also counts as changed when a webhook gave it
// another status that the listing, started more than signalGrace later,
// no longer shows. Records and signals newer than the listing are kept.
func diffTemplates(have map[string]templateEntry, listed []*schemas.TemplateDef, start time.Time) []*kgo.Record {
	var recs []*kgo.Record
	seen := make(map[string]bool, len(listed))
	for _, d := range listed {
		ref := templateRef(d.Name, d.Language)
		if seen[ref] {
			continue
		}
		seen[ref] = true
		e, ok := have[ref]
		if ok && e.def != nil && sameTemplate(e.def, d) &&
			(e.status() == d.Status || e.sig == nil || !start.After(e.sig.Time.Add(signalGrace))) {
			continue
		}
		b, _ := d.Marshal() // cannot fail: plain fields only
		recs = append(recs, &kgo.Record{Topic: schemas.TopicTemplates, Key: d.Key(), Value: b})
	}
	for ref, e := range have {
		if seen[ref] {
			continue
		}
		if e.def != nil && e.def.Synced.Before(start) {
			recs = append(recs, &kgo.Record{Topic: schemas.TopicTemplates, Key: e.def.Key()})
		}
		if e.sig != nil && e.sig.Time.Before(start) {
			recs = append(recs, &kgo.Record{Topic: schemas.TopicTemplates, Key: e.sig.Key(), Headers: signalHeaders()})
		}
	}
	return recs
}

func signalHeaders() []kgo.RecordHeader {
	return []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordTemplateSignal)}}
}

// sameTemplate compares two definitions, their sync times aside.
func sameTemplate(a, b *schemas.TemplateDef) bool {
	x, y := *a, *b
	x.Synced, y.Synced, x.V, y.V = time.Time{}, time.Time{}, 0, 0
	return reflect.DeepEqual(x, y)
}

// Graph's message_templates answer, the parts Herald uses
// (https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates/).
type (
	graphTemplatePage struct {
		Data   []graphTemplate `json:"data"`
		Paging *struct {
			Cursors struct {
				After string `json:"after"`
			} `json:"cursors"`
			Next string `json:"next"`
		} `json:"paging"`
	}
	graphTemplate struct {
		ID              string           `json:"id"`
		Name            string           `json:"name"`
		Language        string           `json:"language"`
		Status          string           `json:"status"`
		Category        string           `json:"category"`
		ParameterFormat string           `json:"parameter_format"`
		Components      []graphComponent `json:"components"`
	}
	graphComponent struct {
		Type    string `json:"type"`
		Format  string `json:"format"`
		Text    string `json:"text"`
		Example *struct {
			HeaderText         []string          `json:"header_text"`
			BodyText           [][]string        `json:"body_text"`
			HeaderTextNamed    []json.RawMessage `json:"header_text_named_params"`
			BodyTextNamedParam []json.RawMessage `json:"body_text_named_params"`
		} `json:"example"`
		Buttons []struct {
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"buttons"`
	}
)

// list returns every template of app's WABA, following the cursors.
func (y *templateSync) list(ctx context.Context, app *apps.App, synced time.Time) ([]*schemas.TemplateDef, error) {
	q := url.Values{"limit": {strconv.Itoa(y.cfg.PageLimit)}, "fields": {listingFields}}
	var out []*schemas.TemplateDef
	seen := make(map[string]bool)
	for page := 0; ; page++ {
		if page >= maxListingPages {
			return nil, fmt.Errorf("listing templates of app %s: more than %d pages", app.ID, maxListingPages)
		}
		p, err := y.page(ctx, app, q)
		if err != nil {
			return nil, err
		}
		for i := range p.Data {
			d, err := templateDef(app, &p.Data[i], synced)
			if err != nil {
				if y.logErr.allow("bad-template") {
					y.log.Warn("skipping a template Meta listed", "app", app.ID, "err", err)
				}
				continue
			}
			out = append(out, d)
		}
		if p.Paging == nil || p.Paging.Next == "" || len(p.Data) == 0 {
			return out, nil
		}
		after := p.Paging.Cursors.After
		if after == "" || seen[after] {
			return nil, fmt.Errorf("listing templates of app %s: page %d has a next page but no new after cursor", app.ID, page+1)
		}
		seen[after] = true
		q.Set("after", after)
	}
}

// page gets one page of the listing.
func (y *templateSync) page(ctx context.Context, app *apps.App, q url.Values) (*graphTemplatePage, error) {
	ctx, cancel := context.WithTimeout(ctx, y.timeout)
	defer cancel()
	u := y.base + "/" + url.PathEscape(app.WhatsApp.WABAID) + "/message_templates?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("listing templates of app %s: building request: %w", app.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+app.WhatsApp.AccessToken)
	resp, err := y.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("listing templates of app %s: %w", app.ID, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxListingBytes))
	if err != nil {
		return nil, fmt.Errorf("listing templates of app %s: reading answer: %w", app.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		var r graphResponse
		if json.Unmarshal(b, &r) == nil {
			if ge := graphError(resp.StatusCode, &r); ge != nil {
				return nil, fmt.Errorf("listing templates of app %s: %w", app.ID, ge)
			}
		}
		return nil, fmt.Errorf("listing templates of app %s: %w", app.ID, &GraphError{Status: resp.StatusCode, Message: snippet(b)})
	}
	p := new(graphTemplatePage)
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("listing templates of app %s: decoding answer: %w", app.ID, err)
	}
	return p, nil
}

// placeholderRE matches a template variable: {{1}} or {{first_name}}.
var placeholderRE = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_]+)\s*\}\}`)

// variables counts the distinct variables of a component text.
func variables(text string) int {
	seen := make(map[string]bool)
	for _, m := range placeholderRE.FindAllStringSubmatch(text, -1) {
		seen[m[1]] = true
	}
	return len(seen)
}

// templateDef turns one listed template into the record Herald keeps.
func templateDef(app *apps.App, g *graphTemplate, synced time.Time) (*schemas.TemplateDef, error) {
	d := &schemas.TemplateDef{
		V: schemas.V1, App: app.ID, WABAID: app.WhatsApp.WABAID, ID: g.ID, Name: g.Name, Language: g.Language,
		Category: g.Category, Status: g.Status, Synced: synced,
	}
	if g.ParameterFormat != "" && g.ParameterFormat != schemas.ParamsPositional {
		d.ParameterFormat = g.ParameterFormat
	}
	for i := range g.Components {
		c := &g.Components[i]
		switch strings.ToUpper(c.Type) {
		case "HEADER":
			h := &schemas.TemplateHeader{Format: strings.ToUpper(c.Format)}
			if h.Format == "" {
				h.Format = schemas.HeaderText
			}
			if h.Format == schemas.HeaderText {
				h.Params = variables(c.Text)
				if c.Text == "" && c.Example != nil {
					h.Params = max(len(c.Example.HeaderText), len(c.Example.HeaderTextNamed))
				}
			}
			d.Header = h
		case "BODY":
			d.BodyParams = variables(c.Text)
			if c.Text == "" && c.Example != nil {
				if len(c.Example.BodyText) > 0 {
					d.BodyParams = len(c.Example.BodyText[0])
				}
				d.BodyParams = max(d.BodyParams, len(c.Example.BodyTextNamedParam))
			}
		case "BUTTONS":
			for _, b := range c.Buttons {
				typ := strings.ToUpper(b.Type)
				d.Buttons = append(d.Buttons, schemas.TemplateButton{
					Type: typ,
					// An OTP button's code is sent as a url parameter.
					URLParam: typ == "OTP" || (typ == "URL" && variables(b.URL) > 0),
				})
			}
		}
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}
