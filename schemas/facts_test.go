package schemas

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestDispatchFacts: the record round-trips through ValidateRecord, its
// hash is ClickHouse's cityHash64 (the value clickhouse-client prints for
// SELECT cityHash64('abc')), and bad records are refused naming the field.
func TestDispatchFacts(t *testing.T) {
	if got := FactsHash([]byte("abc")); got != 4220206313085259313 {
		t.Fatalf("FactsHash(abc) = %d, want ClickHouse's cityHash64 4220206313085259313", got)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f := &DispatchFacts{
		App: "demo", DispatchID: "d1", Day: "2026-11-23", SourceKind: "campaign", SourceName: "spring",
		Facts: []DispatchFact{{State: "sent", Time: at}, {State: FactBilled, Detail: "marketing", Amount: 10_000, Currency: "USD", Time: at}},
	}
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ValidateRecord(TopicFacts, b, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != "demo|d1" {
		t.Fatalf("key %q", key)
	}
	got, err := DecodeDispatchFacts(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, f)
	}
	if p := FactsPartition(key, 8); p != int(FactsHash(key)%8) || p < 0 || p >= 8 {
		t.Fatalf("FactsPartition = %d", p)
	}
	if p := FactsPartition(key, 0); p != 0 {
		t.Fatalf("FactsPartition of 0 partitions = %d", p)
	}
	bad := []struct {
		name  string
		edit  func(*DispatchFacts)
		field string
	}{
		{"app", func(f *DispatchFacts) { f.App = "a|b" }, "app"},
		{"dispatch", func(f *DispatchFacts) { f.DispatchID = "" }, "dispatch_id"},
		{"day", func(f *DispatchFacts) { f.Day = "yesterday" }, "day"},
		{"empty", func(f *DispatchFacts) { f.Facts = nil }, "facts is empty"},
		{"state", func(f *DispatchFacts) { f.Facts[1].State = "opened" }, "facts[1].state"},
		{"time", func(f *DispatchFacts) { f.Facts[0].Time = time.Time{} }, "facts[0].time"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := *f
			c.Facts = append([]DispatchFact(nil), f.Facts...)
			tt.edit(&c)
			b, _ := c.Marshal()
			if _, err := DecodeDispatchFacts(b); err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want it to name %s", err, tt.field)
			}
		})
	}
}

// TestDispatchFactsMarshal: the hand-written encoding decodes to what
// encoding/json's does, for strings that need escaping too.
func TestDispatchFactsMarshal(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	odd := []string{"", "plain", `q"uo\te`, "new\nline\ttab\r", "ctl\x01\x1f", "ünï©ødé", "bad\xffutf8\xc3", "sep\u2028\u2029", "<&>"}
	for _, s := range odd {
		f := &DispatchFacts{
			V: V1, App: "demo", DispatchID: s, Day: "2026-11-23", SourceKind: s, SourceName: s, Template: s, Category: s, Country: s,
			Facts: []DispatchFact{{State: s, Detail: s, Amount: -1, Currency: s, Time: at}, {State: "sent", Time: at.UTC()}},
		}
		for _, facts := range [][]DispatchFact{f.Facts, nil, {}} {
			f.Facts = facts
			got, err := f.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got) {
				t.Fatalf("%q: invalid JSON %s", s, got)
			}
			var a, b map[string]any
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
			}
		}
	}
}

func BenchmarkDispatchFactsMarshal(b *testing.B) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f := &DispatchFacts{
		App: "demo", DispatchID: "0123456789abcdef0123456789abcdef", Day: "2026-11-23", SourceKind: "campaign",
		SourceName: "spring", Template: "spring_sale", Category: "MARKETING", Country: "BD",
		Facts: []DispatchFact{{State: "sent", Time: at}, {State: "delivered", Time: at}, {State: "billed", Detail: "marketing", Amount: 10000, Currency: "USD", Time: at}},
	}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = f.Marshal()
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(f)
		}
	})
}
