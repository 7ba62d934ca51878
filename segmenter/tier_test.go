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

// TestPreviewTierHeadroom: the preview answers the app's messaging tier and
// the headroom the dispatchers' claims on TopicReach leave;
// createTargetedMessage refuses a campaign with more users outside the
// window than the headroom, unless allow_over_tier; campaign requests carry
// the user's window_until.
func TestPreviewTierHeadroom(t *testing.T) {
	const waba = "777"
	c := kafkatest.New(t, 4)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{
		PhoneNumberIDs: []string{testPNID}, WABAID: waba, MessagingTier: "250",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	// 245 recipients of the business reached in the last 24 h (as the
	// dispatchers claim them), and one claim of another business.
	var claims []*kgo.Record
	for i := range 246 {
		cl := &schemas.ReachClaim{ID: fmt.Sprintf("c%d", i), Business: waba, App: testApp, To: fmt.Sprintf("+4670000%04d", i), Tier: 250, Time: now.Add(-time.Hour)}
		if i == 245 {
			cl.Business = "other"
		}
		b, err := cl.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, &kgo.Record{Topic: schemas.TopicReach, Partition: 0, Key: cl.Key(), Value: b})
	}
	if err := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner())).ProduceSync(t.Context(), claims...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// 10 users in Oslo; one wrote an hour ago (inside its window).
	var recs []*kgo.Record
	for i := range 10 {
		hwid := fmt.Sprintf("whatsapp:+1415555%04d", i)
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister,
			Name: schemas.EventDeviceRegistered, Time: now, HWID: hwid, DeviceType: schemas.DeviceWhatsApp, Country: "NO",
			Tags: map[string]any{"City": "Oslo"},
		}))
	}
	in := inbound("in0", testApp, "hello", "U0", now.Add(-time.Hour))
	in.HWID, in.Inbound.From = "whatsapp:+14155550000", "+14155550000"
	recs = append(recs, record(t, in))
	produce(t, c, recs...)
	s, _, _ := runSegmenter(t, c, now)
	adm := kadm.NewClient(c.Client(t))
	waitCommitted(t, adm)
	h := s.APIHandler(reg)
	call := func(path, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s: answer %q is not JSON", path, rec.Body)
		}
		return rec.Code, m
	}
	body := func(extra string) string {
		return `{"request":{"application":"shop","devices_filter":"T(\"City\", EQ, \"Oslo\")","template":"promo_offer","category":"UTILITY",` +
			`"content_variables":{"1":"x"}` + extra + `}}`
	}
	code, m := call("/json/1.3/previewTargetedMessage", body(""))
	if code != 200 {
		t.Fatalf("preview: %d %v", code, m)
	}
	r, _ := m["response"].(map[string]any)
	if r["tier"] != 250.0 || r["tier_used"] != 245.0 || r["tier_headroom"] != 5.0 || r["outside_window"] != 9.0 || r["sendable"] != 10.0 {
		t.Fatalf("preview: tier %v used %v headroom %v outside_window %v sendable %v, want 250 245 5 9 10",
			r["tier"], r["tier_used"], r["tier_headroom"], r["outside_window"], r["sendable"])
	}
	code, m = call("/json/1.3/createTargetedMessage", body(`,"campaign_id":"over"`))
	if code != 400 || m["field"] != "request.allow_over_tier" || !strings.Contains(m["status_message"].(string), "room for 5") {
		t.Fatalf("createTargetedMessage over the tier: %d %v, want 400 naming request.allow_over_tier", code, m)
	}
	waitCommitted(t, adm)
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != 0 {
		t.Fatalf("the refused campaign sent %d requests", n)
	}
	code, m = call("/json/1.3/createTargetedMessage", body(`,"campaign_id":"over","allow_over_tier":true`))
	if code != 200 {
		t.Fatalf("createTargetedMessage with allow_over_tier: %d %v", code, m)
	}
	if r, _ := m["response"].(map[string]any); r["tier_headroom"] != 5.0 || r["outside_window"] != 9.0 {
		t.Fatalf("createTargetedMessage answer %v", m)
	}
	ds, _ := decodeOutputs(t, c.ReadAll(t, schemas.TopicDispatch, 10))
	withWindow := 0
	for _, d := range ds {
		if !d.WindowUntil.IsZero() {
			withWindow++
			if d.To != "+14155550000" || !d.WindowUntil.Equal(now.Add(23*time.Hour)) {
				t.Fatalf("request to %s: window_until %v, want %v for +14155550000 only", d.To, d.WindowUntil, now.Add(23*time.Hour))
			}
		}
	}
	if len(ds) != 10 || withWindow != 1 {
		t.Fatalf("%d requests, %d with window_until: want 10 and 1", len(ds), withWindow)
	}
}
