package segmenter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestCampaignTemplates: campaigns are checked, when created or previewed,
// against the app's templates on TopicTemplates (as the dispatcher's sync
// and ingest's webhooks write them), and take the template's category.
func TestCampaignTemplates(t *testing.T) {
	c := kafkatest.New(t, 2)
	reg, err := apps.New([]apps.App{
		{ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{testPNID}, WABAID: "waba-1"}},
		{ID: "news", APIToken: "news-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{"222"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	def := func(name, lang, category, status string, body int) *kgo.Record {
		d := &schemas.TemplateDef{
			App: testApp, WABAID: "waba-1", ID: "id-" + name + lang, Name: name, Language: lang, Category: category,
			Status: status, BodyParams: body, Synced: now.Add(-time.Hour),
		}
		b, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: schemas.TopicTemplates, Key: d.Key(), Value: b}
	}
	sig := &schemas.TemplateSignal{
		App: testApp, EventID: "e1", Time: now.Add(-time.Minute), Received: now.Add(-time.Minute),
		Template: schemas.TemplateUpdate{Field: schemas.FieldTemplateStatusUpdate, Name: "winter_sale", Language: "en_US", Event: "PAUSED"},
	}
	sb, err := sig.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	produce(t, c,
		def("order_update", "en_US", "UTILITY", schemas.TemplateApproved, 1),
		def("order_update", "pt_BR", "UTILITY", schemas.TemplateApproved, 1),
		def("promo_offer", "en_US", "MARKETING", schemas.TemplateApproved, 1),
		def("winter_sale", "en_US", "MARKETING", schemas.TemplateApproved, 0),
		def("new_promo", "en_US", "MARKETING", schemas.TemplatePending, 0),
		&kgo.Record{Topic: schemas.TopicTemplates, Key: sig.Key(), Value: sb, Headers: []kgo.RecordHeader{{Key: schemas.HeaderRecord, Value: []byte(schemas.RecordTemplateSignal)}}},
		record(t, &schemas.Event{
			ID: "r1", App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered, Time: now,
			HWID: testHWID, DeviceType: schemas.DeviceWhatsApp, Country: "NO", Tags: map[string]any{"City": "Oslo"},
		}),
	)
	s, _, _ := runSegmenter(t, c, now)
	waitCommitted(t, kadm.NewClient(c.Client(t)))
	h := s.APIHandler(reg)
	preview := func(token, app, extra string) (int, map[string]any) {
		t.Helper()
		body := fmt.Sprintf(`{"request":{"application":%q,"devices_filter":"A(\"%s\")",%s}}`, app, app, extra)
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/previewTargetedMessage", strings.NewReader(body))
		req.Header.Set("Authorization", "Token "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%q is not JSON", rec.Body)
		}
		return rec.Code, m
	}
	const shop = "shop-token-0123456789"
	for _, tt := range []struct {
		name, extra string
		code        int
		field, msg  string
	}{
		{"approved, category from the template", `"template":"order_update","content_variables":{"1":"A-1"}`, 200, "", ""},
		{"unknown", `"template":"order_updat","content_variables":{"1":"x"}`, 400, "request.template", `"order_updat" is not a template of the app's WhatsApp Business account waba-1`},
		{"other language", `"template":"order_update","language":"de_DE","content_variables":{"1":"x"}`, 400, "request.language", "it is in en_US, pt_BR"},
		{"paused by webhook", `"template":"winter_sale"`, 400, "request.template", "is PAUSED: only APPROVED templates send"},
		{"pending", `"template":"new_promo"`, 400, "request.template", "is PENDING"},
		{"variables do not fit", `"template":"promo_offer","content_variables":{"1":"a","2":"b"}`, 400, "request.content_variables", "request.content_variables has 2 parameters, the template's body takes 1"},
		{"category against the template's", `"template":"order_update","category":"MARKETING","content_variables":{"1":"x"}`, 400, "request.category", "is MARKETING, but template \"order_update\" is UTILITY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, m := preview(shop, testApp, tt.extra)
			msg, _ := m["status_message"].(string)
			if code != tt.code || (tt.code != 200 && (m["field"] != tt.field || !strings.Contains(msg, tt.msg))) {
				t.Fatalf("got %d %v, want %d %s %q", code, m, tt.code, tt.field, tt.msg)
			}
			if tt.code == 200 {
				resp := m["response"].(map[string]any)
				if resp["category_source"] != "template" || resp["audience"] != 1.0 {
					t.Fatalf("preview %v: want category_source template and an audience of 1", resp)
				}
			}
		})
	}
	// An app without templates on the topic is not checked.
	if code, m := preview("news-token-0123456789", "news", `"template":"anything"`); code != 200 {
		t.Fatalf("unchecked app: %d %v", code, m)
	}
}
