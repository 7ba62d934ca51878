package segmenter

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// FuzzProcess feeds arbitrary record values to Process: it must never panic
// and every input must come out as nothing, valid dispatch requests or one
// dead letter carrying the input.
func FuzzProcess(f *testing.F) {
	for _, r := range benchEvents(f, 4, 2) {
		f.Add(r.Value)
	}
	for _, seed := range []string{
		``, `null`, `{}`, `[]`, `{"v":1}`, `{"v":"1"}`, `garbage`,
		`{"v":1,"id":"x","app":"shop","kind":"inbound","time":"2025-06-01T12:00:00Z","hwid":"h","inbound":{"phone_number_id":"1","from":"+1","text":"¿PROMO?"}}`,
		`{"v":1,"id":"x","app":"shop","kind":"tags","time":"2025-06-01T12:00:00Z","hwid":"h","tags":{"a":{"b":1},"c":[[1]],"d":null,"e":1e308}}`,
		`{"v":1,"id":"x","app":"shop","kind":"event","name":"n","time":"0001-01-01T00:00:01Z","user_id":"u"}`,
		`{"v":1,"id":"x","app":"shop","kind":"inbound","time":"9999-12-31T23:59:59Z","hwid":"h","inbound":{"phone_number_id":"1","from":"+1","text":"help \xff"}}`,
		`{"v":1,"id":"s","app":"shop","kind":"inbound","time":"2025-06-01T12:00:00Z","hwid":"h","inbound":{"phone_number_id":"1","from":"+1","text":"  ÚNSUBSCRIBE\u00a0now"}}`,
		`{"v":1,"id":"t","app":"shop","kind":"inbound","time":"2025-06-01T12:00:00Z","hwid":"h","inbound":{"phone_number_id":"1","from":"+1","text":"START"}}`,
	} {
		f.Add([]byte(seed))
	}
	s := newTest(f, Config{})
	f.Fuzz(func(t *testing.T, value []byte) {
		rec := &kgo.Record{Topic: schemas.TopicEvents, Key: []byte("k"), Value: value}
		out, err := s.Process(t.Context(), []*kgo.Record{rec})
		if err != nil {
			t.Fatal(err)
		}
		ds, dls := decodeOutputs(t, out)
		for _, d := range ds {
			if err := d.Validate(); err != nil {
				t.Fatalf("invalid dispatch request: %v", err)
			}
		}
		if len(dls) > 1 || (len(dls) == 1 && (len(ds) > 0 || string(dls[0].Value) != string(value))) {
			t.Fatalf("%d dead letters and %d requests for one record", len(dls), len(ds))
		}
		if _, err := schemas.DecodeEvent(value); err != nil && len(dls) != 1 {
			t.Fatalf("undecodable value %q was not dead-lettered", value)
		}
	})
}
