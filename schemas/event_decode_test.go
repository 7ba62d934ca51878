package schemas

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
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
	}
}

// TestDecodeEventFastGivesUp lists inputs encoding/json treats in its own
// way; the fast path must leave each to it.
func TestDecodeEventFastGivesUp(t *testing.T) {
	for _, in := range []string{
		`{"v":1,"ID":"x"}`,                 // case-insensitive match
		`{"v":1,"id":"a","id":"b"}`,        // duplicate field
		`{"v":1,"tags":{"a":1},"tags":{}}`, // duplicate map (encoding/json merges)
		`{"v":1,"id":null}`,
		`{"v":1.0}`,
		`{"v":1e0}`,
		`{"v":01}`,
		`{"v":1,"id":"\ud800"}`, // lone surrogate
		"{\"v\":1,\"id\":\"\xff\"}",
		"{\"v\":1,\"id\":\"a\nb\"}",
		`{"v":1,"tags":{"n":1e400}}`,
		`{"v":1,"inbound":{"from":"x","media":{"id":"m"}}}`,
		`{"v":1,"campaign":{"id":"c"}}`,
		`{"v":1,"time":"yesterday"}`,
		`{"v":1} x`,
		`[1]`,
		`{"v":1,"kſnd":"x"}`, // non-ASCII key
	} {
		var e Event
		if decodeEventFast([]byte(in), &e) || decodeEventSharedFast([]byte(in), &e) {
			t.Errorf("fast path decoded %q itself", in)
		}
	}
}

// FuzzDecodeEventFast checks on arbitrary input that whenever the fast path
// decodes a value, encoding/json decodes it too, to the same Event.
//
//	go test -run '^$' -fuzz FuzzDecodeEventFast ./schemas/
func FuzzDecodeEventFast(f *testing.F) {
	for _, b := range fastSamples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"tags":{"a":[{"b":{}}],"é":"\u00e9\ud83d\ude00"},"x":[1,2,{"y":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) { sameAsJSON(t, b, decodeEventFast) })
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
