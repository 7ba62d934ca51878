package segmenter

import (
	"encoding/binary"
	"math"
	mathbits "math/bits"
	"slices"
	"time"
	"unsafe"

	"github.com/heraldhq/herald/schemas"
)

// Most events an app sends are plain custom events (OrderPlaced,
// ScreenView) that no segment or journey of the app refers to, and most
// events of a WhatsApp sender are the statuses of its messages. What such
// an event changes in a profile is small: its name's counter, the last
// seen time (not for a status), the recent ids and the source position.
// applyInPlace makes that change on the profile's cache encoding, copying
// the rest as bytes, instead of decoding the whole profile, applying the
// event and encoding it twice. Its results are byte for byte what the decoded path writes
// (FuzzApplyInPlace compares them); anything it does not handle the same
// way it leaves to that path.

// inPlaceEvent reports whether e is an event applyInPlace may take, from
// the event and its app alone: a custom event with a name (not
// PW_ApplicationOpen, whose time is a default tag) or a message status,
// with no tags, no identity to merge, of an app none of whose journeys it
// can start and whose segments the event can move (the segments the
// decoded path would evaluate for it) read only the seen times. Those
// segments, "active in the last 7 days", are in s.seenSegs for
// applyInPlace to evaluate at now.
func (s *Segmenter) inPlaceEvent(e *schemas.Event, now time.Time) bool {
	s.seenSegs.list, s.seenSegs.now = s.seenSegs.list[:0], now
	name := inPlaceName(e)
	if name == "" || name == schemas.EventApplicationOpen ||
		len(e.Tags) > 0 || len(e.TagOps) > 0 || e.Time.IsZero() || e.Time.Before(time.Time{}) {
		return false
	}
	if e.UserID != "" && e.AnonymousID != "" {
		return false // askMerges
	}
	for _, j := range s.journeys.of(e.App) {
		// A profile's runs are applyInPlace's to check; what is left is
		// the entries an event of this name can make (entryMatches; no
		// segment is entered, none being evaluated).
		if j.def.Entry.Event == name || j.def.Entry.API && name == schemas.EventJourneyStart {
			return false
		}
	}
	if ix := s.segs.indexOf(e.App); ix != nil {
		s.segMask = slices.Grow(s.segMask[:0], len(ix.always))[:len(ix.always)]
		// changeOf's, with the defaults unchanged (applyInPlace checks)
		// and the seen times moved unless e is a status: at least what
		// the decoded path evaluates.
		ix.candidates(s.segMask, changeOf(e, false, e.Kind != schemas.KindStatus))
		for i, w := range s.segMask {
			if w&^ix.seenOnly[i] != 0 {
				return false
			}
		}
		for i, bits := range s.segMask {
			for ; bits != 0; bits &= bits - 1 {
				s.seenSegs.list = append(s.seenSegs.list, ix.list[i*64+mathbits.TrailingZeros64(bits)])
			}
		}
	}
	return true
}

// seenSegments are the segments applyInPlace evaluates for an event:
// those it can move, each reading only the seen times (Filter.SeenOnly),
// at now. The event stays in place when none of them changes its
// membership; a move (an entry or exit, with its segment event) is the
// decoded path's.
type seenSegments struct {
	list []*savedSegment
	now  time.Time
	// probe is the profile they are matched against: its seen times are
	// all they read.
	probe Profile
}

// unmoved reports whether the membership of the profile with these seen
// times in each segment is what ids (its segments' ids, sorted, as the
// encoding stores them: 8 bytes each, little-endian) say it is.
func (ss *seenSegments) unmoved(firstSeen, lastSeen time.Time, ids []byte) bool {
	if ss == nil || len(ss.list) == 0 {
		return true
	}
	ss.probe.FirstSeen, ss.probe.LastSeen = firstSeen, lastSeen
	for _, sg := range ss.list {
		in := false
		for b := ids; len(b) >= 8; b = b[8:] {
			if binary.LittleEndian.Uint64(b) == sg.id {
				in = true
				break
			}
		}
		if sg.f.Match(&ss.probe, ss.now) != in {
			return false
		}
	}
	return true
}

// inPlaceName is the event name e counts (Profile.apply's) when e is of a
// kind applyInPlace takes (a custom event or a status), else "".
func inPlaceName(e *schemas.Event) string {
	switch e.Kind {
	case schemas.KindEvent:
		return e.Name
	case schemas.KindStatus:
		if e.Name == "" {
			return defaultName(e.Kind)
		}
		return e.Name
	}
	return ""
}

// applyInPlace applies e, an event inPlaceEvent took, at partition and
// offset to the profile whose cache encoding is cb: the changelog encoding
// of the result in log, its cache encoding in cache (both appended to).
// ok is false when the profile needs the decoded path: the event is a
// duplicate (a recent id or an applied offset), it would change a default
// field (user id, language, time zone, country, app version, device type)
// or the first seen time (a status changes neither), the profile has
// journey runs, is merged into
// another or holds MaxEventNames names and not e's, the event would move
// the profile into or out of one of segs (nil: none), or cb is not this
// version's cache form or does not decode. ignored counts the event's
// attributes the profile does not keep.
func applyInPlace(log, cache, cb []byte, e *schemas.Event, partition int32, offset int64, segs *seenSegments) (_, _ []byte, ignored int, ok bool) {
	fail := func() ([]byte, []byte, int, bool) { return log, cache, 0, false }
	name := inPlaceName(e)
	if len(cb) < 2 || cb[0] != cacheForm|profileVersion || name == "" {
		return fail()
	}
	seen := e.Kind != schemas.KindStatus // a status moves no seen time, no default field
	t := e.Time.UTC().Truncate(time.Microsecond)
	// cb is only read, and nothing read from it outlives this call.
	d := decoderOf(unsafe.String(unsafe.SliceData(cb), len(cb)))
	version := d.byte("version") &^ cacheForm
	d.byte("flags")
	if dt := d.varint("device type"); seen && e.DeviceType != 0 && int64(e.DeviceType) != dt {
		return fail()
	}
	if uid := d.string("user id"); seen && e.UserID != "" && e.UserID != uid {
		return fail()
	}
	if lang := d.string("language"); seen && e.Language != "" && e.Language != lang {
		return fail()
	}
	if tz := d.zone(version); seen && e.Timezone != "" && e.Timezone != tz {
		return fail()
	}
	if country := d.string("country"); seen && e.Country != "" && e.Country != country {
		return fail()
	}
	d.string("whatsapp")
	firstSeen := d.time("first seen")
	if d.err != nil || seen && (firstSeen.IsZero() || t.Before(firstSeen)) {
		return fail()
	}
	head := d.off()
	lastSeen := d.timeRel(version, "last seen", firstSeen)
	lastInbound := d.timeRel(version, "last inbound", lastSeen)
	newLast := lastSeen
	if seen && t.After(lastSeen) {
		newLast = t
	}

	// The header, its version byte in each form, with the new last seen
	// time (and the last inbound one, relative to it).
	l0 := len(log)
	log = append(append(log, profileVersion), cb[1:head]...)
	log = appendTimeRel(log, newLast, firstSeen)
	log = appendTimeRel(log, lastInbound, newLast)
	cache = append(cache, cb[:1]...)
	cache = append(cache, log[l0+1:]...)

	// The tags, copied: as they are to the cache form, their names
	// resolved for the changelog's.
	tags := d.off()
	ntags := d.count("tag count", 3)
	log = binary.AppendUvarint(log, uint64(ntags))
	if log = appendLogTags(log, &d, ntags, names.load()); d.err != nil {
		return fail()
	}
	cache = append(cache, cb[tags:d.off()]...)
	rest := len(log) // from here on both forms are the same bytes

	// The event counters: e's updated or added, the others' last times
	// written relative to the new last seen time.
	nev := d.count("event count", 3)
	if d.err != nil {
		return fail()
	}
	counters := len(log)
	log = binary.AppendUvarint(log, uint64(nev)) // rewritten below if a name is added
	found := false
	for range nev {
		start := d.off()
		c := d.eventName(version)
		countAt := d.off()
		n := d.uvarint("event count")
		lastAt := d.off()
		last := d.timeRel(version, "event time", lastSeen)
		firstAt := d.off()
		first := d.timeRel(version, "event first time", last)
		attrsAt := d.off()
		d.skipAttrs()
		if d.err != nil {
			return fail()
		}
		end := d.off()
		if c != name {
			log = append(log, cb[start:lastAt]...)
			log = appendTimeRel(log, last, newLast)
			log = append(log, cb[firstAt:end]...)
			continue
		}
		found = true
		log = append(log, cb[start:countAt]...)
		log = binary.AppendUvarint(log, n+1)
		if t.Before(first) || first.IsZero() {
			first = t
		}
		if t.Before(last) {
			log = appendTimeRel(log, last, newLast)
			log = appendTimeRel(log, first, last)
			log = append(log, cb[attrsAt:end]...)
			continue
		}
		log = appendTimeRel(log, t, newLast)
		log = appendTimeRel(log, first, t)
		log, ignored = appendEventAttrs(log, e)
	}
	if !found {
		if nev >= MaxEventNames {
			return fail() // the decoded path drops the least recent name
		}
		log = appendEventName(log, name)
		log = binary.AppendUvarint(log, 1)
		log = appendTimeRel(log, t, newLast)
		log = appendTimeRel(log, t, t)
		log, ignored = appendEventAttrs(log, e)
		log[counters] = byte(nev + 1) // one byte below MaxEventNames (the assertions below appendEventAttrs)
	}

	// The recent ids, with e's.
	h := idHash(e.ID)
	nrecent := int(d.byte("recent count"))
	if d.err != nil || nrecent > recentIDs || nrecent > len(d.b)/8 {
		return fail()
	}
	keep := nrecent
	if keep >= recentIDs {
		keep = recentIDs - 1
	}
	log = append(log, byte(keep+1))
	for i := range nrecent {
		r := d.uint64("recent id")
		if r == h {
			return fail() // a duplicate: the decoded path counts it
		}
		if i >= nrecent-keep {
			log = binary.LittleEndian.AppendUint64(log, r)
		}
	}
	log = binary.LittleEndian.AppendUint64(log, h)

	// The source position.
	part := d.varint("source partition")
	next := d.uvarint("source offset")
	if d.err != nil || part < 0 || part > math.MaxInt32 || next > math.MaxInt64 {
		return fail()
	}
	if int32(part) == partition && offset < int64(next) {
		return fail() // applied before
	}
	log = binary.AppendVarint(log, int64(partition))
	log = binary.AppendUvarint(log, uint64(max(offset+1, 0)))

	// The rest, copied, but for the send times (relative to last seen).
	from := d.off()
	d.string("email")
	for range d.count("push token count", 1) {
		d.string("push token")
	}
	if av := d.string("app version"); seen && e.AppVersion != "" && e.AppVersion != av {
		return fail()
	}
	d.timeRel(version, "first install", firstSeen)
	nsegs := d.count("segment count", 8)
	ids := d.off()
	for range nsegs {
		d.uint64("segment id")
	}
	if d.err != nil || !segs.unmoved(firstSeen, newLast, cb[ids:d.off()]) {
		return fail()
	}
	log = append(log, cb[from:d.off()]...)
	nsends := d.count("send count", 9)
	log = binary.AppendUvarint(log, uint64(nsends))
	for range nsends {
		at := d.timeRel(version, "send time", lastSeen)
		from := d.off()
		d.uint64("send campaign")
		d.byte("send flags")
		if d.err != nil {
			return fail()
		}
		log = appendTimeRel(log, at, newLast)
		log = append(log, cb[from:d.off()]...)
	}
	from = d.off()
	if d.count("journey count", 12) != 0 {
		return fail() // their times, and the timers
	}
	for range d.count("journeys done", 8) {
		d.uint64("journey done")
	}
	if d.string("merged into") != "" {
		return fail() // a forwarder
	}
	for range d.count("merge count", 8) {
		d.uint64("merge")
	}
	if d.err != nil || len(d.b) != 0 {
		return fail()
	}
	log = append(log, cb[from:]...)
	cache = append(cache, log[rest:]...)
	return log, cache, ignored, true
}

// appendEventAttrs appends the attributes of e a profile keeps for its
// latest event (eventAttrs), encoded as appendProfileRest writes them.
func appendEventAttrs(b []byte, e *schemas.Event) ([]byte, int) {
	if e.AttrList == nil {
		attrs, ignored := eventAttrs(nil, e)
		b = binary.AppendUvarint(b, uint64(len(attrs)))
		for _, a := range attrs {
			b = appendTag(appendString(b, a.Name), a.Tag)
		}
		return b, ignored
	}
	at := len(b)
	b = append(b, 0) // the count, one byte (the assertions below appendEventAttrs)
	kept := keptAttrs(e.AttrList, func(name string, t Tag) { b = appendTag(appendString(b, name), t) })
	b[at] = byte(kept)
	return b, len(e.AttrList) - kept
}

// These fail to compile unless MaxEventAttrs and MaxEventNames fit in
// a one-byte uvarint: appendEventAttrs writes an attribute count, and
// applyInPlace an event-name count it adds one to, as one byte.
var (
	_ = [127 - MaxEventAttrs]struct{}{}
	_ = [127 - MaxEventNames]struct{}{}
)
