package segmenter

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func TestTagsRecords(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tags := func(id string, s int, tags map[string]any, ops map[string]string) *schemas.Event {
		return &schemas.Event{ID: id, App: testApp, Kind: schemas.KindTags, Time: at(s), HWID: testHWID, Tags: tags, TagOps: ops}
	}
	f := func(name string, batches [][]*schemas.Event, want []string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			s := newTest(t, Config{})
			var got []string
			for _, b := range batches {
				s.process(t, records(t, b...)...)
				for _, pt := range s.tags {
					j, err := json.Marshal(pt)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, string(j))
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %d tags records, want %d:\n%v", len(got), len(want), got)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("tags record %d\n got %s\nwant %s", i, got[i], want[i])
				}
			}
		})
	}
	const reg = `{"v":1,"app":"shop","hwid":"whatsapp:+14155550100","registered":true,`
	f("register: its tags and the default tags",
		[][]*schemas.Event{{register("r1", at(0), map[string]any{"City": "Oslo", "Age": 31.0, "VIP": true, "Likes": []any{"sushi", "ramen"}})}},
		[]string{reg + `"tags":{"Age":31,"City":"Oslo","Country":"US","First Install":"2025-06-01 12:00","Language":"en","Likes":["sushi","ramen"],"VIP":true},"updated":"2025-06-01T12:00:00Z"}`})
	f("one record per profile and batch, the latest state",
		[][]*schemas.Event{{
			register("r1", at(0), map[string]any{"City": "Oslo"}),
			tags("t1", 1, map[string]any{"City": "Bergen", "Visits": 2.0}, nil),
			tags("t2", 2, map[string]any{"Visits": 3.0}, map[string]string{"Visits": schemas.OpIncrement}),
		}},
		[]string{reg + `"tags":{"City":"Bergen","Country":"US","First Install":"2025-06-01 12:00","Language":"en","Visits":5},"updated":"2025-06-01T12:00:02Z"}`})
	f("events that change no tag write nothing",
		[][]*schemas.Event{
			{register("r1", at(0), nil)},
			{custom("e1", "OrderPlaced", at(1)), custom("e2", "OrderPlaced", at(2)), inbound("i1", testApp, "hi", "", at(3))},
			{custom("e1", "OrderPlaced", at(1))}, // redelivered
		},
		[]string{reg + `"tags":{"Country":"US","First Install":"2025-06-01 12:00","Language":"en"},"updated":"2025-06-01T12:00:00Z"}`})
	f("a profile name from an inbound message, a null removing a tag, unregister",
		[][]*schemas.Event{
			{register("r1", at(0), map[string]any{"City": "Oslo"})},
			{inbound("i1", testApp, "hi", "Ana", at(1))},
			{inbound("i2", testApp, "hi again", "Ana", at(2))}, // same name: no record
			{tags("t1", 3, map[string]any{"City": nil}, nil)},
			{{ID: "u1", App: testApp, Kind: schemas.KindUnregister, Name: schemas.EventDeviceUnregistered, Time: at(4), HWID: testHWID}},
		},
		[]string{
			reg + `"tags":{"City":"Oslo","Country":"US","First Install":"2025-06-01 12:00","Language":"en"},"updated":"2025-06-01T12:00:00Z"}`,
			reg + `"tags":{"City":"Oslo","Country":"US","First Install":"2025-06-01 12:00","Language":"en","` + TagProfileName + `":"Ana"},"updated":"2025-06-01T12:00:01Z"}`,
			reg + `"tags":{"Country":"US","First Install":"2025-06-01 12:00","Language":"en","` + TagProfileName + `":"Ana"},"updated":"2025-06-01T12:00:03Z"}`,
			`{"v":1,"app":"shop","hwid":"whatsapp:+14155550100","registered":false,"tags":{"Country":"US","First Install":"2025-06-01 12:00","Language":"en","` + TagProfileName + `":"Ana"},"updated":"2025-06-01T12:00:04Z"}`,
		})
	f("app version, last application open",
		[][]*schemas.Event{
			{{ID: "o1", App: testApp, Kind: schemas.KindEvent, Name: schemas.EventApplicationOpen, Time: at(60), HWID: testHWID, AppVersion: "2.1.0"}},
			{{ID: "o2", App: testApp, Kind: schemas.KindEvent, Name: schemas.EventApplicationOpen, Time: at(120), HWID: testHWID}},
			{custom("c1", "OrderPlaced", at(130))},
		},
		[]string{
			`{"v":1,"app":"shop","hwid":"whatsapp:+14155550100","registered":false,"tags":{"Application Version":"2.1.0","Last Application Open":"2025-06-01 12:01"},"updated":"2025-06-01T12:01:00Z"}`,
			`{"v":1,"app":"shop","hwid":"whatsapp:+14155550100","registered":false,"tags":{"Application Version":"2.1.0","Last Application Open":"2025-06-01 12:02"},"updated":"2025-06-01T12:02:00Z"}`,
		})
	f("a user's own Language tag wins over the default one; user ids and anonymous ids key their profiles",
		[][]*schemas.Event{{
			{ID: "a", App: testApp, Kind: schemas.KindTags, Time: at(0), UserID: "u-1", Language: "nb", Tags: map[string]any{"Language": "Norsk"}},
			{ID: "b", App: testApp, Kind: schemas.KindTags, Time: at(1), AnonymousID: "anon-9", Tags: map[string]any{"Plan": "free"}},
		}},
		[]string{
			`{"v":1,"app":"shop","user_id":"u-1","registered":false,"tags":{"Language":"Norsk"},"updated":"2025-06-01T12:00:00Z"}`,
			`{"v":1,"app":"shop","anonymous_id":"anon-9","registered":false,"tags":{"Plan":"free"},"updated":"2025-06-01T12:00:01Z"}`,
		})
}
