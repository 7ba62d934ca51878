package segmenter

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/schemas"
)

// Profile limits.
const (
	// MaxEventNames is the number of distinct event names a profile counts;
	// a new name past it replaces the name seen least recently.
	MaxEventNames = 64
	// MaxEventAttrs is how many attributes of an event's latest occurrence
	// a profile keeps (the first ones by name); MaxAttrBytes bounds a kept
	// string value. Others are counted as ignored.
	MaxEventAttrs = 16
	MaxAttrBytes  = 256
	// MaxPushTokens is how many push tokens a profile keeps, newest last.
	MaxPushTokens = 8
	// recentIDs is how many recent event ids a profile remembers to ignore
	// redelivered events (see Profile.apply).
	recentIDs = 8
)

// Profile is what the segmenter knows about one user of one app (one record
// key of TopicEvents: app and hwid, or app and user id). Times are UTC with
// microsecond precision.
type Profile struct {
	// The fields every event reads or writes come first, so that an event
	// on a profile not in the CPU's caches loads few lines of it: the
	// fields' order is only layout (the encodings name each field). A
	// Profile takes the allocator's 576-byte size class, whose objects
	// start on a 64-byte cache line: the first four lines, down to evTags,
	// hold what every event reads (TestProfileLayout).

	// recent are hashes of the latest event ids applied, oldest first:
	// nRecent of them, the rest zero. In the struct, not a slice of its
	// own: the first thing every event reads, and one cache line fewer
	// to load for a profile not in the CPU's caches.
	recent [recentIDs]uint64

	// Events counts events by name, at most MaxEventNames names.
	Events []EventCount
	// segments are the ids (segmentID) of the saved segments the user is
	// in, sorted.
	segments []uint64
	// src is where in TopicEvents the latest applied event was: a
	// redelivered record (a restart after the changelog was written but
	// before the offset was committed) is recognised by its position.
	src srcPos

	// FirstSeen and LastSeen are the earliest and latest event times
	// (statuses of messages sent to the user do not count).
	FirstSeen time.Time
	LastSeen  time.Time
	// tags by name: read them with Tags, which decodes the tags a decode
	// left encoded, write them with setTag and deleteTag. An inbound
	// message sets TagProfileName.
	tags    map[string]Tag
	nRecent uint8
	// rawCached: see rawTags.
	rawCached bool
	// tagsPlain is set when tags is known to hold no tag named like a
	// default field a filter reads through it (fieldOverride): a filter on
	// Country then skips the lookup of a "Country" tag. Set where the map
	// is made, cleared by setTag for such a name; false, which only costs
	// the lookup, whenever unknown.
	tagsPlain bool
	// Registered is set by a register event and cleared by unregister.
	Registered bool
	// OptedOut users get no MARKETING template.
	OptedOut bool

	// journeys are the user's runs of journeys in progress; done the
	// journeys they finished (idHash, for ReentryNever), newest last, at
	// most maxJourneysDone.
	journeys []journeyRun
	// rawTags, when set, holds the tags instead of tags: rawTagCount of
	// them as the encoding wrote them (each a name, or a reference to names
	// when rawCached, then a value), a slice of the decoded encoding. Most
	// events change no tag: a decode leaves them so and the next encode
	// copies the bytes.
	rawTags     string
	rawTagCount int
	// evTags say where in Events a name may be: evTags[i], for each of
	// the first evTagged entries, is nameTag of Events[i].Name, or 0 when
	// unknown. A lookup (eventIndex) reads only the entries whose tag
	// matches or is unknown, instead of every entry's name, each in a
	// cache line of its own (an EventCount is 112 bytes). A name is always
	// compared before it is used, so a tag only ever costs a compare; what
	// changes the entries keeps the tags (count, merge, the decode), and a
	// Profile built otherwise (the zero tags) reads every entry.
	evTags [evTagged]uint8

	DeviceType int
	// LastInbound is the time of the user's latest inbound WhatsApp
	// message: the customer-service window is open until 24 h after it.
	LastInbound time.Time
	// WhatsApp is the user's number, E.164 with the plus sign, from an
	// inbound message or a "whatsapp:" hwid.
	WhatsApp string
	// mergedInto is, for a profile handed over to another of the same
	// user (identity resolution, merge.go), that profile's key: this one
	// keeps no data and forwards its events there. merges are the profile
	// keys (idHash) this profile asked for (low bit clear) or took in (set).
	mergedInto string
	UserID     string
	Language   string
	// Country is ISO 3166-1 alpha-2.
	Country  string
	Timezone string

	// Email is the address of an email registration; PushTokens the
	// tokens of push registrations, newest last (at most MaxPushTokens).
	Email      string
	PushTokens []string
	// AppVersion is the application version the latest event reported.
	AppVersion string
	// FirstInstall is the time of the earliest register event.
	FirstInstall time.Time
	// sends are the user's latest campaign and journey messages that a
	// frequency cap counts, oldest first (at most maxSends).
	sends []sentMark
	// done: see journeys; merges: see mergedInto.
	done   []uint64
	merges []uint64
}

// journeyRun is a user's position in a journey.
type journeyRun struct {
	journey uint64 // journeyHash
	version uint32
	step    uint32 // index of the current step
	// deadline is when the current wait ends (zero: not waiting on time).
	deadline time.Time
	entered  time.Time
	// seq numbers the user's entries into the journey: dispatch ids and
	// A/B buckets derive from it.
	seq uint32
	// lastSend is the idHash of the journey's latest dispatch id, which
	// feedback (an opened email, a read WhatsApp) must name to match.
	lastSend uint64
}

// maxJourneyRuns bounds the journeys a user is in at once;
// maxJourneysDone the journeys remembered as finished.
const (
	maxJourneyRuns  = 16
	maxJourneysDone = 32
)

// nextDeadline is the earliest deadline of p's journeys, zero if none.
func (p *Profile) nextDeadline() time.Time {
	var t time.Time
	for _, r := range p.journeys {
		if !r.deadline.IsZero() && (t.IsZero() || r.deadline.Before(t)) {
			t = r.deadline
		}
	}
	return t
}

// sentMark is one campaign message to the user: when it is sent, which
// campaign (idHash of its id), and whether it was MARKETING (what the
// global cap counts; a campaign's own cap counts every send).
type sentMark struct {
	at        time.Time
	campaign  uint64
	marketing bool
}

// maxSends bounds Profile.sends.
const maxSends = 32

// sentFor reports whether campaign already counted a message to p (a
// re-run of the same campaign after a crash).
func (p *Profile) sentFor(campaign uint64) (time.Time, bool) {
	for _, m := range p.sends {
		if m.campaign == campaign {
			return m.at, true
		}
	}
	return time.Time{}, false
}

// sentSince counts the messages sent at or after since, only MARKETING
// ones when marketing is set.
func (p *Profile) sentSince(since time.Time, marketing bool) int {
	n := 0
	for _, m := range p.sends {
		if !m.at.Before(since) && (m.marketing || !marketing) {
			n++
		}
	}
	return n
}

// sentSinceFor counts the messages of campaign or journey h sent at or
// after since.
func (p *Profile) sentSinceFor(since time.Time, h uint64) int {
	n := 0
	for _, m := range p.sends {
		if m.campaign == h && !m.at.Before(since) {
			n++
		}
	}
	return n
}

// addSend records a campaign message at at, dropping the oldest past
// maxSends.
func (p *Profile) addSend(at time.Time, campaign uint64, marketing bool) {
	if len(p.sends) >= maxSends {
		p.sends = slices.Delete(p.sends, 0, len(p.sends)-maxSends+1)
	}
	p.sends = append(p.sends, sentMark{at: at.UTC().Truncate(time.Microsecond), campaign: campaign, marketing: marketing})
}

// srcPos is a position in TopicEvents: the records of partition before
// offset next were applied (next 0: none known).
type srcPos struct {
	partition int32
	next      int64
}

// applied reports whether the record at partition and offset was applied
// to p already.
func (p *Profile) applied(partition int32, offset int64) bool {
	return p.src.partition == partition && offset < p.src.next
}

// EventCount counts the events of one name.
type EventCount struct {
	Name  string
	Count uint64
	// First and Last are the earliest and latest times of an event of this
	// name.
	First, Last time.Time
	// attrs are the attributes of the latest event of this name (at most
	// MaxEventAttrs, scalar or list values), sorted by name, nil when it
	// had none. A slice, not a map: it is encoded with the profile on every
	// change, and ranging over a small map costs more than the encoding.
	attrs []Attr
	// raw, when set, holds the attributes instead of attrs, as the profile's
	// encoding wrote them (count, then name and value each), a slice of the
	// decoded encoding: a decode leaves them so and the next encode copies
	// the bytes, since an event changes the attributes of one name at most
	// and a filter rarely reads them. Attrs and Attr decode it.
	raw string
}

// TagKind is the type of a tag value.
type TagKind uint8

// Tag kinds. Pushwoosh's integer and decimal tags are numbers; its date and
// version tags arrive as strings.
const (
	TagString TagKind = iota + 1
	TagNumber
	TagBool
	TagList
)

// Tag is a typed tag value: the field named by Kind is set. (Bool next to
// Kind: 56 bytes rather than 64, which a profile's tag map and event
// attributes hold by value.)
type Tag struct {
	Kind TagKind
	Bool bool
	Str  string
	Num  float64
	List []string
}

// String formats the value as a template parameter: numbers without
// exponent, lists joined by ", ", the zero Tag as "".
func (t Tag) String() string {
	switch t.Kind {
	case TagString:
		return t.Str
	case TagNumber:
		return strconv.FormatFloat(t.Num, 'f', -1, 64)
	case TagBool:
		return strconv.FormatBool(t.Bool)
	case TagList:
		return strings.Join(t.List, ", ")
	}
	return ""
}

// tagOf converts a decoded JSON tag value. ok is false for values Herald
// does not store as tags (objects, lists holding objects or lists).
func tagOf(v any) (Tag, bool) {
	switch v := v.(type) {
	case string:
		return Tag{Kind: TagString, Str: v}, true
	case float64:
		return Tag{Kind: TagNumber, Num: v}, true
	case bool:
		return Tag{Kind: TagBool, Bool: v}, true
	case []any:
		l := make([]string, 0, len(v))
		for _, e := range v {
			t, ok := tagOf(e)
			if !ok || t.Kind == TagList {
				return Tag{}, false
			}
			l = append(l, t.String())
		}
		return Tag{Kind: TagList, List: l}, true
	}
	return Tag{}, false
}

// value is the tag as JSON would carry it.
func (t Tag) value() any {
	switch t.Kind {
	case TagString:
		return t.Str
	case TagNumber:
		return t.Num
	case TagBool:
		return t.Bool
	case TagList:
		return t.List
	}
	return nil
}

// pushwooshDate formats t as Pushwoosh's date tags are, "YYYY-MM-DD HH:mm"
// UTC; "" for the zero time.
func pushwooshDate(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// WindowUntil is the end of the user's 24-hour service window (the last
// inbound message plus 24 h), zero when the user never wrote: what dispatch
// requests carry as window_until.
func (p *Profile) WindowUntil() time.Time {
	if p.LastInbound.IsZero() {
		return time.Time{}
	}
	return p.LastInbound.Add(serviceWindow).UTC()
}

// InServiceWindow reports whether a free-form message may be sent to the
// user at now: within 24 hours of the last inbound message.
func (p *Profile) InServiceWindow(now time.Time) bool {
	return !p.LastInbound.IsZero() && now.Before(p.LastInbound.Add(serviceWindow))
}

// recentIDs are the hashes of the latest event ids applied, oldest first.
func (p *Profile) recentIDs() []uint64 { return p.recent[:p.nRecent] }

// noteRecent adds h to the recent ids, dropping the oldest when they are
// recentIDs already.
func (p *Profile) noteRecent(h uint64) {
	if int(p.nRecent) >= recentIDs {
		copy(p.recent[:], p.recent[1:])
		p.recent[recentIDs-1] = h
		return
	}
	p.recent[p.nRecent] = h
	p.nRecent++
}

// idHash is FNV-1a 64 of an event id (stable across processes, unlike
// maphash, so a persisted profile stays valid).
func idHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

// defaultName is the event name counted for events that carry none.
func defaultName(k schemas.EventKind) string {
	switch k {
	case schemas.KindRegister:
		return schemas.EventDeviceRegistered
	case schemas.KindUnregister:
		return schemas.EventDeviceUnregistered
	case schemas.KindInbound:
		return schemas.EventWhatsAppReceived
	case schemas.KindStatus:
		return schemas.EventWhatsAppStatus
	}
	return ""
}

// applied is what apply did: dup when e's id is one of the last ids
// applied (a redelivered batch, a producer retry: p is then unchanged, so
// counters are not counted twice); ignoredTags counts tag values of a type
// Herald does not store (objects); defaults is set when e changed what of
// the profile ProfileTags carries besides its tags (registration, user id,
// language, country, timezone, profile name, application version, first
// install, last application open), which decides the TopicTags record and
// the segments on default tags.
type applied struct {
	dup         bool
	ignoredTags int
	defaults    bool
	// seen: the first or last seen time moved (the fields "First Seen"
	// and "Last Seen" of a filter read).
	seen bool
}

// apply applies e to p (see applied).
func (p *Profile) apply(e *schemas.Event) (a applied) {
	h := idHash(e.ID)
	for _, r := range p.recentIDs() {
		if r == h {
			return applied{dup: true}
		}
	}
	p.noteRecent(h)

	t := e.Time.UTC().Truncate(time.Microsecond)
	if e.Kind != schemas.KindStatus {
		if p.FirstSeen.IsZero() || t.Before(p.FirstSeen) {
			p.FirstSeen, a.seen = t, true
		}
		if t.After(p.LastSeen) {
			p.LastSeen, a.seen = t, true
		}
		// Events carry what the producer knows now: latest wins.
		a.defaults = setIf(&p.UserID, e.UserID)
		a.defaults = setIf(&p.Language, e.Language) || a.defaults
		a.defaults = setIf(&p.Timezone, e.Timezone) || a.defaults
		a.defaults = setIf(&p.Country, e.Country) || a.defaults
		a.defaults = setIf(&p.AppVersion, e.AppVersion) || a.defaults
		if e.DeviceType != 0 {
			p.DeviceType = e.DeviceType
		}
	}
	switch e.Kind {
	case schemas.KindRegister:
		a.defaults = a.defaults || !p.Registered
		p.Registered = true
		if p.FirstInstall.IsZero() || t.Before(p.FirstInstall) {
			a.defaults = a.defaults || !t.Equal(p.FirstInstall) || p.FirstInstall.Location() != t.Location()
			p.FirstInstall = t
		}
		if n, ok := strings.CutPrefix(e.HWID, "whatsapp:"); ok && n != "" {
			p.WhatsApp = n
		}
		setIf(&p.Email, e.Email)
		if e.PushToken != "" {
			p.addPushToken(e.PushToken)
		}
		a.ignoredTags = p.mergeTagsNoting(e.Tags, e.TagOps, &a.defaults)
	case schemas.KindUnregister:
		a.defaults = a.defaults || p.Registered
		p.Registered = false
	case schemas.KindTags:
		a.ignoredTags = p.mergeTagsNoting(e.Tags, e.TagOps, &a.defaults)
	case schemas.KindInbound:
		if t.After(p.LastInbound) {
			p.LastInbound = t
		}
		p.WhatsApp = e.Inbound.From
		if name := e.Inbound.ProfileName; name != "" {
			if old, ok := p.Tag(TagProfileName); !ok || old.Kind != TagString || old.Str != name {
				// Only then: setting a tag decodes the tags a decode
				// left encoded, and most messages carry the name the
				// profile has.
				a.defaults = true
				p.setTag(TagProfileName, Tag{Kind: TagString, Str: name})
			}
		}
	}
	name := e.Name
	if name == "" {
		name = defaultName(e.Kind)
	}
	if name != "" {
		var lastOpen bool
		a.ignoredTags += p.count(name, t, e, &lastOpen)
		a.defaults = a.defaults || lastOpen
	}
	return a
}

// mergeTagsNoting is mergeTags, setting *defaults when the tags changed the
// profile name (TagProfileName, a default tag kept in Tags).
func (p *Profile) mergeTagsNoting(tags map[string]any, ops map[string]string, defaults *bool) (ignored int) {
	if _, ok := tags[TagProfileName]; !ok {
		return p.mergeTags(tags, ops)
	}
	before, _ := p.Tag(TagProfileName)
	ignored = p.mergeTags(tags, ops)
	after, _ := p.Tag(TagProfileName)
	*defaults = *defaults || after.Str != before.Str
	return ignored
}

// addPushToken adds tok as the newest token, dropping the oldest past
// MaxPushTokens.
func (p *Profile) addPushToken(tok string) {
	if i := slices.Index(p.PushTokens, tok); i >= 0 {
		p.PushTokens = slices.Delete(p.PushTokens, i, i+1)
	}
	if len(p.PushTokens) >= MaxPushTokens {
		p.PushTokens = slices.Delete(p.PushTokens, 0, len(p.PushTokens)-MaxPushTokens+1)
	}
	p.PushTokens = append(p.PushTokens, tok)
}

// Attr is one attribute of an event's latest occurrence.
type Attr struct {
	Name string
	Tag
}

// Attrs returns the attributes of the event's latest occurrence, sorted by
// name (in the order an old version stored them, for a profile it wrote),
// nil when it had none. The slice is c's own, which the next occurrence of
// the name overwrites (eventAttrs), or, for attributes still in their
// encoded form, a new one each call.
func (c *EventCount) Attrs() []Attr {
	if c.raw == "" {
		return c.attrs
	}
	d := decoderOf(c.raw)
	return d.attrs() // raw was checked when it was decoded
}

// setAttrs makes attrs the attributes of the event's latest occurrence.
func (c *EventCount) setAttrs(attrs []Attr) { c.attrs, c.raw = attrs, "" }

// Attr returns the attribute name of the event's latest occurrence.
func (c *EventCount) Attr(name string) (Tag, bool) {
	if c.raw != "" {
		d := decoderOf(c.raw)
		return d.findAttr(name)
	}
	for _, a := range c.attrs {
		if a.Name == name {
			return a.Tag, true
		}
	}
	return Tag{}, false
}

// eventAttrs converts the attributes of e for EventCount.attrs: the first
// MaxEventAttrs names in order, scalar and list values, strings up to
// MaxAttrBytes. ignored counts the others. The attributes go in reuse when
// it has room for them: the previous occurrence's, which only its
// EventCount holds (Attrs gives them to tests alone).
func eventAttrs(reuse []Attr, e *schemas.Event) (out []Attr, ignored int) {
	if e.AttrList == nil {
		return mapAttrs(e.Attributes)
	}
	if n := min(len(e.AttrList), MaxEventAttrs); cap(reuse) >= n {
		clear(reuse[:cap(reuse)]) // no strings of the previous occurrence kept
		out = reuse[:0]
	} else {
		out = make([]Attr, 0, n)
	}
	keptAttrs(e.AttrList, func(name string, t Tag) { out = append(out, Attr{Name: name, Tag: t}) })
	ignored = len(e.AttrList) - len(out)
	if len(out) == 0 {
		out = nil
	}
	return out, ignored
}

// keptAttrs calls f with each attribute of list (sorted, each name once:
// DecodeEventAttrs's AttrList) a profile keeps, the first MaxEventAttrs of
// them, and returns how many it kept.
func keptAttrs(list []schemas.Attr, f func(name string, t Tag)) (kept int) {
	for i := range list {
		if kept == MaxEventAttrs {
			break
		}
		if t, ok := keptAttr(&list[i]); ok {
			f(list[i].Name, t)
			kept++
		}
	}
	return kept
}

// keptAttr is a's value as a tag, when a profile keeps it.
func keptAttr(a *schemas.Attr) (t Tag, ok bool) {
	switch a.Kind {
	case schemas.AttrString:
		t, ok = Tag{Kind: TagString, Str: a.Str}, true
	case schemas.AttrNumber:
		t, ok = Tag{Kind: TagNumber, Num: a.Num}, true
	case schemas.AttrBool:
		t, ok = Tag{Kind: TagBool, Bool: a.Bool}, true
	default:
		t, ok = tagOf(a.Any)
	}
	return t, ok && keepsAttr(a.Name, t)
}

// keepsAttr reports whether a profile keeps the attribute name of value t.
func keepsAttr(name string, t Tag) bool { return name != "" && tagBytes(t) <= MaxAttrBytes }

// mapAttrs is eventAttrs for attributes in a map (an event built in
// memory, or one encoding/json decoded).
func mapAttrs(attrs map[string]any) (out []Attr, ignored int) {
	if len(attrs) == 0 {
		return nil, 0
	}
	var buf [8]Attr // most events have a few attributes: no allocation
	kept := buf[:0]
	for name, v := range attrs { // one pass: no lookup by name after the sort
		t, ok := tagOf(v)
		if !ok || !keepsAttr(name, t) {
			ignored++
			continue
		}
		kept = append(kept, Attr{Name: name, Tag: t})
	}
	if len(kept) == 0 {
		return nil, ignored
	}
	slices.SortFunc(kept, func(a, b Attr) int { return strings.Compare(a.Name, b.Name) })
	if len(kept) > MaxEventAttrs {
		ignored += len(kept) - MaxEventAttrs
		kept = kept[:MaxEventAttrs]
	}
	out = make([]Attr, len(kept))
	copy(out, kept)
	return out, ignored
}

// tagBytes is the length of t's string content.
func tagBytes(t Tag) int {
	n := len(t.Str)
	for _, s := range t.List {
		n += len(s)
	}
	return n
}

// setIf sets *dst to v unless v is empty, and says whether *dst changed.
func setIf(dst *string, v string) bool {
	if v == "" || *dst == v {
		return false
	}
	*dst = v
	return true
}

// Tags returns the profile's tags by name, nil when it has none. The map is
// p's own: change it with setTag and deleteTag.
func (p *Profile) Tags() map[string]Tag {
	if p.rawTags != "" {
		p.loadTags()
	}
	return p.tags
}

// Tag returns the tag name. Of tags still encoded it decodes that one alone
// (a campaign's template reads a tag or two of every profile it scans).
func (p *Profile) Tag(name string) (t Tag, ok bool) {
	if p.rawTags == "" {
		t, ok = p.tags[name]
		return t, ok
	}
	d := decoderOf(p.rawTags)
	var ref uint64 // name's reference in the cache form, 0 when it has none
	if p.rawCached {
		if id, in := names.load().ids[name]; in {
			ref = id + 1
		}
	}
	for range p.rawTagCount { // to the end: the last of a name counts, as in Tags
		var r uint64 // 0: the name follows in full
		if p.rawCached {
			r = d.uvarint("tag name")
		}
		if r == 0 && d.string("tag name") == name || r != 0 && r == ref {
			t, ok = d.tag(), true
		} else {
			d.skipTag()
		}
	}
	return t, ok // (rawTags was checked when it was decoded)
}

// tagCount is len(p.Tags()), decoding nothing.
func (p *Profile) tagCount() int {
	if p.rawTags != "" {
		return p.rawTagCount
	}
	return len(p.tags)
}

// tagValue is the tag name, the zero Tag when p has none.
func (p *Profile) tagValue(name string) Tag {
	t, _ := p.Tag(name)
	return t
}

func (p *Profile) setTag(name string, t Tag) {
	if p.Tags() == nil {
		p.tags = make(map[string]Tag)
		p.tagsPlain = true
	}
	if p.tagsPlain && fieldOverride(name) {
		p.tagsPlain = false
	}
	p.tags[name] = t
}

// fieldOverride reports whether a tag named name takes the place of a
// default field in filters: the fields cond.lookup reads a tag of the
// same name for first.
func fieldOverride(name string) bool {
	switch name {
	case fields[fieldLanguage].name, fields[fieldCountry].name, fields[fieldTimezone].name, fields[fieldAppVersion].name:
		return true
	}
	return false
}

func (p *Profile) deleteTag(name string) { delete(p.Tags(), name) }

// mergeTags sets tags, removing those set to null, and applies the
// operations of ops (schemas.OpIncrement, OpAppend, OpRemove). An operation
// on a tag of another kind replaces it (increment) or counts as ignored.
func (p *Profile) mergeTags(tags map[string]any, ops map[string]string) (ignored int) {
	for name, v := range tags {
		if name == "" {
			ignored++
			continue
		}
		if v == nil {
			p.deleteTag(name)
			continue
		}
		t, ok := tagOf(v)
		if !ok {
			ignored++
			continue
		}
		switch ops[name] {
		case "":
		case schemas.OpIncrement:
			if t.Kind != TagNumber {
				ignored++
				continue
			}
			if old, ok := p.Tag(name); ok && old.Kind == TagNumber {
				t.Num += old.Num
			}
		case schemas.OpAppend, schemas.OpRemove:
			if t.Kind != TagList {
				ignored++
				continue
			}
			old, _ := p.Tag(name)
			if old.Kind != TagList && old.Kind != 0 {
				ignored++
				continue
			}
			t = Tag{Kind: TagList, List: listOp(old.List, t.List, ops[name] == schemas.OpAppend)}
		default:
			ignored++
			continue
		}
		p.setTag(name, t)
	}
	return ignored
}

// listOp appends items of l not in old, or removes items of l from old.
func listOp(old, l []string, add bool) []string {
	in := make(map[string]bool, len(l))
	for _, s := range l {
		in[s] = true
	}
	out := make([]string, 0, len(old)+len(l))
	for _, s := range old {
		if add {
			delete(in, s) // held already
			out = append(out, s)
		} else if !in[s] {
			out = append(out, s)
		}
	}
	if add {
		for _, s := range l {
			if in[s] {
				out = append(out, s)
				delete(in, s)
			}
		}
	}
	return out
}

// count counts one event of name at t with attrs, replacing the least
// recently seen name when MaxEventNames are counted already. The
// attributes are kept when the event is the latest of its name. It returns
// the number of attributes not kept, and sets *lastOpen when the time of
// the latest schemas.EventApplicationOpen changed (a default tag).
func (p *Profile) count(name string, t time.Time, e *schemas.Event, lastOpen *bool) (ignored int) {
	tag := nameTag(name)
	if i := p.eventIndex(name, tag); i >= 0 {
		c := &p.Events[i]
		c.Count++
		if t.Before(c.First) || c.First.IsZero() {
			c.First = t
		}
		if !t.Before(c.Last) {
			if c.Last != t && name == schemas.EventApplicationOpen {
				*lastOpen = true
			}
			c.Last = t
			var kept []Attr
			kept, ignored = eventAttrs(c.attrs, e)
			c.setAttrs(kept)
		}
		return ignored
	}
	if len(p.Events) >= MaxEventNames {
		oldest := 0
		for i := range p.Events {
			if p.Events[i].Last.Before(p.Events[oldest].Last) {
				oldest = i
			}
		}
		if p.Events[oldest].Name == schemas.EventApplicationOpen && !p.Events[oldest].Last.IsZero() {
			*lastOpen = true
		}
		p.Events = append(p.Events[:oldest], p.Events[oldest+1:]...)
		p.tagEvents()
	}
	if name == schemas.EventApplicationOpen && !t.IsZero() {
		*lastOpen = true
	}
	c := EventCount{Name: name, Count: 1, First: t, Last: t}
	c.attrs, ignored = eventAttrs(nil, e)
	if i := len(p.Events); i < evTagged {
		p.evTags[i] = tag
	}
	p.Events = append(p.Events, c)
	return ignored
}

// Event returns the counter of the events named name.
func (p *Profile) Event(name string) (EventCount, bool) {
	if i := p.eventIndex(name, nameTag(name)); i >= 0 {
		return p.Events[i], true
	}
	return EventCount{}, false
}

// evTagged is how many of a profile's event counters evTags describe:
// more than most profiles count.
const evTagged = 16

// nameTag is the one-byte digest of an event name that Profile.evTags
// holds: never 0, which means unknown there.
func nameTag(name string) uint8 {
	h := uint32(len(name)) * 0x9e3779b1
	if len(name) > 0 {
		h ^= uint32(name[0]) | uint32(name[len(name)/2])<<8 | uint32(name[len(name)-1])<<16
		h *= 0x85ebca6b
	}
	if t := uint8(h >> 24); t != 0 {
		return t
	}
	return 1
}

// eventIndex is the index in p.Events of the counter of name, -1 when
// there is none; tag is nameTag(name). It only reads p.
func (p *Profile) eventIndex(name string, tag uint8) int {
	n := min(len(p.Events), evTagged)
	for i := range n {
		if t := p.evTags[i]; (t == tag || t == 0) && p.Events[i].Name == name {
			return i
		}
	}
	for i := n; i < len(p.Events); i++ {
		if p.Events[i].Name == name {
			return i
		}
	}
	return -1
}

// tagEvents sets evTags for all of Events, after a change of more than
// one entry.
func (p *Profile) tagEvents() {
	p.evTags = [evTagged]uint8{}
	for i := range min(len(p.Events), evTagged) {
		p.evTags[i] = nameTag(p.Events[i].Name)
	}
}
