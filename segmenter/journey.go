package segmenter

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafka"
	"github.com/heraldhq/herald/schemas"
)

// Journeys: multi-step, multi-channel flows a user moves through, run
// inside the segmenter. A journey's definition (schemas.JourneyDef, saved
// per app and version on TopicJourneys through the journey API) is
// compiled into steps; each user's position in each journey is part of
// their profile (journeyRun), so it is durable with the profile's
// changelog, moves with the partition, and is applied exactly where the
// user's events are. Waits are timers: the earliest deadline of a profile
// is a header of its changelog record, so a restore rebuilds every
// partition's timer heap without decoding profiles, and tick events
// (timers.go) fire what came due, late after a restart rather than lost.

// maxStepsPerAdvance bounds the steps one advance runs: a cycle without a
// wait (refused at definition) cannot spin.
const maxStepsPerAdvance = 64

// cstep is a compiled journey step.
type cstep struct {
	schemas.JourneyStep
	next, onEvent, onTimeout, yes, no  int // step indexes, -1: none
	branches                           []cbranch
	duration, timeout                  time.Duration
	untilMin                           int // minutes after midnight, -1 unless UntilTime
	weekdays                           [7]bool
	anyDay                             bool
	filter                             *Filter
	body, header                       []param
	button                             map[int]param
	text                               param
	emailSubject, emailText, emailHTML param
	pushTitle, pushBody                param
	bodyParams                         map[string]param // webhook body string values
	waitHash                           uint64           // idHash of Event
}

type cbranch struct {
	name string
	upTo int // cumulative percentage
	next int
}

// journey is a compiled journey version.
type journey struct {
	def     *schemas.JourneyDef
	hash    uint64 // idHash(app|id): the journey's id in profiles
	steps   []cstep
	entry   *Filter // entry filter, nil: none
	keyword string  // normalised entry keyword
	quiet   Limits  // quiet hours (only its quiet fields)
}

// journeyHash is the id of journey id of app in profiles.
func journeyHash(app, id string) uint64 { return idHash("journey|" + app + "|" + id) }

// parseDuration parses a journey duration: a Go duration ("90m", "1h30m")
// or whole days ("2d") or weeks ("1w").
func parseDuration(s string) (time.Duration, bool) {
	d, ok := parsePeriod(s)
	return d, ok && d > 0
}

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// compileJourney checks a definition and compiles it. Errors name the step
// and field ("steps[2] (email1).next: ...").
func compileJourney(d *schemas.JourneyDef) (*journey, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	j := &journey{def: d, hash: journeyHash(d.App, d.ID)}
	en := d.Entry
	if en.Event == "" && en.Keyword == "" && en.Segment == "" && !en.API && !d.Archived {
		return nil, fmt.Errorf("entry: give event, keyword, segment or api")
	}
	if en.Filter != "" {
		f, err := Compile(d.App, en.Filter)
		if err != nil {
			return nil, fmt.Errorf("entry.filter: %w", err)
		}
		j.entry = f
	}
	if en.Keyword != "" {
		if j.keyword = normalizeWord(en.Keyword); j.keyword == "" || strings.ContainsAny(j.keyword, " \t") {
			return nil, fmt.Errorf("entry.keyword %q must be one word", en.Keyword)
		}
	}
	switch d.Reentry {
	case "", schemas.ReentryAfterExit, schemas.ReentryNever:
	default:
		return nil, fmt.Errorf("reentry %q is not %s or %s", d.Reentry, schemas.ReentryAfterExit, schemas.ReentryNever)
	}
	if fc := d.FrequencyCap; fc != nil && (fc.Max < 1 || fc.Max > schemas.MaxFrequencyCap || fc.PeriodSeconds < 1) {
		return nil, fmt.Errorf("frequency_cap needs max 1 to %d and a positive period_seconds", schemas.MaxFrequencyCap)
	}
	j.quiet = Limits{QuietPolicy: QuietDefer}
	if q := d.QuietHours; q != nil {
		j.quiet.QuietStart, j.quiet.QuietEnd = q.Start, q.End
	}
	if err := j.quiet.validate(); err != nil {
		return nil, fmt.Errorf("quiet_hours: %w", err)
	}
	if d.Goal != nil && d.Goal.Event == "" {
		return nil, fmt.Errorf("goal.event is required")
	}
	index := make(map[string]int, len(d.Steps))
	for i, st := range d.Steps {
		if st.ID == "" {
			return nil, fmt.Errorf("steps[%d].id is required", i)
		}
		if _, dup := index[st.ID]; dup {
			return nil, fmt.Errorf("steps[%d].id %q is used twice", i, st.ID)
		}
		index[st.ID] = i
	}
	ref := func(i int, field, id string) (int, error) {
		if id == "" {
			return -1, fmt.Errorf("steps[%d] (%s).%s is required", i, d.Steps[i].ID, field)
		}
		n, ok := index[id]
		if !ok {
			return -1, fmt.Errorf("steps[%d] (%s).%s: no step %q", i, d.Steps[i].ID, field, id)
		}
		return n, nil
	}
	for i, st := range d.Steps {
		cs, err := compileStep(d, i, st, ref)
		if err != nil {
			return nil, err
		}
		j.steps = append(j.steps, cs)
	}
	if err := j.checkGraph(); err != nil {
		return nil, err
	}
	return j, nil
}

// compileStep compiles step i.
func compileStep(d *schemas.JourneyDef, i int, st schemas.JourneyStep, ref func(int, string, string) (int, error)) (cstep, error) {
	cs := cstep{JourneyStep: st, next: -1, onEvent: -1, onTimeout: -1, yes: -1, no: -1, untilMin: -1}
	where := fmt.Sprintf("steps[%d] (%s)", i, st.ID)
	var err error
	parse := func(field, s string) param {
		if err != nil {
			return nil
		}
		var p param
		if p, err = parseParam(s); err != nil {
			err = fmt.Errorf("%s.%s: %w", where, field, err)
		}
		return p
	}
	switch st.Type {
	case schemas.StepSend:
		if cs.next, err = ref(i, "next", st.Next); err != nil {
			return cs, err
		}
		switch st.Channel {
		case schemas.ChannelWhatsApp:
			switch {
			case (st.Template == nil) == (st.Text == ""):
				return cs, fmt.Errorf("%s: a whatsapp send needs template or text, not both", where)
			case st.Template != nil && (st.Template.Name == "" || st.Template.Language == ""):
				return cs, fmt.Errorf("%s.template: name and language are required", where)
			}
			if st.Template != nil {
				switch st.Template.Category {
				case "", CategoryMarketing, CategoryUtility, CategoryAuthentication:
				default:
					return cs, fmt.Errorf("%s.template.category %q is not MARKETING, UTILITY or AUTHENTICATION", where, st.Template.Category)
				}
				for k, s := range st.Template.Body {
					cs.body = append(cs.body, parse("template.body["+strconv.Itoa(k)+"]", s))
				}
				for k, s := range st.Template.Header {
					cs.header = append(cs.header, parse("template.header["+strconv.Itoa(k)+"]", s))
				}
				for k, s := range st.Template.ButtonURL {
					if cs.button == nil {
						cs.button = map[int]param{}
					}
					cs.button[k] = parse("template.button_url["+strconv.Itoa(k)+"]", s)
				}
			} else {
				cs.text = parse("text", st.Text)
			}
		case schemas.ChannelEmail:
			if st.Email == nil || st.Email.Subject == "" || (st.Email.Text == "" && st.Email.HTML == "") {
				return cs, fmt.Errorf("%s.email needs a subject and text or html", where)
			}
			cs.emailSubject, cs.emailText, cs.emailHTML = parse("email.subject", st.Email.Subject), parse("email.text", st.Email.Text), parse("email.html", st.Email.HTML)
		case schemas.ChannelPush:
			if st.Push == nil || (st.Push.Title == "" && st.Push.Body == "") {
				return cs, fmt.Errorf("%s.push needs a title or a body", where)
			}
			cs.pushTitle, cs.pushBody = parse("push.title", st.Push.Title), parse("push.body", st.Push.Body)
		case "":
			return cs, fmt.Errorf("%s.channel is required: whatsapp, email or push", where)
		default:
			return cs, fmt.Errorf("%s.channel %q is not whatsapp, email or push", where, st.Channel)
		}
	case schemas.StepWait:
		if cs.next, err = ref(i, "next", st.Next); err != nil {
			return cs, err
		}
		n := 0
		if st.Duration != "" {
			n++
			var ok bool
			if cs.duration, ok = parseDuration(st.Duration); !ok {
				return cs, fmt.Errorf(`%s.duration %q is not a duration such as "90m", "1h" or "2d"`, where, st.Duration)
			}
		}
		if st.UntilTime != "" {
			n++
			t, perr := time.Parse("15:04", st.UntilTime)
			if perr != nil {
				return cs, fmt.Errorf("%s.until_time %q is not HH:mm", where, st.UntilTime)
			}
			cs.untilMin = t.Hour()*60 + t.Minute()
			cs.anyDay = len(st.Weekdays) == 0
			for _, w := range st.Weekdays {
				wd, ok := weekdayNames[strings.ToLower(strings.TrimSpace(w))[:min(3, len(strings.TrimSpace(w)))]]
				if !ok {
					return cs, fmt.Errorf("%s.weekdays: %q is not a weekday", where, w)
				}
				cs.weekdays[wd] = true
			}
		} else if len(st.Weekdays) > 0 {
			return cs, fmt.Errorf("%s.weekdays need until_time", where)
		}
		if st.UntilTag != "" {
			n++
		}
		if n != 1 {
			return cs, fmt.Errorf("%s: a wait needs exactly one of duration, until_time and until_tag", where)
		}
	case schemas.StepWaitEvent:
		if st.Event == "" {
			return cs, fmt.Errorf("%s.event is required", where)
		}
		if st.Event == schemas.WaitWhatsAppButton && st.Payload == "" {
			return cs, fmt.Errorf("%s.payload is required to wait for %s", where, st.Event)
		}
		var ok bool
		if cs.timeout, ok = parseDuration(st.Timeout); !ok {
			return cs, fmt.Errorf(`%s.timeout %q is not a duration such as "1h" or "24h"`, where, st.Timeout)
		}
		if cs.onEvent, err = ref(i, "on_event", st.OnEvent); err != nil {
			return cs, err
		}
		if cs.onTimeout, err = ref(i, "on_timeout", st.OnTimeout); err != nil {
			return cs, err
		}
		cs.waitHash = idHash(st.Event)
	case schemas.StepSplitSegment:
		if st.Filter == "" {
			return cs, fmt.Errorf("%s.filter is required", where)
		}
		if cs.filter, err = Compile(d.App, st.Filter); err != nil {
			return cs, fmt.Errorf("%s.filter: %w", where, err)
		}
		if cs.yes, err = ref(i, "yes", st.Yes); err != nil {
			return cs, err
		}
		if cs.no, err = ref(i, "no", st.No); err != nil {
			return cs, err
		}
	case schemas.StepSplitAB:
		if len(st.Branches) < 2 {
			return cs, fmt.Errorf("%s.branches: an A/B split needs at least 2", where)
		}
		total := 0
		for k, b := range st.Branches {
			if b.Percent < 1 || b.Percent > 99 {
				return cs, fmt.Errorf("%s.branches[%d].percent %d is not 1 to 99", where, k, b.Percent)
			}
			total += b.Percent
			n, rerr := ref(i, "branches["+strconv.Itoa(k)+"].next", b.Next)
			if rerr != nil {
				return cs, rerr
			}
			name := b.Name
			if name == "" {
				name = string(rune('A' + k))
			}
			cs.branches = append(cs.branches, cbranch{name: name, upTo: total, next: n})
		}
		if total != 100 {
			return cs, fmt.Errorf("%s.branches: percentages sum to %d, not 100", where, total)
		}
	case schemas.StepUpdateTags:
		if len(st.Tags) == 0 {
			return cs, fmt.Errorf("%s.tags are required", where)
		}
		for name, v := range st.Tags {
			if _, ok := tagOf(v); !ok && v != nil {
				return cs, fmt.Errorf("%s.tags.%s: a tag is a string, number, boolean or list of strings", where, name)
			}
		}
		if cs.next, err = ref(i, "next", st.Next); err != nil {
			return cs, err
		}
	case schemas.StepWebhook:
		if err := schemas.CheckWebhookURL(st.URL); err != nil {
			return cs, fmt.Errorf("%s.url: %w", where, err)
		}
		for name, v := range st.Body {
			if s, ok := v.(string); ok {
				if cs.bodyParams == nil {
					cs.bodyParams = map[string]param{}
				}
				cs.bodyParams[name] = parse("body."+name, s)
			}
		}
		if cs.next, err = ref(i, "next", st.Next); err != nil {
			return cs, err
		}
	case schemas.StepExit:
	case "":
		return cs, fmt.Errorf("%s.type is required: send, wait, wait_event, split_segment, split_ab, update_tags, webhook or exit", where)
	default:
		return cs, fmt.Errorf("%s.type %q is not send, wait, wait_event, split_segment, split_ab, update_tags, webhook or exit", where, st.Type)
	}
	return cs, err
}

// edges are the steps st leads to.
func (st *cstep) edges() []int {
	var out []int
	for _, n := range []int{st.next, st.onEvent, st.onTimeout, st.yes, st.no} {
		if n >= 0 {
			out = append(out, n)
		}
	}
	for _, b := range st.branches {
		out = append(out, b.next)
	}
	return out
}

// waits reports whether st stops the user until time or an event passes.
func (st *cstep) waits() bool { return st.Type == schemas.StepWait || st.Type == schemas.StepWaitEvent }

// checkGraph refuses steps the first cannot reach, and cycles that pass no
// wait (a user would loop at once).
func (j *journey) checkGraph() error {
	seen := make([]bool, len(j.steps))
	stack := []int{0}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		stack = append(stack, j.steps[n].edges()...)
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("steps[%d] (%s) cannot be reached from the first step", i, j.steps[i].ID)
		}
	}
	// Cycles through non-waiting steps only: depth-first search on the
	// graph without waits' edges.
	state := make([]byte, len(j.steps)) // 0 new, 1 on the path, 2 done
	var visit func(n int) error
	visit = func(n int) error {
		state[n] = 1
		if !j.steps[n].waits() {
			for _, m := range j.steps[n].edges() {
				switch state[m] {
				case 1:
					return fmt.Errorf("steps %s and %s form a cycle without a wait", j.steps[m].ID, j.steps[n].ID)
				case 0:
					if err := visit(m); err != nil {
						return err
					}
				}
			}
		}
		state[n] = 2
		return nil
	}
	for i := range j.steps {
		if state[i] == 0 {
			if err := visit(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// journeys are the compiled journeys of every app, every version, read
// whole from TopicJourneys by every segmenter.
type journeys struct {
	mu sync.RWMutex
	// byHash: journey hash -> versions (index version-1; nil where a
	// version failed to compile).
	byHash map[uint64][]*journey
	// active: app -> the latest non-archived version of each journey
	// ([]*journey). of, on every event, reads it without a lock; put
	// stores one app's.
	active sync.Map
	ready  chan struct{}
}

func newJourneys() *journeys {
	return &journeys{byHash: map[uint64][]*journey{}, ready: make(chan struct{})}
}

// put adds a compiled version.
func (r *journeys) put(j *journey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.byHash[j.hash]
	for len(vs) < j.def.Version {
		vs = append(vs, nil)
	}
	vs[j.def.Version-1] = j
	r.byHash[j.hash] = vs
	latest := vs[len(vs)-1]
	l := slices.DeleteFunc(slices.Clone(r.of(j.def.App)), func(o *journey) bool { return o.hash == j.hash })
	if latest != nil && !latest.def.Archived {
		l = append(l, latest)
	}
	slices.SortFunc(l, func(a, b *journey) int { return strings.Compare(a.def.ID, b.def.ID) })
	r.active.Store(j.def.App, l)
}

// version returns version v of journey hash, nil if unknown.
func (r *journeys) version(hash uint64, v int) *journey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.byHash[hash]
	if v < 1 || v > len(vs) {
		return nil
	}
	return vs[v-1]
}

// latest returns the latest version of journey id of app (archived too).
func (r *journeys) latest(app, id string) *journey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.byHash[journeyHash(app, id)]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i] != nil {
			return vs[i]
		}
	}
	return nil
}

// of returns app's active journeys (not to be modified).
func (r *journeys) of(app string) []*journey {
	v, _ := r.active.Load(app)
	l, _ := v.([]*journey)
	return l
}

// apply applies one TopicJourneys record.
func (r *journeys) apply(rec *kgo.Record, log func(msg string, args ...any)) {
	if len(rec.Value) == 0 {
		return // versions are never deleted; archiving is a version
	}
	d, err := schemas.DecodeJourneyDef(rec.Value)
	if err == nil && string(d.Key()) != string(rec.Key) {
		err = fmt.Errorf("record key %q is not the journey's key %q", rec.Key, d.Key())
	}
	var j *journey
	if err == nil {
		j, err = compileJourney(d)
	}
	if err != nil {
		log("skipping a journey definition", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return
	}
	r.put(j)
}

// runJourneysFeed reads TopicJourneys from the start into s.journeys until
// ctx is done, closing its ready channel once caught up.
func (s *Segmenter) runJourneysFeed(ctx context.Context, ready chan<- struct{}) {
	if err := kafka.FollowTopic(ctx, s.kcfg, s.log, schemas.TopicJourneys,
		func(r *kgo.Record) { s.journeys.apply(r, s.log.Warn) },
		func() { close(s.journeys.ready); close(ready) }); err != nil {
		s.log.Error("following a state topic", "err", err)
	}
}
