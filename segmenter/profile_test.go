package segmenter

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/heraldhq/herald/schemas"
)

func TestMergeTagOps(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	p := new(Profile)
	n := 0
	apply := func(tags map[string]any, ops map[string]string) int {
		t.Helper()
		n++
		return p.apply(&schemas.Event{
			ID: string(rune('a' + n)), App: "a", Kind: schemas.KindTags,
			Time: now, UserID: "u", Tags: tags, TagOps: ops,
		}).ignoredTags
	}
	apply(map[string]any{"orders": 2.0, "food": []any{"thai", "sushi"}, "name": "x"}, nil)
	apply(map[string]any{"orders": 3.0, "food": []any{"sushi", "pizza"}}, map[string]string{"orders": schemas.OpIncrement, "food": schemas.OpAppend})
	if got := p.Tags()["orders"]; got.Kind != TagNumber || got.Num != 5 {
		t.Fatalf("orders after increment = %+v, want 5", got)
	}
	if got := p.Tags()["food"].List; !reflect.DeepEqual(got, []string{"thai", "sushi", "pizza"}) {
		t.Fatalf("food after append = %v", got)
	}
	apply(map[string]any{"food": []any{"thai", "none"}}, map[string]string{"food": schemas.OpRemove})
	if got := p.Tags()["food"].List; !reflect.DeepEqual(got, []string{"sushi", "pizza"}) {
		t.Fatalf("food after remove = %v", got)
	}
	apply(map[string]any{"visits": 1.0, "tags": []any{"new"}}, map[string]string{"visits": schemas.OpIncrement, "tags": schemas.OpAppend})
	if p.Tags()["visits"].Num != 1 || !reflect.DeepEqual(p.Tags()["tags"].List, []string{"new"}) {
		t.Fatalf("ops on unset tags: visits %+v tags %+v", p.Tags()["visits"], p.Tags()["tags"])
	}
	// Mismatched kinds are ignored, not applied.
	if ignored := apply(map[string]any{"name": "y", "orders": []any{"a"}}, map[string]string{"name": schemas.OpIncrement, "orders": schemas.OpAppend}); ignored != 2 {
		t.Fatalf("ignored = %d, want 2", ignored)
	}
	if p.Tags()["name"].Str != "x" || p.Tags()["orders"].Num != 5 {
		t.Fatalf("mismatched ops changed tags: %+v", p.Tags())
	}
}

// tagState is what of a profile ProfileTags carries besides its tags: the
// oracle of applied.defaults.
type tagState struct {
	registered                                    bool
	userID, lang, country, tz, pfName, appVersion string
	firstInstall, lastAppOpen                     time.Time
}

func tagStateOf(p *Profile) tagState {
	st := tagState{
		registered: p.Registered, userID: p.UserID, lang: p.Language, country: p.Country, tz: p.Timezone,
		pfName: p.Tags()[TagProfileName].Str, appVersion: p.AppVersion, firstInstall: p.FirstInstall,
	}
	if c, ok := p.Event(schemas.EventApplicationOpen); ok {
		st.lastAppOpen = c.Last
	}
	return st
}

// TestApplyNotesDefaults: apply says the default tags changed exactly when
// the profile's tag state before and after differ, over random events
// (each field set, unchanged or empty; registrations earlier and later;
// the profile name set by tags, by null and by an inbound message;
// application opens at, before and after the latest; event names evicted
// past MaxEventNames).
func TestApplyNotesDefaults(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pick := func(vs ...string) string { return vs[rng.IntN(len(vs))] }
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	kinds := []schemas.EventKind{schemas.KindRegister, schemas.KindUnregister, schemas.KindTags, schemas.KindEvent, schemas.KindInbound, schemas.KindStatus}
	changed, same := 0, 0
	for u := range 100 {
		p := new(Profile)
		for i := range 300 {
			e := &schemas.Event{
				ID: fmt.Sprintf("%d-%d", u, i), App: "a", HWID: "whatsapp:+15550001",
				Kind: kinds[rng.IntN(len(kinds))],
				// Mostly later and later, sometimes earlier than before.
				Time:     t0.Add(time.Duration(i)*time.Minute - time.Duration(rng.IntN(30))*time.Minute),
				UserID:   pick("", "u1", "u2"),
				Language: pick("", "en", "es"), Country: pick("", "US", "MX"), Timezone: pick("", "UTC", "America/Mexico_City"),
				AppVersion: pick("", "1.0", "1.1"),
			}
			if rng.IntN(2) == 0 {
				e.Kind = schemas.KindEvent // past MaxEventNames names
			}
			switch e.Kind {
			case schemas.KindTags, schemas.KindRegister:
				switch rng.IntN(4) {
				case 0:
					e.Tags = map[string]any{TagProfileName: pick("Ana", "Bea")}
				case 1:
					e.Tags = map[string]any{TagProfileName: nil}
				case 2:
					e.Tags = map[string]any{"tier": pick("gold", "silver")}
				}
			case schemas.KindEvent:
				// Opens early on, then more names than a profile keeps, so
				// that the open's counter is evicted.
				e.Name = pick("Purchase", fmt.Sprintf("E%d", rng.IntN(120)))
				if i < 40 && rng.IntN(2) == 0 {
					e.Name = schemas.EventApplicationOpen
				}
			case schemas.KindInbound:
				e.Name = schemas.EventWhatsAppReceived
				e.Inbound = &schemas.Inbound{From: "+15550001", Text: "hi", ProfileName: pick("", "Ana", "Bea")}
			case schemas.KindStatus:
				e.Name = schemas.EventWhatsAppStatus
				e.Status = &schemas.Status{Status: "delivered"}
			}
			before := tagStateOf(p)
			a := p.apply(e)
			want := tagStateOf(p) != before
			if a.defaults != want {
				t.Fatalf("user %d event %d (%+v): defaults %v, want %v (before %+v, after %+v)", u, i, e, a.defaults, want, before, tagStateOf(p))
			}
			if want {
				changed++
			} else {
				same++
			}
		}
	}
	if changed < 1000 || same < 1000 {
		t.Fatalf("%d events changed the defaults and %d did not: the test does not cover both", changed, same)
	}
}

// BenchmarkEventAttrs converts the attributes of herald bench's custom
// event (three of them) for a profile's event counter, from the map of an
// event built in memory and from the list DecodeEventAttrs decodes.
//
//	go test -run '^$' -bench BenchmarkEventAttrs -benchmem ./segmenter/
func BenchmarkEventAttrs(b *testing.B) {
	built := &schemas.Event{Attributes: map[string]any{"cuisine": "asian", "amount": 17.0, "currency": "USD"}}
	v, err := (&schemas.Event{ID: "e", App: "shop", Kind: schemas.KindEvent, Name: "OrderPlaced", Time: time.Now(), HWID: "h", Attributes: built.Attributes}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	listed, err := schemas.DecodeEventAttrs(v)
	if err != nil || listed.AttrList == nil {
		b.Fatal(err, listed)
	}
	for _, tc := range []struct {
		name string
		e    *schemas.Event
	}{{"map", built}, {"list", listed}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if out, _ := eventAttrs(nil, tc.e); len(out) != 3 {
					b.Fatal(out)
				}
			}
		})
	}
}

// TestInboundKeepsTagsEncoded checks that a message carrying the profile
// name the profile has leaves its tags as the decode left them (encoded),
// and that another name is set and reported as a default change.
func TestInboundKeepsTagsEncoded(t *testing.T) {
	_, cb := appendProfiles(nil, nil, fullProfile(), true)
	inbound := func(name string) *schemas.Event {
		return &schemas.Event{
			ID: "in-" + name, App: "shop", Kind: schemas.KindInbound, Name: schemas.EventWhatsAppReceived, Time: t0.Add(time.Hour),
			Inbound: &schemas.Inbound{PhoneNumberID: "1", From: "+5511999990000", WAMID: "wamid." + name, Type: "text", Text: "hi", ProfileName: name},
		}
	}
	p, err := decodeProfile(cb)
	if err != nil {
		t.Fatal(err)
	}
	if p.rawTags == "" {
		t.Fatal("decode left no tags encoded: nothing to check")
	}
	if a := p.apply(inbound("João S.")); a.defaults {
		t.Error("the same profile name reported as a default change")
	}
	if p.rawTags == "" {
		t.Error("the same profile name decoded the tags")
	}
	if a := p.apply(inbound("Ana")); !a.defaults {
		t.Error("another profile name not reported as a default change")
	}
	if got, _ := p.Tag(TagProfileName); got.Str != "Ana" {
		t.Errorf("profile name %q, want Ana", got.Str)
	}
	if len(p.Tags()) != len(fullProfile().tags) {
		t.Errorf("%d tags, want %d", len(p.Tags()), len(fullProfile().tags))
	}
}

// TestEventTags checks the hint of where each event name is
// (Profile.evTags): count, absorb and the decode keep every tag unknown or
// right, past evTagged names and through the eviction of the least recent
// name, and a lookup finds each name, also among names of one tag and in a
// profile whose tags are all unknown.
func TestEventTags(t *testing.T) {
	// Two names of one tag, to check that a tag match is not taken for a
	// name match.
	var same []string
	seen := map[uint8]string{}
	for i := 0; len(same) == 0; i++ {
		n := fmt.Sprintf("Ev%d", i)
		if o, ok := seen[nameTag(n)]; ok {
			same = []string{o, n}
		}
		seen[nameTag(n)] = n
	}
	check := func(what string, p *Profile, names []string) {
		t.Helper()
		if err := checkEvTags(p); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, c := range p.Events {
			if got := p.eventIndex(c.Name, nameTag(c.Name)); got != i {
				t.Fatalf("%s: eventIndex(%q) = %d, want %d", what, c.Name, got, i)
			}
		}
		for _, n := range names {
			if _, ok := p.Event(n); !ok {
				t.Fatalf("%s: no counter of %q", what, n)
			}
		}
		if i := p.eventIndex("never", nameTag("never")); i != -1 {
			t.Fatalf("%s: eventIndex of a name never counted = %d", what, i)
		}
	}
	known := func(what string, p *Profile) {
		t.Helper()
		for i := range min(len(p.Events), evTagged) {
			if p.evTags[i] == 0 {
				t.Fatalf("%s left evTags[%d] unknown: %v", what, i, p.evTags)
			}
		}
	}
	p := &Profile{}
	var names []string
	for i := range MaxEventNames + 8 {
		n := fmt.Sprintf("Name%d", i)
		if i < len(same) {
			n = same[i]
		}
		names = append(names, n)
		var open bool
		p.count(n, t0.Add(time.Duration(i)*time.Second), &schemas.Event{}, &open)
		p.count(names[i/2], t0.Add(time.Duration(i)*time.Second+time.Millisecond), &schemas.Event{}, &open)
		if i == evTagged {
			known("count", p) // before an eviction tags them all
		}
	}
	// The first names, counted least recently, made room for the last.
	kept := names[len(names)-MaxEventNames:]
	check("after count", p, kept)
	if len(p.Events) != MaxEventNames {
		t.Fatalf("%d names counted, want %d", len(p.Events), MaxEventNames)
	}
	known("count", p)

	d, err := decodeProfile(appendProfile(nil, p))
	if err != nil {
		t.Fatal(err)
	}
	check("after decode", d, kept)
	known("the decode", d)

	q := &Profile{}
	var open bool
	for _, n := range append([]string{"Other"}, same...) {
		q.count(n, t0.Add(time.Hour), &schemas.Event{}, &open)
	}
	d.absorb(q)
	check("after absorb", d, append([]string{"Other"}, same...))
	known("absorb", d)

	// A profile built without count (a test's, an old decode's) has no
	// tags: every name is still found.
	lit := &Profile{Events: []EventCount{{Name: same[0]}, {Name: same[1]}, {Name: "PW_ApplicationOpen"}}}
	check("unknown tags", lit, append(same, "PW_ApplicationOpen"))
}

// TestProfileLayout keeps the layout Profile's comment describes: the
// struct in the allocator's 576-byte size class, whose objects start on a
// 64-byte cache line, and the fields every event reads in its first four
// lines. A field added or moved that breaks it fails here, not unseen in
// the benchmarks.
func TestProfileLayout(t *testing.T) {
	if n := unsafe.Sizeof(Profile{}); n <= 512 || n > 576 {
		t.Errorf("Profile is %d bytes: not in the 576-byte size class (more than 512, at most 576)", n)
	}
	ty := reflect.TypeFor[Profile]()
	for _, name := range []string{
		"recent", "Events", "segments", "src", "FirstSeen", "LastSeen", "tags", "nRecent",
		"rawCached", "tagsPlain", "Registered", "OptedOut", "journeys", "rawTags", "rawTagCount", "evTags",
	} {
		f, ok := ty.FieldByName(name)
		if !ok {
			t.Errorf("no field %s", name)
			continue
		}
		if end := f.Offset + f.Type.Size(); end > 4*64 {
			t.Errorf("field %s ends at byte %d, past the first four cache lines", name, end)
		}
	}
}

// TestCountReusesAttrs checks that a later occurrence of an event name
// keeps its attributes in the earlier one's slice (no allocation when they
// fit), with nothing of the earlier occurrence left, and that an earlier
// occurrence arriving late leaves the latest's attributes.
func TestCountReusesAttrs(t *testing.T) {
	decode := func(attrs map[string]any) *schemas.Event {
		t.Helper()
		v, err := (&schemas.Event{ID: "x", App: "a", Kind: schemas.KindEvent, Name: "Order", HWID: "h", Time: t0, Attributes: attrs}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		e, err := schemas.DecodeEventAttrs(v)
		if err != nil || e.AttrList == nil {
			t.Fatal(err, e)
		}
		return e
	}
	three := decode(map[string]any{"a": "x", "b": 2, "c": true})
	one := decode(map[string]any{"z": "only"})
	p := &Profile{}
	var open bool
	p.count("Order", t0, three, &open)
	first := &p.Events[0].attrs[0]
	p.count("Order", t0.Add(time.Second), one, &open)
	c := p.Events[0]
	if want := []Attr{{"z", Tag{Kind: TagString, Str: "only"}}}; !reflect.DeepEqual(c.attrs, want) {
		t.Fatalf("attrs %+v, want %+v", c.attrs, want)
	}
	if &c.attrs[0] != first {
		t.Error("the later occurrence's attributes are in a new slice")
	}
	if rest := c.attrs[1:cap(c.attrs)]; !reflect.DeepEqual(rest, make([]Attr, len(rest))) {
		t.Errorf("the earlier occurrence's attributes are still held: %+v", rest)
	}
	p.count("Order", t0.Add(-time.Hour), three, &open) // earlier: not the latest
	if c := p.Events[0]; c.Count != 3 || len(c.attrs) != 1 || c.attrs[0].Name != "z" {
		t.Fatalf("after an earlier occurrence: %+v", c)
	}
	at := t0.Add(time.Hour)
	if n := testing.AllocsPerRun(100, func() {
		at = at.Add(time.Second)
		p.count("Order", at, three, &open)
	}); n != 0 {
		t.Errorf("%v allocations a counted event, want 0", n)
	}
}
