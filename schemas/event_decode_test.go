package schemas

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fastSamples are events of the shapes Herald's producers write; the fast
// path must decode each of them itself.
func fastSamples(t testing.TB) [][]byte {
	t0 := time.Date(2026, 5, 30, 10, 0, 0, 123456789, time.UTC)
	evs := []*Event{
		{
			ID: "e1", App: "shop", Kind: KindRegister, Name: EventDeviceRegistered, Time: t0, Received: t0.Add(time.Second),
			HWID: "whatsapp:+14155550100", DeviceType: DeviceWhatsApp, Language: "en", Country: "US", Timezone: "America/Los_Angeles",
			Tags:     map[string]any{"first_name": "Ana", "points": 4200.5, "vip": true, "cuisines": []any{"asian", "italian"}, "none": nil, "nested": map[string]any{"a": []any{1.0, "x"}}},
			TagTypes: map[string]string{"points": "integer"}, TagOps: map[string]string{"points": OpIncrement},
		},
		{
			ID: "e2", App: "shop", Kind: KindEvent, Name: "Purchase", Time: t0, UserID: "u-1", Attributes: map[string]any{"sku": "A-1", "price": 12.5, "qty": -3e2},
			Context: map[string]any{"ip": "10.0.0.1"}, Email: "ana@example.com", PushToken: "tok", AppVersion: "1.2.3", AnonymousID: "anon", PreviousID: "prev",
		},
		{
			ID: "e3", App: "shop", Kind: KindInbound, Name: EventWhatsAppReceived, Time: t0, HWID: "whatsapp:+14155550100",
			Inbound: &Inbound{PhoneNumberID: "1098765", From: "+14155550100", WAMID: "wamid.X", Type: "text", Text: "Héllo \"PROMO\" \u2028 😀\n<&>", ProfileName: "Ana", ContextID: "c", Payload: "p", ErrorCode: 131051, ErrorTitle: "t"},
		},
		{
			ID: "e4", App: "shop", Kind: KindStatus, Name: EventWhatsAppStatus, Time: t0, HWID: "whatsapp:+14155550100",
			Status: &Status{
				PhoneNumberID: "1", WAMID: "w", Status: "failed", Recipient: "+1", DispatchID: "d", PricingCategory: "marketing", Billable: true,
				PricingModel: "PMP", PricingType: "regular", ConversationID: "c", ConversationOrigin: "o", ErrorCode: 131026, ErrorTitle: "a", ErrorMessage: "b", ErrorDetails: "c",
			},
		},
	}
	var out [][]byte
	for _, e := range evs {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestDecodeEventFastTaken checks that the fast path decodes the common
// shapes itself, and decodes them as encoding/json does.
func TestDecodeEventFastTaken(t *testing.T) {
	for i, b := range fastSamples(t) {
		var fast, shared, slow Event
		if !decodeEventFast(b, &fast) || !decodeEventSharedFast(b, &shared) {
			t.Fatalf("sample %d: the fast path gave up on %s", i, b)
		}
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("sample %d:\nfast %#v\njson %#v", i, fast, slow)
		}
		if !reflect.DeepEqual(shared, slow) {
			t.Fatalf("sample %d:\nshared %#v\njson %#v", i, shared, slow)
		}
		var listed Event
		if !decodeEventAttrsFast(b, &listed) {
			t.Fatalf("sample %d: the fast path with attribute lists gave up on %s", i, b)
		}
		if (listed.AttrList != nil) != (slow.Attributes != nil) {
			t.Fatalf("sample %d: AttrList %v for Attributes %v", i, listed.AttrList, slow.Attributes)
		}
		if !reflect.DeepEqual(mappedAttrs(t, listed), slow) {
			t.Fatalf("sample %d:\nlisted %#v\njson %#v", i, listed, slow)
		}
	}
}

// mappedAttrs is e with its AttrList, which must be sorted with each name
// once, moved to Attributes.
func mappedAttrs(t *testing.T, e Event) Event {
	t.Helper()
	for i := 1; i < len(e.AttrList); i++ {
		if e.AttrList[i-1].Name >= e.AttrList[i].Name {
			t.Fatalf("AttrList not sorted, or a name twice: %v", e.AttrList)
		}
	}
	for _, a := range e.AttrList {
		if v, ok := e.Attr(a.Name); !ok || !reflect.DeepEqual(v, a.Value()) {
			t.Fatalf("Attr(%q) = %v, %v; the list holds %v", a.Name, v, ok, a.Value())
		}
	}
	if _, ok := e.Attr("\x00absent"); ok {
		t.Fatal("Attr found a name the list does not hold")
	}
	if e.Attributes != nil && e.AttrList != nil {
		t.Fatal("both Attributes and AttrList set")
	}
	e.Attributes, e.AttrList = e.AttrMap(), nil
	return e
}

// TestDecodeEventAttrs checks the attribute list of DecodeEventAttrs on
// repeated names, unsorted and nested values, and that Marshal writes
// them back, and that an event the fast path leaves to encoding/json has
// its map.
func TestDecodeEventAttrs(t *testing.T) {
	b := []byte(`{"v":1,"id":"e","app":"shop","kind":"event","name":"N","time":"2026-05-30T10:00:00Z","hwid":"h",` +
		`"attributes":{"z":1,"a":"x","m":[1,"y"],"a":"last","n":null,"o":{"k":true},"b":false,"":2}}`)
	e, err := DecodeEventAttrs(b)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range e.AttrList {
		names = append(names, a.Name)
	}
	if want := []string{"", "a", "b", "m", "n", "o", "z"}; !slices.Equal(names, want) || e.Attributes != nil {
		t.Fatalf("names %q, want %q; Attributes %v", names, want, e.Attributes)
	}
	if v, _ := e.Attr("a"); v != "last" {
		t.Fatalf("a = %v, want the last value", v)
	}
	want, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mappedAttrs(t, *e), *want) {
		t.Fatalf("listed %#v\nmapped %#v", e, want)
	}
	out, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := DecodeEvent(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Attributes, want.Attributes) {
		t.Fatalf("Marshal wrote attributes %v, want %v", again.Attributes, want.Attributes)
	}
	// A key in another case: encoding/json matches it, the fast path
	// leaves the event to it.
	slow, err := DecodeEventAttrs([]byte(strings.Replace(string(b), `"hwid"`, `"HWID"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if slow.AttrList != nil || !reflect.DeepEqual(slow.Attributes, want.Attributes) {
		t.Fatalf("the event encoding/json decoded: %#v", slow)
	}
}

// FuzzDecodeEventAttrs is FuzzDecodeEventFast for the fast path that puts
// the attributes in a list.
//
//	go test -run '^$' -fuzz FuzzDecodeEventAttrs ./schemas/
func FuzzDecodeEventAttrs(f *testing.F) {
	for _, b := range fastSamples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"attributes":{"b":1,"a":"x","b":[1,{"c":null}],"":{},"é":true}}`))
	f.Add([]byte(`{"v":1,"attributes":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsJSON(t, b, func(b []byte, e *Event) bool {
			if !decodeEventAttrsFast(b, e) {
				return false
			}
			*e = mappedAttrs(t, *e)
			return true
		})
	})
}

// FuzzDecodeEventShared is FuzzDecodeEventFast for the fast path whose
// strings share one copy of the input; the input is changed after the
// decode, which must not change the event.
//
//	go test -run '^$' -fuzz FuzzDecodeEventShared ./schemas/
func FuzzDecodeEventShared(f *testing.F) {
	for _, b := range fastSamples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"id":"a\"b","inbound":{"text":"é😀","wamid":"w"},"tags":{"a":["x",{"b":"y"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsJSON(t, b, func(b []byte, e *Event) bool {
			c := slices.Clone(b)
			ok := decodeEventSharedFast(c, e)
			clear(c) // the event must hold a copy, not the input itself
			return ok
		})
	})
}

// sameAsJSON checks a fast decoder against encoding/json on b: when fast
// decodes b, json.Unmarshal decodes it too, to an equal value.
func sameAsJSON[T any](t *testing.T, b []byte, fast func([]byte, *T) bool) {
	t.Helper()
	var got, want T
	if !fast(b, &got) {
		return
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("fast path decoded %q, encoding/json refused it: %v", b, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nfast %#v\njson %#v", b, got, want)
	}
}

// BenchmarkDecodeEventShared decodes the fast path's sample events with
// DecodeEvent (a string per value) and DecodeEventShared (one copy of the
// value for all of them).
//
//	go test -run '^$' -bench BenchmarkDecodeEventShared -benchmem ./schemas/
func BenchmarkDecodeEventShared(b *testing.B) {
	samples := fastSamples(b)
	for _, tc := range []struct {
		name   string
		decode func([]byte) (*Event, error)
	}{{"copy", DecodeEvent}, {"shared", DecodeEventShared}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := tc.decode(samples[i%len(samples)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUTCTimeMatchesParse checks utcTime against time.Time.UnmarshalJSON:
// it takes every UTC time MarshalJSON writes, and what it takes of
// near-miss forms (random digits, out-of-range fields) it parses to the
// same time.
func TestUTCTimeMatchesParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		u := time.Unix(rng.Int64N(253402300799), 0).UTC()
		switch i % 3 {
		case 1:
			u = u.Add(time.Duration(rng.IntN(1e9)))
		case 2:
			u = u.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		}
		b, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		got, ok := utcTime(b[1 : len(b)-1])
		if !ok {
			t.Fatalf("utcTime did not take %s", b)
		}
		if got != u {
			t.Fatalf("utcTime(%s) = %v, want %v", b, got, u)
		}
	}
	near := []string{
		"2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
		"2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
		"2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z", "0000-01-01T00:00:00Z",
		"2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1234567891Z", "2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00.5+00:00",
		"2026-01-01 00:00:00Z", "2026-1-01T00:00:00Z", "+026-01-01T00:00:00Z", "2026-01-01T00:00:00.-5Z", "2026-01-01T00:00:00z",
	}
	for range 20000 {
		b := []byte("2026-01-01T00:00:00.000000000Z")
		for range 1 + rng.IntN(3) {
			b[rng.IntN(len(b))] = "0123456789.-:TZ+ "[rng.IntN(17)]
		}
		near = append(near, string(b[:19+rng.IntN(12)])+"Z")
	}
	for _, s := range near {
		got, ok := utcTime([]byte(s))
		var want time.Time
		err := want.UnmarshalJSON([]byte(`"` + s + `"`))
		if ok && (err != nil || got != want) {
			t.Fatalf("utcTime(%q) = %v, UnmarshalJSON: %v, %v", s, got, want, err)
		}
	}
}

// FuzzUTCTime: what utcTime takes, UnmarshalJSON parses to the same time.
//
//	go test -run '^$' -fuzz FuzzUTCTime ./schemas/
func FuzzUTCTime(f *testing.F) {
	f.Add("2026-05-30T10:00:00.123456789Z")
	f.Add("2024-02-29T23:59:59Z")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := utcTime([]byte(s))
		if !ok {
			return
		}
		var want time.Time
		if err := want.UnmarshalJSON([]byte(`"` + s + `"`)); err != nil || got != want {
			t.Fatalf("utcTime(%q) = %v, UnmarshalJSON: %v, %v", s, got, want, err)
		}
	})
}

// BenchmarkDecodeEventOrder decodes the event herald bench loads most
// (72% of its records), a custom event with three attributes, with
// DecodeEvent (a map of the attributes) and DecodeEventAttrs (a list).
//
//	go test -run '^$' -bench BenchmarkDecodeEventOrder -benchmem ./schemas/
func BenchmarkDecodeEventOrder(b *testing.B) {
	now := time.Now().UTC()
	e := &Event{
		ID: "bench-12345", App: "dev", Kind: KindEvent, Name: "OrderPlaced", Time: now, Received: now, HWID: "whatsapp:+919800012345",
		Attributes: map[string]any{"cuisine": "asian", "amount": 17, "currency": "USD"},
	}
	v, err := e.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) (*Event, error)
	}{{"map", DecodeEvent}, {"list", DecodeEventAttrs}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.decode(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStrPlainEveryByte checks the table the string loops skip over:
// exactly the bytes that need no look, ASCII from 0x20 on but '"' and
// '\\', and that plainRun stops at the first other byte.
func TestStrPlainEveryByte(t *testing.T) {
	for c := range 256 {
		want := c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\'
		if strPlain[c] != want {
			t.Errorf("strPlain[%#x] = %v, want %v", c, strPlain[c], want)
		}
		b := []byte{'a', 'b', byte(c), 'c'}
		if got, wantAt := plainRun(b, 1), map[bool]int{true: 4, false: 2}[want]; got != wantAt {
			t.Errorf("plainRun(%q, 1) = %d, want %d", b, got, wantAt)
		}
	}
}

// TestDecodeEventFastSpaced checks that the fast path takes the samples
// indented, with spaces, tabs and line breaks between the tokens and
// around the whole, and decodes them as it does the compact form.
func TestDecodeEventFastSpaced(t *testing.T) {
	for i, b := range fastSamples(t) {
		var ind bytes.Buffer
		if err := json.Indent(&ind, b, " \r\n", "\t "); err != nil {
			t.Fatal(err)
		}
		spaced := append(append([]byte("\n "), ind.Bytes()...), "\r\n"...)
		var compact, fast Event
		if !decodeEventFast(b, &compact) || !decodeEventFast(spaced, &fast) {
			t.Fatalf("sample %d: the fast path gave up on %q", i, spaced)
		}
		if !reflect.DeepEqual(fast, compact) {
			t.Fatalf("sample %d spaced:\n got %+v\nwant %+v", i, fast, compact)
		}
	}
}
