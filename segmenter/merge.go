package segmenter

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Identity resolution. A CDP knows a user first by an anonymous id and
// later by a user id: Segment's identify and track calls carry both once
// the user signed in, and alias names an earlier id (anonymous or a
// previous user id) of a user id. The earlier profile lives under another
// key, so on another partition and perhaps another segmenter; the two
// owners join it to the user's in three KindMerge steps on TopicEvents,
// each keyed to the profile it concerns:
//
//  1. pull (to the earlier profile): the user's owner asks for it, and
//     marks the user's profile as waiting for it (a merge mark, low bit
//     clear);
//  2. push (to the user): the earlier profile's owner sends its profile,
//     and turns it into a forwarder of the user: it leaves its segments
//     (PW_SegmentExited), its journeys stop, campaigns and sweeps skip it,
//     and its later events are written again keyed by the user (the same
//     event ids), so nothing said under the earlier id is lost (but the
//     segment and journey events the segmenter wrote about it);
//  3. done (to the earlier profile): the user's owner took the data in
//     (marks it done, re-evaluates every segment of the app); the
//     forwarder drops its copy of the data.
//
// Every step is idempotent and deterministic (ids derive from the two
// keys), so a step redelivered after a crash, or produced twice, changes
// nothing twice: a pull of a forwarder pushes again (its data is kept
// until done), a push already taken in answers done again, a done of an
// empty forwarder is a no-op. A redelivered event whose pull may not have
// been written asks again while its mark is not done.
//
// Taking in: the user's own values win where both profiles have one
// (tags, language, country, channels); counters of the same event name add
// up, first and last times widen, the later event's attributes are kept;
// registration and marketing opt-out carry over (an opt-out anywhere is an
// opt-out); frequency-cap marks are joined. The earlier profile's journeys
// are not continued, and segments the user enters by taking it in start no
// journey (they are PW_SegmentEntered events like any other). An earlier profile merged into one user already is
// not merged into a second (herald_segmenter_merge_conflicts_total), and merges do not chain further than one forwarder.

// mergeKeys returns the keys of the earlier profiles e names for the
// profile key: an alias's previous id as an anonymous id and as a user
// id, or the anonymous id of an event that also names its user. Events
// with a hwid name a device, not a CDP user, and start no merge.
func mergeKeys(key []byte, e *schemas.Event) []string {
	if e.HWID != "" || e.UserID == "" {
		return nil
	}
	var out []string
	add := func(k []byte) {
		if string(k) != string(key) {
			out = append(out, string(k))
		}
	}
	switch {
	case e.Kind == schemas.KindAlias && e.PreviousID != "":
		add(schemas.ProfileKey(e.App, "", "", e.PreviousID))
		add(schemas.ProfileKey(e.App, "", e.PreviousID, ""))
	case e.AnonymousID != "":
		add(schemas.ProfileKey(e.App, "", "", e.AnonymousID))
	}
	return out
}

// mergeMark returns p's mark for the earlier profile from (its idHash,
// low bit clear) and whether p has one; done is its low bit.
func (p *Profile) mergeMark(from string) (i int, done, ok bool) {
	h := idHash(from) &^ 1
	for i, m := range p.merges {
		if m&^1 == h {
			return i, m&1 == 1, true
		}
	}
	return -1, false, false
}

// maxMerges bounds a profile's merge marks; past it the oldest is dropped
// (a pull for it would then merge again: only a profile with that many
// earlier ids risks it).
const maxMerges = 16

// addMergeMark adds p's mark for the earlier profile from, done or asked
// for, dropping the oldest past maxMerges.
func (p *Profile) addMergeMark(from string, done bool) {
	if len(p.merges) >= maxMerges {
		p.merges = slices.Delete(p.merges, 0, len(p.merges)-maxMerges+1)
	}
	m := idHash(from) &^ 1
	if done {
		m |= 1
	}
	p.merges = append(p.merges, m)
}

// askMerges appends a pull for each earlier profile e names that p has not
// asked for, and marks p as waiting for it (p is saved by the caller).
func (s *Segmenter) askMerges(out []*kgo.Record, key []byte, e *schemas.Event, p *Profile) []*kgo.Record {
	for _, from := range mergeKeys(key, e) {
		if _, _, ok := p.mergeMark(from); ok {
			continue
		}
		p.addMergeMark(from, false)
		out = s.mergeStep(out, e, schemas.MergePull, from, string(key), nil)
	}
	return out
}

// reaskMerges is askMerges for a redelivered event (p has its marks): the
// pulls still waiting are written again, in case the first ones were lost
// with the crash that caused the redelivery.
func (s *Segmenter) reaskMerges(out []*kgo.Record, key []byte, e *schemas.Event, p *Profile) []*kgo.Record {
	for _, from := range mergeKeys(key, e) {
		if _, done, ok := p.mergeMark(from); ok && !done {
			out = s.mergeStep(out, e, schemas.MergePull, from, string(key), nil)
		}
	}
	return out
}

// mergeStep appends the KindMerge event of step between from and into,
// caused by e: its id derives from the step and the two keys, so a step
// written again is the same event.
func (s *Segmenter) mergeStep(out []*kgo.Record, e *schemas.Event, step, from, into string, profile []byte) []*kgo.Record {
	h := idHash(step + "|" + from + "|" + into)
	m := &schemas.Event{
		V: schemas.V1, ID: "merge-" + step + "-" + strconv.FormatUint(h, 16),
		App: e.App, Kind: schemas.KindMerge, Time: e.Time, Received: e.Time,
		Merge: &schemas.Merge{Step: step, From: from, Into: into, Profile: profile},
	}
	b, err := m.Marshal()
	if err != nil { // cannot happen: plain fields
		s.log.Error("encoding a merge step", "step", step, "err", err)
		return out
	}
	s.m.merges.WithLabelValues(step).Inc()
	return append(out, &kgo.Record{Topic: schemas.TopicEvents, Key: m.Key(), Value: b})
}

// runMerge applies a KindMerge event to the profile of key (known: it
// exists), the one the step is keyed to.
func (s *Segmenter) runMerge(out []*kgo.Record, rec *kgo.Record, key []byte, e *schemas.Event, p *Profile, known bool, now time.Time) []*kgo.Record {
	s.m.events[e.Kind].Inc()
	m := e.Merge
	if !known {
		p = new(Profile)
	}
	switch m.Step {
	case schemas.MergePull:
		if p.mergedInto != "" && p.mergedInto != m.Into {
			s.m.mergeConflicts.Inc()
			s.log.Info("profile merged into another user already", "app", e.App, "from", m.From, "into", p.mergedInto, "asked_by", m.Into)
			return out
		}
		first := p.mergedInto == ""
		var blob []byte
		if known && !p.empty() {
			blob = appendProfile(nil, p)
		}
		out = s.mergeStep(out, e, schemas.MergePush, m.From, m.Into, blob)
		if !first {
			return out // asked again: pushed again
		}
		who := identity(e.App, idOf(key))
		for _, sg := range s.segs.of(e.App) {
			if p.in(sg.id) {
				out = s.moveSegment(out, e.ID, who, p, sg, false, now)
			}
		}
		p.segments, p.journeys = nil, nil
		p.mergedInto = m.Into
		return s.saveMerged(out, rec, key, e, p, known, who, false)
	case schemas.MergePush:
		if p.mergedInto != "" {
			s.m.mergeConflicts.Inc()
			s.log.Info("merge into a profile merged into another user", "app", e.App, "from", m.From, "into", m.Into, "forwarded_to", p.mergedInto)
			return out
		}
		i, done, ok := p.mergeMark(m.From)
		if done {
			return s.mergeStep(out, e, schemas.MergeDone, m.From, m.Into, nil)
		}
		if len(m.Profile) > 0 {
			q, err := decodeProfile(m.Profile)
			if err != nil {
				return s.deadLetter(out, rec, fmt.Sprintf("merge of %q: the pushed profile does not decode: %v", m.From, err))
			}
			p.absorb(q)
		}
		if ok {
			p.merges[i] |= 1
		} else {
			p.addMergeMark(m.From, true)
		}
		who := identity(e.App, idOf(key))
		s.entered = s.entered[:0]
		for _, sg := range s.segs.of(e.App) {
			if member := sg.f.Match(p, now); member != p.in(sg.id) {
				out = s.moveSegment(out, e.ID, who, p, sg, member, now)
			}
		}
		out = s.mergeStep(out, e, schemas.MergeDone, m.From, m.Into, nil)
		return s.saveMerged(out, rec, key, e, p, known, who, true)
	case schemas.MergeDone:
		if !known || p.mergedInto != m.Into || p.empty() {
			return out
		}
		*p = Profile{mergedInto: p.mergedInto, recent: p.recent, nRecent: p.nRecent, src: p.src}
		return s.saveMerged(out, rec, key, e, p, known, identity(e.App, idOf(key)), false)
	}
	return out
}

// saveMerged saves p, the profile of key a merge step changed, as
// processRecord saves an applied event's.
func (s *Segmenter) saveMerged(out []*kgo.Record, rec *kgo.Record, key []byte, e *schemas.Event, p *Profile, known bool, who *schemas.Event, tags bool) []*kgo.Record {
	who.ID, who.Time = e.ID, e.Time
	if err := s.save(key, p); err != nil {
		s.revert(key, p)
		return s.deadLetter(out, rec, err.Error())
	}
	if !known {
		s.keys.add(rec.Partition, key)
	}
	s.noteChanged(key, rec.Partition, who, p, tags)
	return out
}

// forward writes e, an event of key's profile p, merged into another
// user's, again keyed by that user (same id). Like an applied event it
// moves p's position, so the record redelivered after a crash is not
// forwarded twice.
func (s *Segmenter) forward(out []*kgo.Record, rec *kgo.Record, key []byte, e *schemas.Event, p *Profile) []*kgo.Record {
	if p.applied(rec.Partition, rec.Offset) {
		s.m.duplicates.Inc()
		return out
	}
	switch e.Name {
	case schemas.EventSegmentEntered, schemas.EventSegmentExited, schemas.EventJourneyEntered, schemas.EventJourneyStep, schemas.EventJourneyExited:
		// The segmenter's own events about this profile (its exits when it
		// was merged): they concern it, not the user.
		return out
	}
	user, ok := strings.CutPrefix(string(idOf([]byte(p.mergedInto))), "user:")
	if !ok {
		return s.deadLetter(out, rec, fmt.Sprintf("forwarding an event of a merged profile: %q is not a user's profile key", p.mergedInto))
	}
	f := *e
	f.UserID, f.HWID = user, ""
	b, err := f.Marshal()
	if err != nil {
		return s.deadLetter(out, rec, fmt.Sprintf("forwarding an event of a merged profile: %v", err))
	}
	s.m.forwarded.Inc()
	out = append(out, &kgo.Record{Topic: schemas.TopicEvents, Key: f.Key(), Value: b})
	p.src = srcPos{partition: rec.Partition, next: rec.Offset + 1}
	return s.saveMerged(out, rec, key, e, p, true, identity(e.App, idOf(key)), false)
}

// empty reports whether p holds no data of a user (a new profile, or a
// forwarder that dropped its copy).
func (p *Profile) empty() bool {
	return !p.Registered && !p.OptedOut && p.UserID == "" && p.WhatsApp == "" && p.Email == "" &&
		len(p.PushTokens) == 0 && p.tagCount() == 0 && len(p.Events) == 0 && p.FirstSeen.IsZero()
}

// absorb takes the data of q, an earlier profile of the same user, into p
// (see the rules above).
func (p *Profile) absorb(q *Profile) {
	p.Registered = p.Registered || q.Registered
	p.OptedOut = p.OptedOut || q.OptedOut
	if p.DeviceType == 0 {
		p.DeviceType = q.DeviceType
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&p.UserID, q.UserID)
	fill(&p.Language, q.Language)
	fill(&p.Timezone, q.Timezone)
	fill(&p.Country, q.Country)
	fill(&p.WhatsApp, q.WhatsApp)
	fill(&p.Email, q.Email)
	fill(&p.AppVersion, q.AppVersion)
	earliest := func(dst *time.Time, t time.Time) {
		if !t.IsZero() && (dst.IsZero() || t.Before(*dst)) {
			*dst = t
		}
	}
	latest := func(dst *time.Time, t time.Time) {
		if t.After(*dst) {
			*dst = t
		}
	}
	earliest(&p.FirstSeen, q.FirstSeen)
	earliest(&p.FirstInstall, q.FirstInstall)
	latest(&p.LastSeen, q.LastSeen)
	latest(&p.LastInbound, q.LastInbound)
	for name, t := range q.Tags() {
		if _, ok := p.Tag(name); !ok {
			p.setTag(name, t)
		}
	}
	if len(q.PushTokens) > 0 {
		mine := p.PushTokens
		p.PushTokens = nil
		for _, tok := range append(slices.Clone(q.PushTokens), mine...) {
			p.addPushToken(tok)
		}
	}
	for _, qc := range q.Events {
		qc.attrs = slices.Clone(qc.attrs) // p's own: count reuses it (eventAttrs)
		i := slices.IndexFunc(p.Events, func(c EventCount) bool { return c.Name == qc.Name })
		if i < 0 {
			p.Events = append(p.Events, qc)
			continue
		}
		c := &p.Events[i]
		c.Count += qc.Count
		earliest(&c.First, qc.First)
		if qc.Last.After(c.Last) {
			c.Last, c.attrs, c.raw = qc.Last, qc.attrs, qc.raw
		}
	}
	for len(p.Events) > MaxEventNames { // drop the least recent names
		oldest := 0
		for i := range p.Events {
			if p.Events[i].Last.Before(p.Events[oldest].Last) {
				oldest = i
			}
		}
		p.Events = slices.Delete(p.Events, oldest, oldest+1)
	}
	p.tagEvents()
	if len(q.sends) > 0 {
		p.sends = append(p.sends, q.sends...)
		slices.SortStableFunc(p.sends, func(a, b sentMark) int { return a.at.Compare(b.at) })
		if len(p.sends) > maxSends {
			p.sends = slices.Delete(p.sends, 0, len(p.sends)-maxSends)
		}
	}
	for _, h := range q.done {
		if !slices.Contains(p.done, h) {
			p.done = append(p.done, h)
		}
	}
	if len(p.done) > maxJourneysDone {
		p.done = slices.Delete(p.done, 0, len(p.done)-maxJourneysDone)
	}
}
