package segmenter

import (
	"context"
	"fmt"
	mathbits "math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// savedSegment is a saved segment, compiled.
type savedSegment struct {
	app, name string
	id        uint64 // segmentID(name): the profile's membership mark
	src       string // the filter as saved
	f         *Filter
	tags      map[string]bool
	events    map[string]bool
	defaults  bool // reads a default tag: re-evaluated on any change of one
	always    bool // reads nothing a profile change names: every change
}

// segmentID identifies a segment in profiles: FNV-1a 64 of its name (see
// idHash). A segment redefined under the same name keeps its members until
// their next change re-evaluates them.
func segmentID(name string) uint64 { return idHash("segment|" + name) }

// compileSegment compiles a definition, refusing filters that read the
// segment events themselves (membership would feed back into itself).
func compileSegment(d *schemas.SegmentDef) (*savedSegment, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	f, err := Compile(d.App, d.Filter)
	if err != nil {
		return nil, err
	}
	tags, events, defaults := f.Fields()
	for _, e := range events {
		if e == schemas.EventSegmentEntered || e == schemas.EventSegmentExited {
			return nil, fmt.Errorf("a segment cannot depend on %s: membership would change itself", e)
		}
	}
	sg := &savedSegment{
		app: d.App, name: d.Name, id: segmentID(d.Name), src: d.Filter, f: f,
		tags: make(map[string]bool, len(tags)), events: make(map[string]bool, len(events)), defaults: len(defaults) > 0,
	}
	for _, t := range tags {
		sg.tags[t] = true
	}
	for _, e := range events {
		sg.events[e] = true
	}
	sg.always = len(tags) == 0 && len(events) == 0 && len(defaults) == 0
	return sg, nil
}

// change is what one event changed of a profile: the candidates for
// re-evaluation are the segments that read one of these.
type change struct {
	tags     map[string]any // tag names set, removed or operated on
	event    string         // the event name counted
	defaults bool           // a default tag (or a field one reads) may have changed
	seen     bool           // the first or last seen time may have moved
}

// segments are the saved segments of every app, as read from
// TopicSegments. Safe for concurrent use.
type segments struct {
	mu    sync.RWMutex
	byApp map[string][]*savedSegment // sorted by name
	// index holds each app's *segIndex, rebuilt by put and remove:
	// indexOf, on every event, reads it without a lock, and a put stores
	// one app's (the feed puts every saved segment at start).
	index sync.Map
	ready atomic.Bool // caught up with the topic at start
}

func newSegments() *segments {
	return &segments{byApp: make(map[string][]*savedSegment)}
}

// segIndex maps the fields an event can change to the segments of one app
// that read them, as bit sets over the app's segments by name (bit i is
// list[i]): the candidates for re-evaluation after a change are the union
// of a few sets, one map lookup per changed field, rather than a check of
// every segment against every changed tag.
type segIndex struct {
	list     []*savedSegment
	always   []uint64 // segments every change re-evaluates
	defaults []uint64 // segments reading a default tag
	seen     []uint64 // segments reading the first or last seen time
	seenOnly []uint64 // segments reading nothing else (Filter.SeenOnly)
	byTag    map[string][]uint64
	byEvent  map[string][]uint64
}

// newSegIndex indexes list, an app's segments by name.
func newSegIndex(list []*savedSegment) *segIndex {
	words := (len(list) + 63) / 64
	ix := &segIndex{
		list: list, always: make([]uint64, words), defaults: make([]uint64, words),
		seen: make([]uint64, words), seenOnly: make([]uint64, words),
		byTag: make(map[string][]uint64), byEvent: make(map[string][]uint64),
	}
	set := func(m map[string][]uint64, name string, i int) {
		b := m[name]
		if b == nil {
			b = make([]uint64, words)
			m[name] = b
		}
		b[i/64] |= 1 << (i % 64)
	}
	for i, sg := range list {
		if sg.always {
			ix.always[i/64] |= 1 << (i % 64)
		}
		if sg.defaults {
			ix.defaults[i/64] |= 1 << (i % 64)
		}
		if sg.f.ReadsSeen() { // re-evaluated when they move
			ix.seen[i/64] |= 1 << (i % 64)
		}
		if sg.f.SeenOnly() {
			ix.seenOnly[i/64] |= 1 << (i % 64)
		}
		for name := range sg.tags {
			set(ix.byTag, name, i)
		}
		for name := range sg.events {
			set(ix.byEvent, name, i)
		}
	}
	return ix
}

// candidates sets in mask (len(ix.always) words) the segments c can
// affect: every segment that reads a tag c names, reads its event, reads
// a default tag when c.defaults, or reads nothing a change names
// (TestSegIndexMatchesAffects checks it segment by segment).
func (ix *segIndex) candidates(mask []uint64, c change) {
	copy(mask, ix.always)
	or := func(b []uint64) {
		for i, w := range b {
			mask[i] |= w
		}
	}
	if c.defaults {
		or(ix.defaults)
	}
	if c.seen {
		or(ix.seen)
	}
	if b, ok := ix.byEvent[c.event]; ok {
		or(b)
	}
	for name := range c.tags {
		if b, ok := ix.byTag[name]; ok {
			or(b)
		}
	}
}

// indexOf returns app's segment index, nil when it has none.
func (r *segments) indexOf(app string) *segIndex {
	v, _ := r.index.Load(app)
	ix, _ := v.(*segIndex)
	return ix
}

// put adds or replaces sg.
func (r *segments) put(sg *savedSegment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.DeleteFunc(slices.Clone(r.byApp[sg.app]), func(o *savedSegment) bool { return o.name == sg.name })
	l = append(l, sg)
	slices.SortFunc(l, func(a, b *savedSegment) int { return strings.Compare(a.name, b.name) })
	r.byApp[sg.app] = l
	r.index.Store(sg.app, newSegIndex(l))
}

// remove deletes a segment.
func (r *segments) remove(app, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.DeleteFunc(slices.Clone(r.byApp[app]), func(o *savedSegment) bool { return o.name == name })
	if len(l) == 0 {
		delete(r.byApp, app)
		r.index.Delete(app)
		return
	}
	r.byApp[app] = l
	r.index.Store(app, newSegIndex(l))
}

// of returns app's segments; the slice is not to be modified.
func (r *segments) of(app string) []*savedSegment {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byApp[app]
}

// List returns the saved segments of app: name and filter, by name.
func (s *Segmenter) List(app string) []schemas.SegmentDef {
	var out []schemas.SegmentDef
	for _, sg := range s.segs.of(app) {
		out = append(out, schemas.SegmentDef{V: schemas.V1, App: sg.app, Name: sg.name, Filter: sg.src})
	}
	return out
}

// apply applies one TopicSegments record.
func (r *segments) apply(rec *kgo.Record, log func(msg string, args ...any)) {
	app, name, ok := strings.Cut(string(rec.Key), "|")
	if len(rec.Value) == 0 {
		if ok {
			r.remove(app, name)
		}
		return
	}
	d, err := schemas.DecodeSegmentDef(rec.Value)
	if err == nil && string(d.Key()) != string(rec.Key) {
		err = fmt.Errorf("record key %q is not the segment's key %q", rec.Key, d.Key())
	}
	var sg *savedSegment
	if err == nil {
		sg, err = compileSegment(d)
	}
	if err != nil {
		log("skipping a segment definition", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return
	}
	r.put(sg)
}

// in reports whether p is a member of the segment id.
func (p *Profile) in(id uint64) bool {
	_, ok := slices.BinarySearch(p.segments, id)
	return ok
}

// setIn marks p a member of id or not.
func (p *Profile) setIn(id uint64, member bool) {
	i, ok := slices.BinarySearch(p.segments, id)
	switch {
	case member && !ok:
		p.segments = slices.Insert(p.segments, i, id)
	case !member && ok:
		p.segments = slices.Delete(p.segments, i, i+1)
	}
}

// changeOf describes what e changed of a profile; defaults and seen are
// apply's (applied.defaults, applied.seen).
func changeOf(e *schemas.Event, defaults, seen bool) change {
	c := change{tags: e.Tags, defaults: defaults, seen: seen}
	c.event = e.Name
	if c.event == "" {
		c.event = defaultName(e.Kind)
	}
	switch e.Kind {
	case schemas.KindRegister, schemas.KindUnregister, schemas.KindInbound:
		// Registration, channels, the service window: default tags.
		c.defaults = true
	}
	return c
}

// evalSegments re-evaluates the segments of e's app that the change can
// affect, updates p's membership and appends a segment event per entry or
// exit. The event ids are derived from e's id, the segment and the
// direction, so a replay produces the same ones.
func (s *Segmenter) evalSegments(out []*kgo.Record, e *schemas.Event, p *Profile, c change, now time.Time) []*kgo.Record {
	s.entered = s.entered[:0]
	ix := s.segs.indexOf(e.App)
	if ix == nil {
		return out
	}
	s.segMask = slices.Grow(s.segMask[:0], len(ix.always))[:len(ix.always)]
	ix.candidates(s.segMask, c)
	for w, bits := range s.segMask {
		for ; bits != 0; bits &= bits - 1 {
			out = s.evalSegment(out, e, p, ix.list[w*64+mathbits.TrailingZeros64(bits)], now)
		}
	}
	return out
}

// evalSegment re-evaluates one segment for p (see evalSegments).
func (s *Segmenter) evalSegment(out []*kgo.Record, e *schemas.Event, p *Profile, sg *savedSegment, now time.Time) []*kgo.Record {
	s.m.segmentEvals.Inc()
	member := sg.f.Match(p, now)
	if member == p.in(sg.id) {
		return out
	}
	return s.moveSegment(out, e.ID, e, p, sg, member, now)
}

// moveSegment puts p, the profile of who, in or out of sg and appends the
// segment event of the move, with an id derived from seed.
func (s *Segmenter) moveSegment(out []*kgo.Record, seed string, who *schemas.Event, p *Profile, sg *savedSegment, member bool, now time.Time) []*kgo.Record {
	p.setIn(sg.id, member)
	r, err := segmentEvent(seed, who, sg.name, member, now)
	if err != nil { // cannot happen: plain fields
		return out
	}
	if member {
		s.entered = append(s.entered, sg.name)
		s.m.segmentEntered.Inc()
	} else {
		s.m.segmentExited.Inc()
	}
	return append(out, r)
}

// runSegmentsFeed reads TopicSegments from the start into s.segs until ctx
// is done, closing ready once it has read what the topic held at start.
func (s *Segmenter) runSegmentsFeed(ctx context.Context, ready chan<- struct{}) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicSegments,
		func(r *kgo.Record) { s.segs.apply(r, s.log.Warn) },
		func() { s.segs.ready.Store(true); close(ready) }); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}
