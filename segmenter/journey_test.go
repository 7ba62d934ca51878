package segmenter

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// seedJourney is the seed's journey: push, wait an hour for it to be
// opened, email, wait a day for it to be opened, WhatsApp template; a user
// who opens the push gets nothing more.
func seedJourney(version int) *schemas.JourneyDef {
	return &schemas.JourneyDef{
		App: testApp, ID: "welcome", Version: version, Sender: testPNID, Entry: schemas.JourneyEntry{Event: "SignedUp"},
		Goal: &schemas.JourneyGoal{Event: "Purchase"},
		Steps: []schemas.JourneyStep{
			{ID: "push", Type: schemas.StepSend, Channel: schemas.ChannelPush, Push: &schemas.JourneyPush{Title: "Welcome {{tag:first_name|there}}", Body: "Open the app"}, Next: "wait_push"},
			{ID: "wait_push", Type: schemas.StepWaitEvent, Event: schemas.EventPushOpened, Timeout: "1h", OnEvent: "opened", OnTimeout: "email"},
			{ID: "email", Type: schemas.StepSend, Channel: schemas.ChannelEmail, Email: &schemas.JourneyEmail{Subject: "Welcome", Text: "Hi {{tag:first_name|there}}"}, Next: "wait_email"},
			{ID: "wait_email", Type: schemas.StepWaitEvent, Event: schemas.EventEmailOpened, MatchSend: true, Timeout: "24h", OnEvent: "opened", OnTimeout: "whatsapp"},
			{ID: "whatsapp", Type: schemas.StepSend, Channel: schemas.ChannelWhatsApp, Template: &schemas.Template{Name: "welcome_offer", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:first_name|there}}"}}, Next: "done"},
			{ID: "opened", Type: schemas.StepExit},
			{ID: "done", Type: schemas.StepExit},
		}, Updated: t0,
	}
}

func TestJourneyCompileErrors(t *testing.T) {
	base := func(steps ...schemas.JourneyStep) *schemas.JourneyDef {
		return &schemas.JourneyDef{App: testApp, ID: "j", Version: 1, Entry: schemas.JourneyEntry{API: true}, Steps: steps}
	}
	exit := schemas.JourneyStep{ID: "end", Type: schemas.StepExit}
	for _, tt := range []struct {
		name string
		d    *schemas.JourneyDef
		want string
	}{
		{"no entry", &schemas.JourneyDef{App: testApp, ID: "j", Version: 1, Steps: []schemas.JourneyStep{exit}}, "entry: give event, keyword, segment or api"},
		{"dangling edge", base(schemas.JourneyStep{ID: "a", Type: schemas.StepUpdateTags, Tags: map[string]any{"x": "y"}, Next: "nowhere"}, exit), `steps[0] (a).next: no step "nowhere"`},
		{"missing edge", base(schemas.JourneyStep{ID: "a", Type: schemas.StepWait, Duration: "1h"}, exit), "steps[0] (a).next is required"},
		{"unreachable", base(exit, schemas.JourneyStep{ID: "lost", Type: schemas.StepExit}), "steps[1] (lost) cannot be reached from the first step"},
		{"cycle without a wait", base(
			schemas.JourneyStep{ID: "a", Type: schemas.StepUpdateTags, Tags: map[string]any{"x": 1.0}, Next: "b"},
			schemas.JourneyStep{ID: "b", Type: schemas.StepSplitSegment, Filter: `T("x", EQ, 1)`, Yes: "a", No: "end"}, exit), "form a cycle without a wait"},
		{"split not 100", base(schemas.JourneyStep{ID: "ab", Type: schemas.StepSplitAB, Branches: []schemas.JourneyBranch{{Percent: 50, Next: "end"}, {Percent: 40, Next: "end"}}}, exit), "percentages sum to 90, not 100"},
		{"unknown channel", base(schemas.JourneyStep{ID: "s", Type: schemas.StepSend, Channel: "sms", Next: "end"}, exit), `channel "sms" is not whatsapp, email or push`},
		{"unknown type", base(schemas.JourneyStep{ID: "s", Type: "teleport"}, exit), `type "teleport" is not`},
		{"bad timeout", base(schemas.JourneyStep{ID: "w", Type: schemas.StepWaitEvent, Event: "X", Timeout: "soon", OnEvent: "end", OnTimeout: "end"}, exit), `timeout "soon"`},
		{"bad filter", base(schemas.JourneyStep{ID: "s", Type: schemas.StepSplitSegment, Filter: `T("x" EQ)`, Yes: "end", No: "end"}, exit), "steps[0] (s).filter: column"},
		{"duplicate id", base(exit, exit), `steps[1].id "end" is used twice`},
		{"text and template", base(schemas.JourneyStep{
			ID: "s", Type: schemas.StepSend, Channel: schemas.ChannelWhatsApp, Text: "hi",
			Template: &schemas.Template{Name: "t", Language: "en"}, Next: "end",
		}, exit), "template or text, not both"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := compileJourney(tt.d); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	// A cycle through a wait is fine (a reminder loop).
	if _, err := compileJourney(base(
		schemas.JourneyStep{ID: "w", Type: schemas.StepWait, Duration: "1d", Next: "s"},
		schemas.JourneyStep{ID: "s", Type: schemas.StepSplitSegment, Filter: `T("done", EQ, true)`, Yes: "end", No: "w"}, exit)); err != nil {
		t.Fatal(err)
	}
	if _, err := compileJourney(seedJourney(1)); err != nil {
		t.Fatal(err)
	}
}

// journeyOutputs splits outputs: dispatch requests by channel and journey
// events as "name:step".
func journeyOutputs(t *testing.T, out []*kgo.Record) (sends []string, steps []string) {
	t.Helper()
	for _, r := range out {
		if r.Topic == schemas.TopicDispatch {
			d, err := schemas.DecodeDispatchRequest(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			sends = append(sends, string(d.Channel)+">"+d.To)
		}
		if r.Topic != schemas.TopicEvents {
			continue
		}
		e, err := schemas.DecodeEvent(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if e.Name == schemas.EventJourneyStep {
			steps = append(steps, e.Attributes["step"].(string))
		}
		if e.Name == schemas.EventJourneyExited {
			steps = append(steps, "exit:"+e.Attributes["reason"].(string))
		}
	}
	return sends, steps
}

// TestJourneySeed runs the seed's journey for three users: one opens the
// push (nothing more), one opens the email (no WhatsApp), one opens
// nothing (push, email, WhatsApp), on the journeys' clock.
func TestJourneySeed(t *testing.T) {
	s := newTest(t, Config{})
	now := t0
	s.now = func() time.Time { return now }
	j, err := compileJourney(seedJourney(1))
	if err != nil {
		t.Fatal(err)
	}
	s.journeys.put(j)
	user := func(i int) string { return fmt.Sprintf("whatsapp:+4790003%03d", i) }
	for i := range 3 {
		e := register(fmt.Sprint("r", i), now, map[string]any{"first_name": "Ana"})
		e.HWID, e.Email, e.PushToken = user(i), fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("tok-%d", i)
		s.process(t, record(t, e))
	}
	ev := func(id string, i int, name string, attrs map[string]any) *kgo.Record {
		return record(t, &schemas.Event{ID: id, App: testApp, Kind: schemas.KindEvent, Name: name, Time: now, HWID: user(i), Attributes: attrs})
	}
	tick := func() []*kgo.Record {
		t.Helper()
		return s.process(t, record(t, &schemas.Event{ID: fmt.Sprint("tick-", now.UnixNano()), App: schemas.TickApp, Kind: schemas.KindTick, Time: now}))
	}
	for i := range 3 {
		sends, steps := journeyOutputs(t, s.process(t, ev(fmt.Sprint("su", i), i, "SignedUp", nil)))
		if !slices.Equal(sends, []string{"push>" + fmt.Sprintf("tok-%d", i)}) || !slices.Equal(steps, []string{"push", "wait_push"}) {
			t.Fatalf("user %d on entry: sends %v, steps %v", i, sends, steps)
		}
	}
	// User 0 opens the push: exits, nothing more.
	if _, steps := journeyOutputs(t, s.process(t, ev("po0", 0, schemas.EventPushOpened, nil))); !slices.Equal(steps, []string{"opened", "exit:completed"}) {
		t.Fatalf("push opened: steps %v", steps)
	}
	// Not yet an hour: no timer fires.
	now = t0.Add(59 * time.Minute)
	if sends, _ := journeyOutputs(t, tick()); len(sends) != 0 {
		t.Fatalf("before the timeout: %v", sends)
	}
	now = t0.Add(61 * time.Minute)
	sends, _ := journeyOutputs(t, tick())
	if slices.Sort(sends); !slices.Equal(sends, []string{"email>u1@example.com", "email>u2@example.com"}) {
		t.Fatalf("after the push timeout: %v", sends)
	}
	// User 1 opens the email; an open of another send matches nothing.
	p1, _ := s.Profile(testApp, user(1))
	var lastSend uint64
	for _, r := range p1.journeys {
		lastSend = r.lastSend
	}
	if _, steps := journeyOutputs(t, s.process(t, ev("eo-wrong", 1, schemas.EventEmailOpened, map[string]any{"dispatch_id": "someone-else"}))); len(steps) != 0 {
		t.Fatalf("an open of another email moved the journey: %v", steps)
	}
	id := emailDispatchID(t, s, 1)
	if idHash(id) != lastSend {
		t.Fatal("the journey's last send is not the email's dispatch id")
	}
	if _, steps := journeyOutputs(t, s.process(t, ev("eo1", 1, schemas.EventEmailOpened, map[string]any{"dispatch_id": id}))); !slices.Equal(steps, []string{"opened", "exit:completed"}) {
		t.Fatalf("email opened: %v", steps)
	}
	// User 2 opens nothing: WhatsApp after a day; a late push open is a
	// counted no-op.
	now = t0.Add(26 * time.Hour)
	if sends, steps := journeyOutputs(t, tick()); !slices.Equal(sends, []string{"whatsapp>+4790003002"}) || !slices.Equal(steps, []string{"whatsapp", "done", "exit:completed"}) {
		t.Fatalf("after the email timeout: %v %v", sends, steps)
	}
	before := s.metric(t, "herald_segmenter_journey_ignored_total", "reason", "not_waited_for")
	s.process(t, ev("po-late", 2, schemas.EventPushOpened, map[string]any{"dispatch_id": "x"}))
	if got := s.metric(t, "herald_segmenter_journey_ignored_total", "reason", "not_waited_for") - before; got != 0 {
		t.Fatalf("a late open with no journey waiting counted %v", got)
	}
	p2, _ := s.Profile(testApp, user(2))
	if len(p2.journeys) != 0 || !slices.Contains(p2.done, j.hash) {
		t.Fatalf("user 2 after the journey: runs %+v done %v", p2.journeys, p2.done)
	}
	// Re-entry after exit: signing up again enters again (sequence 2,
	// new dispatch ids).
	sends, _ = journeyOutputs(t, s.process(t, ev("su2-again", 2, "SignedUp", nil)))
	if len(sends) != 1 {
		t.Fatalf("re-entry: %v", sends)
	}
}

// emailDispatchID is the id of the email request the journey sent user i,
// recomputed as journeySend derives it.
func emailDispatchID(t *testing.T, s *testSegmenter, i int) string {
	t.Helper()
	key := schemas.EventKey(testApp, fmt.Sprintf("whatsapp:+4790003%03d", i), "")
	return journeyDispatchID(testApp, "welcome", 1, key, 1, "email")
}

// TestJourneyKeywordSupport: a keyword-started support journey: SUPPORT
// gets an acknowledgement inside the service window, then a follow-up
// offer if the user replies within the hour, nothing more if not.
func TestJourneyKeywordSupport(t *testing.T) {
	s := newTest(t, Config{Keywords: []KeywordRule{}})
	now := t0
	s.now = func() time.Time { return now }
	d := &schemas.JourneyDef{
		App: testApp, ID: "support", Version: 1, Sender: testPNID, Entry: schemas.JourneyEntry{Keyword: "Support"},
		Steps: []schemas.JourneyStep{
			{ID: "ack", Type: schemas.StepSend, Channel: schemas.ChannelWhatsApp, Text: "Hi {{profile_name|there}}, what do you need?", Next: "wait"},
			{ID: "wait", Type: schemas.StepWaitEvent, Event: schemas.WaitWhatsAppReply, Timeout: "1h", OnEvent: "offer", OnTimeout: "end"},
			{ID: "offer", Type: schemas.StepSend, Channel: schemas.ChannelWhatsApp, Template: &schemas.Template{Name: "support_offer", Language: "en_US", Category: CategoryUtility}, Next: "end"},
			{ID: "end", Type: schemas.StepExit},
		},
	}
	j, err := compileJourney(d)
	if err != nil {
		t.Fatal(err)
	}
	s.journeys.put(j)
	in := func(id, text string) []*kgo.Record {
		e := inbound(id, testApp, text, "Ana", now)
		return s.process(t, record(t, e))
	}
	sends, steps := journeyOutputs(t, in("i1", "¡Support! my order"))
	if !slices.Equal(sends, []string{"whatsapp>" + testPhone}) || !slices.Equal(steps, []string{"ack", "wait"}) {
		t.Fatalf("on SUPPORT: %v %v", sends, steps)
	}
	now = t0.Add(10 * time.Minute)
	sends, steps = journeyOutputs(t, in("i2", "it never came"))
	if !slices.Equal(sends, []string{"whatsapp>" + testPhone}) || !slices.Equal(steps, []string{"offer", "end", "exit:completed"}) {
		t.Fatalf("on the reply: %v %v", sends, steps)
	}
	// Again, and silence: the timeout ends it without a send.
	in("i3", "support")
	now = t0.Add(2 * time.Hour)
	out := s.process(t, record(t, &schemas.Event{ID: "tick-1", App: schemas.TickApp, Kind: schemas.KindTick, Time: now}))
	if sends, steps := journeyOutputs(t, out); len(sends) != 0 || !slices.Equal(steps, []string{"end", "exit:completed"}) {
		t.Fatalf("on the timeout: %v %v", sends, steps)
	}
}

// BenchmarkJourneyTimers measures timer firings: 100,000 users wait in a
// journey (wait 1h, then a push, then the end) on two partitions; the
// clock passes the hour and ticks fire them all, the two partitions on
// their two workers. One op fires every user once.
//
//	go test -run '^$' -bench BenchmarkJourneyTimers -benchtime 3x -benchmem ./segmenter/
func BenchmarkJourneyTimers(b *testing.B) {
	const users = 100_000
	s := newTest(b, Config{CacheBytes: 256 << 20})
	now := t0
	s.now = func() time.Time { return now }
	j, err := compileJourney(&schemas.JourneyDef{
		App: testApp, ID: "remind", Version: 1, Entry: schemas.JourneyEntry{Event: schemas.EventDeviceRegistered},
		Steps: []schemas.JourneyStep{
			{ID: "wait", Type: schemas.StepWait, Duration: "1h", Next: "push"},
			{ID: "push", Type: schemas.StepSend, Channel: schemas.ChannelPush, Push: &schemas.JourneyPush{Title: "Still there?", Body: "Come back"}, Next: "end"},
			{ID: "end", Type: schemas.StepExit},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	s.journeys.put(j)
	enter := func(round int) {
		const batch = 1000
		recs := make([]*kgo.Record, 0, batch)
		for i := range users {
			r := record(b, &schemas.Event{
				ID: fmt.Sprintf("e%d-%d", round, i), App: testApp, Kind: schemas.KindRegister,
				Name: schemas.EventDeviceRegistered, Time: now, HWID: fmt.Sprintf("h%07d", i), PushToken: "tok",
			})
			r.Partition = int32(i % 2)
			recs = append(recs, r)
			if len(recs) == batch {
				if _, err := s.Process(b.Context(), recs); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	fired := 0
	for round := 0; b.Loop(); round++ {
		b.StopTimer()
		enter(round)
		now = now.Add(2 * time.Hour)
		b.StartTimer()
		for n := 0; s.timers.size() > 0; n++ {
			var ticks []*kgo.Record
			for p := range int32(2) {
				r := record(b, &schemas.Event{ID: fmt.Sprintf("t%d-%d-%d", round, n, p), App: schemas.TickApp, Kind: schemas.KindTick, Time: now})
				r.Partition = p
				ticks = append(ticks, r)
			}
			out, err := s.Process(b.Context(), ticks)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range out {
				if r.Topic == schemas.TopicDispatch {
					fired++
				}
			}
		}
	}
	if fired != users*b.N {
		b.Fatalf("%d pushes, want %d", fired, users*b.N)
	}
	b.ReportMetric(float64(fired)/b.Elapsed().Seconds(), "firings/s")
}

func TestWaitUntil(t *testing.T) {
	mon := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC) // a Monday, 10:00 UTC
	compile := func(st schemas.JourneyStep) *cstep {
		t.Helper()
		st.ID, st.Type, st.Next = "w", schemas.StepWait, "x"
		j, err := compileJourney(&schemas.JourneyDef{
			App: testApp, ID: "j", Version: 1, Entry: schemas.JourneyEntry{API: true},
			Steps: []schemas.JourneyStep{st, {ID: "x", Type: schemas.StepExit}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return &j.steps[0]
	}
	oslo := &Profile{Timezone: "Europe/Oslo", tags: map[string]Tag{"renewal": {Kind: TagString, Str: "2026-12-24 08:00"}, "past": {Kind: TagString, Str: "2020-01-01"}}}
	for _, tt := range []struct {
		name string
		st   schemas.JourneyStep
		want time.Time
	}{
		{"duration", schemas.JourneyStep{Duration: "2d"}, mon.Add(48 * time.Hour)},
		{"09:00 local, tomorrow", schemas.JourneyStep{UntilTime: "09:00"}, time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)},
		{"12:00 local, today", schemas.JourneyStep{UntilTime: "12:00"}, time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC)},
		{"friday 09:00 local", schemas.JourneyStep{UntilTime: "09:00", Weekdays: []string{"Friday"}}, time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC)},
		{"until a date tag", schemas.JourneyStep{UntilTag: "renewal"}, time.Date(2026, 12, 24, 8, 0, 0, 0, time.UTC)},
		{"a past date tag ends now", schemas.JourneyStep{UntilTag: "past"}, mon},
		{"an unset tag ends now", schemas.JourneyStep{UntilTag: "nope"}, mon},
	} {
		if got := waitUntil(compile(tt.st), oslo, mon); !got.Equal(tt.want) {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestJourneySegmentEntry: entering a saved segment enters its journey,
// by an event and by a sweep (a segment saved after the profiles).
func TestJourneySegmentEntry(t *testing.T) {
	s := newTest(t, Config{})
	j, err := compileJourney(&schemas.JourneyDef{
		App: testApp, ID: "vip", Version: 1, Entry: schemas.JourneyEntry{Segment: "vips"},
		Steps: []schemas.JourneyStep{{ID: "wait", Type: schemas.StepWait, Duration: "1d", Next: "end"}, {ID: "end", Type: schemas.StepExit}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.journeys.put(j)
	// A profile that is a VIP before the segment exists.
	e := register("r1", t0, map[string]any{"VIP": true})
	e.HWID = "whatsapp:+4790006001"
	s.process(t, record(t, e))
	s.process(t, record(t, &schemas.Event{
		ID: "sw1", App: testApp, Kind: schemas.KindSweep, Time: t0,
		Sweep: &schemas.Sweep{Segment: "vips", Filter: `T("VIP", EQ, true)`},
	}))
	if p, _ := s.Profile(testApp, "whatsapp:+4790006001"); len(p.journeys) != 1 || p.journeys[0].journey != j.hash {
		t.Fatalf("after the sweep: %+v", p.journeys)
	}
	// One who becomes a VIP later, by an event.
	s.segs.put(mustSegment(t, testApp, "vips", `T("VIP", EQ, true)`))
	e2 := register("r2", t0, map[string]any{"VIP": false})
	e2.HWID = "whatsapp:+4790006002"
	s.process(t, record(t, e2))
	s.process(t, record(t, &schemas.Event{ID: "t2", App: testApp, Kind: schemas.KindTags, Time: t0, HWID: e2.HWID, Tags: map[string]any{"VIP": true}}))
	if p, _ := s.Profile(testApp, e2.HWID); len(p.journeys) != 1 {
		t.Fatalf("after the event: %+v", p.journeys)
	}
	if n := s.timers.size(); n != 2 {
		t.Fatalf("%d timers, want 2", n)
	}
}

// TestJourneyWebhook: a webhook step produces a webhook dispatch request
// with its body's placeholders filled from the profile.
func TestJourneyWebhook(t *testing.T) {
	s := newTest(t, Config{})
	j, err := compileJourney(&schemas.JourneyDef{
		App: testApp, ID: "crm", Version: 1, Entry: schemas.JourneyEntry{Event: "Signup"},
		Steps: []schemas.JourneyStep{
			{ID: "hook", Type: schemas.StepWebhook, URL: "https://crm.example.com/herald", Body: map[string]any{"name": "{{tag:first_name|friend}}", "score": 7.0}, Next: "end"},
			{ID: "end", Type: schemas.StepExit},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.journeys.put(j)
	s.process(t, record(t, register("r1", t0, map[string]any{"first_name": "Ana"})))
	out := s.process(t, record(t, &schemas.Event{ID: "e1", App: testApp, Kind: schemas.KindEvent, Name: "Signup", Time: t0, HWID: testHWID}))
	var d *schemas.DispatchRequest
	for _, r := range out {
		if r.Topic == schemas.TopicDispatch {
			if d, err = schemas.DecodeDispatchRequest(r.Value); err != nil {
				t.Fatal(err)
			}
		}
	}
	if d == nil || d.Channel != schemas.ChannelWebhook || d.Webhook.URL != "https://crm.example.com/herald" || d.Webhook.Body["name"] != "Ana" ||
		d.Webhook.Body["score"] != 7.0 || d.Sender != "crm.example.com" || d.HWID != testHWID {
		t.Fatalf("webhook request %+v", d)
	}
	for _, bad := range []string{"http://crm.example.com/x", "ftp://x", "https://user:pw@crm.example.com/"} {
		_, err := compileJourney(&schemas.JourneyDef{
			App: testApp, ID: "crm", Version: 1, Entry: schemas.JourneyEntry{API: true},
			Steps: []schemas.JourneyStep{{ID: "hook", Type: schemas.StepWebhook, URL: bad, Next: "end"}, {ID: "end", Type: schemas.StepExit}},
		})
		if err == nil || !strings.Contains(err.Error(), "steps[0] (hook).url") {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}
