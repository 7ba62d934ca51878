package segmenter

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func TestProcessState(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	tests := []struct {
		name   string
		events []*schemas.Event
		want   *Profile
	}{
		{
			name: "register sets fields, typed tags and the whatsapp number",
			events: []*schemas.Event{register("r1", at(0), map[string]any{
				"first_name": "Ana", "points": 42.5, "vip": true, "cuisines": []any{"asian", "thai", 3.0, false},
			})},
			want: &Profile{
				Registered: true, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", WhatsApp: testPhone,
				Tags: map[string]Tag{
					"first_name": {Kind: TagString, Str: "Ana"},
					"points":     {Kind: TagNumber, Num: 42.5},
					"vip":        {Kind: TagBool, Bool: true},
					"cuisines":   {Kind: TagList, List: []string{"asian", "thai", "3", "false"}},
				},
				FirstSeen: at(0), LastSeen: at(0),
				Events: []EventCount{{Name: schemas.EventDeviceRegistered, Count: 1, Last: at(0)}},
			},
		},
		{
			name: "tags merge, null removes, objects are ignored",
			events: []*schemas.Event{
				register("r1", at(0), map[string]any{"a": "1", "b": "2"}),
				{ID: "t1", App: testApp, Kind: schemas.KindTags, Time: at(1), HWID: testHWID, Tags: map[string]any{
					"a": nil, "c": 7.0, "addr": map[string]any{"city": "Oslo"}, "nested": []any{[]any{"x"}}, "": "empty name",
				}},
			},
			want: &Profile{
				Registered: true, DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", WhatsApp: testPhone,
				Tags:      map[string]Tag{"b": {Kind: TagString, Str: "2"}, "c": {Kind: TagNumber, Num: 7}},
				FirstSeen: at(0), LastSeen: at(1),
				Events: []EventCount{{Name: schemas.EventDeviceRegistered, Count: 1, Last: at(0)}},
			},
		},
		{
			name: "unregister clears the registered mark and keeps the rest",
			events: []*schemas.Event{
				register("r1", at(0), map[string]any{"a": "1"}),
				{ID: "u1", App: testApp, Kind: schemas.KindUnregister, Name: schemas.EventDeviceUnregistered, Time: at(2), HWID: testHWID},
			},
			want: &Profile{
				DeviceType: schemas.DeviceWhatsApp, Language: "en", Country: "US", WhatsApp: testPhone,
				Tags:      map[string]Tag{"a": {Kind: TagString, Str: "1"}},
				FirstSeen: at(0), LastSeen: at(2),
				Events: []EventCount{
					{Name: schemas.EventDeviceRegistered, Count: 1, Last: at(0)},
					{Name: schemas.EventDeviceUnregistered, Count: 1, Last: at(2)},
				},
			},
		},
		{
			name: "events count per name, out of order times keep min and max",
			events: []*schemas.Event{
				custom("e1", "Purchase", at(5)),
				custom("e2", "Purchase", at(3)),
				custom("e3", "PW_ApplicationOpen", at(4)),
				custom("e4", "Purchase", at(9)),
			},
			want: &Profile{
				FirstSeen: at(3), LastSeen: at(9),
				Events: []EventCount{
					{Name: "Purchase", Count: 3, Last: at(9)},
					{Name: "PW_ApplicationOpen", Count: 1, Last: at(4)},
				},
			},
		},
		{
			name: "inbound opens the service window and sets number and profile name",
			events: []*schemas.Event{
				inbound("i1", testApp, "hello", "Ana", at(1)),
				inbound("i2", testApp, "again", "", at(0)), // late arrival: window stays at its latest
			},
			want: &Profile{
				Country: "US", WhatsApp: testPhone,
				Tags:      map[string]Tag{TagProfileName: {Kind: TagString, Str: "Ana"}},
				FirstSeen: at(0), LastSeen: at(1), LastInbound: at(1),
				Events: []EventCount{{Name: schemas.EventWhatsAppReceived, Count: 2, Last: at(1)}},
			},
		},
		{
			name: "status only counts",
			events: []*schemas.Event{{
				ID: "s1", App: testApp, Kind: schemas.KindStatus, Time: at(3), HWID: testHWID, Country: "DE",
				Status: &schemas.Status{WAMID: "wamid.x", Status: "read"},
			}},
			want: &Profile{Events: []EventCount{{Name: schemas.EventWhatsAppStatus, Count: 1, Last: at(3)}}},
		},
		{
			name: "a redelivered event id is not applied twice",
			events: []*schemas.Event{
				custom("e1", "Purchase", at(1)),
				custom("e2", "Purchase", at(2)),
				custom("e1", "Purchase", at(1)),
			},
			want: &Profile{
				FirstSeen: at(1), LastSeen: at(2),
				Events: []EventCount{{Name: "Purchase", Count: 2, Last: at(2)}},
			},
		},
		{
			name: "later fields win, sub-microsecond precision is dropped",
			events: []*schemas.Event{
				register("r1", at(0), nil),
				{ID: "e1", App: testApp, Kind: schemas.KindEvent, Name: "X", Time: at(1).Add(1500 * time.Nanosecond), HWID: testHWID, UserID: "u-7", Timezone: "Europe/Oslo", Country: "NO", Language: "nb"},
			},
			want: &Profile{
				Registered: true, DeviceType: schemas.DeviceWhatsApp, UserID: "u-7", Language: "nb", Timezone: "Europe/Oslo", Country: "NO", WhatsApp: testPhone,
				FirstSeen: at(0), LastSeen: at(1).Add(time.Microsecond),
				Events: []EventCount{
					{Name: schemas.EventDeviceRegistered, Count: 1, Last: at(0)},
					{Name: "X", Count: 1, Last: at(1).Add(time.Microsecond)},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTest(t, Config{})
			out := s.process(t, records(t, tt.events...)...)
			if len(out) != 0 {
				t.Fatalf("got %d output records, want none", len(out))
			}
			got, ok := s.Profile(testApp, testHWID)
			if !ok {
				t.Fatal("profile not found")
			}
			if err := equalProfile(got, tt.want); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestProcessEventNameCap(t *testing.T) {
	s := newTest(t, Config{})
	var es []*schemas.Event
	for i := range MaxEventNames + 1 {
		// Event i happens at minute i, except event 0 which is the newest.
		at := t0.Add(time.Duration(i) * time.Minute)
		if i == 0 {
			at = t0.Add(time.Hour * 2)
		}
		es = append(es, custom(fmt.Sprintf("e%d", i), fmt.Sprintf("name%d", i), at))
	}
	s.process(t, records(t, es...)...)
	p, ok := s.Profile(testApp, testHWID)
	if !ok {
		t.Fatal("profile not found")
	}
	if len(p.Events) != MaxEventNames {
		t.Fatalf("%d event names, want %d", len(p.Events), MaxEventNames)
	}
	// name1 was seen least recently and must be the one replaced.
	if _, ok := p.Event("name1"); ok {
		t.Error("name1 (least recently seen) was kept")
	}
	for _, n := range []string{"name0", "name2", fmt.Sprintf("name%d", MaxEventNames)} {
		if _, ok := p.Event(n); !ok {
			t.Errorf("%s was dropped", n)
		}
	}
}

func TestProcessMetrics(t *testing.T) {
	s := newTest(t, Config{})
	s.process(t, records(t,
		register("r1", t0, nil),
		custom("e1", "X", t0),
		custom("e1", "X", t0), // duplicate
		inbound("i1", testApp, "PROMO", "Ana", t0),
	)...)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"herald_segmenter_events_total", []string{"kind", "register"}, 1},
		{"herald_segmenter_events_total", []string{"kind", "event"}, 1},
		{"herald_segmenter_events_total", []string{"kind", "inbound"}, 1},
		{"herald_segmenter_duplicate_events_total", nil, 1},
		{"herald_segmenter_dispatch_requests_total", []string{"source", "keyword"}, 1},
		{"herald_segmenter_profiles", nil, 1},
		{"herald_segmenter_dead_letters_total", nil, 0},
	} {
		if got := s.metric(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
