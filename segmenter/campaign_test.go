package segmenter

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

func campaignRecord(t *testing.T, partition int32, c *schemas.Campaign) *kgo.Record {
	t.Helper()
	e := &schemas.Event{ID: c.ID + "-p" + fmt.Sprint(partition), App: testApp, Kind: schemas.KindCampaign, Time: t0, Received: t0, Campaign: c}
	r := record(t, e)
	r.Partition = partition
	return r
}

func TestCampaignRun(t *testing.T) {
	s := newTest(t, Config{})
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	user := func(i int, partition int32, tz string, tags map[string]any) []*kgo.Record {
		hwid := fmt.Sprintf("whatsapp:+1415555%04d", i)
		reg := &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: at(0), HWID: hwid, DeviceType: schemas.DeviceWhatsApp, Country: "US", Timezone: tz, Tags: tags,
		}
		order := &schemas.Event{
			ID: fmt.Sprintf("o%d", i), App: testApp, Kind: schemas.KindEvent, Name: "OrderPlaced", Time: at(1), HWID: hwid,
			Attributes: map[string]any{"cuisine": []string{"asian", "italian"}[i%2]},
		}
		recs := records(t, reg, order)
		for _, r := range recs {
			r.Partition = partition
		}
		return recs
	}
	var recs []*kgo.Record
	for i := range 6 { // even users ordered asian; users 0-3 on partition 0, 4-5 on 1
		part := int32(0)
		if i >= 4 {
			part = 1
		}
		tags := map[string]any{"Name": fmt.Sprintf("User %d", i)}
		if i == 2 {
			tags = nil // no Name: the fallback
		}
		recs = append(recs, user(i, part, []string{"UTC", "Asia/Kolkata", "America/New_York", "UTC", "UTC", "UTC"}[i], tags)...)
	}
	stop := inbound("stop-0", testApp, "STOP", "", at(2)) // user 0 opts out of marketing
	stop.HWID, stop.Inbound.From = "whatsapp:+14155550000", "+14155550000"
	recs = append(recs, record(t, stop))
	// Another app's profile on the same partition is never visited.
	other := &schemas.Event{ID: "x1", App: "other", Kind: schemas.KindRegister, Time: at(0), HWID: "whatsapp:+14155559999", DeviceType: 21}
	recs = append(recs, record(t, other))
	s.process(t, recs...)

	c := &schemas.Campaign{
		ID: "sushi-1", Name: "sushi", Filter: `Event("OrderPlaced", "cuisine", EQ, "asian")`, Sender: testPNID,
		Template: schemas.Template{Name: "sushi_promo", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:Name|there}}"}},
	}
	run := func(partition int32, c *schemas.Campaign) []*schemas.DispatchRequest {
		t.Helper()
		ds, dls := decodeOutputs(t, s.process(t, campaignRecord(t, partition, c)))
		if len(dls) > 0 {
			t.Fatalf("dead letters: %s", dls[0].Reason)
		}
		slices.SortFunc(ds, func(a, b *schemas.DispatchRequest) int { return strings.Compare(a.To, b.To) })
		return ds
	}
	ds := run(0, c)
	// Partition 0: users 0 and 2 ordered asian; 0 opted out.
	if len(ds) != 1 || ds[0].To != "+14155550002" || ds[0].Template.Body[0] != "there" || ds[0].Source.Kind != SourceCampaign ||
		ds[0].Source.Name != "sushi" || ds[0].HWID != "whatsapp:+14155550002" || !ds[0].SendAt.IsZero() {
		t.Fatalf("partition 0: %s", dump(ds))
	}
	if got := s.metric(t, "herald_segmenter_campaign_skipped_total", "reason", skipOptedOut); got != 1 {
		t.Fatalf("opted-out skips %v, want 1", got)
	}
	// The same campaign again (a redelivery): the same ids.
	if again := run(0, c); len(again) != 1 || again[0].ID != ds[0].ID {
		t.Fatalf("re-run: %s", dump(again))
	}
	// Partition 1: user 4, with its own Name.
	if ds := run(1, c); len(ds) != 1 || ds[0].To != "+14155550004" || ds[0].Template.Body[0] != "User 4" {
		t.Fatalf("partition 1: %s", dump(ds))
	}
	// A UTILITY template reaches opted-out users; local time: 09:00 in
	// each user's timezone on the date of SendAt.
	u := *c
	u.ID, u.Template.Category, u.Filter, u.LocalTime = "notice-1", CategoryUtility, `T("Registered", EQ, true)`, "09:00"
	u.SendAt = time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)
	ds = run(0, &u)
	want := map[string]time.Time{
		"+14155550000": time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC),
		"+14155550001": time.Date(2025, 6, 3, 3, 30, 0, 0, time.UTC), // Asia/Kolkata, +05:30
		"+14155550002": time.Date(2025, 6, 3, 13, 0, 0, 0, time.UTC), // America/New_York, EDT
		"+14155550003": time.Date(2025, 6, 3, 9, 0, 0, 0, time.UTC),
	}
	if len(ds) != len(want) {
		t.Fatalf("utility campaign: %s", dump(ds))
	}
	for _, d := range ds {
		if !d.SendAt.Equal(want[d.To]) || !d.Deadline.Equal(d.SendAt.Add(campaignValidity)) {
			t.Fatalf("%s: send_at %s deadline %s, want %s", d.To, d.SendAt, d.Deadline, want[d.To])
		}
	}
	// A campaign whose filter does not compile is dead-lettered whole.
	bad := *c
	bad.ID, bad.Filter = "bad-1", `T("x" EQ)`
	out := s.process(t, campaignRecord(t, 0, &bad))
	if _, dls := decodeOutputs(t, out); len(dls) != 1 || !strings.Contains(dls[0].Reason, "filter") {
		t.Fatalf("bad campaign outputs %d", len(out))
	}
}

func TestLimitsConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		l    Limits
		want string
	}{
		{"negative cap", Limits{MaxMarketing: -1}, "max_marketing"},
		{"half quiet hours", Limits{QuietStart: "21:00"}, "go together"},
		{"bad time", Limits{QuietStart: "9pm", QuietEnd: "09:00"}, "quiet_start"},
		{"equal", Limits{QuietStart: "09:00", QuietEnd: "09:00"}, "equal"},
		{"bad policy", Limits{QuietPolicy: "later"}, "quiet_policy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Limits: tt.l}
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	l := Limits{QuietStart: "21:00", QuietEnd: "09:00"}
	if err := l.validate(); err != nil {
		t.Fatal(err)
	}
	oslo, _ := time.LoadLocation("Europe/Oslo")
	f := func(at string, wantEnd string) {
		t.Helper()
		tm, _ := time.Parse(time.RFC3339, at)
		end, quiet := l.quietUntil(tm, oslo)
		if got := ""; quiet {
			got = end.Format(time.RFC3339)
			if got != wantEnd {
				t.Fatalf("%s: quiet until %s, want %q", at, got, wantEnd)
			}
		} else if wantEnd != "" {
			t.Fatalf("%s: not quiet, want until %s", at, wantEnd)
		}
	}
	f("2025-06-01T18:59:00Z", "")                     // 20:59 in Oslo (CEST)
	f("2025-06-01T19:00:00Z", "2025-06-02T07:00:00Z") // 21:00 -> 09:00 next day
	f("2025-06-02T02:00:00Z", "2025-06-02T07:00:00Z") // 04:00
	f("2025-06-02T07:00:00Z", "")                     // 09:00
}

func TestCampaignLimits(t *testing.T) {
	s := newTest(t, Config{Limits: Limits{MaxMarketing: 2, MarketingWindow: 7 * 24 * time.Hour, QuietStart: "21:00", QuietEnd: "09:00"}})
	reg := func(i int, tz string) *kgo.Record {
		return record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: t0, HWID: fmt.Sprintf("whatsapp:+1415555%04d", i), DeviceType: schemas.DeviceWhatsApp, Timezone: tz,
		})
	}
	s.process(t, reg(1, "UTC"), reg(2, "Asia/Tokyo")) // t0 is 12:00 UTC: 21:00 in Tokyo, quiet
	camp := func(id, category string) []*schemas.DispatchRequest {
		t.Helper()
		c := &schemas.Campaign{
			ID: id, Filter: `T("Registered", EQ, true)`, Sender: testPNID,
			Template: schemas.Template{Name: "promo_offer", Language: "en_US", Category: category, Body: []string{"x"}},
		}
		ds, _ := decodeOutputs(t, s.process(t, campaignRecord(t, 0, c)))
		slices.SortFunc(ds, func(a, b *schemas.DispatchRequest) int { return strings.Compare(a.To, b.To) })
		return ds
	}
	ds := camp("m1", CategoryMarketing)
	if len(ds) != 2 || !ds[0].SendAt.IsZero() || !ds[1].SendAt.Equal(time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("m1: %s", dump(ds)) // Tokyo's quiet hours end at 09:00 JST = 00:00 UTC
	}
	if got := camp("m1", CategoryMarketing); len(got) != 2 || got[0].ID != ds[0].ID {
		t.Fatalf("re-run of m1: %s", dump(got)) // counted once: sent again with the same ids
	}
	if got := camp("m2", CategoryMarketing); len(got) != 2 {
		t.Fatalf("m2: %s", dump(got))
	}
	if got := camp("m3", CategoryMarketing); len(got) != 0 {
		t.Fatalf("m3 past the cap of 2 a week: %s", dump(got))
	}
	if got := s.metric(t, "herald_segmenter_campaign_skipped_total", "reason", skipFrequencyCap); got != 2 {
		t.Fatalf("frequency cap skips %v, want 2", got)
	}
	if got := camp("u1", CategoryUtility); len(got) != 2 {
		t.Fatalf("utility messages are not capped: %s", dump(got))
	}
	// The sends are part of the profile: a restart keeps the cap.
	p, _ := s.Profile(testApp, "whatsapp:+14155550001")
	if len(p.sends) != 2 {
		t.Fatalf("profile sends %+v", p.sends)
	}
}

func TestCampaignQuietDrop(t *testing.T) {
	s := newTest(t, Config{Limits: Limits{QuietStart: "21:00", QuietEnd: "09:00", QuietPolicy: QuietDrop}})
	s.process(t, record(t, &schemas.Event{
		ID: "r1", App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
		Time: t0, HWID: testHWID, DeviceType: schemas.DeviceWhatsApp, Timezone: "Asia/Tokyo",
	}))
	c := &schemas.Campaign{
		ID: "q1", Filter: `T("Registered", EQ, true)`, Sender: testPNID,
		Template: schemas.Template{Name: "otp_code", Language: "en_US", Category: CategoryMarketing, Body: []string{"x"}},
	}
	if ds, _ := decodeOutputs(t, s.process(t, campaignRecord(t, 0, c))); len(ds) != 0 {
		t.Fatalf("sent in quiet hours under drop: %s", dump(ds))
	}
	c.ID, c.Template.Category = "q2", CategoryAuthentication // codes are never held
	if ds, _ := decodeOutputs(t, s.process(t, campaignRecord(t, 0, c))); len(ds) != 1 || !ds[0].SendAt.IsZero() {
		t.Fatalf("authentication: %s", dump(ds))
	}
}

// TestCampaignOwnCap: a campaign's own frequency cap counts every campaign
// message (utility ones too), while the global cap counts marketing ones
// only; both survive the profile codec.
func TestCampaignOwnCap(t *testing.T) {
	s := newTest(t, Config{Limits: Limits{MaxMarketing: 5, MarketingWindow: 7 * 24 * time.Hour}})
	s.process(t, record(t, &schemas.Event{
		ID: "r1", App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
		Time: t0, HWID: testHWID, DeviceType: schemas.DeviceWhatsApp,
	}))
	camp := func(id, category string, cap *schemas.FrequencyCap) int {
		t.Helper()
		c := &schemas.Campaign{
			ID: id, Filter: `T("Registered", EQ, true)`, Sender: testPNID, FrequencyCap: cap,
			Template: schemas.Template{Name: "order_update", Language: "en_US", Category: category, Body: []string{"x"}},
		}
		ds, _ := decodeOutputs(t, s.process(t, campaignRecord(t, 0, c)))
		return len(ds)
	}
	week := &schemas.FrequencyCap{Max: 2, PeriodSeconds: 7 * 24 * 3600}
	if n := camp("u1", CategoryUtility, week); n != 1 {
		t.Fatalf("u1: %d sends", n)
	}
	if n := camp("u2", CategoryUtility, week); n != 1 {
		t.Fatalf("u2: %d sends", n)
	}
	// Two utility messages this week: a capped campaign skips the user,
	// whatever its category; the global marketing cap (5) is not reached.
	if n := camp("m1", CategoryMarketing, week); n != 0 {
		t.Fatalf("m1 past its own cap: %d sends", n)
	}
	if got := s.metric(t, "herald_segmenter_campaign_skipped_total", "reason", skipCampaignCap); got != 1 {
		t.Fatalf("campaign_cap skips %v, want 1", got)
	}
	if n := camp("m2", CategoryMarketing, nil); n != 1 {
		t.Fatalf("m2 without its own cap: %d sends", n)
	}
	p, _ := s.Profile(testApp, testHWID)
	if got := p.sentSince(t0, true); got != 1 {
		t.Fatalf("%d marketing sends counted, want 1 (m2)", got)
	}
	if got := p.sentSince(t0, false); got != 3 {
		t.Fatalf("%d sends counted, want 3 (u1, u2, m2)", got)
	}
	// A cap of 4 in a day lets one more through.
	if n := camp("m3", CategoryMarketing, &schemas.FrequencyCap{Max: 4, PeriodSeconds: 86400}); n != 1 {
		t.Fatalf("m3 under a cap of 4: %d sends", n)
	}
}
