package segmenter

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

func TestProcessPoison(t *testing.T) {
	valid := func(mod func(e *schemas.Event)) []byte {
		e := inbound("i1", testApp, "promo", "Ana", t0)
		mod(e)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		value  []byte
		reason string // substring of the dead letter's reason
	}{
		{name: "not json", value: []byte("garbage{"), reason: "decoding json"},
		{name: "empty value", value: nil, reason: "decoding json"},
		{name: "json null", value: []byte("null"), reason: "got v=0"},
		{name: "json array", value: []byte(`[1,2]`), reason: "decoding json"},
		{name: "wrong version", value: []byte(`{"v":2,"id":"x","app":"shop","kind":"event","name":"n","time":"2025-06-01T12:00:00Z","hwid":"h"}`), reason: "unsupported record version"},
		{name: "missing id", value: valid(func(e *schemas.Event) { e.ID = "" }), reason: "id is required"},
		{name: "bad app id", value: valid(func(e *schemas.Event) { e.App = "a|b" }), reason: "not a valid app id"},
		{name: "unknown kind", value: valid(func(e *schemas.Event) { e.Kind = "teleport" }), reason: "unknown kind"},
		{name: "inbound without from", value: valid(func(e *schemas.Event) { e.Inbound.From = "" }), reason: "inbound.from"},
		{name: "wrong field type", value: []byte(`{"v":1,"id":"x","app":"shop","kind":"tags","time":"2025-06-01T12:00:00Z","hwid":"h","tags":"nope"}`), reason: "decoding json"},
		{name: "hwid too long", value: valid(func(e *schemas.Event) { e.HWID = strings.Repeat("h", 2000) }), reason: "profile key of"},
		{name: "profile too large", value: valid(func(e *schemas.Event) { e.Inbound.ProfileName = strings.Repeat("n", 70<<10) }), reason: "over the 63488-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTest(t, Config{})
			poison := &kgo.Record{Topic: schemas.TopicEvents, Partition: 3, Offset: 77, Key: []byte("k"), Value: tt.value}
			// The poison record sits between two valid ones: both must still
			// be processed.
			out := s.process(t,
				record(t, inbound("before", testApp, "PROMO", "Ana", t0)),
				poison,
				record(t, inbound("after", testApp, "PROMO", "Ana", t0)),
			)
			if len(out) != 3 {
				t.Fatalf("got %d output records, want 3", len(out))
			}
			// Partitions are processed by their workers: the dead letter
			// of partition 3 is among the outputs, the replies of partition
			// 0 in their order.
			if n := slices.IndexFunc(out, func(r *kgo.Record) bool { return r.Topic == schemas.TopicDeadLetter }); n < 0 || !bytes.Equal(out[n].Key, poison.Key) {
				t.Fatalf("no dead letter keyed %q among the outputs", poison.Key)
			}
			ds, dls := decodeOutputs(t, out)
			if len(ds) != 2 || ds[0].Source.EventID != "before" || ds[1].Source.EventID != "after" {
				t.Fatalf("replies around the poison record: %s", dump(ds))
			}
			dl := dls[0]
			if dl.Stage != "segmenter" || dl.Topic != schemas.TopicEvents || dl.Partition != 3 || dl.Offset != 77 {
				t.Errorf("dead letter origin %s %s/%d@%d", dl.Stage, dl.Topic, dl.Partition, dl.Offset)
			}
			if !bytes.Equal(dl.Value, tt.value) || !bytes.Equal(dl.Key, poison.Key) {
				t.Error("dead letter does not carry the original key and value")
			}
			if !strings.Contains(dl.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", dl.Reason, tt.reason)
			}
			if got := s.metric(t, "herald_segmenter_dead_letters_total"); got != 1 {
				t.Errorf("dead_letters_total = %v, want 1", got)
			}
		})
	}
}

func TestOversizedEventLeavesProfileUnchanged(t *testing.T) {
	s := newTest(t, Config{})
	s.process(t, record(t, register("r1", t0, map[string]any{"a": "1"})))
	before, _ := s.Profile(testApp, testHWID)
	big := map[string]any{}
	for i := range 100 {
		big[strings.Repeat("k", i+1)] = strings.Repeat("v", 1000)
	}
	_, dls := decodeOutputs(t, s.process(t, record(t, &schemas.Event{ID: "t1", App: testApp, Kind: schemas.KindTags, Time: t0, HWID: testHWID, Tags: big})))
	if len(dls) != 1 {
		t.Fatalf("got %d dead letters, want 1", len(dls))
	}
	after, _ := s.Profile(testApp, testHWID)
	if err := equalProfile(after, before); err != nil {
		t.Fatal(err)
	}
	if got := s.metric(t, "herald_segmenter_events_total", "kind", "tags"); got != 0 {
		t.Errorf("events_total{kind=tags} = %v, want 0", got)
	}
}
