package ingest

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
)

func TestSetTagsTypesAndOperations(t *testing.T) {
	h := newHarness(t, Config{})
	call := func(tags, types string) string {
		b := `{"request":{"application":"shop","userId":"u","tags":` + tags
		if types != "" {
			b += `,"tag_types":` + types
		}
		return b + `}}`
	}
	ok := []struct {
		name        string
		tags, types string
		wantTags    string // JSON of the event's tags
		wantTypes   map[string]string
		wantOps     map[string]string
	}{
		{
			"inferred", `{"n":3,"d":2.5,"b":true,"l":["a"],"s":"x","when":"2026-11-24 10:30"}`, "",
			`{"b":true,"d":2.5,"l":["a"],"n":3,"s":"x","when":"2026-11-24T10:30:00Z"}`,
			map[string]string{"n": "integer", "d": "decimal", "b": "boolean", "l": "list", "s": "string", "when": "date"},
			nil,
		},
		{
			"declared", `{"v":"2.10.1","born":"1990-05-01","seen":1750000000,"price":"19.99","code":123,"one":"solo"}`,
			`{"v":"version","born":"date","seen":"date","price":"decimal","code":"string","one":"list"}`,
			`{"born":"1990-05-01T00:00:00Z","code":"123","one":["solo"],"price":19.99,"seen":"2025-06-15T15:06:40Z","v":"2.10.1"}`,
			map[string]string{"v": "version", "born": "date", "seen": "date", "price": "decimal", "code": "string", "one": "list"},
			nil,
		},
		{
			"operations", `{"orders":{"operation":"increment","value":2},"spent":{"op":"increment","value":9.5},"foods":{"operation":"append","value":["thai"]},"old":{"operation":"remove","value":"pizza"}}`, "",
			`{"foods":["thai"],"old":["pizza"],"orders":2,"spent":9.5}`,
			map[string]string{"orders": "integer", "spent": "decimal", "foods": "list", "old": "list"},
			map[string]string{"orders": "increment", "spent": "increment", "foods": "append", "old": "remove"},
		},
		{"remove a tag", `{"gone":null}`, "", `{"gone":null}`, nil, nil},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			wantOK(t, h.post(pathSetTags, shopToken, call(tc.tags, tc.types)))
			evs := h.events(int(h.endOffset("herald.events.v1")))
			e := evs[len(evs)-1]
			got, _ := json.Marshal(e.Tags)
			if string(got) != tc.wantTags {
				t.Errorf("tags %s, want %s", got, tc.wantTags)
			}
			if !reflect.DeepEqual(e.TagTypes, tc.wantTypes) {
				t.Errorf("types %v, want %v", e.TagTypes, tc.wantTypes)
			}
			if !reflect.DeepEqual(e.TagOps, tc.wantOps) {
				t.Errorf("ops %v, want %v", e.TagOps, tc.wantOps)
			}
		})
	}
	before := h.endOffset("herald.events.v1")
	bad := []struct {
		name, tags, types, field string
	}{
		{"integer declared, decimal sent", `{"n":2.5}`, `{"n":"integer"}`, "request.tags.n"},
		{"boolean declared, string sent", `{"b":"yes"}`, `{"b":"boolean"}`, "request.tags.b"},
		{"bad version", `{"v":"1.2.beta"}`, `{"v":"version"}`, "request.tags.v"},
		{"too many version parts", `{"v":"1.2.3.4.5"}`, `{"v":"version"}`, "request.tags.v"},
		{"bad date", `{"d":"next tuesday"}`, `{"d":"date"}`, "request.tags.d"},
		{"date out of range", `{"d":"3000-01-01 00:00"}`, `{"d":"date"}`, "request.tags.d"},
		{"unknown type", `{"x":1}`, `{"x":"money"}`, "request.tag_types.x"},
		{"type for an absent tag", `{"x":1}`, `{"y":"integer"}`, "request.tag_types.y"},
		{"tag_types not an object", `{"x":1}`, `["integer"]`, "request.tag_types"},
		{"unknown operation", `{"n":{"operation":"double","value":2}}`, "", "request.tags.n.operation"},
		{"operation missing", `{"n":{"value":2}}`, "", "request.tags.n.operation"},
		{"value missing", `{"n":{"operation":"increment"}}`, "", "request.tags.n.value"},
		{"increment a string", `{"n":{"operation":"increment","value":"2"}}`, "", "request.tags.n.value"},
		{"increment a declared list", `{"n":{"operation":"increment","value":2}}`, `{"n":"list"}`, "request.tags.n"},
		{"increment integer by fraction", `{"n":{"operation":"increment","value":0.5}}`, `{"n":"integer"}`, "request.tags.n.value"},
		{"append a number", `{"l":{"operation":"append","value":5}}`, "", "request.tags.l.value"},
		{"append numbers", `{"l":{"operation":"append","value":[1]}}`, "", "request.tags.l.value"},
		{"stray key in operation", `{"l":{"operation":"append","value":["a"],"extra":1}}`, "", "request.tags.l.extra"},
		{"nested object", `{"address":{"city":"Berlin"}}`, "", "request.tags.address"},
		{"list of lists", `{"l":[["a"]]}`, "", "request.tags.l"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.post(pathSetTags, shopToken, call(tc.tags, tc.types)), http.StatusBadRequest, tc.field)
		})
	}
	if n := h.endOffset("herald.events.v1"); n != before {
		t.Fatalf("%d records after refused calls, want %d", n, before)
	}
}
