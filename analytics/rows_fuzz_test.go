package analytics

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// FuzzRowsAdd feeds any bytes to the decoder of both topics: it must not
// panic, and every row it accepts must fit its columns.
func FuzzRowsAdd(f *testing.F) {
	for _, rec := range dataset(f) {
		f.Add(rec.Topic == schemas.TopicOutcomes, rec.Value)
	}
	f.Add(false, []byte(`{"v":1,"id":"x","app":"a","kind":"status","time":"1969-12-31T23:59:59Z","hwid":"h","status":{"wamid":"w","status":"sent","error_code":9999999999}}`))
	f.Add(false, []byte(`{"v":1,"id":"x","app":"a","kind":"event","name":"n","time":"2105-12-31T23:59:59.999Z","user_id":"u","attributes":{"a":[1,{"b":null}],"c":1e300}}`))
	f.Add(true, []byte(`{"v":1,"dispatch_id":"d","app":"a","state":"failed","time":"2025-01-01T00:00:00+14:00","requested":"0001-01-01T00:00:00Z","attempts":65535}`))
	f.Add(true, []byte(`null`))
	f.Fuzz(func(t *testing.T, outcomes bool, value []byte) {
		topic := schemas.TopicEvents
		if outcomes {
			topic = schemas.TopicOutcomes
		}
		var r rows
		if err := r.add(&kgo.Record{Topic: topic, Value: value}, 0); err != nil {
			if r.len() != 0 {
				t.Fatalf("rows added for a rejected record: %v", err)
			}
			return
		}
		if r.len() == 0 {
			t.Fatal("accepted record produced no row")
		}
		inRange := func(what string, tm time.Time) {
			if tm.Before(minTime) || tm.After(maxTime) || tm.Location() != time.UTC {
				t.Fatalf("%s %v does not fit DateTime", what, tm)
			}
		}
		for _, e := range r.events {
			inRange("events.time", e.time)
			inRange("events.received", e.received)
			if !e.date.Equal(utcDate(e.time)) || e.timeMS > 999 || len(e.attrKeys) != len(e.attrValues) {
				t.Fatalf("bad event row %+v", e)
			}
		}
		for _, s := range r.statuses {
			inRange("statuses.time", s.time)
		}
		for _, m := range r.messages {
			inRange("messages.time", m.time)
			inRange("messages.requested", m.requested)
			if m.date.Before(minTime) || m.date.After(maxTime) {
				t.Fatalf("messages.date %v out of range", m.date)
			}
		}
	})
}
