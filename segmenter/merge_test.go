package segmenter

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// mergeLoop processes recs and then, as the segmenter's own consumer would,
// the KindMerge and forwarded events they produce, until none is left; it
// returns every other output and how many merge steps ran.
func mergeLoop(t *testing.T, s *testSegmenter, recs ...*kgo.Record) (outs []*kgo.Record, steps int) {
	t.Helper()
	for len(recs) > 0 {
		var next []*kgo.Record
		for _, r := range s.process(t, recs...) {
			e, err := schemas.DecodeEvent(r.Value)
			if r.Topic == schemas.TopicEvents && err == nil && (e.Kind == schemas.KindMerge || (e.Name != schemas.EventSegmentEntered && e.Name != schemas.EventSegmentExited)) {
				if e.Kind == schemas.KindMerge {
					steps++
				}
				next = append(next, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Offset: testOffset.Add(1)})
				continue
			}
			outs = append(outs, r)
		}
		recs = next
		if steps > 50 {
			t.Fatal("merge steps do not end")
		}
	}
	return outs, steps
}

func TestIdentityMerge(t *testing.T) {
	s := newTest(t, Config{})
	s.segs.put(mustSegment(t, testApp, "asian_food", `Event("OrderPlaced", "cuisine", EQ, "asian")`))
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	anon := func(id string, m int, e *schemas.Event) *schemas.Event {
		e.ID, e.App, e.AnonymousID, e.Time = id, testApp, "anon-1", at(m)
		return e
	}
	// Before signing in: an anonymous visitor orders Asian food twice and
	// gets tags.
	s.process(t, records(t,
		anon("a1", 1, &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced", Attributes: map[string]any{"cuisine": "asian"}}),
		anon("a2", 2, &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced", Attributes: map[string]any{"cuisine": "asian"}}),
		anon("a3", 3, &schemas.Event{Kind: schemas.KindTags, Tags: map[string]any{"city": "Oslo", "tier": "silver"}}),
	)...)
	anonKey := schemas.ProfileKey(testApp, "", "", "anon-1")
	userKey := schemas.ProfileKey(testApp, "", "u-1", "")
	if p, _ := s.lookup(anonKey); p == nil || !p.in(segmentID("asian_food")) {
		t.Fatal("the anonymous profile is not in asian_food before the merge")
	}
	// The user signs in: an order of their own (before the visitor's, from
	// another device), then an identify that carries both ids (Segment
	// identify after login).
	outs, steps := mergeLoop(t, s, records(t,
		&schemas.Event{ID: "u1", App: testApp, Kind: schemas.KindEvent, UserID: "u-1", Time: at(0), Name: "OrderPlaced", Attributes: map[string]any{"cuisine": "italian"}},
		&schemas.Event{ID: "u2", App: testApp, Kind: schemas.KindTags, UserID: "u-1", AnonymousID: "anon-1", Time: at(11), Tags: map[string]any{"tier": "gold"}},
	)...)
	if steps != 3 {
		t.Fatalf("%d merge steps, want pull, push, done", steps)
	}
	u, ok := s.lookup(userKey)
	if !ok {
		t.Fatal("no user profile")
	}
	c, _ := u.Event("OrderPlaced")
	if c.Count != 3 || !c.First.Equal(at(0)) || !c.Last.Equal(at(2)) || c.Attrs()[0].Str != "asian" {
		t.Errorf("OrderPlaced after the merge: %+v, want 3 from minute 0 to 2, the latest (the visitor's) asian", c)
	}
	if u.Tags()["tier"].Str != "gold" || u.Tags()["city"].Str != "Oslo" {
		t.Errorf("tags after the merge: %v, want the user's tier (gold) and the visitor's city", u.Tags())
	}
	if !u.FirstSeen.Equal(at(0)) || !u.LastSeen.Equal(at(11)) {
		t.Errorf("seen %v to %v, want minute 0 to 11", u.FirstSeen, u.LastSeen)
	}
	if !u.in(segmentID("asian_food")) {
		t.Error("the user did not enter asian_food with the visitor's orders")
	}
	byKey := func(key []byte) []*kgo.Record {
		var l []*kgo.Record
		for _, r := range outs {
			if string(r.Key) == string(key) {
				l = append(l, r)
			}
		}
		return l
	}
	if got := segmentEvents(t, byKey(anonKey), anonKey); !slices.Equal(got, []string{"PW_SegmentExited:asian_food"}) {
		t.Errorf("the visitor's segment events %v, want an exit from asian_food", got)
	}
	if got := segmentEvents(t, byKey(userKey), userKey); !slices.Equal(got, []string{"PW_SegmentEntered:asian_food"}) {
		t.Errorf("the user's segment events %v, want an entry into asian_food", got)
	}
	a, ok := s.lookup(anonKey)
	if !ok || a.mergedInto != string(userKey) || !a.empty() {
		t.Fatalf("the visitor's profile after the merge: %+v, want an empty forwarder to %q", a, userKey)
	}

	// The exit event, read back by the forwarder's owner like every
	// segment event, is not forwarded: it concerns the visitor.
	for _, r := range byKey(anonKey) {
		if got := s.process(t, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Offset: testOffset.Add(1)}); len(got) != 0 {
			t.Fatalf("the forwarder wrote %d records for its own segment event", len(got))
		}
	}

	// Replayed steps (a crash redelivering them) change nothing.
	pull := &schemas.Event{
		ID: "p", App: testApp, Kind: schemas.KindMerge, Time: at(11),
		Merge: &schemas.Merge{Step: schemas.MergePull, From: string(anonKey), Into: string(userKey)},
	}
	if _, steps := mergeLoop(t, s, record(t, pull)); steps != 2 {
		t.Fatalf("a replayed pull wrote %d steps, want push (empty) and done", steps)
	}
	// An event redelivered to the user asks again while not done: here it
	// is done, so it does not.
	if _, steps := mergeLoop(t, s, records(t, &schemas.Event{ID: "u3", App: testApp, Kind: schemas.KindEvent, UserID: "u-1", AnonymousID: "anon-1", Time: at(12), Name: "AppOpen"})...); steps != 0 {
		t.Errorf("an event naming a merged anonymous id ran %d merge steps", steps)
	}
	if u, _ = s.lookup(userKey); func() uint64 { c, _ := u.Event("OrderPlaced"); return c.Count }() != 3 {
		t.Error("replayed merge steps counted the visitor's orders again")
	}

	// Later events under the anonymous id reach the user.
	fwd := record(t, anon("a4", 20, &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced", Attributes: map[string]any{"cuisine": "asian"}}))
	mergeLoop(t, s, fwd)
	mergeLoop(t, s, &kgo.Record{Topic: fwd.Topic, Key: fwd.Key, Value: fwd.Value, Offset: fwd.Offset}) // redelivered
	u, _ = s.lookup(userKey)
	if c, _ := u.Event("OrderPlaced"); c.Count != 4 || !c.Last.Equal(at(20)) {
		t.Errorf("OrderPlaced after a forwarded event and its redelivery: %+v, want 4, last at minute 20", c)
	}
	if a, _ := s.lookup(anonKey); !a.empty() {
		t.Error("the forwarder kept a forwarded event")
	}
	if n := s.metric(t, "herald_segmenter_forwarded_events_total"); n != 1 {
		t.Errorf("%v events forwarded, want 1 (its redelivery is not)", n)
	}
}

// TestAliasMerge: alias names an earlier user id; the profile found under
// it is merged, the other candidate (the same id as an anonymous id) becomes
// an empty forwarder; campaigns see one user.
func TestAliasMerge(t *testing.T) {
	s := newTest(t, Config{})
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	s.process(t, records(t,
		&schemas.Event{ID: "o1", App: testApp, Kind: schemas.KindRegister, UserID: "old-id", Time: at(1), Email: "ana@example.com", DeviceType: schemas.DeviceEmail},
	)...)
	_, steps := mergeLoop(t, s, records(t,
		&schemas.Event{ID: "al", App: testApp, Kind: schemas.KindAlias, UserID: "new-id", PreviousID: "old-id", Time: at(5)},
	)...)
	if steps != 6 {
		t.Fatalf("%d merge steps, want pull, push and done for each of the two candidate keys", steps)
	}
	u, ok := s.lookup(schemas.ProfileKey(testApp, "", "new-id", ""))
	if !ok || u.Email != "ana@example.com" || !u.Registered {
		t.Fatalf("user after the alias: %+v, want the earlier id's email and registration", u)
	}
	var keys []string
	if _, err := s.eachProfile(t.Context(), 0, testApp, func(key []byte, _ *Profile) { keys = append(keys, string(key)) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{string(schemas.ProfileKey(testApp, "", "new-id", ""))}) {
		t.Errorf("profiles a campaign visits: %q, want only the user's", keys)
	}
	// The earlier id cannot be merged into a second user.
	mergeLoop(t, s, records(t,
		&schemas.Event{ID: "al2", App: testApp, Kind: schemas.KindAlias, UserID: "third-id", PreviousID: "old-id", Time: at(6)},
	)...)
	if n := s.metric(t, "herald_segmenter_merge_conflicts_total"); n != 2 {
		t.Errorf("%v merge conflicts, want 2 (both candidate keys went to new-id)", n)
	}
	if p, _ := s.lookup(schemas.ProfileKey(testApp, "", "third-id", "")); p == nil || p.Email != "" {
		t.Errorf("third-id got data merged from an id already merged: %+v", p)
	}
}

// TestIdentityMergeOnKafka: the three steps travel through TopicEvents on
// kfake between the owners of the two keys (on different partitions), and
// the result survives a restart: a new segmenter restores the merged user
// and the forwarder from the changelog and forwards the visitor's next
// event.
func TestIdentityMergeOnKafka(t *testing.T) {
	c := kafkatest.New(t, 4)
	now := t0.Add(time.Hour)
	anonKey := schemas.ProfileKey(testApp, "", "", "anon-9")
	userKey := schemas.ProfileKey(testApp, "", "u-9", "")
	ev := func(id string, m int, user string, e *schemas.Event) *kgo.Record {
		e.ID, e.App, e.AnonymousID, e.UserID, e.Time = id, testApp, "anon-9", user, t0.Add(time.Duration(m)*time.Minute)
		return record(t, e)
	}
	orders := func(s *Segmenter) (uint64, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var n uint64
		if p, ok := s.loadStored(userKey); ok {
			c, _ := p.Event("OrderPlaced")
			n = c.Count
		}
		into := ""
		if p, ok := s.loadStored(anonKey); ok {
			into = p.mergedInto
		}
		return n, into
	}
	wait := func(s *Segmenter, want uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, into := orders(s)
			if n == want && into == string(userKey) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("user has %d orders (want %d), visitor merged into %q", n, want, into)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s, cancel, errc := runSegmenter(t, c, now)
	produce(t, c,
		ev("v1", 1, "", &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced"}),
		ev("v2", 2, "", &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced"}),
	)
	produce(t, c, ev("v3", 3, "u-9", &schemas.Event{Kind: schemas.KindTags, Tags: map[string]any{"plan": "pro"}}))
	wait(s, 2)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	s.Close() // leaves the group: the next member gets every partition
	s2, _, _ := runSegmenter(t, c, now)
	wait(s2, 2) // restored
	produce(t, c, ev("v4", 4, "", &schemas.Event{Kind: schemas.KindEvent, Name: "OrderPlaced"}))
	wait(s2, 3)
}
