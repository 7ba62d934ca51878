package segmenter

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
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
				tags: map[string]Tag{
					"first_name": {Kind: TagString, Str: "Ana"},
					"points":     {Kind: TagNumber, Num: 42.5},
					"vip":        {Kind: TagBool, Bool: true},
					"cuisines":   {Kind: TagList, List: []string{"asian", "thai", "3", "false"}},
				},
				FirstSeen: at(0), LastSeen: at(0), FirstInstall: at(0),
				Events: []EventCount{{Name: schemas.EventDeviceRegistered, Count: 1, First: at(0), Last: at(0)}},
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
				tags:      map[string]Tag{"b": {Kind: TagString, Str: "2"}, "c": {Kind: TagNumber, Num: 7}},
				FirstSeen: at(0), LastSeen: at(1), FirstInstall: at(0),
				Events: []EventCount{{Name: schemas.EventDeviceRegistered, Count: 1, First: at(0), Last: at(0)}},
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
				tags:      map[string]Tag{"a": {Kind: TagString, Str: "1"}},
				FirstSeen: at(0), LastSeen: at(2), FirstInstall: at(0),
				Events: []EventCount{
					{Name: schemas.EventDeviceRegistered, Count: 1, First: at(0), Last: at(0)},
					{Name: schemas.EventDeviceUnregistered, Count: 1, First: at(2), Last: at(2)},
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
					{Name: "Purchase", Count: 3, First: at(3), Last: at(9)},
					{Name: "PW_ApplicationOpen", Count: 1, First: at(4), Last: at(4)},
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
				tags:      map[string]Tag{TagProfileName: {Kind: TagString, Str: "Ana"}},
				FirstSeen: at(0), LastSeen: at(1), LastInbound: at(1),
				Events: []EventCount{{Name: schemas.EventWhatsAppReceived, Count: 2, First: at(0), Last: at(1)}},
			},
		},
		{
			name: "status only counts",
			events: []*schemas.Event{{
				ID: "s1", App: testApp, Kind: schemas.KindStatus, Time: at(3), HWID: testHWID, Country: "DE",
				Status: &schemas.Status{WAMID: "wamid.x", Status: "read"},
			}},
			want: &Profile{Events: []EventCount{{Name: schemas.EventWhatsAppStatus, Count: 1, First: at(3), Last: at(3)}}},
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
				Events: []EventCount{{Name: "Purchase", Count: 2, First: at(1), Last: at(2)}},
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
				FirstSeen: at(0), LastSeen: at(1).Add(time.Microsecond), FirstInstall: at(0),
				Events: []EventCount{
					{Name: schemas.EventDeviceRegistered, Count: 1, First: at(0), Last: at(0)},
					{Name: "X", Count: 1, First: at(1).Add(time.Microsecond), Last: at(1).Add(time.Microsecond)},
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

func TestProcessChannelsAndEventAttributes(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	order := func(id string, m int, attrs map[string]any) *schemas.Event {
		return &schemas.Event{ID: id, App: testApp, Kind: schemas.KindEvent, Name: "OrderPlaced", Time: at(m), HWID: testHWID, Attributes: attrs}
	}
	many := map[string]any{}
	for i := range MaxEventAttrs + 4 {
		many[fmt.Sprintf("a%02d", i)] = float64(i)
	}
	many["long"] = strings.Repeat("x", MaxAttrBytes+1)
	many["obj"] = map[string]any{"x": 1.0}
	push := func(id string, m int, tok string) *schemas.Event {
		return &schemas.Event{
			ID: id, App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: at(m),
			HWID: testHWID, DeviceType: schemas.DeviceAndroid, PushToken: tok,
		}
	}
	s := newTest(t, Config{})
	evs := []*schemas.Event{
		order("o1", 10, map[string]any{"cuisine": "asian", "total": 31.5, "items": []any{"maki", "gyoza"}}),
		order("o2", 5, map[string]any{"cuisine": "italian"}), // older: counts, keeps the latest attributes
		{
			ID: "r1", App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: at(20), HWID: testHWID,
			DeviceType: schemas.DeviceEmail, Email: "ana@example.com", AppVersion: "1.2.0",
		},
		{ID: "r0", App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: at(2), HWID: testHWID},
	}
	for i := range MaxPushTokens + 2 {
		evs = append(evs, push(fmt.Sprintf("p%d", i), 30+i, fmt.Sprintf("tok-%d", i)))
	}
	evs = append(evs, push("p-again", 50, "tok-5")) // a known token moves to the newest place
	s.process(t, records(t, evs...)...)
	p, ok := s.Profile(testApp, testHWID)
	if !ok {
		t.Fatal("no profile")
	}
	c, _ := p.Event("OrderPlaced")
	if c.Count != 2 || !c.First.Equal(at(5)) || !c.Last.Equal(at(10)) {
		t.Fatalf("OrderPlaced %+v", c)
	}
	if want := []Attr{
		{"cuisine", Tag{Kind: TagString, Str: "asian"}},
		{"items", Tag{Kind: TagList, List: []string{"maki", "gyoza"}}},
		{"total", Tag{Kind: TagNumber, Num: 31.5}},
	}; !reflect.DeepEqual(c.Attrs(), want) {
		t.Fatalf("attrs %+v, want %+v", c.Attrs(), want)
	}
	if p.Email != "ana@example.com" || p.AppVersion != "1.2.0" || !p.FirstInstall.Equal(at(2)) {
		t.Fatalf("email %q version %q first install %s", p.Email, p.AppVersion, p.FirstInstall)
	}
	want := []string{"tok-2", "tok-3", "tok-4", "tok-6", "tok-7", "tok-8", "tok-9", "tok-5"}
	if !slices.Equal(p.PushTokens, want) {
		t.Fatalf("push tokens %v, want %v", p.PushTokens, want)
	}

	// The attribute caps: the first MaxEventAttrs names in order, no long
	// strings, no objects; the rest counted as ignored.
	before := s.metric(t, "herald_segmenter_ignored_tags_total")
	s.process(t, record(t, order("o3", 60, many)))
	p, _ = s.Profile(testApp, testHWID)
	c, _ = p.Event("OrderPlaced")
	a00, _ := c.Attr("a00")
	a15, ok := c.Attr("a15")
	if len(c.Attrs()) != MaxEventAttrs || a00.Num != 0 || !ok || a15.Num != 15 {
		t.Fatalf("capped attrs %+v", c.Attrs())
	}
	if got := s.metric(t, "herald_segmenter_ignored_tags_total") - before; got != 6 {
		t.Fatalf("ignored %v attributes, want 6", got)
	}
}
