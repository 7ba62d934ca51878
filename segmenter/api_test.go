package segmenter

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

func TestSegmentAPI(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{{ID: "shop", APIToken: "shop-token-0123456789"}, {ID: "news", APIToken: "news-token-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	s, _, _ := runSegmenter(t, c, now)
	h := s.APIHandler(reg)
	call := func(path, token, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Token "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s: answer %q is not JSON", path, rec.Body)
		}
		return rec.Code, m
	}
	const shop, news = "shop-token-0123456789", "news-token-0123456789"
	create := `{"request":{"application":"shop","name":"asian_food","filter_expression":"Event(\"OrderPlaced\", \"cuisine\", EQ, \"asian\")"}}`
	if code, m := call("/json/1.3/createFilter", shop, create); code != 200 || m["response"].(map[string]any)["name"] != "asian_food" {
		t.Fatalf("createFilter: %d %v", code, m)
	}
	// The definition is on the topic, keyed by app and name.
	recs := c.ReadAll(t, schemas.TopicSegments, 1)
	d, err := schemas.DecodeSegmentDef(recs[0].Value)
	if err != nil || string(recs[0].Key) != "shop|asian_food" || d.Filter != `Event("OrderPlaced", "cuisine", EQ, "asian")` {
		t.Fatalf("segment record %q %+v %v", recs[0].Key, d, err)
	}
	list := func(token, app string) string {
		t.Helper()
		code, m := call("/json/1.3/listFilters", token, `{"request":{"application":"`+app+`"}}`)
		if code != 200 {
			t.Fatalf("listFilters: %d %v", code, m)
		}
		b, _ := json.Marshal(m["response"])
		return string(b)
	}
	if got := list(shop, "shop"); got != `{"filters":[{"filter_expression":"Event(\"OrderPlaced\", \"cuisine\", EQ, \"asian\")","name":"asian_food"}]}` {
		t.Fatalf("shop's filters %s", got)
	}
	if got := list(news, "news"); got != `{"filters":[]}` {
		t.Fatalf("news sees %s", got)
	}

	for _, tt := range []struct {
		name, path, token, body string
		code                    int
		field, msg              string
	}{
		{"bad filter, with its column", "/json/1.3/createFilter", shop, `{"request":{"application":"shop","name":"x","filter_expression":"T(\"City\" EQ)"}}`, 400, "request.filter_expression", "column 10"},
		{"filter of another app", "/json/1.3/createFilter", shop, `{"request":{"application":"shop","name":"x","filter_expression":"A(\"news\")"}}`, 400, "request.filter_expression", "another app"},
		{"no name", "/json/1.3/createFilter", shop, `{"request":{"application":"shop","filter_expression":"A(\"shop\")"}}`, 400, "request.name", "required"},
		{"no filter", "/json/1.3/createFilter", shop, `{"request":{"application":"shop","name":"x"}}`, 400, "request.filter_expression", "required"},
		{"another app's token", "/json/1.3/createFilter", news, create, 403, "request.application", "does not belong"},
		{"no token", "/json/1.3/listFilters", "", `{"request":{"application":"shop"}}`, 401, "request.auth", "token is required"},
		{"malformed JSON", "/json/1.3/createFilter", shop, `{"request":`, 400, "body", "JSON"},
		{"delete unknown", "/json/1.3/deleteFilter", shop, `{"request":{"application":"shop","name":"nope"}}`, 404, "request.name", "no segment"},
		{"delete another app's", "/json/1.3/deleteFilter", news, `{"request":{"application":"news","name":"asian_food"}}`, 404, "request.name", "no segment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, m := call(tt.path, tt.token, tt.body)
			if code != tt.code || m["field"] != tt.field || !strings.Contains(m["status_message"].(string), tt.msg) {
				t.Fatalf("got %d %v, want %d naming %s (%q)", code, m, tt.code, tt.field, tt.msg)
			}
		})
	}
	if code, m := call("/json/1.3/deleteFilter", shop, `{"request":{"application":"shop","name":"asian_food"}}`); code != 200 {
		t.Fatalf("deleteFilter: %d %v", code, m)
	}
	if got := list(shop, "shop"); got != `{"filters":[]}` {
		t.Fatalf("after delete: %s", got)
	}
	if recs := c.ReadAll(t, schemas.TopicSegments, 2); len(recs) != 2 || recs[1].Value != nil {
		t.Fatalf("want a tombstone after the definition, got %d records", len(recs))
	}
}
