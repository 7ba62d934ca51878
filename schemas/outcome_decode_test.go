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

// outcomeSamples are outcomes as the dispatcher writes them, and
// variations the fast path must decode or leave to encoding/json.
func outcomeSamples(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(9, 10))
	odd := []string{"", "plain", `q"uo\te`, "new\nline", "ünï©ødé", "bad\xffutf8", "sep\u2028", "<&>", "😀"}
	pick := func() string { return odd[rng.IntN(len(odd))] }
	states := []OutcomeState{OutcomeAccepted, OutcomeFailed, OutcomeExpired, OutcomeInDoubt}
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	var out [][]byte
	for i := range 300 {
		o := &Outcome{
			DispatchID: fmt.Sprintf("d-%d%s", i, pick()), App: "demo", Channel: Channel(pick()), Sender: pick(), To: pick(),
			Country: pick(), State: states[rng.IntN(len(states))], ProviderID: pick(), Template: pick(), Category: pick(),
			Source:    Source{Kind: pick(), Name: pick(), EventID: pick()},
			ErrorCode: (rng.IntN(3) - 1) * rng.IntN(1<<20), ErrorMessage: pick(), InvalidRecipient: rng.IntN(2) == 0,
			Attempts: rng.IntN(9), Reconciled: rng.IntN(2) == 0,
			Requested: at.Add(time.Duration(rng.Int64N(1 << 50))), Time: at.Add(time.Duration(rng.Int64N(1 << 50))),
		}
		b, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(` { "v" : 1 , "dispatch_id":"d", "source" : { "kind" : "api" } , "extra": [1,{"x":null}] } `),
		[]byte(`{"v":1,"source":null}`),
		[]byte(`{"v":1,"State":"accepted"}`),
		[]byte(`{"v":1,"to":"a","to":"b"}`),
		[]byte(`{"v":1,"attempts":1.5}`),
		[]byte(`{"v":1,"attempts":"1"}`),
		[]byte(`{"v":1,"reconciled":1}`),
		[]byte(`{"v":1,"time":"yesterday"}`),
		[]byte(`{"v":1,"to":"\ud800"}`),
		[]byte(`{"v":1,"source":{"Kind":"api"}}`),
		[]byte(`{"v":1,"error_code":99999999999999999999}`),
	)
}

// TestDecodeOutcomeFast: on the outcomes the dispatcher writes, the fast
// path decodes (it does not give up) exactly what encoding/json does; on
// the variations it either does the same or gives up; DecodeOutcome's
// errors stay encoding/json's.
func TestDecodeOutcomeFast(t *testing.T) {
	for i, b := range outcomeSamples(t) {
		var fast, slow Outcome
		ok := decodeOutcomeFast(b, &fast)
		err := json.Unmarshal(b, &slow)
		if i < 300 && (!ok || err != nil) {
			t.Fatalf("%s: fast path %v, encoding/json %v: want both to decode the dispatcher's outcomes", b, ok, err)
		}
		if ok && (err != nil || !reflect.DeepEqual(fast, slow)) {
			t.Fatalf("%s:\nfast %#v\njson %#v (%v)", b, fast, slow, err)
		}
	}
	for in, want := range map[string]string{
		`{"v":2}`:                   "unsupported record version",
		`{"v":1,"attempts":"1"}`:    "cannot unmarshal string",
		`{"v":1,"dispatch_id":"d"}`: "app",
		`{not json`:                 "invalid character",
		`{"v":1,"dispatch_id":"d","app":"demo","state":"lost","time":"2026-11-23T10:00:00Z"}`: `unknown state "lost"`,
	} {
		_, err := DecodeOutcome([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to contain %q", in, err, want)
		}
	}
}

func FuzzDecodeOutcomeFast(f *testing.F) {
	for _, b := range outcomeSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameAsJSON(t, b, decodeOutcomeFast) })
}
