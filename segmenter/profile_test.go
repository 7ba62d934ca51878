package segmenter

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

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
				if out, _ := eventAttrs(tc.e); len(out) != 3 {
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
