package segmenter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// inPlaceCase builds the event of a FuzzApplyInPlace input against p: one
// of p's event names or a new one, at a time around p's last seen time,
// default fields equal to p's, different, or absent, and attributes that
// exercise what a profile keeps and drops.
func inPlaceCase(p *Profile, pick uint8, dt int64, fields uint8, id string, attr string, num float64, viaJSON bool) (*schemas.Event, error) {
	name := "Fresh" + strconv.Itoa(int(pick%3))
	if n := len(p.Events); n > 0 && pick%4 != 0 {
		name = p.Events[int(pick)%n].Name
	}
	base := p.LastSeen
	if base.IsZero() {
		base = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	}
	e := &schemas.Event{
		ID: id, App: "shop", Kind: schemas.KindEvent, Name: name, HWID: "whatsapp:+14155550100",
		Time: base.Add(time.Duration(dt) * time.Microsecond), Received: base,
		Attributes: map[string]any{"sku": attr, "price": num, "paid": num > 0, "items": []any{attr, "x"}, "": "dropped", "nested": map[string]any{"a": 1}},
	}
	if pick%5 == 0 {
		e.Attributes = nil
	}
	if pick%7 == 6 { // a message status: counted, but moving no seen time
		e.Kind, e.Name = schemas.KindStatus, schemas.EventWhatsAppStatus
		if !viaJSON && pick%2 == 0 {
			e.Name = "" // counted under the default name
		}
		e.Status = &schemas.Status{PhoneNumberID: "1098765", WAMID: "wamid.x" + id, Status: "delivered", Recipient: "+14155550100"}
	}
	// Each default field: 0 absent, 1 the profile's own, 2 another.
	field := func(shift uint, own, other string) string {
		switch (fields >> shift) % 4 {
		case 1:
			return own
		case 2:
			return other
		}
		return ""
	}
	e.UserID = field(0, p.UserID, "someone-else")
	e.Language = field(2, p.Language, "xx")
	e.Timezone = field(4, p.Timezone, "Asia/Tokyo")
	e.Country = field(6, p.Country, "JP")
	if fields&0x80 != 0 {
		e.AppVersion = p.AppVersion
		e.DeviceType = p.DeviceType
	}
	if !viaJSON {
		return e, nil
	}
	b, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	return schemas.DecodeEventAttrs(b)
}

// FuzzApplyInPlace checks applyInPlace against the decoded path
// (checkInPlace) on any profile that decodes and any event of its kind.
func FuzzApplyInPlace(f *testing.F) {
	unmerged := fullProfile()
	unmerged.mergedInto, unmerged.merges = "", nil
	for _, p := range []*Profile{fullProfile(), unmerged} {
		f.Add(appendProfile(nil, p), uint8(1), int64(5_000_000), uint8(0), "ev-1", "A-1", 12.5, true, int32(7), int64(1<<40))
		f.Add(appendProfile(nil, p), uint8(4), int64(-5_000_000), uint8(0x95), "x", "", -1.0, false, int32(3), int64(0))
		f.Add(appendProfile(nil, p), uint8(2), int64(-1), uint8(0), "ev-2", "long", 3.0, true, int32(7), int64(1<<40-1))
	}
	plain := &Profile{FirstSeen: t0, LastSeen: t0.Add(time.Hour), recent: [recentIDs]uint64{1, 2, 3, 4, 5, 6, 7, 8}, nRecent: 8, src: srcPos{partition: 1, next: 10}}
	f.Add(appendProfile(nil, plain), uint8(0), int64(0), uint8(0), "ev-3", "A-2", 0.0, true, int32(1), int64(10))
	f.Fuzz(func(t *testing.T, enc []byte, pick uint8, dt int64, fields uint8, id, attr string, num float64, viaJSON bool, partition int32, offset int64) {
		p, err := decodeProfile(enc)
		if err != nil {
			return
		}
		e, err := inPlaceCase(p, pick, dt, fields, id, attr, num, viaJSON)
		if err != nil {
			return // not an event JSON carries (a bad id or attribute): never decoded
		}
		checkInPlace(t, p, e, partition, offset)
	})
}

// TestApplyInPlaceMatchesDecoded runs checkInPlace over a sweep of events
// (names old and new, earlier and later times, default fields absent, the
// same or different, attributes kept and dropped) on two profiles, and
// checks that most of them were applied in place.
func TestApplyInPlaceMatchesDecoded(t *testing.T) {
	unmerged := fullProfile()
	unmerged.mergedInto, unmerged.merges = "", nil
	plain := &Profile{
		FirstSeen: t0, LastSeen: t0.Add(time.Hour), LastInbound: t0.Add(time.Minute), recent: [recentIDs]uint64{1, 2, 3}, nRecent: 3, src: srcPos{partition: 1, next: 10},
		sends: []sentMark{{at: t0.Add(30 * time.Minute), campaign: 9, marketing: true}},
	}
	// Counters last seen before the profile was (as most are), some with
	// attributes.
	older := &Profile{
		UserID: "u-1", Language: "en", Timezone: "Europe/Lisbon", Country: "PT", FirstSeen: t0, LastSeen: t0.Add(48 * time.Hour),
		recent: [recentIDs]uint64{1, 2, 3, 4, 5, 6, 7}, nRecent: 7, src: srcPos{partition: 7, next: 99}, AppVersion: "1.2", FirstInstall: t0,
		segments: []uint64{4, 8}, done: []uint64{5},
	}
	for i := range 6 {
		c := EventCount{Name: "ev_" + strconv.Itoa(i), Count: uint64(i + 1), First: t0.Add(time.Duration(i) * time.Hour), Last: t0.Add(time.Duration(40+i) * time.Hour)}
		if i%2 == 0 {
			c.attrs = []Attr{{"sku", Tag{Kind: TagString, Str: "B-2"}}}
		}
		older.Events = append(older.Events, c)
	}
	applied, cases := 0, 0
	for _, p := range []*Profile{unmerged, plain, older} {
		for pick := range uint8(20) {
			for _, dt := range []int64{-int64(5 * time.Hour / time.Microsecond), -int64(time.Hour / time.Microsecond), -1, 0, 1, int64(time.Hour / time.Microsecond)} {
				for _, fields := range []uint8{0, 0x55, 0x80, 0xaa, 0x02} {
					for _, viaJSON := range []bool{true, false} {
						e, err := inPlaceCase(p, pick, dt, fields, "ev-"+strconv.Itoa(cases), "A-1", float64(pick), viaJSON)
						if err != nil {
							t.Fatal(err)
						}
						cases++
						if checkInPlace(t, p, e, 7, 1<<41) {
							applied++
						}
					}
				}
			}
		}
	}
	if applied < cases/3 {
		t.Fatalf("%d of %d events applied in place", applied, cases)
	}
}

// checkInPlace applies e in place to p's cache encoding and, when that
// applies it, checks that both encodings are byte for byte what decoding
// the profile, applying the event and encoding it give, and that the
// decoded path sees neither a duplicate nor a default field changed. It
// reports whether e was applied in place.
func checkInPlace(t *testing.T, p *Profile, e *schemas.Event, partition int32, offset int64) bool {
	t.Helper()
	_, cb := appendProfiles(nil, nil, p, true) // the cache holds what save wrote
	gotLog, gotCache, ignored, ok := applyInPlace([]byte("prefix"), []byte("pre"), cb, e, partition, offset, nil)
	if !bytes.HasPrefix(gotLog, []byte("prefix")) || !bytes.HasPrefix(gotCache, []byte("pre")) {
		t.Fatal("applyInPlace did not append")
	}
	if !ok {
		return false
	}
	q, err := decodeProfile(cb)
	if err != nil {
		t.Fatalf("applied in place to a profile that does not decode: %v", err)
	}
	if q.applied(partition, offset) {
		t.Fatal("applied in place an event at an offset the profile applied")
	}
	a := q.apply(e)
	if a.dup || a.defaults {
		t.Fatalf("applied in place an event the decoded path takes as dup %v, changing default tags %v", a.dup, a.defaults)
	}
	q.src = srcPos{partition: partition, next: offset + 1}
	if ignored != a.ignoredTags {
		t.Fatalf("%d attributes ignored in place, %d decoded", ignored, a.ignoredTags)
	}
	wantLog, wantCache := appendProfiles(nil, nil, q, true)
	if !bytes.Equal(gotLog[len("prefix"):], wantLog) {
		t.Fatalf("changelog form differs for %+v\n got %x\nwant %x", e, gotLog[len("prefix"):], wantLog)
	}
	if !bytes.Equal(gotCache[len("pre"):], wantCache) {
		t.Fatalf("cache form differs for %+v\n got %x\nwant %x", e, gotCache[len("pre"):], wantCache)
	}
	return true
}

// TestApplyInPlaceDeclines checks each case applyInPlace leaves to the
// decoded path, and that it takes the plain one.
func TestApplyInPlaceDeclines(t *testing.T) {
	base := func() *Profile {
		p := fullProfile()
		p.mergedInto, p.merges = "", nil
		return p
	}
	event := func() *schemas.Event {
		return &schemas.Event{ID: "ev-new", App: "shop", Kind: schemas.KindEvent, Name: "event_3", Time: base().LastSeen.Add(time.Minute), Attributes: map[string]any{"sku": "A-1"}}
	}
	tests := []struct {
		name    string
		profile func(*Profile)
		event   func(*schemas.Event)
		offset  int64
		// seg, when set, is a segment applyInPlace evaluates (one on the
		// seen times only), which the profile is in when in is set.
		seg  string
		in   bool
		want bool
	}{
		{name: "plain", want: true},
		{name: "new name", event: func(e *schemas.Event) { e.Name = "Fresh" }, want: true},
		{name: "earlier than the name's last", event: func(e *schemas.Event) { e.Time = base().FirstSeen.Add(time.Hour) }, want: true},
		{name: "same default fields", event: func(e *schemas.Event) { e.Language, e.Country, e.UserID = "pt-BR", "BR", "user-42" }, want: true},
		{name: "recent id", event: func(e *schemas.Event) { e.ID = "x" }},
		{name: "applied offset", offset: 1<<40 - 1},
		{name: "other language", event: func(e *schemas.Event) { e.Language = "en" }},
		{name: "other user id", event: func(e *schemas.Event) { e.UserID = "user-43" }},
		{name: "other time zone", event: func(e *schemas.Event) { e.Timezone = "Europe/Paris" }},
		{name: "other app version", event: func(e *schemas.Event) { e.AppVersion = "9" }},
		{name: "other device type", event: func(e *schemas.Event) { e.DeviceType = 1 }},
		{name: "before first seen", event: func(e *schemas.Event) { e.Time = base().FirstSeen.Add(-time.Second) }},
		{name: "merged into another", profile: func(p *Profile) { p.mergedInto = "shop\x00user:u-9" }},
		{name: "journey run", profile: func(p *Profile) { p.journeys = []journeyRun{{journey: 1, deadline: p.LastSeen}} }},
		{name: "every name taken", profile: func(p *Profile) {
			for i := len(p.Events); i < MaxEventNames; i++ {
				p.Events = append(p.Events, EventCount{Name: "more_" + strconv.Itoa(i), Count: 1, First: p.LastSeen, Last: p.LastSeen})
			}
		}, event: func(e *schemas.Event) { e.Name = "Fresh" }},
		{name: "status", event: func(e *schemas.Event) { e.Kind, e.Name = schemas.KindStatus, schemas.EventWhatsAppStatus }, want: true},
		{name: "status without a name", event: func(e *schemas.Event) { e.Kind, e.Name = schemas.KindStatus, "" }, want: true},
		{name: "status before first seen, other language", event: func(e *schemas.Event) {
			e.Kind, e.Name, e.Time, e.Language = schemas.KindStatus, schemas.EventWhatsAppStatus, base().FirstSeen.Add(-time.Hour), "en"
		}, want: true},
		{name: "registration", event: func(e *schemas.Event) { e.Kind, e.Name = schemas.KindRegister, "" }},
		{name: "every name taken, one of them", profile: func(p *Profile) {
			for i := len(p.Events); i < MaxEventNames; i++ {
				p.Events = append(p.Events, EventCount{Name: "more_" + strconv.Itoa(i), Count: 1, First: p.LastSeen, Last: p.LastSeen})
			}
		}, want: true},
		{name: "seen segment, stays in", seg: `T("Last Seen", GTE, -7d)`, in: true, want: true},
		{name: "seen segment, stays out", seg: `T("First Seen", GTE, -7d)`, want: true},
		{name: "seen segment, enters", seg: `T("Last Seen", GTE, -7d)`},
		{name: "seen segment, exits", seg: `T("Last Seen", LTE, -1d) + T("First Seen", GTE, -1h)`, in: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, e := base(), event()
			if tt.profile != nil {
				tt.profile(p)
			}
			if tt.event != nil {
				tt.event(e)
			}
			offset := tt.offset
			if offset == 0 {
				offset = 1 << 41
			}
			var segs *seenSegments
			if tt.seg != "" {
				sg := mustSegment(t, "shop", "seen", tt.seg)
				if !sg.f.SeenOnly() {
					t.Fatalf("%s: not a segment on the seen times only", tt.seg)
				}
				segs = &seenSegments{list: []*savedSegment{sg}, now: e.Time}
				p.setIn(sg.id, tt.in)
				// The profile was last seen 30 days before the event.
				p.LastSeen = e.Time.Add(-30 * 24 * time.Hour)
				p.FirstSeen = p.LastSeen.Add(-time.Hour)
			}
			_, cb := appendProfiles(nil, nil, p, true)
			gotLog, _, _, ok := applyInPlace(nil, nil, cb, e, 7, offset, segs)
			if ok != tt.want {
				t.Fatalf("applied in place: %v, want %v", ok, tt.want)
			}
			if !ok {
				return
			}
			q, err := decodeProfile(gotLog)
			if err != nil {
				t.Fatal(err)
			}
			name := inPlaceName(e)
			c, _ := q.Event(name)
			if before, _ := p.Event(name); c.Count != before.Count+1 {
				t.Fatalf("%s counted %d, was %d", name, c.Count, before.Count)
			}
			if e.Kind == schemas.KindStatus && !q.LastSeen.Equal(p.LastSeen) {
				t.Fatalf("a status moved last seen from %v to %v", p.LastSeen, q.LastSeen)
			}
		})
	}
	// A version's cache form other than this one, and the changelog form,
	// are not taken.
	logb, cb := appendProfiles(nil, nil, base(), true)
	for _, b := range [][]byte{logb, append([]byte{cacheForm | 4}, cb[1:]...), cb[:len(cb)-1]} {
		if _, _, _, ok := applyInPlace(nil, nil, b, event(), 7, 1<<41, nil); ok {
			t.Fatalf("applied in place to %x", b[:2])
		}
	}
}

// TestInPlaceSameOutputs runs the same events through a segmenter that
// applies plain events in place and one that decodes every profile: the
// outputs are the same bytes, the changelog records and the stored profiles
// the same profiles, replays included. The app has segments some of the
// events can move and a journey some start (those events take the decoded
// path) and the others cannot.
func TestInPlaceSameOutputs(t *testing.T) {
	recs := benchEvents(t, 64, 40)
	in, off := newTest(t, Config{}), newTest(t, Config{DecodeAlways: true})
	for _, s := range []*testSegmenter{in, off} {
		for _, w := range s.workers {
			w.hotp.off = true // every event reads its profile from the cache
		}
		for i, f := range []string{
			`Event("Purchase", "count", GTE, 2)`, `T("tier", EQ, "gold")`,
			// On the seen times only: applied in place while no member
			// moves. The events span 2.56 s from t0: users enter the
			// second one past 12:00:01 and leave it past 12:00:02.
			`T("Last Seen", GTE, -7d)`,
			`T("Last Seen", BETWEEN, ["2025-06-01 12:00:01", "2025-06-01 12:00:02"]) * A("shop")`,
		} {
			s.segs.put(mustSegment(t, testApp, fmt.Sprintf("s%d", i), f))
		}
		// A journey AddToCart starts, whose runs wait: their profiles'
		// events all take the decoded path while they wait.
		j, err := compileJourney(&schemas.JourneyDef{
			App: testApp, ID: "cart", Version: 1, Entry: schemas.JourneyEntry{Event: "AddToCart"},
			Steps: []schemas.JourneyStep{
				{ID: "wait", Type: schemas.StepWaitEvent, Event: "Purchase", Timeout: "1h", OnEvent: "bought", OnTimeout: "done"},
				{ID: "bought", Type: schemas.StepExit},
				{ID: "done", Type: schemas.StepExit},
			}, Updated: t0,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.journeys.put(j)
	}
	parts := slices.Collect(slices.Chunk(recs, 100))
	parts = append(parts, parts[3], parts[10][40:]) // replays: duplicates
	for n, part := range parts {
		a, err := in.Process(context.Background(), part)
		if err != nil {
			t.Fatal(err)
		}
		b, err := off.Process(context.Background(), part)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameOutputs(a, b); err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
	}
	inPlace := testutil.ToFloat64(in.m.inPlace)
	if inPlace == 0 || testutil.ToFloat64(off.m.inPlace) != 0 {
		t.Fatalf("events applied in place: %v and %v, want some and none", inPlace, testutil.ToFloat64(off.m.inPlace))
	}
	events, statuses := 0, 0
	for _, r := range recs {
		if e, err := schemas.DecodeEvent(r.Value); err == nil && (e.Kind == schemas.KindEvent || e.Kind == schemas.KindStatus) {
			events++
			if e.Kind == schemas.KindStatus {
				statuses++
			}
		}
	}
	if inPlace >= float64(events) {
		t.Fatalf("all %d custom events and statuses applied in place: the Purchase ones cannot be", events)
	}
	if inPlace <= float64(statuses) {
		// Statuses move no seen time: custom events can move the seen
		// segments, and are taken in place when they move no member.
		t.Fatalf("%v events applied in place, no more than the %d statuses", inPlace, statuses)
	}
	for _, name := range []string{schemas.EventSegmentEntered, schemas.EventSegmentExited} {
		n := testutil.ToFloat64(in.m.segmentChanges.WithLabelValues(name))
		if n == 0 || n != testutil.ToFloat64(off.m.segmentChanges.WithLabelValues(name)) {
			t.Fatalf("%s: %v in place, %v decoded", name, n, testutil.ToFloat64(off.m.segmentChanges.WithLabelValues(name)))
		}
	}
	if n := testutil.ToFloat64(in.m.journeyEntries); n == 0 || n != testutil.ToFloat64(off.m.journeyEntries) {
		t.Fatalf("journey entries %v in place, %v decoded", n, testutil.ToFloat64(off.m.journeyEntries))
	}
	if d := testutil.ToFloat64(in.m.duplicates); d == 0 || d != testutil.ToFloat64(off.m.duplicates) {
		t.Fatalf("duplicates %v in place, %v decoded", d, testutil.ToFloat64(off.m.duplicates))
	}
	for _, r := range recs[:64] {
		a, okA := in.loadStored(r.Key)
		b, okB := off.loadStored(r.Key)
		if !okA || !okB {
			t.Fatalf("profile %q stored %v / %v", r.Key, okA, okB)
		}
		if err := sameProfile(a, b); err != nil {
			t.Fatalf("profile %q: %v", r.Key, err)
		}
	}
}

// sameOutputs compares two batches' outputs: byte for byte, but the
// changelog records (whose tags are in map order) as profiles, and the tag
// registry records as sets (two workers may both record a tag seen first in
// the same batch).
func sameOutputs(a, b []*kgo.Record) error {
	a, defsA := cutTagDefs(a)
	b, defsB := cutTagDefs(b)
	if !slices.Equal(defsA, defsB) {
		return fmt.Errorf("tag registry records %q, decoded %q", defsA, defsB)
	}
	if len(a) != len(b) {
		return fmt.Errorf("%d outputs in place, %d decoded", len(a), len(b))
	}
	for i := range a {
		if a[i].Topic != b[i].Topic || a[i].Partition != b[i].Partition || !bytes.Equal(a[i].Key, b[i].Key) {
			return fmt.Errorf("output %d: %s/%d %q, decoded %s/%d %q", i, a[i].Topic, a[i].Partition, a[i].Key, b[i].Topic, b[i].Partition, b[i].Key)
		}
		if len(a[i].Headers) != len(b[i].Headers) {
			return fmt.Errorf("output %d: headers %v, decoded %v", i, a[i].Headers, b[i].Headers)
		}
		if a[i].Topic != schemas.TopicProfiles {
			if !bytes.Equal(a[i].Value, b[i].Value) {
				return fmt.Errorf("output %d differs:\n in place %s\n  decoded %s", i, a[i].Value, b[i].Value)
			}
			continue
		}
		p, errA := decodeProfile(a[i].Value)
		q, errB := decodeProfile(b[i].Value)
		if errA != nil || errB != nil {
			return fmt.Errorf("changelog record %d: %w", i, errors.Join(errA, errB))
		}
		if err := sameProfile(p, q); err != nil {
			return fmt.Errorf("changelog record %d: %w", i, err)
		}
	}
	return nil
}

// cutTagDefs returns out without the tag registry records at its end, and
// those records' distinct values, sorted.
func cutTagDefs(out []*kgo.Record) ([]*kgo.Record, []string) {
	var defs []string
	for len(out) > 0 && out[len(out)-1].Topic == schemas.TopicTagDefs {
		defs = append(defs, string(out[len(out)-1].Value))
		out = out[:len(out)-1]
	}
	slices.Sort(defs)
	return out, slices.Compact(defs)
}

// sameProfile compares two profiles whole, their recent ids and source
// positions included (equalProfile leaves those out).
func sameProfile(a, b *Profile) error {
	if err := equalProfile(a, b); err != nil {
		return err
	}
	if !slices.Equal(a.recentIDs(), b.recentIDs()) || a.src != b.src {
		return fmt.Errorf("recent ids %x at %+v, want %x at %+v", a.recentIDs(), a.src, b.recentIDs(), b.src)
	}
	if x, y := appendProfileRest(nil, loaded(a)), appendProfileRest(nil, loaded(b)); !bytes.Equal(x, y) {
		return fmt.Errorf("encodings after the tags differ\n got %x\nwant %x", x, y)
	}
	return nil
}

// BenchmarkApplyInPlace applies a custom event to the cache encoding of a
// profile like `herald bench`'s (registered, three tags, two event names)
// and of fullProfile's shape (nine tags, ten event names, sends), the
// result becoming the next event's input: applyInPlace alone, without the
// cache's Get and Set.
//
//	go test -run '^$' -bench BenchmarkApplyInPlace -benchmem ./segmenter/
func BenchmarkApplyInPlace(b *testing.B) {
	small := &Profile{
		Registered: true, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "IN", WhatsApp: "+919800012345",
		FirstSeen: t0, LastSeen: t0, FirstInstall: t0,
		tags: map[string]Tag{"City": {Kind: TagString, Str: "Mumbai"}, "FavoriteCuisine": {Kind: TagString, Str: "asian"}, "Orders": {Kind: TagNumber, Num: 7}},
		Events: []EventCount{
			{Name: schemas.EventDeviceRegistered, Count: 1, First: t0, Last: t0},
			{Name: "OrderPlaced", Count: 3, First: t0, Last: t0, attrs: []Attr{{"amount", Tag{Kind: TagNumber, Num: 17}}, {"cuisine", Tag{Kind: TagString, Str: "asian"}}, {"currency", Tag{Kind: TagString, Str: "USD"}}}},
		},
	}
	full := fullProfile()
	full.mergedInto, full.merges, full.LastSeen = "", nil, t0.Add(time.Hour)
	full.Events[3].Name = "OrderPlaced"
	for _, tc := range []struct {
		name string
		p    *Profile
	}{{"bench", small}, {"full", full}} {
		b.Run(tc.name, func(b *testing.B) {
			_, cb := appendProfiles(nil, nil, tc.p, true)
			ev := &schemas.Event{
				ID: "bench-0", App: "dev", Kind: schemas.KindEvent, Name: "OrderPlaced", HWID: "whatsapp:+919800012345", Time: t0, Received: t0,
				Attributes: map[string]any{"cuisine": "asian", "amount": 17, "currency": "USD"},
			}
			v, err := ev.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			e, err := schemas.DecodeEventAttrs(v)
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]string, 1024)
			for i := range ids {
				ids[i] = "bench-" + strconv.Itoa(i)
			}
			var log, cache []byte
			b.SetBytes(int64(len(cb)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				e.ID, e.Time = ids[i%len(ids)], tc.p.LastSeen.Add(time.Duration(i)*time.Millisecond)
				var ok bool
				log, cache, _, ok = applyInPlace(log[:0], cache[:0], cb, e, 0, int64(i), nil)
				if !ok {
					b.Fatalf("event %d not applied in place", i)
				}
				cb, cache = cache, cb
				i++
			}
		})
	}
}
