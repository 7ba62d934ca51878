package segmenter

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

// tagsRecord is p's ProfileTags, the reference appendTagsRecord must match:
// what encoding/json makes of it. It is, identified by e, the latest event applied.
func (p *Profile) tagsRecord(e *schemas.Event) *schemas.ProfileTags {
	tags := make(map[string]any, len(p.Tags())+3)
	for name, t := range p.Tags() {
		tags[name] = t.value()
	}
	defaults := map[string]string{
		schemas.TagLanguage: p.Language, schemas.TagCountry: p.Country, schemas.TagTimezone: p.Timezone,
		schemas.TagAppVersion: p.AppVersion, schemas.TagFirstInstall: pushwooshDate(p.FirstInstall),
	}
	if c, ok := p.Event(schemas.EventApplicationOpen); ok {
		defaults[schemas.TagLastAppOpen] = pushwooshDate(c.Last)
	}
	for name, v := range defaults {
		if _, own := tags[name]; !own && v != "" {
			tags[name] = v
		}
	}
	pt := &schemas.ProfileTags{App: e.App, HWID: e.HWID, UserID: e.UserID, Registered: p.Registered, Tags: tags, Updated: p.LastSeen}
	if pt.HWID == "" && pt.UserID == "" {
		pt.AnonymousID = e.AnonymousID
	} else if pt.UserID == "" {
		pt.UserID = p.UserID
	}
	return pt
}

// TestAppendTagsRecord checks appendTagsRecord against encoding/json on
// profiles with every kind of tag and awkward strings and numbers.
func TestAppendTagsRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	strs := []string{"", "plain", "quote\" \\ back", "<b>&amp;</b>", "tab\tnl\ncr\r\b\f\x01\x1f", "héllo 😀", "\u2028\u2029", "bad \xff\xfe utf8", "\x7f"}
	nums := []float64{0, -0, 1, -1.5, 1e-7, 1e-6, 123456789, 1e20, 1e21, 1.5e300, -2.5e-300, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1}
	e := &schemas.Event{App: "shop", HWID: "whatsapp:+14155550100"}
	var sc tagScratch
	for i := range 2000 {
		p := &Profile{
			Registered: rng.IntN(2) == 0, Language: strs[rng.IntN(len(strs))], Country: "US", Timezone: "Europe/Berlin",
			AppVersion: strs[rng.IntN(len(strs))], UserID: fmt.Sprint("u", i), LastSeen: t0.Add(time.Duration(rng.Int64N(1e15))),
		}
		if rng.IntN(2) == 0 {
			p.FirstInstall = t0.Add(time.Duration(i) * time.Minute)
		}
		if rng.IntN(2) == 0 {
			p.Events = append(p.Events, EventCount{Name: schemas.EventApplicationOpen, Count: 1, Last: t0.Add(time.Hour)})
		}
		if rng.IntN(3) > 0 {
			p.tags = map[string]Tag{}
		}
		for range rng.IntN(8) {
			name := strs[rng.IntN(len(strs))] + fmt.Sprint(rng.IntN(3))
			if rng.IntN(5) == 0 {
				name = []string{schemas.TagLanguage, schemas.TagCountry, schemas.TagLastAppOpen}[rng.IntN(3)]
			}
			var tg Tag
			switch rng.IntN(5) {
			case 0:
				tg = Tag{Kind: TagString, Str: strs[rng.IntN(len(strs))]}
			case 1:
				tg = Tag{Kind: TagNumber, Num: nums[rng.IntN(len(nums))]}
			case 2:
				tg = Tag{Kind: TagBool, Bool: rng.IntN(2) == 0}
			case 3:
				tg = Tag{Kind: TagList, List: []string{strs[rng.IntN(len(strs))], "x"}}
			default:
				tg = Tag{Kind: TagList, List: []string{}}
			}
			if p.Tags() != nil {
				p.Tags()[name] = tg
			}
		}
		ev := *e
		switch i % 3 {
		case 1:
			ev.HWID, ev.UserID = "", "u-1"
		case 2:
			ev.HWID, ev.AnonymousID = "", "anon-1"
		}
		want, err := p.tagsRecord(&ev).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		got = appendTagsRecord(nil, &sc, p, &ev)
		if !bytes.Equal(got, want) {
			t.Fatalf("profile %d:\ngot  %s\nwant %s", i, got, want)
		}
	}
}

// TestAppendSimpleEvent checks appendSimpleEvent against encoding/json.
func TestAppendSimpleEvent(t *testing.T) {
	for i, e := range []*schemas.Event{
		{
			ID: "a", App: "shop", Kind: schemas.KindEvent, Name: schemas.EventJourneyStep, Time: t0, Received: t0.Add(time.Nanosecond), HWID: "whatsapp:+1<&>",
			Attributes: map[string]any{"journey": "wélcome \"x\"", "version": 3.0, "step": "a\u2028b", "flag": true},
		},
		{ID: "b", App: "shop", Kind: schemas.KindEvent, Name: schemas.EventSegmentEntered, Time: t0, Received: t0, UserID: "u1", Attributes: map[string]any{"segment": "s"}},
		{ID: "c", App: "shop", Kind: schemas.KindEvent, Time: t0, Received: t0, AnonymousID: "x\xff"},
	} {
		want, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if got := appendSimpleEvent(nil, e); !bytes.Equal(got, want) {
			t.Fatalf("event %d:\ngot  %s\nwant %s", i, got, want)
		}
	}
}

// BenchmarkAppendTagsRecord is one TopicTagsRecord value of a profile with
// ten tags, two of them default tags the profile sets itself.
//
//	go test -run '^$' -bench BenchmarkAppendTagsRecord -benchmem ./segmenter/
func BenchmarkAppendTagsRecord(b *testing.B) {
	p := &Profile{
		Registered: true, Language: "en", Country: "IN", Timezone: "Asia/Kolkata", AppVersion: "2.1",
		FirstInstall: t0, LastSeen: t0.Add(time.Hour),
		Events: []EventCount{{Name: schemas.EventApplicationOpen, Count: 3, Last: t0.Add(time.Minute)}},
		tags: map[string]Tag{
			"City": {Kind: TagString, Str: "Mumbai"}, "FavoriteCuisine": {Kind: TagString, Str: "asian"},
			"Orders": {Kind: TagNumber, Num: 12}, "LastOrderCuisine": {Kind: TagString, Str: "indian"},
			"vip": {Kind: TagBool, Bool: true}, "cuisines": {Kind: TagList, List: []string{"asian", "italian"}},
			"points": {Kind: TagNumber, Num: 1250.5}, "first_name": {Kind: TagString, Str: "Ana"},
			schemas.TagLanguage: {Kind: TagString, Str: "hi"}, schemas.TagCountry: {Kind: TagString, Str: "IN"},
		},
	}
	e := &schemas.Event{App: "dev", HWID: "whatsapp:+919800012345"}
	var buf []byte
	var sc tagScratch
	b.ReportAllocs()
	for b.Loop() {
		buf = appendTagsRecord(buf[:0], &sc, p, e)
	}
}
