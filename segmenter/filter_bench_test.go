package segmenter

import (
	"fmt"
	"testing"
	"time"
)

// benchFilter is a segment of a few conditions of every kind: the sushi
// promotion's audience.
const benchFilter = `Event("OrderPlaced", LAST, GTE, -90d) * T("Cuisines", IN, ["asian", "japanese"]) * ` +
	`(T("Country", IN, ["BR", "PT"]) + T("Age", BETWEEN, [18, 30])) * T("App Version", GTE, "1.10") \ T("Opted Out", EQ, true)`

// benchProfile has 10 tags and 8 event names, the matching ones last.
func benchProfile() *Profile {
	p := filterProfiles()[0]
	for i := range 2 {
		p.Tags()[fmt.Sprintf("extra%d", i)] = Tag{Kind: TagString, Str: "x"}
	}
	evs := make([]EventCount, 0, 8)
	for i := range 6 {
		evs = append(evs, EventCount{Name: fmt.Sprintf("Event%d", i), Count: 1, Last: filterNow.Add(-time.Hour)})
	}
	p.Events = append(evs, p.Events...)
	return p
}

func BenchmarkFilterMatch(b *testing.B) {
	f, err := Compile("shop", benchFilter)
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	if !f.Match(p, filterNow) {
		b.Fatal("the bench profile does not match")
	}
	for _, bc := range []struct {
		name string
		p    *Profile
	}{{"match", p}, {"miss", &Profile{}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Match(bc.p, filterNow)
			}
		})
	}
}

// BenchmarkFilterAttr reads an event attribute, the sushi segment's one
// condition, from a profile built in memory (attributes decoded) and from
// the same profile decoded from its encoding, as a campaign scan or an
// event on another field reads it (attributes still encoded).
func BenchmarkFilterAttr(b *testing.B) {
	f, err := Compile("shop", `Event("OrderPlaced", "cuisine", EQ, "asian")`)
	if err != nil {
		b.Fatal(err)
	}
	built := benchProfile()
	decoded, err := decodeProfile(appendProfile(nil, built))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		p    *Profile
	}{{"built", built}, {"decoded", decoded}} {
		b.Run(bc.name, func(b *testing.B) {
			if !f.Match(bc.p, filterNow) {
				b.Fatal("the bench profile does not match")
			}
			b.ReportAllocs()
			for b.Loop() {
				f.Match(bc.p, filterNow)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFilter)))
	for b.Loop() {
		if _, err := Compile("shop", benchFilter); err != nil {
			b.Fatal(err)
		}
	}
}
