package segmenter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// The tag registry: which tag names each app uses, with their types, so
// that the segment API can refuse a filter naming a tag no profile has and
// none was declared (a typo: "Cusine"), or comparing a tag with a value of
// another type, when the filter is defined rather than let it match nobody
// when it runs.
//
// It is TopicTagDefs (compacted), read whole by every segmenter. Each
// segmenter adds a seen record the first time one of its profiles gets a
// tag name the registry does not hold, or a value of another type than the
// registry's (then the type becomes schemas.TagMixed: not checked); the API
// adds declared records (addTag) and removes them (deleteTag). A declared
// type wins over a seen one.

// tagDef is what the registry holds of one tag name.
type tagDef struct {
	declared, seen string // types; "" when there is no such record
}

// typ is the type that counts: the declared one, else the seen one.
func (d tagDef) typ() string {
	if d.declared != "" {
		return d.declared
	}
	return d.seen
}

// tagRegistry is the segmenter's view of TopicTagDefs plus the seen
// records it wrote itself.
type tagRegistry struct {
	mu    sync.RWMutex
	byApp map[string]map[string]tagDef
	// ready is closed once the registry holds what the topic held when
	// the segmenter started.
	ready chan struct{}
}

func newTagRegistry() *tagRegistry {
	return &tagRegistry{byApp: make(map[string]map[string]tagDef), ready: make(chan struct{})}
}

// registryWait bounds how long an API call waits for a view (the tag
// registry, the templates, the journeys, the tier counts) of a segmenter
// that just started.
const registryWait = 10 * time.Second

// viewReady waits until ready is closed (the view has read its topic), ctx
// is done or registryWait passed; it answers 503 with msg unless the view
// is ready.
func viewReady(ctx context.Context, ready <-chan struct{}, msg string) *apiError {
	select {
	case <-ready:
		return nil
	default:
	}
	t := time.NewTimer(registryWait)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	return refuse(http.StatusServiceUnavailable, "", "%s", msg)
}

// update changes name's entry in app with f.
func (r *tagRegistry) update(app, name string, f func(*tagDef)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.appLocked(app)
	d := m[name]
	f(&d)
	if d == (tagDef{}) {
		delete(m, name)
		return
	}
	m[name] = d
}

// appLocked returns app's entries, made when it has none (r.mu held).
func (r *tagRegistry) appLocked(app string) map[string]tagDef {
	m := r.byApp[app]
	if m == nil {
		m = make(map[string]tagDef)
		r.byApp[app] = m
	}
	return m
}

// see notes that a tag name of app was seen with type typ, and returns the
// type a seen record of it carries, or false when none is due: the
// registry knows it seen with a type typ fits already. A tag known only
// as declared is recorded with typ, or as mixed when typ does not fit the
// declared type (so it stays known if the declaration goes); one seen
// with another type becomes mixed. The decision and the update are made
// under one lock: two workers seeing a new tag at once record it once, and
// a number and a string seen at once make it mixed.
func (r *tagRegistry) see(app, name, typ string) (string, bool) {
	if d, known := r.lookup(app, name); known && d.seen != "" && (d.seen == schemas.TagMixed || compatible(d.seen, typ)) {
		return "", false // the common case, under the read lock only
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.appLocked(app)
	d, known := m[name]
	switch {
	case known && d.seen == "":
		if !compatible(d.declared, typ) {
			typ = schemas.TagMixed
		}
	case known && (d.seen == schemas.TagMixed || compatible(d.seen, typ)):
		return "", false
	case known:
		typ = schemas.TagMixed
	}
	d.seen = typ
	m[name] = d
	return typ, true
}

// lookup returns name's entry in app.
func (r *tagRegistry) lookup(app, name string) (tagDef, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.byApp[app][name]
	return d, ok
}

// list returns app's tags by name with the type that counts.
func (r *tagRegistry) list(app string) []schemas.TagDef {
	r.mu.RLock()
	out := make([]schemas.TagDef, 0, len(r.byApp[app]))
	for name, d := range r.byApp[app] {
		out = append(out, schemas.TagDef{V: schemas.V1, App: app, Name: name, Type: d.typ(), Declared: d.declared != ""})
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b schemas.TagDef) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// apply applies one TopicTagDefs record.
func (r *tagRegistry) apply(rec *kgo.Record, log func(msg string, args ...any)) {
	if len(rec.Value) == 0 { // a tombstone: only declarations are deleted
		app, rest, ok := strings.Cut(string(rec.Key), "|")
		src, name, ok2 := strings.Cut(rest, "|")
		if ok && ok2 && src == "declared" {
			r.update(app, name, func(d *tagDef) { d.declared = "" })
		}
		return
	}
	d, err := schemas.DecodeTagDef(rec.Value)
	if err == nil && string(d.Key()) != string(rec.Key) {
		err = fmt.Errorf("record key %q is not the tag definition's key %q", rec.Key, d.Key())
	}
	if err != nil {
		log("skipping a tag definition", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return
	}
	r.update(d.App, d.Name, func(t *tagDef) {
		if d.Declared {
			t.declared = d.Type
		} else if t.seen != schemas.TagMixed { // mixed stays mixed
			t.seen = d.Type
		}
	})
}

// seenType is the registry type of tag name of event e whose applied value
// is t: the type the event gives, else the value's.
func seenType(e *schemas.Event, name string, t Tag) string {
	if typ, ok := e.TagTypes[name]; ok && slices.Contains(schemas.TagTypes, typ) {
		return typ
	}
	switch t.Kind {
	case TagNumber:
		if t.Num == float64(int64(t.Num)) {
			return schemas.TagInteger
		}
		return schemas.TagDecimal
	case TagBool:
		return schemas.TagBoolean
	case TagList:
		return schemas.TagList
	}
	return schemas.TagString
}

// compatible reports whether a value of type got fits a tag registered as
// want (integers are decimals too).
func compatible(want, got string) bool {
	num := func(t string) bool { return t == schemas.TagInteger || t == schemas.TagDecimal }
	return want == got || num(want) && num(got)
}

// appendSeen appends a seen TopicTagDefs record for each tag of e (applied
// to p) that the registry does not know, or knows with another seen type.
func (s *Segmenter) appendSeen(out []*kgo.Record, e *schemas.Event, p *Profile, now time.Time) []*kgo.Record {
	for name := range e.Tags {
		t, ok := p.Tag(name)
		if !ok || len(name) > schemas.MaxTagName {
			continue // removed, or ignored by apply
		}
		typ, ok := s.tagReg.see(e.App, name, seenType(e, name, t))
		if !ok {
			continue
		}
		def := &schemas.TagDef{App: e.App, Name: name, Type: typ, Updated: now}
		b, err := def.Marshal()
		if err != nil {
			continue // cannot happen: plain fields
		}
		s.m.tagDefs.Inc()
		out = append(out, &kgo.Record{Topic: schemas.TopicTagDefs, Key: def.Key(), Value: b})
	}
	return out
}

// runTagsFeed reads TopicTagDefs from the start into s.tags until ctx is
// done, closing ready once it has read what the topic held at start.
func (s *Segmenter) runTagsFeed(ctx context.Context, ready chan<- struct{}) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicTagDefs,
		func(r *kgo.Record) { s.tagReg.apply(r, s.log.Warn) },
		func() { close(s.tagReg.ready); close(ready) }); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}

// tagFieldType is the filter type a tag of registry type typ has: strict
// for declared types, lenient for seen strings, which may hold dates or
// versions a filter compares as such.
func tagFieldType(d tagDef) fieldType {
	switch d.typ() {
	case schemas.TagInteger, schemas.TagDecimal:
		return typeNum
	case schemas.TagBoolean:
		return typeBool
	case schemas.TagDate:
		if d.declared != "" {
			return typeTime
		}
	case schemas.TagString:
		if d.declared != "" {
			return typeStr
		}
	}
	return typeAny
}

// tagTypes is the registry lookup of app for CompileChecked.
func (s *Segmenter) tagTypes(app string) TagTypes {
	return func(name string) (fieldType, bool, string) {
		if d, ok := s.tagReg.lookup(app, name); ok {
			return tagFieldType(d), true, ""
		}
		return typeAny, false, s.tagReg.suggest(app, name)
	}
}

// suggest returns a hint naming the known tag of app closest to name
// (same letters in another case, or at most two edits away), "" when none
// is.
func (r *tagRegistry) suggest(app, name string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	best, bestDist := "", 3
	consider := func(cand string) {
		d := editDistance(strings.ToLower(name), strings.ToLower(cand))
		if strings.EqualFold(cand, name) {
			d = 0
		}
		if d < bestDist || d == bestDist && cand < best {
			best, bestDist = cand, d
		}
	}
	for cand := range r.byApp[app] {
		consider(cand)
	}
	for i := range fields {
		if i > 0 {
			consider(fields[i].name)
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", quoteFilter(best))
}

// editDistance is the Levenshtein distance of a and b in bytes, stopping
// early past 3 (only small distances are of interest).
func editDistance(a, b string) int {
	if d := len(a) - len(b); d > 3 || d < -3 {
		return 4
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// pushwooshTagTypes are Pushwoosh's tag type numbers.
var pushwooshTagTypes = map[int]string{
	1: schemas.TagInteger, 2: schemas.TagString, 3: schemas.TagList, 4: schemas.TagDate,
	5: schemas.TagBoolean, 6: schemas.TagDecimal, 7: schemas.TagVersion,
}

// pushwooshTagNumber is the Pushwoosh number of a type, 0 for TagMixed.
func pushwooshTagNumber(typ string) int {
	for n, t := range pushwooshTagTypes {
		if t == typ {
			return n
		}
	}
	return 0
}

// apiTagName checks the tag's name of an addTag or deleteTag request.
func apiTagName(req *apiRequest) (string, *apiError) {
	switch {
	case req.Tag == nil:
		return "", refuse(http.StatusBadRequest, "request.tag", `is required: {"name":"...","type":1..7}`)
	case req.Tag.Name == "":
		return "", refuse(http.StatusBadRequest, "request.tag.name", "is required")
	case len(req.Tag.Name) > schemas.MaxTagName:
		return "", refuse(http.StatusBadRequest, "request.tag.name", "is %d bytes long, at most %d are allowed", len(req.Tag.Name), schemas.MaxTagName)
	case strings.ContainsFunc(req.Tag.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", refuse(http.StatusBadRequest, "request.tag.name", "contains control characters")
	case fieldOf(req.Tag.Name) != fieldNone:
		return "", refuse(http.StatusBadRequest, "request.tag.name", "%q is a default tag: it has its type already", req.Tag.Name)
	}
	return req.Tag.Name, nil
}

// addTag declares a tag and its type (Pushwoosh addTag):
//
//	{"request":{"application":"APP","tag":{"name":"Favourite cuisine","type":2}}}  // or "type":"string"
//	-> {"result":true}
//
// Filters naming the tag are then accepted (and type-checked) before any
// profile has it.
func (s *Segmenter) addTag(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	name, aerr := apiTagName(req)
	if aerr != nil {
		return nil, aerr
	}
	var typ string
	var n int
	switch {
	case len(req.Tag.Type) == 0:
		return nil, refuse(http.StatusBadRequest, "request.tag.type", "is required: 1 integer, 2 string, 3 list, 4 date, 5 boolean, 6 decimal, 7 version")
	case json.Unmarshal(req.Tag.Type, &n) == nil:
		typ = pushwooshTagTypes[n]
	case json.Unmarshal(req.Tag.Type, &typ) == nil:
		if typ == schemas.TagMixed {
			typ = ""
		}
	}
	if !slices.Contains(schemas.TagTypes, typ) {
		return nil, refuse(http.StatusBadRequest, "request.tag.type", "%s is not a tag type: 1 integer, 2 string, 3 list, 4 date, 5 boolean, 6 decimal, 7 version", req.Tag.Type)
	}
	def := &schemas.TagDef{App: app.ID, Name: name, Type: typ, Declared: true, Updated: time.Now().UTC()}
	b, err := def.Marshal()
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "", "internal error")
	}
	if aerr := s.produceAcked(ctx, &kgo.Record{Topic: schemas.TopicTagDefs, Key: def.Key(), Value: b}); aerr != nil {
		return nil, aerr
	}
	s.tagReg.update(app.ID, name, func(d *tagDef) { d.declared = typ })
	return map[string]bool{"result": true}, nil
}

// listTags lists the app's tags, declared or seen on profiles:
//
//	-> {"tags":[{"name":"City","type":2,"type_name":"string","declared":false}, ...]}
//
// type is Pushwoosh's number (0 for "mixed": values of several types seen).
func (s *Segmenter) listTags(ctx context.Context, app *apps.App, _ *apiRequest) (any, *apiError) {
	if aerr := viewReady(ctx, s.tagReg.ready, "the tag registry is still loading: retry"); aerr != nil {
		return nil, aerr
	}
	type tag struct {
		Name     string `json:"name"`
		Type     int    `json:"type"`
		TypeName string `json:"type_name"`
		Declared bool   `json:"declared"`
	}
	out := []tag{}
	for _, d := range s.tagReg.list(app.ID) {
		out = append(out, tag{d.Name, pushwooshTagNumber(d.Type), d.Type, d.Declared})
	}
	return map[string]any{"tags": out}, nil
}

// deleteTag removes a tag's declaration (Pushwoosh deleteTag). Profiles
// keep their values; a tag seen on profiles stays known by its seen type.
func (s *Segmenter) deleteTag(ctx context.Context, app *apps.App, req *apiRequest) (any, *apiError) {
	name, aerr := apiTagName(req)
	if aerr != nil {
		return nil, aerr
	}
	if d, ok := s.tagReg.lookup(app.ID, name); !ok || d.declared == "" {
		return nil, refuse(http.StatusNotFound, "request.tag.name", "no declared tag %q in application %q", name, app.ID)
	}
	if aerr := s.produceAcked(ctx, &kgo.Record{Topic: schemas.TopicTagDefs, Key: schemas.TagDefKey(app.ID, name, true)}); aerr != nil {
		return nil, aerr
	}
	s.tagReg.update(app.ID, name, func(d *tagDef) { d.declared = "" })
	return map[string]bool{"result": true}, nil
}
