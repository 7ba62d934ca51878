package schemas

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// factsSamples are facts records as the sink writes them, and variations
// the fast path must decode or leave to encoding/json.
func factsSamples(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(5, 6))
	odd := []string{"", "plain", `q"uo\te`, "new\nline", "ünï©ødé", "bad\xffutf8", "sep\u2028", "<&>", "😀"}
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	var out [][]byte
	for i := range 300 {
		f := &DispatchFacts{
			App: odd[rng.IntN(len(odd))], DispatchID: fmt.Sprintf("d-%d%s", i, odd[rng.IntN(len(odd))]), Day: "2026-11-23",
			SourceKind: odd[rng.IntN(len(odd))], SourceName: odd[rng.IntN(len(odd))], Template: odd[rng.IntN(len(odd))],
			Category: odd[rng.IntN(len(odd))], Country: odd[rng.IntN(len(odd))],
		}
		for range 1 + rng.IntN(4) { // the sink writes at least one
			f.Facts = append(f.Facts, DispatchFact{
				State: FactStates[rng.IntN(len(FactStates))], Detail: odd[rng.IntN(len(odd))],
				Amount: int64(rng.IntN(3)-1) * rng.Int64N(1<<40), Currency: odd[rng.IntN(len(odd))],
				Time: at.Add(time.Duration(rng.Int64N(1 << 50))),
			})
		}
		b, err := f.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(` { "v" : 1 , "app":"a", "facts" : [ { "state" : "sent" , "time" : "2026-11-23T10:00:00Z" } ] , "extra": {"x":[1,null]} } `),
		[]byte(`{"v":1,"facts":[]}`),
		[]byte(`{"v":1,"facts":null}`),
		[]byte(`{"v":1,"App":"case"}`),
		[]byte(`{"v":1,"app":"a","app":"b"}`),
		[]byte(`{"v":1,"facts":[{"amount":1.5}]}`),
		[]byte(`{"v":1,"facts":[{"amount":1e3}]}`),
		[]byte(`{"v":1,"facts":[{"time":"yesterday"}]}`),
		[]byte(`{"v":1,"app":"\ud800"}`),
		[]byte(`{"v":1,"app":"\u00e9\n"}`),
		[]byte(`{"v":1,"facts":[{"state":"sent"},]}`),
	)
}

// TestDecodeDispatchFactsFast: on the records the sink writes, the fast path
// decodes (it does not give up) exactly what encoding/json does; on the
// variations it either does the same or gives up.
func TestDecodeDispatchFactsFast(t *testing.T) {
	samples := factsSamples(t)
	for i, b := range samples {
		var fast, slow DispatchFacts
		ok := decodeDispatchFactsFast(b, &fast)
		err := json.Unmarshal(b, &slow)
		if i < 300 && (!ok || err != nil) {
			t.Fatalf("%s: fast path %v, encoding/json %v: want both to decode the sink's records", b, ok, err)
		}
		if ok && (err != nil || !reflect.DeepEqual(fast, slow)) {
			t.Fatalf("%s:\nfast %#v\njson %#v (%v)", b, fast, slow, err)
		}
	}
	// DecodeDispatchFacts through the fast path and through encoding/json
	// (a duplicate key sends it there) agree, errors included.
	good := string(samples[0])
	if _, err := DecodeDispatchFacts(samples[0]); err != nil && !strings.Contains(err.Error(), "facts") {
		t.Fatalf("DecodeDispatchFacts: %v", err)
	}
	dup := strings.Replace(good, `"v":1`, `"v":1,"v":1`, 1)
	a, errA := DecodeDispatchFacts([]byte(good))
	b, errB := DecodeDispatchFacts([]byte(dup))
	if fmt.Sprint(errA) != fmt.Sprint(errB) || !reflect.DeepEqual(a, b) {
		t.Fatalf("fast %+v (%v), encoding/json %+v (%v)", a, errA, b, errB)
	}
	for _, in := range []string{`{"v":2,"facts":[]}`, `{not json`, `{"v":1,"app":"a","dispatch_id":"d","day":"2026-11-23","facts":[{"state":"lost","time":"2026-11-23T10:00:00Z"}]}`} {
		if _, err := DecodeDispatchFacts([]byte(in)); err == nil {
			t.Errorf("%s: decoded, want an error", in)
		}
	}
}

func FuzzDecodeDispatchFactsFast(f *testing.F) {
	for _, b := range factsSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameAsJSON(t, b, decodeDispatchFactsFast) })
}

func BenchmarkDecodeDispatchFacts(b *testing.B) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f := &DispatchFacts{
		App: "demo", DispatchID: "0123456789abcdef0123456789abcdef", Day: "2026-11-23", SourceKind: "campaign",
		SourceName: "spring", Template: "spring_sale", Category: "MARKETING", Country: "BD",
		Facts: []DispatchFact{{State: "sent", Time: at}, {State: "delivered", Time: at}, {State: "billed", Detail: "marketing", Amount: 10000, Currency: "USD", Time: at}},
	}
	raw, err := f.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeDispatchFacts(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			var g DispatchFacts
			if err := json.Unmarshal(raw, &g); err != nil {
				b.Fatal(err)
			}
		}
	})
}
