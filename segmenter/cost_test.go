package segmenter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/apps"
	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/internal/pricing"
	"github.com/heraldhq/herald/schemas"
)

// costCard is the rate card of TestPreviewCost, in Meta's layout, with
// round rates unlike the embedded card's (the test proves which was used).
const costCard = `"Cost per message in USD, test card",,,,
Market,Currency,Marketing,Utility,Authentication
India,$US,0.01,0.002,0.003
Rest of Africa,$US,0.02,0.004,0.004
Rest of Western Europe,$US,0.05,0.02,0.02
Other,$US,0.06,0.008,0.008
`

// TestPreviewCost runs the segmenter on kfake with a rate card file and
// checks the estimated cost previewTargetedMessage answers for a known
// audience, to the micro-unit: 4 users in India (two wrote an hour ago,
// so their service window is open; one opted out of marketing 30 hours
// ago), 3 in Kenya (Rest of Africa; one wrote), 2 in Norway (Rest of
// Western Europe), 1 in Estonia (in no region: Other), and one Indian user
// outside the segment.
func TestPreviewCost(t *testing.T) {
	c := kafkatest.New(t, 4)
	reg, err := apps.New([]apps.App{{ID: testApp, APIToken: "shop-token-0123456789", WhatsApp: apps.WhatsApp{PhoneNumberIDs: []string{testPNID}}}})
	if err != nil {
		t.Fatal(err)
	}
	card := filepath.Join(t.TempDir(), "rates.csv")
	if err := os.WriteFile(card, []byte(costCard), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	var recs []*kgo.Record
	user := func(i int, country, plan string) string {
		hwid := fmt.Sprintf("whatsapp:+1415555%04d", i)
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister,
			Name: schemas.EventDeviceRegistered, Time: now.Add(-48 * time.Hour), HWID: hwid, DeviceType: schemas.DeviceWhatsApp,
			Country: country, Tags: map[string]any{"Plan": plan},
		}))
		return hwid
	}
	wrote := func(hwid, text string, ago time.Duration) {
		e := inbound("in-"+hwid+text, testApp, text, "", now.Add(-ago))
		e.HWID, e.Inbound.From, e.Country = hwid, strings.TrimPrefix(hwid, "whatsapp:"), ""
		recs = append(recs, record(t, e))
	}
	for i := range 4 {
		hwid := user(i, "IN", "gold")
		switch i {
		case 0, 1:
			wrote(hwid, "hello", time.Hour)
		case 3:
			wrote(hwid, "STOP", 30*time.Hour)
		}
	}
	for i := 4; i < 7; i++ {
		if hwid := user(i, "KE", "gold"); i == 4 {
			wrote(hwid, "hello", 2*time.Hour)
		}
	}
	user(7, "NO", "gold")
	user(8, "NO", "gold")
	user(9, "EE", "gold")
	user(10, "IN", "silver")
	produce(t, c, recs...)
	s, _, _ := runSegmenterConfig(t, c, Config{Pricing: pricing.Config{File: card}}, now)
	adm := kadm.NewClient(c.Client(t))
	waitCommitted(t, adm)
	h := s.APIHandler(reg)
	preview := func(category string) map[string]string {
		t.Helper()
		body := `{"request":{"application":"shop","devices_filter":"T(\"Plan\", EQ, \"gold\")","template":"plan_news"` + category + `}}`
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/json/1.3/previewTargetedMessage", strings.NewReader(body))
		req.Header.Set("Authorization", "Token shop-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var env struct {
			Response map[string]json.RawMessage `json:"response"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &env) != nil {
			t.Fatalf("preview: %d %s", rec.Code, rec.Body)
		}
		out := map[string]string{}
		for k, v := range env.Response {
			out[k] = string(v)
		}
		return out
	}
	costOf := func(m map[string]string) string { return m["estimated_cost"] }
	const rateCard = `"rate_card":"` + "%s" + `: Cost per message in USD, test card"`
	head := `{"currency":"USD","total":%s,"rules":"2025-07",` + fmt.Sprintf(rateCard, card) + `,"lines":[`

	// MARKETING, named by the request: every sendable user is charged,
	// in the window or not; the opted-out user is not sendable.
	marketing := head + `{"category":"MARKETING","country":"EE","market":"Other","count":1,"billable":1,"rate":0.06,"amount":0.06},` +
		`{"category":"MARKETING","country":"IN","market":"India","count":3,"billable":3,"rate":0.01,"amount":0.03},` +
		`{"category":"MARKETING","country":"KE","market":"Rest of Africa","count":3,"billable":3,"rate":0.02,"amount":0.06},` +
		`{"category":"MARKETING","country":"NO","market":"Rest of Western Europe","count":2,"billable":2,"rate":0.05,"amount":0.1}]}`
	m := preview(`,"category":"MARKETING"`)
	if got, want := costOf(m), fmt.Sprintf(marketing, "0.25"); got != want || m["category_source"] != `"request"` || m["sendable"] != "9" || m["outside_window"] != "6" {
		t.Fatalf("MARKETING preview: source %v, sendable %v, outside %v, cost\n got %s\nwant %s", m["category_source"], m["sendable"], m["outside_window"], got, want)
	}
	// No category: MARKETING is assumed, and the answer says so.
	m = preview(``)
	if got, want := costOf(m), fmt.Sprintf(marketing, "0.25"); got != want || m["category_source"] != `"assumed_marketing"` {
		t.Fatalf("preview without a category: source %v, cost\n got %s\nwant %s", m["category_source"], got, want)
	}
	// UTILITY: the opted-out user is sendable; the three users whose
	// window is open cost nothing.
	m = preview(`,"category":"utility"`)
	utility := head + `{"category":"UTILITY","country":"EE","market":"Other","count":1,"billable":1,"rate":0.008,"amount":0.008},` +
		`{"category":"UTILITY","country":"IN","market":"India","count":4,"billable":2,"rate":0.002,"amount":0.004},` +
		`{"category":"UTILITY","country":"KE","market":"Rest of Africa","count":3,"billable":2,"rate":0.004,"amount":0.008},` +
		`{"category":"UTILITY","country":"NO","market":"Rest of Western Europe","count":2,"billable":2,"rate":0.02,"amount":0.04}]}`
	if got, want := costOf(m), fmt.Sprintf(utility, "0.06"); got != want || m["category_source"] != `"request"` || m["sendable"] != "10" || m["outside_window"] != "7" {
		t.Fatalf("UTILITY preview: source %v, sendable %v, outside %v, cost\n got %s\nwant %s", m["category_source"], m["sendable"], m["outside_window"], got, want)
	}
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != 0 {
		t.Fatalf("the previews sent %d requests", n)
	}
}

// TestPreviewRecordWindow: a partition's preview record carries the
// category and, per country, the users outside the service window when
// their message is due (a message scheduled past the window's end counts
// as outside).
func TestPreviewRecordWindow(t *testing.T) {
	s := newTest(t, Config{})
	now := t0.Add(testNow)
	var recs []*kgo.Record
	for i, country := range []string{"IN", "IN", "BR"} {
		hwid := fmt.Sprintf("whatsapp:+1415555%04d", i)
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister,
			Name: schemas.EventDeviceRegistered, Time: t0, HWID: hwid, DeviceType: schemas.DeviceWhatsApp, Country: country,
		}))
		if i < 2 { // users 0 and 1 wrote: their window is open until t0+23h
			e := inbound(fmt.Sprintf("in%d", i), testApp, "hello", "", t0.Add(-time.Hour))
			e.HWID, e.Inbound.From, e.Country = hwid, strings.TrimPrefix(hwid, "whatsapp:"), ""
			recs = append(recs, record(t, e))
		}
	}
	s.process(t, recs...)
	pv := func(c *schemas.Campaign) *schemas.CampaignPreview {
		t.Helper()
		c.Preview = true
		var got *schemas.CampaignPreview
		for _, r := range s.process(t, campaignRecord(t, 0, c)) {
			if r.Topic == schemas.TopicPreviews {
				p, err := schemas.DecodeCampaignPreview(r.Value)
				if err != nil {
					t.Fatal(err)
				}
				got = p
			}
		}
		if got == nil {
			t.Fatal("no preview record")
		}
		return got
	}
	c := &schemas.Campaign{
		ID: "u-now", Filter: `T("Registered", EQ, true)`, Sender: testPNID,
		Template: schemas.Template{Name: "notice", Language: "en_US", Category: CategoryUtility},
	}
	got := pv(c)
	if got.Category != CategoryUtility || got.Sendable != 3 || got.OutsideWindow != 1 ||
		fmt.Sprint(got.ByCountry) != "map[BR:1 IN:2]" || fmt.Sprint(got.OutsideByCountry) != "map[BR:1]" {
		t.Fatalf("sent now: %+v", got)
	}
	c.ID, c.SendAt = "u-later", now.Add(30*time.Hour) // past the window's end
	if got := pv(c); got.OutsideWindow != 3 || fmt.Sprint(got.OutsideByCountry) != "map[BR:1 IN:2]" {
		t.Fatalf("sent in 30 h: %+v", got)
	}
}

// TestPreviewCounts: parts of older segmenters (no window split, no
// category) are counted as outside the window, under the campaign's
// category.
func TestPreviewCounts(t *testing.T) {
	parts := map[int32]*schemas.CampaignPreview{
		0: {Category: CategoryUtility, ByCountry: map[string]int{"IN": 5}, OutsideByCountry: map[string]int{"IN": 2}},
		1: {ByCountry: map[string]int{"IN": 3, "BR": 0}},                                                         // an older segmenter's
		2: {Category: "BOGUS", ByCountry: map[string]int{"BR": 4, "NO": -1}, OutsideByCountry: map[string]int{}}, // corrupt
	}
	tb, err := pricing.New(pricing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := tb.Estimate(previewCounts(parts, CategoryUtility))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range e.Lines {
		got = append(got, fmt.Sprintf("%s %s %d/%d %s", l.Category, l.Country, l.Billable, l.Count, l.Amount))
	}
	// India: 2 of part 0 and all 3 of part 1 outside, at 0.0014; Brazil:
	// all 4 inside (part 2 says none is outside), free.
	if want := "UTILITY BR 0/4 0|UTILITY IN 5/8 0.007"; strings.Join(got, "|") != want {
		t.Fatalf("lines %s, want %s", strings.Join(got, "|"), want)
	}
}
