package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// dispatchSamples are dispatch requests of the shapes the segmenter and
// the send API write; the fast path must decode each of them itself.
func dispatchSamples(t testing.TB) [][]byte {
	t0 := time.Date(2026, 5, 30, 10, 0, 0, 123456789, time.UTC)
	reqs := []*DispatchRequest{
		{
			ID: "c-1", App: "shop", Channel: ChannelWhatsApp, Sender: "1001", To: "+15550000001", HWID: "whatsapp:+15550000001", Country: "US",
			Template: &Template{Name: "order_confirmation", Language: "en_US", Category: "UTILITY", Body: []string{"A1", "today"}, Header: []string{"Héllo <&> \"x\" \u2028 😀\n"}},
			Source:   Source{Kind: "campaign", Name: "bench", EventID: "e-1"}, Created: t0, Deadline: t0.Add(time.Hour),
		},
		{
			ID: "k-2", App: "shop", Channel: ChannelWhatsApp, Sender: "1001", To: "15550000002", UserID: "u-2",
			Text:   &Text{Body: "hi", PreviewURL: true},
			Source: Source{Kind: "keyword"}, Created: t0, Deadline: t0.Add(time.Minute), WindowUntil: t0.Add(23 * time.Hour), SendAt: t0.Add(time.Second),
		},
		{
			ID: "j-3", App: "shop", Channel: ChannelWhatsApp, Sender: "1001", To: "+15550000003",
			Template: &Template{Name: "t", Language: "en", Body: []string{}},
			Source:   Source{Kind: "journey", Name: "j"}, Created: t0.In(time.FixedZone("x", 3600)), Deadline: t0,
		},
	}
	var out [][]byte
	for _, r := range reqs {
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkDispatchFast fails t when the fast path decodes b and encoding/json
// does not decode it to the same request; it reports whether the fast path
// took b.
func checkDispatchFast(t *testing.T, b []byte) bool {
	t.Helper()
	var fast, slow DispatchRequest
	if !decodeDispatchFast(b, &fast) {
		return false
	}
	if err := json.Unmarshal(b, &slow); err != nil {
		t.Fatalf("fast path decoded %q, encoding/json refused it: %v", b, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%q:\nfast %#v\njson %#v", b, fast, slow)
	}
	return true
}

// TestDecodeDispatchFastTaken checks that the fast path decodes the
// common shapes itself, as encoding/json does, and that
// DecodeDispatchRequest still validates what it decodes.
func TestDecodeDispatchFastTaken(t *testing.T) {
	for i, b := range dispatchSamples(t) {
		if !checkDispatchFast(t, b) {
			t.Fatalf("sample %d: the fast path gave up on %s", i, b)
		}
		if _, err := DecodeDispatchRequest(b); err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
	}
	for _, in := range []string{
		`{"v":2,"id":"x","app":"shop","channel":"whatsapp","sender":"1","to":"+1","text":{"body":"x"},"created":"2026-01-01T00:00:00Z"}`,
		`{"v":1,"app":"shop","channel":"whatsapp","sender":"1","to":"+1","text":{"body":"x"},"created":"2026-01-01T00:00:00Z"}`,
		`{"v":1,"id":"x","app":"shop","channel":"whatsapp","sender":"1","to":"+1","created":"2026-01-01T00:00:00Z"}`,
	} {
		if _, err := DecodeDispatchRequest([]byte(in)); err == nil {
			t.Errorf("DecodeDispatchRequest(%s) accepted it", in)
		}
	}
}

// TestDecodeDispatchFastGivesUp lists inputs encoding/json treats in its
// own way, or that the fast path leaves to it; it must decode none.
func TestDecodeDispatchFastGivesUp(t *testing.T) {
	for _, in := range []string{
		`{"v":1,"ID":"x"}`,
		`{"v":1,"id":"a","id":"b"}`,
		`{"v":1,"template":{"name":"a"},"template":{"language":"b"}}`,
		`{"v":1,"id":null}`,
		`{"v":1,"template":null}`,
		`{"v":1.0}`,
		`{"v":1,"id":"\ud800"}`,
		"{\"v\":1,\"id\":\"\xff\"}",
		`{"v":1,"created":"yesterday"}`,
		`{"v":1,"template":{"button_url":{"0":"x"}}}`,
		`{"v":1,"template":{"Body":["x"]}}`,
		`{"v":1,"template":{"body":["x",1]}}`,
		`{"v":1,"email":{"subject":"s"}}`,
		`{"v":1,"push":{"title":"t"}}`,
		`{"v":1,"webhook":{"url":"https://x"}}`,
		`{"v":1,"source":{"KIND":"x"}}`,
		`{"v":1,"text":{"preview_url":"yes"}}`,
		`{"v":1} x`,
		`[1]`,
	} {
		var r DispatchRequest
		if decodeDispatchFast([]byte(in), &r) {
			t.Errorf("fast path decoded %q itself", in)
		}
	}
}

// TestDecodeDispatchFastRandom damages the samples at random (bytes
// changed, dropped, doubled, keys recased) and checks that both decoders
// agree on every input the fast path takes.
func TestDecodeDispatchFastRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	samples := dispatchSamples(t)
	alphabet := []byte(`{}[]":,\ ntufl0123456789.eE-+aAzZ` + "\xff\u00e9")
	took := 0
	const n = 20000
	for range n {
		b := append([]byte(nil), samples[rng.IntN(len(samples))]...)
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(b))
			switch rng.IntN(4) {
			case 0:
				b[i] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				b = append(b[:i], b[i+1:]...)
			case 2:
				b = append(b[:i], append([]byte{b[i]}, b[i:]...)...)
			case 3:
				if b[i] >= 'a' && b[i] <= 'z' {
					b[i] -= 'a' - 'A'
				}
			}
		}
		if checkDispatchFast(t, b) {
			took++
		}
	}
	if took == 0 || took == n {
		t.Errorf("fast path took %d of %d damaged requests", took, n)
	}
}

// FuzzDecodeDispatchFast checks on arbitrary input that whenever the fast
// path decodes a value, encoding/json decodes it too, to the same
// request.
//
//	go test -run '^$' -fuzz FuzzDecodeDispatchFast ./schemas/
func FuzzDecodeDispatchFast(f *testing.F) {
	for _, b := range dispatchSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDispatchFast(t, b)
	})
}
