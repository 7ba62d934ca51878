package segmenter

import (
	"encoding/binary"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// Journey skip reasons (herald_segmenter_journey_skipped_total): a send
// step that sent nothing, and the journey went on.
const (
	jskipNoAddress    = "no_address"
	jskipOptedOut     = "opted_out"
	jskipWindowClosed = "window_closed"
	jskipEmptyParam   = "empty_param"
	jskipCap          = "frequency_cap"
)

// journeyEvent is a PW_Journey* event of the profile who, with an id
// derived from seed (the cause and the step).
func journeyEvent(seed, name string, who *schemas.Event, j *journey, attrs map[string]any, now time.Time) *kgo.Record {
	a := map[string]any{"journey": j.def.ID, "version": float64(j.def.Version)}
	for k, v := range attrs {
		a[k] = v
	}
	ev := &schemas.Event{
		ID: hashID("journey", seed, name), App: who.App, Kind: schemas.KindEvent, Name: name,
		Time: now, Received: now, HWID: who.HWID, UserID: who.UserID, AnonymousID: who.AnonymousID, Attributes: a,
	}
	return &kgo.Record{Topic: schemas.TopicEvents, Key: ev.Key(), Value: appendSimpleEvent(make([]byte, 0, 384), ev)}
}

// jctx is what one journey move needs.
type jctx struct {
	key   []byte
	who   *schemas.Event // identity of the profile
	cause string         // id of the event or tick that moved it
	now   time.Time      // journey clock
	real  time.Time      // wall clock (dispatch requests, windows)
}

// runJourneys moves p's journeys on for event e, just applied to it:
// feedback to waiting steps, goals, and entries. It reports whether p
// changed and whether its tags did.
func (s *Segmenter) runJourneys(out []*kgo.Record, key []byte, e *schemas.Event, p *Profile, entered []string, real time.Time) ([]*kgo.Record, bool, bool) {
	if len(p.journeys) == 0 && len(s.journeys.of(e.App)) == 0 {
		return out, false, false
	}
	c := &jctx{key: key, who: e, cause: e.ID, now: s.journeyNow(), real: real}
	changed, tags := false, false
	// Waiting steps and goals first: an event that enters a journey does
	// not also resolve its first wait.
	for i := 0; i < len(p.journeys); i++ {
		r := &p.journeys[i]
		j := s.journeys.version(r.journey, int(r.version))
		if j == nil || int(r.step) >= len(j.steps) {
			s.m.journeyIgnored.WithLabelValues("unknown_journey").Inc()
			p.journeys = slices.Delete(p.journeys, i, i+1)
			i--
			changed = true
			continue
		}
		if j.def.Goal != nil && e.Name == j.def.Goal.Event {
			out = s.exitJourney(out, c, p, i, j, "goal")
			i--
			changed = true
			continue
		}
		st := &j.steps[r.step]
		if st.Type != schemas.StepWaitEvent {
			continue
		}
		if !feedbackMatches(st, r, e) {
			if isFeedback(e) {
				s.m.journeyIgnored.WithLabelValues("not_waited_for").Inc()
			}
			continue
		}
		r.step, r.deadline = uint32(st.onEvent), time.Time{}
		var t bool
		out, t = s.advance(out, c, p, i, j, st.ID+":event")
		tags = tags || t
		changed = true
		if i < len(p.journeys) && p.journeys[i].journey != j.hash {
			i-- // the run exited: the next one moved down
		}
	}
	for _, j := range s.journeys.of(e.App) {
		if !entryMatches(j, e, p, entered, c.now) {
			continue
		}
		var ok, t bool
		if out, ok, t = s.enterJourney(out, c, p, j); ok {
			changed = true
			tags = tags || t
		}
	}
	return out, changed, tags
}

// enterSegmentJourneys enters p into the journeys whose entry is one of
// the segments it just joined by a sweep (cause names it).
func (s *Segmenter) enterSegmentJourneys(out []*kgo.Record, key []byte, who *schemas.Event, cause string, p *Profile, joined []string, real time.Time) ([]*kgo.Record, bool) {
	if len(joined) == 0 {
		return out, false
	}
	c := &jctx{key: key, who: who, cause: cause, now: s.journeyNow(), real: real}
	tags := false
	for _, j := range s.journeys.of(who.App) {
		if j.def.Entry.Segment == "" || !slices.Contains(joined, j.def.Entry.Segment) || (j.entry != nil && !j.entry.Match(p, c.now)) {
			continue
		}
		var t bool
		out, _, t = s.enterJourney(out, c, p, j)
		tags = tags || t
	}
	return out, tags
}

// isFeedback reports whether e is channel feedback a journey may wait for.
func isFeedback(e *schemas.Event) bool {
	switch e.Kind {
	case schemas.KindStatus, schemas.KindInbound:
		return true
	}
	_, ok := e.Attr("dispatch_id")
	return ok
}

// feedbackMatches reports whether e resolves the wait_event step st of r.
func feedbackMatches(st *cstep, r *journeyRun, e *schemas.Event) bool {
	switch st.Event {
	case schemas.WaitWhatsAppRead:
		return e.Kind == schemas.KindStatus && e.Status != nil && e.Status.Status == "read" && idHash(e.Status.DispatchID) == r.lastSend
	case schemas.WaitWhatsAppReply:
		return e.Kind == schemas.KindInbound
	case schemas.WaitWhatsAppButton:
		return e.Kind == schemas.KindInbound && e.Inbound != nil && e.Inbound.Payload == st.Payload
	}
	if e.Name != st.Event {
		return false
	}
	if st.MatchSend {
		v, _ := e.Attr("dispatch_id")
		id, _ := v.(string)
		return id != "" && idHash(id) == r.lastSend
	}
	return true
}

// entryMatches reports whether e (applied to p) enters the user into j.
func entryMatches(j *journey, e *schemas.Event, p *Profile, entered []string, now time.Time) bool {
	en := &j.def.Entry
	hit := false
	switch {
	case en.API && e.Name == schemas.EventJourneyStart:
		v, _ := e.Attr("journey")
		id, _ := v.(string)
		hit = id == j.def.ID
	case en.Event != "" && e.Name == en.Event:
		hit = true
	case en.Keyword != "" && e.Kind == schemas.KindInbound && e.Inbound != nil:
		hit = firstWord(normalize(e.Inbound.Text)) == j.keyword
	case en.Segment != "":
		hit = slices.Contains(entered, en.Segment)
	}
	return hit && (j.entry == nil || j.entry.Match(p, now))
}

// enterJourney starts a run of j for p, unless the re-entry policy or the
// run limit forbids it.
func (s *Segmenter) enterJourney(out []*kgo.Record, c *jctx, p *Profile, j *journey) ([]*kgo.Record, bool, bool) {
	var seq uint32
	for _, r := range p.journeys {
		if r.journey == j.hash {
			return out, false, false // in it: after_exit and never both wait
		}
	}
	if j.def.Reentry == schemas.ReentryNever && slices.Contains(p.done, j.hash) {
		s.m.journeyIgnored.WithLabelValues("reentry").Inc()
		return out, false, false
	}
	if len(p.journeys) >= maxJourneyRuns {
		s.m.journeyIgnored.WithLabelValues("too_many_journeys").Inc()
		return out, false, false
	}
	for _, h := range p.done {
		if h == j.hash {
			seq++
		}
	}
	p.journeys = append(p.journeys, journeyRun{journey: j.hash, version: uint32(j.def.Version), entered: c.now, seq: seq + 1})
	s.m.journeyEntries.Inc()
	if r := journeyEvent(c.cause+"|"+j.def.ID, schemas.EventJourneyEntered, c.who, j, nil, c.real); r != nil {
		out = append(out, r)
	}
	var tags bool
	out, tags = s.advance(out, c, p, len(p.journeys)-1, j, "entry")
	return out, true, tags
}

// exitJourney ends run i of p.
func (s *Segmenter) exitJourney(out []*kgo.Record, c *jctx, p *Profile, i int, j *journey, reason string) []*kgo.Record {
	r := p.journeys[i]
	p.journeys = slices.Delete(p.journeys, i, i+1)
	p.done = append(p.done, j.hash)
	if len(p.done) > maxJourneysDone {
		p.done = slices.Delete(p.done, 0, len(p.done)-maxJourneysDone)
	}
	s.m.journeyExits.WithLabelValues(reason).Inc()
	if rec := journeyEvent(c.cause+"|"+j.def.ID+"|"+strconv.Itoa(int(r.seq)), schemas.EventJourneyExited, c.who, j,
		map[string]any{"reason": reason}, c.real); rec != nil {
		out = append(out, rec)
	}
	return out
}

// advance runs run i of p from its current step until a step waits or the
// journey ends; from says how the step was reached. It reports whether the
// profile's tags changed.
func (s *Segmenter) advance(out []*kgo.Record, c *jctx, p *Profile, i int, j *journey, from string) ([]*kgo.Record, bool) {
	tags := false
	for range maxStepsPerAdvance {
		r := &p.journeys[i]
		st := &j.steps[r.step]
		s.m.journeySteps.Inc()
		if rec := journeyEvent(c.cause+"|"+j.def.ID+"|"+strconv.Itoa(int(r.seq))+"|"+st.ID, schemas.EventJourneyStep, c.who, j,
			map[string]any{"step": st.ID, "from": from}, c.real); rec != nil {
			out = append(out, rec)
		}
		switch st.Type {
		case schemas.StepSend:
			out = s.journeySend(out, c, p, r, j, st)
			r.step, from = uint32(st.next), st.ID
		case schemas.StepWait:
			r.deadline = waitUntil(st, p, c.now)
			return out, tags
		case schemas.StepWaitEvent:
			r.deadline = c.now.Add(st.timeout)
			return out, tags
		case schemas.StepSplitSegment:
			if st.filter.Match(p, c.real) {
				r.step, from = uint32(st.yes), st.ID+":yes"
			} else {
				r.step, from = uint32(st.no), st.ID+":no"
			}
		case schemas.StepSplitAB:
			b := abBucket(c.key, j.hash, r.seq)
			for _, br := range st.branches {
				if b < br.upTo {
					r.step, from = uint32(br.next), st.ID+":"+br.name
					break
				}
			}
		case schemas.StepUpdateTags:
			if p.mergeTags(st.Tags, nil) < len(st.Tags) {
				tags = true
			}
			r.step, from = uint32(st.next), st.ID
		case schemas.StepWebhook:
			out = s.journeyWebhook(out, c, p, r, j, st)
			r.step, from = uint32(st.next), st.ID
		case schemas.StepExit:
			return s.exitJourney(out, c, p, i, j, "completed"), tags
		}
	}
	// Cannot happen: definitions with a cycle without a wait are refused.
	return s.exitJourney(out, c, p, i, j, "loop"), tags
}

// abBucket is the user's fixed bucket (0-99) of an A/B split of one entry.
func abBucket(key []byte, journey uint64, seq uint32) int {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], journey)
	binary.LittleEndian.PutUint32(b[8:], seq)
	return int(idHash(string(key)+string(b[:])) % 100)
}

// waitUntil is when a wait step started at now ends for p.
func waitUntil(st *cstep, p *Profile, now time.Time) time.Time {
	switch {
	case st.duration > 0:
		return now.Add(st.duration)
	case st.untilMin >= 0:
		loc := time.UTC
		if p.Timezone != "" {
			if l, err := loadLocation(p.Timezone); err == nil {
				loc = l
			}
		}
		t := now.In(loc)
		for d := 0; d < 8; d++ {
			day := time.Date(t.Year(), t.Month(), t.Day()+d, st.untilMin/60, st.untilMin%60, 0, 0, loc)
			if day.After(t) && (st.anyDay || st.weekdays[day.Weekday()]) {
				return day.UTC()
			}
		}
		return now.Add(7 * 24 * time.Hour)
	default: // until a date tag; an unset or past date ends the wait now
		if at, ok := dateTag(p.tagValue(st.UntilTag)); ok && at.After(now) {
			return at
		}
		return now
	}
}

// dateTag reads a date tag.
func dateTag(t Tag) (time.Time, bool) {
	if t.Kind != TagString {
		return time.Time{}, false
	}
	if sec, ok := parseDate(t.Str); ok {
		return time.Unix(sec, 0).UTC(), true
	}
	return time.Time{}, false
}

// fireTimers moves on p's journeys whose deadline passed (tick e).
func (s *Segmenter) fireTimers(out []*kgo.Record, key []byte, p *Profile, e *schemas.Event, now time.Time) ([]*kgo.Record, bool, bool) {
	c := &jctx{key: key, who: identity(appOf(key), idOf(key)), cause: e.ID + "|" + string(key), now: now, real: s.now().UTC()}
	changed, tags := false, false
	for i := 0; i < len(p.journeys); i++ {
		r := &p.journeys[i]
		if r.deadline.IsZero() || r.deadline.After(now) {
			continue
		}
		j := s.journeys.version(r.journey, int(r.version))
		if j == nil || int(r.step) >= len(j.steps) {
			p.journeys = slices.Delete(p.journeys, i, i+1)
			i--
			changed = true
			continue
		}
		st := &j.steps[r.step]
		r.deadline = time.Time{}
		from := st.ID + ":time"
		switch st.Type {
		case schemas.StepWait:
			r.step = uint32(st.next)
		case schemas.StepWaitEvent:
			r.step, from = uint32(st.onTimeout), st.ID+":timeout"
		default:
			continue // not waiting (a stale timer)
		}
		s.m.journeyTimers.Inc()
		n := len(p.journeys)
		var t bool
		out, t = s.advance(out, c, p, i, j, from)
		tags = tags || t
		changed = true
		if len(p.journeys) < n {
			i--
		}
	}
	return out, changed, tags
}

// journeySend produces the dispatch request of send step st, or counts why
// it sends nothing (the journey goes on either way).
func (s *Segmenter) journeySend(out []*kgo.Record, c *jctx, p *Profile, r *journeyRun, j *journey, st *cstep) []*kgo.Record {
	skip := func(reason string) []*kgo.Record {
		s.m.journeySkipped.WithLabelValues(reason).Inc()
		return out
	}
	d := &schemas.DispatchRequest{
		ID: journeyDispatchID(j.def.App, j.def.ID, j.def.Version, c.key, r.seq, st.ID), App: j.def.App, Channel: st.Channel, HWID: c.who.HWID,
		Country: p.Country, Source: schemas.Source{Kind: SourceJourney, Name: j.def.ID, EventID: c.cause},
		Created: c.real, Deadline: c.real.Add(s.cfg.DispatchTTL),
	}
	if st.Channel == schemas.ChannelWhatsApp {
		d.WindowUntil = p.WindowUntil()
	}
	marketing := false
	switch st.Channel {
	case schemas.ChannelWhatsApp:
		if p.WhatsApp == "" || j.def.Sender == "" {
			return skip(jskipNoAddress)
		}
		d.Sender, d.To = j.def.Sender, p.WhatsApp
		if st.Template != nil {
			t := *st.Template
			if t.Category == "" {
				t.Category = CategoryMarketing
			}
			marketing = t.Category == CategoryMarketing
			if marketing && s.optedOut(j.def.App, p) {
				return skip(jskipOptedOut)
			}
			var ok bool
			if t.Body, ok = expandAll(st.body, p); !ok {
				return skip(jskipEmptyParam)
			}
			if t.Header, ok = expandAll(st.header, p); !ok {
				return skip(jskipEmptyParam)
			}
			t.ButtonURL = nil
			for k, bp := range st.button {
				v, ok := bp.expand("", p)
				if !ok {
					return skip(jskipEmptyParam)
				}
				if t.ButtonURL == nil {
					t.ButtonURL = map[int]string{}
				}
				t.ButtonURL[k] = v
			}
			d.Template = &t
		} else {
			if !p.InServiceWindow(c.real) {
				return skip(jskipWindowClosed)
			}
			body, ok := st.text.expand("", p)
			if !ok {
				return skip(jskipEmptyParam)
			}
			d.Text = &schemas.Text{Body: body}
		}
	default:
		return s.journeySendOther(out, c, p, r, j, st, d, skip)
	}
	return s.finishJourneySend(out, c, p, r, j, d, marketing, skip)
}

// finishJourneySend applies the caps and quiet hours to d and produces it.
func (s *Segmenter) finishJourneySend(out []*kgo.Record, c *jctx, p *Profile, r *journeyRun, j *journey, d *schemas.DispatchRequest, marketing bool,
	skip func(string) []*kgo.Record,
) []*kgo.Record {
	l := &s.cfg.Limits
	global := marketing && l.MaxMarketing > 0
	own := j.def.FrequencyCap
	if global && p.sentSince(c.real.Add(-l.MarketingWindow), true) >= l.MaxMarketing {
		return skip(jskipCap)
	}
	if own != nil && p.sentSinceFor(c.real.Add(-time.Duration(own.PeriodSeconds)*time.Second), j.hash) >= own.Max {
		return skip(jskipCap)
	}
	if global || own != nil {
		p.addSend(c.real, j.hash, marketing)
	}
	if d.Template == nil || d.Template.Category != CategoryAuthentication {
		loc := time.UTC
		if p.Timezone != "" {
			if ll, err := loadLocation(p.Timezone); err == nil {
				loc = ll
			}
		}
		if end, quiet := j.quiet.quietUntil(c.real, loc); quiet {
			d.SendAt, d.Deadline = end, end.Add(campaignValidity)
		}
	}
	if err := d.Validate(); err != nil {
		return skip("invalid")
	}
	b, err := d.Marshal()
	if err != nil {
		return skip("invalid")
	}
	r.lastSend = idHash(d.ID)
	s.m.dispatch.WithLabelValues(SourceJourney).Inc()
	return append(out, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b})
}

// journeyWebhook produces the dispatch request of webhook step st: not a
// message to the user, so no caps or quiet hours apply.
func (s *Segmenter) journeyWebhook(out []*kgo.Record, c *jctx, p *Profile, r *journeyRun, j *journey, st *cstep) []*kgo.Record {
	body := make(map[string]any, len(st.Body))
	for k, v := range st.Body {
		if pp, ok := st.bodyParams[k]; ok {
			ev, _ := pp.expand("", p) // an empty placeholder posts ""
			body[k] = ev
			continue
		}
		body[k] = v
	}
	host := st.URL
	if u, err := url.Parse(st.URL); err == nil {
		host = u.Host
	}
	d := &schemas.DispatchRequest{
		ID: journeyDispatchID(j.def.App, j.def.ID, j.def.Version, c.key, r.seq, st.ID), App: j.def.App,
		Channel: schemas.ChannelWebhook, Sender: host, To: host, HWID: c.who.HWID, UserID: c.who.UserID,
		Webhook: &schemas.Webhook{URL: st.URL, Body: body},
		Source:  schemas.Source{Kind: SourceJourney, Name: j.def.ID, EventID: c.cause}, Created: c.real, Deadline: c.real.Add(s.cfg.DispatchTTL),
	}
	if d.UserID == "" {
		d.UserID = p.UserID
	}
	b, err := d.Marshal()
	if err != nil || d.Validate() != nil {
		s.m.journeySkipped.WithLabelValues("invalid").Inc()
		return out
	}
	s.m.dispatch.WithLabelValues(SourceJourney).Inc()
	return append(out, &kgo.Record{Topic: schemas.TopicDispatch, Key: d.Key(), Value: b})
}

// journeySendOther fills an email or push request of send step st.
func (s *Segmenter) journeySendOther(out []*kgo.Record, c *jctx, p *Profile, r *journeyRun, j *journey, st *cstep, d *schemas.DispatchRequest,
	skip func(string) []*kgo.Record,
) []*kgo.Record {
	expand := func(pp param) (string, bool) {
		if len(pp) == 0 {
			return "", true
		}
		return pp.expand("", p)
	}
	d.UserID = c.who.UserID
	if d.UserID == "" {
		d.UserID = p.UserID
	}
	switch st.Channel {
	case schemas.ChannelEmail:
		if p.Email == "" {
			return skip(jskipNoAddress)
		}
		subj, ok1 := expand(st.emailSubject)
		text, ok2 := expand(st.emailText)
		html, ok3 := expand(st.emailHTML)
		if !ok1 || !ok2 || !ok3 {
			return skip(jskipEmptyParam)
		}
		d.To, d.Email = p.Email, &schemas.Email{Subject: subj, Text: text, HTML: html}
	case schemas.ChannelPush:
		if len(p.PushTokens) == 0 {
			return skip(jskipNoAddress)
		}
		title, ok1 := expand(st.pushTitle)
		body, ok2 := expand(st.pushBody)
		if !ok1 || !ok2 {
			return skip(jskipEmptyParam)
		}
		d.To = p.PushTokens[len(p.PushTokens)-1]
		d.Push = &schemas.Push{Title: title, Body: body, Data: st.Push.Data}
	}
	return s.finishJourneySend(out, c, p, r, j, d, false, skip)
}

// journeyDispatchID is the dispatch id of step of a journey version for
// the user of key in their entry seq: the same decision made again gets
// the same id.
func journeyDispatchID(app, journey string, version int, key []byte, seq uint32, step string) string {
	return hashID("journey", app, journey, strconv.Itoa(version), string(key), strconv.Itoa(int(seq)), step)
}
