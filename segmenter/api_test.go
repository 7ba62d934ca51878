package segmenter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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

// TestCampaignAPI: createTargetedMessage fans a campaign out to every
// partition; each partition's owner sends to its matching users, once.
func TestCampaignAPI(t *testing.T) {
	c := kafkatest.New(t, 4)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{testPNID}}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	var recs []*kgo.Record
	for i := range 20 {
		hwid := fmt.Sprintf("whatsapp:+1415555%04d", i)
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister,
			Name: schemas.EventDeviceRegistered, Time: now, HWID: hwid, DeviceType: schemas.DeviceWhatsApp, Country: "NO",
			Tags: map[string]any{"City": []string{"Oslo", "Bergen"}[i%2], "Name": fmt.Sprintf("U%d", i)},
		}))
	}
	produce(t, c, recs...)
	s, _, _ := runSegmenter(t, c, now)
	adm := kadm.NewClient(c.Client(t))
	waitCommitted(t, adm)
	h := s.APIHandler(reg)
	call := func(body string) (int, string) {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/createTargetedMessage", strings.NewReader(body))
		req.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	body := `{"request":{"application":"shop","name":"oslo-week","devices_filter":"T(\"City\", EQ, \"Oslo\")",
		"template":"promo_offer","content_variables":{"1":"{{tag:Name|there}}"},"campaign_id":"oslo-1"}}`
	// A preview first: the counts of every partition, nothing sent.
	preq := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/previewTargetedMessage", strings.NewReader(body))
	preq.Header.Set("Authorization", "Token shop-token-0123456789")
	prec := httptest.NewRecorder()
	h.ServeHTTP(prec, preq)
	want := `"response":{"audience":10,"by_country":{"NO":10},"category_source":"assumed_marketing","deferred":0,"empty_param":0,` +
		`"estimated_cost":{"currency":"USD","total":0.592,"rules":"2025-07","rate_card":"meta_usd_2026-01-01.csv (embedded): Cost per message in USD on the WhatsApp Business Platform, effective January 1, 2026",` +
		`"lines":[{"category":"MARKETING","country":"NO","market":"Rest of Western Europe","count":10,"billable":10,"rate":0.0592,"amount":0.592}]},` +
		`"frequency_cap":0,"no_whatsapp":0,"opted_out":0,"outside_window":10,"partitions":4,"quiet_hours":0,"sendable":10,"tier":"unlimited","tier_headroom":"unlimited","tier_used":0,"unregistered":0}`
	if prec.Code != 200 || !strings.Contains(prec.Body.String(), want) {
		t.Fatalf("preview: %d %s\nwant %s", prec.Code, prec.Body, want)
	}
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != 0 {
		t.Fatalf("the preview sent %d requests", n)
	}
	if code, ans := call(body); code != 200 || !strings.Contains(ans, `"campaign":"oslo-1","partitions":4`) {
		t.Fatalf("createTargetedMessage: %d %s", code, ans)
	}
	got := c.ReadAll(t, schemas.TopicDispatch, 10)
	ds, _ := decodeOutputs(t, got)
	seen := map[string]bool{}
	for _, d := range ds {
		n, _ := strconv.Atoi(d.To[len(d.To)-2:])
		if n%2 != 0 || d.Template.Body[0] != fmt.Sprintf("U%d", n) || d.Template.Category != CategoryMarketing || d.Source.Name != "oslo-week" || seen[d.ID] {
			t.Fatalf("request %s", dump([]*schemas.DispatchRequest{d}))
		}
		seen[d.ID] = true
	}
	if len(seen) != 10 {
		t.Fatalf("%d requests, want the 10 Oslo users", len(seen))
	}
	waitCommitted(t, adm)
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != 10 {
		t.Fatalf("%d requests on the topic, want 10", n)
	}
	for _, tt := range []struct{ name, body, field string }{
		{"no template", `{"request":{"application":"shop","devices_filter":"A(\"shop\")"}}`, "request.template"},
		{"bad filter", `{"request":{"application":"shop","template":"t","devices_filter":"T("}}`, "request.devices_filter"},
		{"unknown segment", `{"request":{"application":"shop","template":"t","filter":"nope"}}`, "request.filter"},
		{"gap in variables", `{"request":{"application":"shop","template":"t","devices_filter":"A(\"shop\")","content_variables":{"2":"x"}}}`, "request.content_variables.2"},
		{"bad date", `{"request":{"application":"shop","template":"t","devices_filter":"A(\"shop\")","send_date":"tomorrow"}}`, "request.send_date"},
		{"bad category", `{"request":{"application":"shop","template":"t","devices_filter":"A(\"shop\")","category":"SPAM"}}`, "request.category"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, ans := call(tt.body)
			if code/100 != 4 || !strings.Contains(ans, `"field":"`+tt.field+`"`) {
				t.Fatalf("%d %s, want a 4xx naming %s", code, ans, tt.field)
			}
		})
	}
}
