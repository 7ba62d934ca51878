package segmenter

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func fullProfile() *Profile {
	p := &Profile{
		Registered: true, OptedOut: true, DeviceType: 21, UserID: "user-42", Language: "pt-BR",
		Timezone: "America/Sao_Paulo", Country: "BR", WhatsApp: "+5511999990000",
		tags: map[string]Tag{
			"first_name":    {Kind: TagString, Str: "João"},
			"points":        {Kind: TagNumber, Num: -12.25},
			"big":           {Kind: TagNumber, Num: math.MaxFloat64},
			"vip":           {Kind: TagBool, Bool: true},
			"no":            {Kind: TagBool},
			"cuisines":      {Kind: TagList, List: []string{"sushi", "ramen"}},
			"empty_list":    {Kind: TagList, List: []string{}},
			TagProfileName:  {Kind: TagString, Str: "João S."},
			"Last App Open": {Kind: TagString, Str: "2025-05-30 10:00"},
		},
		FirstSeen:   time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC),
		LastSeen:    time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		LastInbound: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		recent:      [recentIDs]uint64{1, math.MaxUint64, idHash("x")}, nRecent: 3,
		src:      srcPos{partition: 7, next: 1 << 40},
		segments: []uint64{3, 99, math.MaxUint64},
		sends:    []sentMark{{at: time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC), campaign: 7}, {at: time.Date(2025, 5, 2, 9, 0, 0, 0, time.UTC), campaign: math.MaxUint64}},
		Email:    "joao@example.com", PushTokens: []string{"tok-a", "tok-b"}, AppVersion: "2.10.1",
		FirstInstall: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		mergedInto:   "shop\x00user:u-9", merges: []uint64{idHash("a") &^ 1, idHash("b") | 1},
	}
	for i := range 10 {
		c := EventCount{
			Name: "event_" + strconv.Itoa(i), Count: uint64(i * 1000),
			First: p.FirstSeen.Add(time.Duration(i) * time.Hour), Last: p.LastSeen.Add(time.Duration(i) * time.Second),
		}
		if i%3 == 0 {
			c.attrs = []Attr{
				{"cuisine", Tag{Kind: TagString, Str: "asian"}},
				{"items", Tag{Kind: TagList, List: []string{"maki", "gyoza"}}},
				{"paid", Tag{Kind: TagBool, Bool: true}},
				{"total", Tag{Kind: TagNumber, Num: 31.5}},
			}
		}
		p.Events = append(p.Events, c)
	}
	return p
}

func TestProfileCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    *Profile
	}{
		{name: "empty", p: &Profile{}},
		{name: "full", p: fullProfile()},
		{name: "negative device type", p: &Profile{DeviceType: -3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendProfile(nil, tt.p)
			got, err := decodeProfile(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(loaded(got), tt.p) {
				t.Fatalf("round trip\n got %+v\nwant %+v", got, tt.p)
			}
		})
	}
}

// TestProfileCacheForm checks the cache's encoding: it decodes to the same
// profile as the changelog's, is shorter, and names past a full dictionary
// are written in full.
func TestProfileCacheForm(t *testing.T) {
	for _, p := range []*Profile{{}, fullProfile(), {tags: map[string]Tag{"x": {Kind: TagBool, Bool: true}}}} {
		logb, cacheb := appendProfiles(nil, nil, p, true)
		if fromLog, err := decodeProfile(logb); err != nil || !reflect.DeepEqual(loaded(fromLog), p) {
			t.Fatalf("changelog form round trip: %v\n got %+v\nwant %+v", err, fromLog, p)
		}
		tr, ok := transcodeCache(nil, logb)
		if !ok {
			t.Fatal("transcodeCache refused a version 4 encoding")
		}
		if fromTr, err := decodeProfile(tr); err != nil || !reflect.DeepEqual(loaded(fromTr), p) {
			t.Fatalf("transcoded cache form: %v\n got %+v\nwant %+v", err, fromTr, p)
		}
		if len(tr) != len(cacheb) {
			t.Fatalf("transcoded cache form %d bytes, encoded %d", len(tr), len(cacheb))
		}
		for n := range len(logb) {
			if tr, ok := transcodeCache(nil, logb[:n]); ok {
				if _, err := decodeProfile(tr); err == nil {
					t.Fatalf("transcoded prefix of %d/%d bytes decodes", n, len(logb))
				}
			}
		}
		if cacheb[0] != profileVersion|cacheForm {
			t.Fatalf("cache form version byte %#x", cacheb[0])
		}
		got, err := decodeProfile(cacheb)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(loaded(got), p) {
			t.Fatalf("cache form round trip\n got %+v\nwant %+v", got, p)
		}
		// A reference takes at most 2 bytes (maxNames), a name in full its
		// length + 1: never longer, and shorter for names of 2 bytes or
		// more (fullProfile's).
		if len(cacheb) > len(logb) || len(p.Tags()) > 2 && len(cacheb) >= len(logb) {
			t.Fatalf("cache form %d bytes, changelog form %d", len(cacheb), len(logb))
		}
		// Every strict prefix fails.
		for n := range len(cacheb) {
			if _, err := decodeProfile(cacheb[:n]); err == nil {
				t.Fatalf("prefix of %d/%d bytes decoded without error", n, len(cacheb))
			}
		}
	}
	// A reference the dictionary does not hold is corrupt, not a panic.
	p := &Profile{tags: map[string]Tag{"only": {Kind: TagBool}}}
	_, cacheb := appendProfiles(nil, nil, p, true)
	_, none := appendProfiles(nil, nil, &Profile{}, true)
	i := 0 // the tag count is the first byte that differs; the reference follows it
	for cacheb[i] == none[i] {
		i++
	}
	i++
	if ref := names.load().ids["only"] + 1; uint64(cacheb[i]) != ref {
		t.Fatalf("byte %d is %#x, want the reference %#x", i, cacheb[i], ref)
	}
	// A reference past any the dictionary can hold.
	bad := append(binary.AppendUvarint(slices.Clone(cacheb[:i]), maxNames+10), cacheb[i+1:]...)
	if _, err := decodeProfile(bad); err == nil {
		t.Fatal("a reference past the dictionary decoded")
	}
	// A full dictionary: new names are written in full and still decode.
	d := newNameDict()
	for i := range maxNames {
		if _, ok := d.add("n" + strconv.Itoa(i)); !ok {
			t.Fatalf("dictionary full after %d names", i)
		}
	}
	if _, ok := d.add("one too many"); ok {
		t.Fatal("dictionary grew past maxNames")
	}
	b := d.load().appendRef(nil, "one too many")
	dec := &decoder{b: b, all: string(b)}
	if got := dec.nameRef(d.load()); got != "one too many" || dec.err != nil {
		t.Fatalf("name in full: got %q, %v", got, dec.err)
	}
	b = d.load().appendRef(nil, "n7")
	dec = &decoder{b: b, all: string(b)}
	if got := dec.nameRef(d.load()); got != "n7" || len(b) != 1 {
		t.Fatalf("reference: got %q in %d bytes", got, len(b))
	}
}

func TestProfileCodecCorrupt(t *testing.T) {
	b := appendProfile(nil, fullProfile())
	// Every strict prefix is an error, never a panic or a short profile.
	for n := range len(b) {
		if _, err := decodeProfile(b[:n]); err == nil {
			t.Fatalf("prefix of %d/%d bytes decoded without error", n, len(b))
		}
	}
	for _, bad := range [][]byte{
		append(append([]byte{}, b...), 0),                                  // trailing byte
		append([]byte{profileVersion + 1}, b[1:]...),                       // unknown version
		{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, // huge tag count
	} {
		if _, err := decodeProfile(bad); err == nil {
			t.Fatalf("%x decoded without error", bad)
		}
	}
}

// appendLegacy writes p as versions 1 and 2 of the encoding did: events
// without first time and attributes, no channels or install time, and (1)
// no source position.
func appendLegacy(version byte, p *Profile) []byte {
	var flags byte
	if p.Registered {
		flags |= flagRegistered
	}
	if p.OptedOut {
		flags |= flagOptedOut
	}
	b := []byte{version, flags}
	b = binary.AppendVarint(b, int64(p.DeviceType))
	for _, s := range []string{p.UserID, p.Language, p.Timezone, p.Country, p.WhatsApp} {
		b = appendString(b, s)
	}
	b = appendTime(b, p.FirstSeen)
	b = appendTime(b, p.LastSeen)
	b = appendTime(b, p.LastInbound)
	b = binary.AppendUvarint(b, uint64(len(p.Tags())))
	for name, t := range p.Tags() {
		b = appendString(b, name)
		b = append(b, byte(t.Kind)) // numbers as 8-byte floats, as before v4
		switch t.Kind {
		case TagString:
			b = appendString(b, t.Str)
		case TagNumber:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(t.Num))
		case TagBool:
			b = append(b, map[bool]byte{false: 0, true: 1}[t.Bool])
		case TagList:
			b = binary.AppendUvarint(b, uint64(len(t.List)))
			for _, s := range t.List {
				b = appendString(b, s)
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(p.Events)))
	for _, c := range p.Events {
		b = appendString(b, c.Name)
		b = binary.AppendUvarint(b, c.Count)
		b = appendTime(b, c.Last)
	}
	b = append(b, p.nRecent)
	for _, h := range p.recentIDs() {
		b = binary.LittleEndian.AppendUint64(b, h)
	}
	if version == 2 {
		b = binary.AppendVarint(b, int64(p.src.partition))
		b = binary.AppendUvarint(b, uint64(p.src.next))
	}
	return b
}

// TestProfileCodecLegacy: encodings of versions 1 and 2 (changelogs written
// before) decode, with what they did not carry left zero.
func TestProfileCodecLegacy(t *testing.T) {
	for _, version := range []byte{1, 2} {
		t.Run(strconv.Itoa(int(version)), func(t *testing.T) {
			p := fullProfile()
			got, err := decodeProfile(appendLegacy(version, p))
			if err != nil {
				t.Fatal(err)
			}
			want := *p
			want.Email, want.PushTokens, want.AppVersion, want.FirstInstall, want.segments, want.sends = "", nil, "", time.Time{}, nil, nil
			want.mergedInto, want.merges = "", nil
			want.Events = nil
			for _, c := range p.Events {
				want.Events = append(want.Events, EventCount{Name: c.Name, Count: c.Count, Last: c.Last})
			}
			if version == 1 {
				want.src = srcPos{}
			}
			if !reflect.DeepEqual(loaded(got), &want) {
				t.Fatalf("v%d decode\n got %+v\nwant %+v", version, got, &want)
			}
		})
	}
}

func FuzzDecodeProfile(f *testing.F) {
	f.Add(appendProfile(nil, fullProfile()))
	f.Add(appendProfile(nil, &Profile{}))
	_, cached := appendProfiles(nil, nil, fullProfile(), true)
	f.Add(cached)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeProfile(b)
		if tr, ok := transcodeCache(nil, b); ok {
			// The cache form of what decodes decodes the same; of what
			// does not, does not.
			q, terr := decodeProfile(tr)
			if (err == nil) != (terr == nil) {
				t.Fatalf("decode error %v, of the transcoded form %v", err, terr)
			}
			if p0, _ := decodeProfile(b); err == nil && !reflect.DeepEqual(loaded(p0), loaded(q)) {
				t.Fatalf("transcoding changed the profile\n got %+v\nwant %+v", q, p)
			}
		}
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same:
		// in both forms, and from tags and event attributes still encoded
		// (copied, or their names rewritten) as well as decoded ones.
		fresh, _ := decodeProfile(b)
		want := encodedTags(fresh.Tags())
		logb, cacheb := appendProfiles(nil, nil, p, true)
		// Tag reads one tag of those still encoded, in either form, as Tags
		// reads them all.
		for _, enc := range [][]byte{b, cacheb} {
			raw, _ := decodeProfile(enc)
			for name, tag := range fresh.Tags() {
				if got, ok := raw.Tag(name); !ok || !bytes.Equal(appendTag(nil, got), appendTag(nil, tag)) {
					t.Fatalf("tag %q: %+v %v, want %+v", name, got, ok, tag)
				}
			}
			if _, ok := raw.Tag("\x00none"); ok != (fresh.Tags()["\x00none"].Kind != 0) {
				t.Fatalf("tag absent from Tags found by Tag")
			}
		}
		var again *Profile
		for i, enc := range [][]byte{appendProfile(nil, p), logb, cacheb, appendProfile(nil, fresh)} {
			q, err := decodeProfile(enc)
			if err != nil {
				t.Fatalf("re-encoding %d of a decoded profile does not decode: %v", i, err)
			}
			if got := encodedTags(q.Tags()); !bytes.Equal(got, want) || len(q.Events) != len(p.Events) || q.UserID != p.UserID {
				t.Fatalf("re-encoding %d changed the profile: tags %x, want %x", i, got, want)
			}
			again = q
		}
		// And, after the tags (written in map order), encodes to the same
		// bytes, event attributes decoded or copied in their encoded form.
		once := appendProfileRest(nil, p)
		if twice := appendProfileRest(nil, loaded(again)); !bytes.Equal(once, twice) {
			t.Fatalf("re-encoding changed the bytes\n got %x\nwant %x", twice, once)
		}
		for i := range p.Events {
			for _, a := range again.Events[i].Attrs() {
				if got, ok := p.Events[i].Attr(a.Name); !ok || got.Kind != a.Kind || got.Str != a.Str {
					t.Fatalf("event %d attribute %q: %+v %v, decoded %+v", i, a.Name, got, ok, a.Tag)
				}
			}
		}
	})
}

// encodedTags encodes tags in name order (NaN numbers compare equal).
func encodedTags(tags map[string]Tag) []byte {
	var b []byte
	for _, name := range slices.Sorted(maps.Keys(tags)) {
		b = appendTag(appendString(b, name), tags[name])
	}
	return b
}

// jsonProfile is a profile with its tags for encoding/json (Profile's
// exported fields and its tags; the recent-id ring and the event attributes
// left out).
type jsonProfile struct {
	Profile
	Tags map[string]Tag
}

// BenchmarkProfileCodec compares the binary encoding with encoding/json on
// the same profile (jsonProfile).
func BenchmarkProfileCodec(b *testing.B) {
	p := fullProfile()
	bin := appendProfile(nil, p)
	js, err := json.Marshal(jsonProfile{*p, p.Tags()})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("binary/encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(bin)))
		var buf []byte
		for b.Loop() {
			buf = appendProfile(buf[:0], p)
		}
		b.ReportMetric(float64(len(bin)), "bytes/profile")
	})
	b.Run("binary/decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(bin)))
		for b.Loop() {
			if _, err := decodeProfile(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What an event that changes no tag costs: the cache form decoded and
	// both forms encoded again (tags and event attributes copied).
	_, cached := appendProfiles(nil, nil, p, true)
	b.Run("binary/reencode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(cached)))
		var logb, cacheb []byte
		for b.Loop() {
			q, err := decodeProfile(cached)
			if err != nil {
				b.Fatal(err)
			}
			logb, cacheb = appendProfiles(logb[:0], cacheb[:0], q, true)
		}
	})
	b.Run("json/encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(js)))
		for b.Loop() {
			if _, err := json.Marshal(jsonProfile{*p, p.Tags()}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(js)), "bytes/profile")
	})
	b.Run("json/decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(js)))
		for b.Loop() {
			var q jsonProfile
			if err := json.Unmarshal(js, &q); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestProfileCodecCompact: whole numbers and default event names take the
// short forms, and every number and name still round-trips exactly.
func TestProfileCodecCompact(t *testing.T) {
	nums := []float64{0, math.Copysign(0, -1), 1, -1, 42, -4200, 1<<53 - 1, -(1<<53 - 1), 1 << 53, 1e300, 0.5, -2.25, math.MaxInt64, math.MinInt64, math.Inf(1), math.Inf(-1)}
	p := &Profile{tags: map[string]Tag{}}
	for i, n := range nums {
		p.Tags()[strconv.Itoa(i)] = Tag{Kind: TagNumber, Num: n}
	}
	p.Events = []EventCount{{Name: schemas.EventDeviceRegistered, Count: 1}, {Name: "OrderPlaced", Count: 2}, {Name: schemas.EventSegmentExited, Count: 3}, {Name: "", Count: 4}}
	b := appendProfile(nil, p)
	got, err := decodeProfile(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nums {
		g := got.Tags()[strconv.Itoa(i)].Num
		if math.Float64bits(g) != math.Float64bits(n) {
			t.Fatalf("number %v decoded as %v", n, g)
		}
	}
	for i, c := range p.Events {
		if got.Events[i].Name != c.Name || got.Events[i].Count != c.Count {
			t.Fatalf("event %d: %+v, want %+v", i, got.Events[i], c)
		}
	}
	small := appendProfile(nil, &Profile{tags: map[string]Tag{"n": {Kind: TagNumber, Num: 42}}, Events: []EventCount{{Name: schemas.EventApplicationOpen}}})
	if len(small) > 40 {
		t.Fatalf("a profile with one small integer tag and one default event takes %d bytes", len(small))
	}
}

// TestProfileCodecV3 decodes fullProfile as version 3 wrote it
// (testdata/profile_v3.hex, made by the v3 code): absolute times, event
// names and time zones as strings, numbers as floats, sends without
// flags (all marketing then).
func TestProfileCodecV3(t *testing.T) {
	h, err := os.ReadFile("testdata/profile_v3.hex")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeProfile(b)
	if err != nil {
		t.Fatal(err)
	}
	want := fullProfile()
	for i := range want.sends {
		want.sends[i].marketing = true
	}
	want.mergedInto, want.merges = "", nil
	for i := range got.Events { // v3 wrote attributes in map order
		a := got.Events[i].Attrs()
		slices.SortFunc(a, func(a, b Attr) int { return strings.Compare(a.Name, b.Name) })
		got.Events[i].setAttrs(a)
	}
	if !reflect.DeepEqual(loaded(got), want) {
		t.Fatalf("v3 profile\n got %+v\nwant %+v", got, want)
	}
}

// TestProfileCodecV4: a changelog record of version 4 (before the merge
// fields; testdata/profile_v4.hex, fullProfile encoded then) decodes to the
// same profile with no merge state, directly and through the cache form
// restore writes.
func TestProfileCodecV4(t *testing.T) {
	h, err := os.ReadFile("testdata/profile_v4.hex")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	want := fullProfile()
	want.mergedInto, want.merges = "", nil
	got, err := decodeProfile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded(got), want) {
		t.Fatalf("v4 profile\n got %+v\nwant %+v", got, want)
	}
	c, ok := transcodeCache(nil, b)
	if !ok {
		t.Fatal("transcodeCache refuses a version 4 record")
	}
	if got, err = decodeProfile(c); err != nil || !reflect.DeepEqual(loaded(got), want) {
		t.Fatalf("v4 profile through the cache form: %v\n got %+v\nwant %+v", err, got, want)
	}
}
