package segmenter

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestTagRegistrySeen: a tag name is recorded once, the first time a
// profile gets it, with the type of its value (or the event's tag_types),
// and again as mixed when a value of another type comes.
func TestTagRegistrySeen(t *testing.T) {
	s := newTest(t, Config{})
	tags := func(id string, tags map[string]any, types map[string]string) {
		t.Helper()
		s.process(t, record(t, &schemas.Event{ID: id, App: testApp, Kind: schemas.KindTags, Time: t0, HWID: testHWID, Tags: tags, TagTypes: types}))
	}
	got := func() map[string]string {
		m := map[string]string{}
		for _, d := range s.tagDefs {
			if d.App != testApp || d.Declared {
				t.Fatalf("unexpected record %+v", d)
			}
			m[d.Name] = d.Type
		}
		return m
	}
	tags("e1", map[string]any{"City": "Oslo", "Orders": 3.0, "Spent": 12.5, "VIP": true, "Cuisines": []any{"asian"}, "Last": "2026-11-24T10:30:00Z"},
		map[string]string{"Last": schemas.TagDate})
	want := map[string]string{"City": "string", "Orders": "integer", "Spent": "decimal", "VIP": "boolean", "Cuisines": "list", "Last": "date"}
	if g := got(); !equalMaps(g, want) {
		t.Fatalf("first sighting %v, want %v", g, want)
	}
	// Known names with values of the same type: nothing; integers are
	// decimals.
	tags("e2", map[string]any{"City": "Bergen", "Orders": 4.5, "VIP": false}, nil)
	if g := got(); len(g) != 0 {
		t.Fatalf("known tags recorded again: %v", g)
	}
	// Another type: mixed, once.
	tags("e3", map[string]any{"City": 7.0}, nil)
	tags("e4", map[string]any{"City": true}, nil)
	if g := got(); len(g) != 0 {
		t.Fatalf("mixed recorded twice: %v", g)
	}
	if d, _ := s.tagReg.lookup(testApp, "City"); d.typ() != schemas.TagMixed {
		t.Fatalf("City is %q, want mixed", d.typ())
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestTagRegistryAPI: filters are checked against the tags profiles have
// and the ones declared with addTag, across a restart, per app.
func TestTagRegistryAPI(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{{ID: "shop", APIToken: "shop-token-0123456789"}, {ID: "news", APIToken: "news-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	produce(t, c, record(t, &schemas.Event{
		ID: "r1", App: "shop", Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: now,
		HWID: testHWID, DeviceType: schemas.DeviceWhatsApp, Tags: map[string]any{"Cuisine": "asian", "Orders": 3.0},
	}))
	s, stop, _ := runSegmenter(t, c, now)
	waitCommitted(t, kadm.NewClient(c.Client(t)))
	type answer struct {
		code  int
		field string
		msg   string
		body  map[string]any
	}
	call := func(h http.Handler, path, token, req string) answer {
		t.Helper()
		r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(`{"request":`+req+`}`))
		r.Header.Set("Authorization", "Token "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s: %q is not JSON", path, rec.Body)
		}
		a := answer{code: rec.Code, body: m}
		a.field, _ = m["field"].(string)
		a.msg, _ = m["status_message"].(string)
		return a
	}
	const shop, news = "shop-token-0123456789", "news-token-0123456789"
	filter := func(h http.Handler, token, app, expr string) answer {
		t.Helper()
		b, _ := json.Marshal(map[string]string{"application": app, "name": "s", "filter_expression": expr})
		return call(h, "/json/1.3/createFilter", token, string(b))
	}
	h := s.APIHandler(reg)
	for _, tt := range []struct {
		name, token, app, expr string
		code                   int
		msg                    string
	}{
		{"seen tag", shop, "shop", `T("Cuisine", EQ, "asian")`, 200, ""},
		{"seen number", shop, "shop", `T("Orders", GTE, 2)`, 200, ""},
		{"default tag", shop, "shop", `T("Country", EQ, "NO")`, 200, ""},
		{"typo, with the closest name", shop, "shop", `T("Cusine", EQ, "asian")`, 400, `column 3: unknown tag "Cusine": no profile of the app has it and it was not declared with addTag (did you mean "Cuisine"?)`},
		{"case", shop, "shop", `A("shop") * T("cuisine", EQ, "asian")`, 400, `did you mean "Cuisine"?`},
		{"number compared with a string", shop, "shop", `T("Orders", EQ, "3")`, 400, `tag "Orders" is a number`},
		{"another app's tag", news, "news", `T("Cuisine", EQ, "asian")`, 400, `unknown tag "Cuisine"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := filter(h, tt.token, tt.app, tt.expr)
			if a.code != tt.code || (tt.code != 200 && (a.field != "request.filter_expression" || !strings.Contains(a.msg, tt.msg))) {
				t.Fatalf("got %d %q %q, want %d %q", a.code, a.field, a.msg, tt.code, tt.msg)
			}
		})
	}
	// Declared tags: accepted before any profile has them, and typed.
	for _, tt := range []struct {
		req, field string
		code       int
	}{
		{`{"application":"shop","tag":{"name":"Last Order","type":4}}`, "", 200},
		{`{"application":"shop","tag":{"name":"Plan","type":"string"}}`, "", 200},
		{`{"application":"shop","tag":{"name":"Plan","type":9}}`, "request.tag.type", 400},
		{`{"application":"shop","tag":{"name":"","type":2}}`, "request.tag.name", 400},
		{`{"application":"shop","tag":{"name":"Country","type":2}}`, "request.tag.name", 400},
		{`{"application":"shop"}`, "request.tag", 400},
	} {
		if a := call(h, "/json/1.3/addTag", shop, tt.req); a.code != tt.code || a.field != tt.field {
			t.Fatalf("addTag %s: %d %q %q", tt.req, a.code, a.field, a.msg)
		}
	}
	if a := filter(h, shop, "shop", `T("Last Order", GTE, "-30d") * T("Plan", IN, ["gold", "silver"])`); a.code != 200 {
		t.Fatalf("declared tags refused: %d %s", a.code, a.msg)
	}
	if a := filter(h, shop, "shop", `T("Last Order", EQ, "soon")`); a.code != 400 || !strings.Contains(a.msg, "is a time") {
		t.Fatalf("date tag compared with a string: %d %s", a.code, a.msg)
	}
	a := call(h, "/json/1.3/listTags", shop, `{"application":"shop"}`)
	b, _ := json.Marshal(a.body["response"])
	if want := `{"tags":[{"declared":false,"name":"Cuisine","type":2,"type_name":"string"},{"declared":true,"name":"Last Order","type":4,"type_name":"date"},{"declared":false,"name":"Orders","type":1,"type_name":"integer"},{"declared":true,"name":"Plan","type":2,"type_name":"string"}]}`; string(b) != want {
		t.Fatalf("listTags %s\nwant     %s", b, want)
	}
	if a := call(h, "/json/1.3/listTags", news, `{"application":"news"}`); a.code != 200 || !strings.Contains(a.msg, "OK") {
		t.Fatalf("news listTags: %d %s", a.code, a.msg)
	}
	if a := call(h, "/json/1.3/deleteTag", shop, `{"application":"shop","tag":{"name":"Plan"}}`); a.code != 200 {
		t.Fatalf("deleteTag: %d %s", a.code, a.msg)
	}
	if a := call(h, "/json/1.3/deleteTag", shop, `{"application":"shop","tag":{"name":"Cuisine"}}`); a.code != 404 || a.field != "request.tag.name" {
		t.Fatalf("deleteTag of a seen tag: %d %s", a.code, a.msg)
	}

	// A new segmenter reads the registry from the topic.
	stop()
	s2, _, _ := runSegmenter(t, c, now)
	h2 := s2.APIHandler(reg)
	if a := filter(h2, shop, "shop", `T("Cuisine", EQ, "asian") * T("Last Order", LTE, "2026-01-01")`); a.code != 200 {
		t.Fatalf("after restart: %d %s", a.code, a.msg)
	}
	if a := filter(h2, shop, "shop", `T("Plan", EQ, "gold")`); a.code != 400 || !strings.Contains(a.msg, `unknown tag "Plan"`) {
		t.Fatalf("deleted declaration still known after restart: %d %s", a.code, a.msg)
	}
}

// TestTagRegistrySeeConcurrent has two workers see the same new tags at
// once: a tag seen with one type by both is recorded once, and one seen as
// a number by one and a string by the other is recorded as each in turn,
// the second record mixed, and ends mixed.
func TestTagRegistrySeeConcurrent(t *testing.T) {
	const tags = 2000
	r := newTagRegistry()
	type rec struct{ name, typ string }
	var recs [2][]rec
	var wg sync.WaitGroup
	for w, typ := range []string{schemas.TagInteger, schemas.TagString} {
		wg.Go(func() {
			for i := range tags {
				same := "same" + strconv.Itoa(i)
				if got, ok := r.see("shop", same, schemas.TagInteger); ok {
					recs[w] = append(recs[w], rec{same, got})
				}
				both := "both" + strconv.Itoa(i)
				if got, ok := r.see("shop", both, typ); ok {
					recs[w] = append(recs[w], rec{both, got})
				}
			}
		})
	}
	wg.Wait()
	byName := map[string][]string{}
	for _, l := range recs {
		for _, r := range l {
			byName[r.name] = append(byName[r.name], r.typ)
		}
	}
	for i := range tags {
		same, both := "same"+strconv.Itoa(i), "both"+strconv.Itoa(i)
		if got := byName[same]; len(got) != 1 || got[0] != schemas.TagInteger {
			t.Fatalf("%s recorded as %v, want once as integer", same, got)
		}
		if got := byName[both]; len(got) != 2 || !slices.Contains(got, schemas.TagMixed) {
			t.Fatalf("%s recorded as %v, want a type and then mixed", both, got)
		}
		if d, _ := r.lookup("shop", both); d.seen != schemas.TagMixed {
			t.Fatalf("%s seen as %q, want mixed", both, d.seen)
		}
	}
	// A tag declared only is recorded once seen: as declared when it fits,
	// else mixed.
	r.update("shop", "points", func(d *tagDef) { d.declared = schemas.TagDecimal })
	r.update("shop", "plan", func(d *tagDef) { d.declared = schemas.TagString })
	if got, ok := r.see("shop", "points", schemas.TagInteger); !ok || got != schemas.TagInteger {
		t.Fatalf("declared decimal seen as integer: %q %v", got, ok)
	}
	if got, ok := r.see("shop", "plan", schemas.TagBoolean); !ok || got != schemas.TagMixed {
		t.Fatalf("declared string seen as boolean: %q %v", got, ok)
	}
	if _, ok := r.see("shop", "points", schemas.TagDecimal); ok {
		t.Fatal("a number seen again as a number recorded again")
	}
}
