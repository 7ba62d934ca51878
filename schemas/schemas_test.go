package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestJSONSchemaMatchesGo keeps the JSON Schema files and the Go types in
// step: the same property names at every level, and every property the
// schema requires is one the Go type always writes (no omitempty).
func TestJSONSchemaMatchesGo(t *testing.T) {
	tests := []struct {
		file string
		typ  reflect.Type
	}{
		{"event.v1.json", reflect.TypeFor[Event]()},
		{"dispatch.v1.json", reflect.TypeFor[DispatchRequest]()},
		{"outcome.v1.json", reflect.TypeFor[Outcome]()},
		{"deadletter.v1.json", reflect.TypeFor[DeadLetter]()},
		{"tags.v1.json", reflect.TypeFor[ProfileTags]()},
		{"segment.v1.json", reflect.TypeFor[SegmentDef]()},
		{"tagdef.v1.json", reflect.TypeFor[TagDef]()},
		{"journey.v1.json", reflect.TypeFor[JourneyDef]()},
		{"preview.v1.json", reflect.TypeFor[CampaignPreview]()},
		{"schedule_release.v1.json", reflect.TypeFor[ScheduleRelease]()},
		{"template.v1.json", reflect.TypeFor[TemplateDef]()},
		{"template_signal.v1.json", reflect.TypeFor[TemplateSignal]()},
		{"sender_state.v1.json", reflect.TypeFor[SenderState]()},
		{"reach_claim.v1.json", reflect.TypeFor[ReachClaim]()},
		{"suppression.v1.json", reflect.TypeFor[Suppression]()},
		{"delivery_mark.v1.json", reflect.TypeFor[DeliveryMark]()},
		{"facts.v1.json", reflect.TypeFor[DispatchFacts]()},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := JSONSchema.ReadFile("jsonschema/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var s map[string]any
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatalf("schema is not JSON: %v", err)
			}
			compare(t, tt.file, s, tt.typ)
		})
	}
}

func compare(t *testing.T, path string, schema map[string]any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	props, _ := schema["properties"].(map[string]any)
	if props == nil {
		t.Fatalf("%s: no properties", path)
	}
	goFields := map[string]reflect.StructField{}
	omit := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		goFields[name] = f
		omit[name] = strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")
	}
	var missing, extra []string
	for name := range goFields {
		if _, ok := props[name]; !ok {
			missing = append(missing, name)
		}
	}
	for name := range props {
		if _, ok := goFields[name]; !ok {
			extra = append(extra, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s: fields in Go but not in the schema %v; in the schema but not in Go %v", path, missing, extra)
	}
	req, _ := schema["required"].([]any)
	for _, r := range req {
		name := r.(string)
		if omit[name] {
			t.Errorf("%s: schema requires %q but Go omits it when empty", path, name)
		}
	}
	for name, f := range goFields {
		sub, _ := props[name].(map[string]any)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			compare(t, path+"."+name, sub, ft)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ev := &Event{
		ID: "e1", App: "demo", Kind: KindInbound, Name: EventWhatsAppReceived, Time: now, Received: now,
		HWID: "whatsapp:+14155550100", Inbound: &Inbound{PhoneNumberID: "100", From: "+14155550100", WAMID: "wamid.1", Type: "text", Text: "PROMO"},
	}
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ev) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, ev)
	}
	if !bytes.Equal(got.Key(), []byte("demo|whatsapp:+14155550100")) {
		t.Fatalf("key %q", got.Key())
	}
}

func TestDecodeErrors(t *testing.T) {
	now := time.Now().UTC()
	valid := func() *Event {
		return &Event{ID: "e", App: "a", Kind: KindEvent, Name: "x", Time: now, Received: now, UserID: "u"}
	}
	f := func(name string, in []byte, want error, wantMsg string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			_, err := DecodeEvent(in)
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
			if !strings.Contains(err.Error(), wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, wantMsg)
			}
		})
	}
	mk := func(mut func(*Event)) []byte {
		e := valid()
		mut(e)
		b, _ := e.Marshal()
		return b
	}
	f("not json", []byte("{"), ErrInvalid, "decoding json")
	f("version 2", []byte(`{"v":2}`), ErrVersion, "v=2")
	f("no version", []byte(`{"id":"x"}`), ErrVersion, "v=0")
	f("no id", mk(func(e *Event) { e.ID = "" }), ErrInvalid, "id is required")
	f("bad app", mk(func(e *Event) { e.App = "a|b" }), ErrInvalid, "not a valid app id")
	f("no user", mk(func(e *Event) { e.UserID = "" }), ErrInvalid, "hwid, user_id or anonymous_id")
	f("bad tag op", mk(func(e *Event) { e.Kind, e.TagOps = KindTags, map[string]string{"n": "double"} }), ErrInvalid, "tag_ops.n")
	f("alias without previous", mk(func(e *Event) { e.Kind = KindAlias }), ErrInvalid, "previous_id")
	f("template without body", mk(func(e *Event) { e.Kind = KindTemplate }), ErrInvalid, "template.field")
	f("template without name", mk(func(e *Event) {
		e.Kind, e.Template = KindTemplate, &TemplateUpdate{Field: "message_template_status_update"}
	}), ErrInvalid, "template.name")
	f("no name", mk(func(e *Event) { e.Name = "" }), ErrInvalid, "name is required")
	f("unknown kind", mk(func(e *Event) { e.Kind = "nope" }), ErrInvalid, "unknown kind")
	f("inbound without body", mk(func(e *Event) { e.Kind = KindInbound }), ErrInvalid, "inbound.from")
	f("status without body", mk(func(e *Event) { e.Kind = KindStatus }), ErrInvalid, "status.wamid")
}

func TestDispatchValidate(t *testing.T) {
	now := time.Now()
	base := func() DispatchRequest {
		return DispatchRequest{
			ID: "d", App: "a", Channel: ChannelWhatsApp, Sender: "100", To: "+14155550100",
			Template: &Template{Name: "promo_offer", Language: "en_US"}, Created: now, Deadline: now.Add(time.Hour),
		}
	}
	tests := []struct {
		name string
		mut  func(*DispatchRequest)
		want string
	}{
		{"valid template", func(*DispatchRequest) {}, ""},
		{"valid text", func(d *DispatchRequest) { d.Template = nil; d.Text = &Text{Body: "hi"} }, ""},
		{"both", func(d *DispatchRequest) { d.Text = &Text{Body: "hi"} }, "exactly one"},
		{"neither", func(d *DispatchRequest) { d.Template = nil }, "exactly one"},
		{"no sender", func(d *DispatchRequest) { d.Sender = "" }, "sender is required"},
		{"template no language", func(d *DispatchRequest) { d.Template.Language = "" }, "template.name and template.language"},
		{"empty text", func(d *DispatchRequest) { d.Template = nil; d.Text = &Text{} }, "text.body"},
		{"bad channel", func(d *DispatchRequest) { d.Channel = "fax" }, "unknown channel"},
		{"no to", func(d *DispatchRequest) { d.To = "" }, "to is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			tt.mut(&d)
			b, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeDispatchRequest(b)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSendAt checks that send_at is left out when zero (omitempty would not
// leave out a zero time.Time), round-trips when set, and is required on
// TopicScheduled only.
func TestSendAt(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := DispatchRequest{
		ID: "d", App: "a", Channel: ChannelWhatsApp, Sender: "100", To: "+14155550100",
		Template: &Template{Name: "promo_offer", Language: "en_US"}, Source: Source{Kind: "api"}, Created: now, Deadline: now.Add(time.Hour),
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("send_at")) {
		t.Fatalf("zero send_at is written: %s", b)
	}
	if _, err := ValidateRecord(TopicDispatch, b, true); err != nil {
		t.Fatalf("dispatch without send_at: %v", err)
	}
	if _, err := ValidateRecord(TopicScheduled, b, true); err == nil || !strings.Contains(err.Error(), "send_at is required") {
		t.Fatalf("scheduled without send_at: err = %v, want send_at is required", err)
	}
	d.SendAt = now.Add(48 * time.Hour)
	if b, err = d.Marshal(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"send_at":"2026-11-25T10:00:00Z"`)) {
		t.Fatalf("send_at not written: %s", b)
	}
	key, err := ValidateRecord(TopicScheduled, b, true)
	if err != nil {
		t.Fatalf("scheduled with send_at: %v", err)
	}
	if string(key) != "a|+14155550100" {
		t.Fatalf("key %q", key)
	}
	got, err := DecodeDispatchRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SendAt.Equal(d.SendAt) {
		t.Fatalf("send_at %s, want %s", got.SendAt, d.SendAt)
	}

	r := &ScheduleRelease{ID: "d", Offset: 7, Released: now}
	rb, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	gr, err := DecodeScheduleRelease(rb)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gr, r) {
		t.Fatalf("release round trip: got %+v, want %+v", gr, r)
	}
	if _, err := DecodeScheduleRelease([]byte(`{"v":1,"released":"2026-11-23T10:00:00Z"}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("release without id: err = %v, want ErrInvalid", err)
	}
}

func TestKeys(t *testing.T) {
	if got := string(EventKey("a", "", "u1")); got != "a|user:u1" {
		t.Fatalf("EventKey without hwid = %q", got)
	}
	keys := []struct {
		e    Event
		want string
	}{
		{Event{App: "a", HWID: "whatsapp:+1", UserID: "u"}, "a|whatsapp:+1"},
		{Event{App: "a", UserID: "u", AnonymousID: "x"}, "a|user:u"},
		{Event{App: "a", AnonymousID: "x"}, "a|anon:x"},
		{Event{App: "a", Kind: KindTemplate, Template: &TemplateUpdate{Name: "promo", TemplateID: "9"}}, "a|template:promo"},
		{Event{App: "a", Kind: KindTemplate, Template: &TemplateUpdate{TemplateID: "9"}}, "a|template:9"},
	}
	for _, k := range keys {
		if got := string(k.e.Key()); got != k.want {
			t.Errorf("Key of %+v = %q, want %q", k.e, got, k.want)
		}
	}
	if got := string(RecipientKey("a", "+1")); got != "a|+1" {
		t.Fatalf("RecipientKey = %q", got)
	}
	for _, id := range []string{"", strings.Repeat("a", 65), "a|b", "a b", "ü"} {
		if ValidAppID(id) {
			t.Errorf("ValidAppID(%q) = true", id)
		}
	}
	for _, id := range []string{"demo", "ABCDE-12345", "a.b_c"} {
		if !ValidAppID(id) {
			t.Errorf("ValidAppID(%q) = false", id)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"e","app":"a","kind":"event","name":"x","time":"2026-01-01T00:00:00Z","user_id":"u"}`))
	f.Add([]byte(`{"v":1,"kind":"inbound","inbound":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeEvent(b)
		_, _ = DecodeDispatchRequest(b)
		_, _ = DecodeOutcome(b)
		_, _ = DecodeDeadLetter(b)
		_, _ = DecodeScheduleRelease(b)
		_, _ = DecodeTemplateDef(b)
		_, _ = DecodeTemplateSignal(b)
		_, _ = DecodeSenderState(b)
		_, _ = DecodeDispatchFacts(b)
	})
}

// TestTemplateRecords: both record types of TopicTemplates round-trip, carry
// distinct keys (so compaction keeps a template and its last signal), and
// name the field that is wrong.
func TestTemplateRecords(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := &TemplateDef{
		App: "shop", WABAID: "2001", ID: "123", Name: "order_shipped", Language: "en_US", Category: "UTILITY",
		Status: TemplateApproved, Header: &TemplateHeader{Format: HeaderText, Params: 1}, BodyParams: 2,
		Buttons: []TemplateButton{{Type: "QUICK_REPLY"}, {Type: "URL", URLParam: true}}, Synced: now,
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTemplateDef(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, d)
	}
	key, err := ValidateRecord(TopicTemplates, b, true)
	if err != nil {
		t.Fatalf("ValidateRecord: %v", err)
	}
	if string(key) != "shop|template:order_shipped/en_US" {
		t.Fatalf("template key %q", key)
	}

	s := &TemplateSignal{App: "shop", EventID: "e1", Time: now.Add(-time.Second), Received: now, Template: TemplateUpdate{
		Field: "message_template_status_update", WABAID: "2001", TemplateID: "123", Name: "order_shipped", Language: "en_US", Event: TemplatePaused,
	}}
	b, err = s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	gs, err := DecodeTemplateSignal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gs, s) {
		t.Fatalf("signal round trip:\n got %+v\nwant %+v", gs, s)
	}
	if k := string(s.Key()); k != "shop|template-signal:order_shipped/en_US" || k == string(d.Key()) {
		t.Fatalf("signal key %q (template key %q)", k, d.Key())
	}
	s.Template.Language = ""
	if k := string(s.Key()); k != "shop|template-signal:id:123" {
		t.Fatalf("signal key without language %q", k)
	}

	bad := []struct {
		name string
		mut  func(*TemplateDef)
		want string
	}{
		{"app", func(d *TemplateDef) { d.App = "a|b" }, "not a valid app id"},
		{"waba", func(d *TemplateDef) { d.WABAID = "" }, "waba_id is required"},
		{"language", func(d *TemplateDef) { d.Language = "" }, "name and language"},
		{"status", func(d *TemplateDef) { d.Status = "" }, "status is required"},
		{"body params", func(d *TemplateDef) { d.BodyParams = -1 }, "body_params -1"},
		{"header", func(d *TemplateDef) { d.Header = &TemplateHeader{} }, "header.format"},
		{"synced", func(d *TemplateDef) { d.Synced = time.Time{} }, "synced is required"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := *d
			tt.mut(&c)
			b, _ := c.Marshal()
			if _, err := DecodeTemplateDef(b); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	for name, in := range map[string]string{
		"no field":    `{"v":1,"app":"shop","event_id":"e","template":{"name":"x","language":"en"},"time":"2026-11-23T10:00:00Z","received":"2026-11-23T10:00:00Z"}`,
		"no template": `{"v":1,"app":"shop","event_id":"e","template":{"field":"message_template_status_update","name":"x"},"time":"2026-11-23T10:00:00Z","received":"2026-11-23T10:00:00Z"}`,
		"no received": `{"v":1,"app":"shop","event_id":"e","template":{"field":"message_template_status_update","template_id":"1"},"time":"2026-11-23T10:00:00Z"}`,
		"no time":     `{"v":1,"app":"shop","event_id":"e","template":{"field":"message_template_status_update","template_id":"1"},"received":"2026-11-23T10:00:00Z"}`,
	} {
		if _, err := DecodeTemplateSignal([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSenderState(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	s := &SenderState{
		Member: "m1", Sender: "1001", PeriodMS: 250, Demand: 300, Backlog: 64, Grant: 40,
		Rate: 56, Configured: 80, LoweredRate: 56, LoweredAt: now, LoweredCode: 130429, Time: now,
	}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ValidateRecord(TopicSenders, b, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != "m1" {
		t.Fatalf("key %q, want the member id", key)
	}
	got, err := DecodeSenderState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	// A member heartbeat leaves the lowering out.
	hb := &SenderState{Member: "m1", PeriodMS: 250, Time: now}
	if b, _ = hb.Marshal(); bytes.Contains(b, []byte("lowered")) {
		t.Fatalf("heartbeat writes lowered fields: %s", b)
	}
	f := func(name string, mut func(*SenderState), want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			c := *s
			mut(&c)
			b, _ := json.Marshal(&c)
			_, err := DecodeSenderState(b)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, want)
			}
		})
	}
	f("no member", func(c *SenderState) { c.Member = "" }, "member")
	f("long member", func(c *SenderState) { c.Member = strings.Repeat("m", 65) }, "member")
	f("no period", func(c *SenderState) { c.PeriodMS = 0 }, "period_ms")
	f("no time", func(c *SenderState) { c.Time = time.Time{} }, "time")
	f("negative grant", func(c *SenderState) { c.Grant = -1 }, "grant")
	f("negative backlog", func(c *SenderState) { c.Backlog = -1 }, "backlog")
}
