package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// signalGrace, maxParamChars and fieldStatusUpdate are schemas'.
const (
	signalGrace       = schemas.TemplateSignalGrace
	maxParamChars     = schemas.MaxTemplateParamChars
	fieldStatusUpdate = schemas.FieldTemplateStatusUpdate
)

// Results of herald_dispatcher_template_checks_total.
const (
	checkPassed      = "passed"
	checkUnchecked   = "unchecked"
	checkUnknown     = "unknown"
	checkNotApproved = "not_approved"
	checkParams      = "params"
)

// templateStore is the dispatcher's copy of schemas.TopicTemplates: every
// app's templates as last listed (TemplateDef) and the last webhook change
// of each (TemplateSignal). Every replica follows the whole topic; its
// methods are safe for concurrent use.
type templateStore struct {
	log *slog.Logger
	m   *templateMetrics

	mu   sync.RWMutex
	apps map[string]*appTemplates
	// keys maps a record key to the template it is about, so that a
	// tombstone (no value) finds what to delete.
	keys map[string]keyRef
	// known maps an app id to the WABA id whose templates the store holds
	// completely: read from the topic at start, or listed by this replica.
	// Sends of other apps are not checked.
	known map[string]string
	// offsets is the last offset applied per partition; applied is closed
	// and replaced at every record (see waitApplied).
	offsets map[int32]int64
	applied chan struct{}

	ready atomic.Bool
	// readyCh is closed when ready is set.
	readyCh    chan struct{}
	unchecked  sync.Map // app ids whose unchecked sends were logged
	logInvalid *throttle
}

// appTemplates are one app's templates by name and language ("name/lang").
type appTemplates struct {
	byRef map[string]*templateEntry
}

// templateEntry is one template: its listed definition (nil while only a
// signal is known) and its last webhook change.
type templateEntry struct {
	def *schemas.TemplateDef
	sig *schemas.TemplateSignal
}

// keyRef names the template a record key is about.
type keyRef struct {
	app, ref string
	signal   bool
}

func newTemplateStore(log *slog.Logger, m *templateMetrics) *templateStore {
	return &templateStore{
		log:        log,
		m:          m,
		apps:       make(map[string]*appTemplates),
		keys:       make(map[string]keyRef),
		known:      make(map[string]string),
		offsets:    make(map[int32]int64),
		applied:    make(chan struct{}),
		readyCh:    make(chan struct{}),
		logInvalid: newThrottle(10 * time.Second),
	}
}

// templateRef is the store's name for a template: "name/language".
func templateRef(name, language string) string { return name + "/" + language }

// status is the template's effective status: the listed one, unless a
// webhook status change came later (see signalGrace). "" without a
// definition.
func (e *templateEntry) status() string {
	if e.def == nil {
		return ""
	}
	return e.def.EffectiveStatus(e.sig)
}

// follow reads the topic into the store until ctx is done. onSignal is
// called with the app of every signal applied; caught up, the store is
// ready.
func (s *templateStore) follow(ctx context.Context, cl *kgo.Client, onSignal func(app string)) {
	kafka.Follow(ctx, cl, schemas.TopicTemplates, s.log, func(r *kgo.Record) {
		if app, ok := s.apply(r); ok && onSignal != nil {
			onSignal(app)
		}
	}, s.caughtUp)
}

// caughtUp marks the store ready: every app whose templates it holds is
// known as of its WABA.
func (s *templateStore) caughtUp() {
	s.mu.Lock()
	for id, at := range s.apps {
		for _, e := range at.byRef {
			if e.def != nil {
				s.known[id] = e.def.WABAID
				break
			}
		}
	}
	n := len(s.known)
	s.mu.Unlock()
	s.ready.Store(true)
	close(s.readyCh)
	s.log.Info("template store caught up", "apps", n)
}

// apply stores one record of the topic. It returns the app of a signal.
func (s *templateStore) apply(r *kgo.Record) (signalApp string, isSignal bool) {
	defer s.noteOffset(r.Partition, r.Offset)
	signal := isSignalRecord(r)
	if r.Value == nil {
		s.tombstone(string(r.Key), signal)
		return "", false
	}
	if signal {
		sig, err := schemas.DecodeTemplateSignal(r.Value)
		if err == nil && string(sig.Key()) != string(r.Key) {
			err = fmt.Errorf("record key %q is not the signal's key %q", r.Key, sig.Key())
		}
		if err != nil {
			s.invalid(r, err)
			return "", false
		}
		s.setSignal(string(r.Key), sig)
		return sig.App, true
	}
	def, err := schemas.DecodeTemplateDef(r.Value)
	if err == nil && string(def.Key()) != string(r.Key) {
		err = fmt.Errorf("record key %q is not the template's key %q", r.Key, def.Key())
	}
	if err != nil {
		s.invalid(r, err)
		return "", false
	}
	s.setDef(string(r.Key), def)
	return "", false
}

func isSignalRecord(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderRecord {
			return string(h.Value) == schemas.RecordTemplateSignal
		}
	}
	return false
}

func (s *templateStore) invalid(r *kgo.Record, err error) {
	s.m.records.WithLabelValues("invalid").Inc()
	if s.logInvalid.allow("invalid") {
		s.log.Error("skipping an invalid template record", "partition", r.Partition, "offset", r.Offset, "err", err)
	}
}

// entry returns the entry of ref in app, creating both. Call with mu held.
func (s *templateStore) entry(app, ref string) *templateEntry {
	at := s.apps[app]
	if at == nil {
		at = &appTemplates{byRef: make(map[string]*templateEntry)}
		s.apps[app] = at
	}
	e := at.byRef[ref]
	if e == nil {
		e = new(templateEntry)
		at.byRef[ref] = e
	}
	return e
}

// change runs f on an entry and keeps the status gauge right. Call with mu
// held.
func (s *templateStore) change(e *templateEntry, f func()) {
	before := e.status()
	f()
	if after := e.status(); after != before {
		if before != "" {
			s.m.templates.WithLabelValues(before).Dec()
		}
		if after != "" {
			s.m.templates.WithLabelValues(after).Inc()
		}
	}
}

func (s *templateStore) setDef(key string, def *schemas.TemplateDef) {
	ref := templateRef(def.Name, def.Language)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(def.App, ref)
	s.change(e, func() { e.def = def })
	s.keys[key] = keyRef{app: def.App, ref: ref}
	s.m.records.WithLabelValues("template").Inc()
}

func (s *templateStore) setSignal(key string, sig *schemas.TemplateSignal) {
	t := &sig.Template
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.records.WithLabelValues("signal").Inc()
	ref := templateRef(t.Name, t.Language)
	if t.Name == "" || t.Language == "" {
		// Known by id only: it concerns the listed template of that id.
		ref = ""
		for r, e := range s.apps[sig.App].byRefs() {
			if e.def != nil && e.def.ID == t.TemplateID {
				ref = r
				break
			}
		}
		if ref == "" {
			return // not listed yet: the sync it triggers will find it
		}
	}
	e := s.entry(sig.App, ref)
	if e.sig != nil && e.sig.Time.After(sig.Time) {
		return // an older change read after a newer one
	}
	s.change(e, func() { e.sig = sig })
	s.keys[key] = keyRef{app: sig.App, ref: ref, signal: true}
}

// byRefs is the app's entries; nil for a nil app.
func (at *appTemplates) byRefs() map[string]*templateEntry {
	if at == nil {
		return nil
	}
	return at.byRef
}

func (s *templateStore) tombstone(key string, signal bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.records.WithLabelValues("deleted").Inc()
	k, ok := s.keys[key]
	if !ok || k.signal != signal {
		return
	}
	delete(s.keys, key)
	at := s.apps[k.app]
	e := at.byRefs()[k.ref]
	if e == nil {
		return
	}
	s.change(e, func() {
		if signal {
			e.sig = nil
		} else {
			e.def = nil
		}
	})
	if e.def == nil && e.sig == nil {
		delete(at.byRef, k.ref)
	}
}

// noteOffset records that the record at offset of partition was applied.
func (s *templateStore) noteOffset(partition int32, offset int64) {
	s.mu.Lock()
	s.offsets[partition] = offset
	close(s.applied)
	s.applied = make(chan struct{})
	s.mu.Unlock()
}

// waitApplied waits until the store applied recs (produced, so their
// partition and offset are set), ctx is done or timeout passed.
func (s *templateStore) waitApplied(ctx context.Context, recs []*kgo.Record, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.RLock()
		done := true
		for _, r := range recs {
			if off, ok := s.offsets[r.Partition]; !ok || off < r.Offset {
				done = false
				break
			}
		}
		ch := s.applied
		s.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("the template store did not read its own %d records within %v", len(recs), timeout)
		}
	}
}

// markKnown notes that the store holds every template of app's WABA.
func (s *templateStore) markKnown(app, waba string) {
	s.mu.Lock()
	s.known[app] = waba
	s.mu.Unlock()
}

// snapshot returns copies of app's entries, by ref.
func (s *templateStore) snapshot(app string) map[string]templateEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]templateEntry)
	for ref, e := range s.apps[app].byRefs() {
		out[ref] = *e
	}
	return out
}

// check decides whether req's template may be sent. It returns nil to send
// (also when the store knows nothing of the app: no WABA id, or its
// templates never listed; then Meta decides, as without the store), else
// an error wrapping ErrTemplateUnknown, ErrTemplateNotApproved or
// ErrTemplateParams that says what is wrong.
func (s *templateStore) check(app *apps.App, t *schemas.Template) error {
	if t == nil {
		return nil
	}
	waba := app.WhatsApp.WABAID
	ref := templateRef(t.Name, t.Language)
	s.mu.RLock()
	known := waba != "" && s.known[app.ID] == waba
	var def *schemas.TemplateDef
	var status string
	if e := s.apps[app.ID].byRefs()[ref]; known && e != nil && e.def != nil && e.def.WABAID == waba {
		def, status = e.def, e.status()
	}
	var others []string
	if known && def == nil {
		others = s.languagesOf(app.ID, waba, t.Name)
	}
	s.mu.RUnlock()

	var err error
	result := checkPassed
	switch {
	case !known:
		result = checkUnchecked
		s.logUnchecked(app)
	case def == nil:
		result = checkUnknown
		err = fmt.Errorf("%w: template %q in %s is not in the app's WhatsApp Business account %s", ErrTemplateUnknown, t.Name, t.Language, waba)
		if len(others) > 0 {
			err = fmt.Errorf("%w (it exists in %s)", err, strings.Join(others, ", "))
		}
	case status != schemas.TemplateApproved:
		result = checkNotApproved
		err = fmt.Errorf("%w: template %q in %s is %s; only APPROVED templates send", ErrTemplateNotApproved, t.Name, t.Language, status)
	default:
		if problems := def.ParamProblems(t); len(problems) > 0 {
			result = checkParams
			err = fmt.Errorf("%w: template %q in %s: %s", ErrTemplateParams, t.Name, t.Language, strings.Join(problems, "; "))
		}
	}
	s.m.checked[result].Inc()
	return err
}

// languagesOf lists the languages app's template name exists in. Call with
// mu held.
func (s *templateStore) languagesOf(app, waba, name string) []string {
	var out []string
	for _, e := range s.apps[app].byRefs() {
		if e.def != nil && e.def.Name == name && e.def.WABAID == waba {
			out = append(out, e.def.Language)
		}
	}
	sort.Strings(out)
	return out
}

// logUnchecked logs once per app that its sends are not checked.
func (s *templateStore) logUnchecked(app *apps.App) {
	if _, logged := s.unchecked.Load(app.ID); logged {
		return // without LoadOrStore's allocation of its value, on every send
	}
	if _, logged := s.unchecked.LoadOrStore(app.ID, struct{}{}); logged {
		return
	}
	why := "its templates were not listed yet (the sync has not succeeded)"
	if app.WhatsApp.WABAID == "" {
		why = "it has no whatsapp.waba_id"
	}
	s.log.Warn("sending templates of this app unchecked: Meta decides whether they exist and fit, because "+why, "app", app.ID)
}
