package segmenter

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// TestCampaignSkipsSuppressed: a recipient the dispatcher learned is opted
// out of marketing (131050, on TopicSuppressions) is skipped by MARKETING
// campaigns and counted as opted out, though the profile never sent STOP;
// a lift (START) of a later time brings it back, and an older suppression
// read after the lift does not undo it. UTILITY campaigns still reach it.
func TestCampaignSkipsSuppressed(t *testing.T) {
	s := newTest(t, Config{})
	const users = 3
	phone := func(i int) string { return fmt.Sprintf("+1415557%04d", i) }
	var recs []*kgo.Record
	for i := range users {
		recs = append(recs, record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: t0, HWID: "whatsapp:" + phone(i), DeviceType: schemas.DeviceWhatsApp, Country: "US", Timezone: "UTC",
		}))
	}
	s.process(t, recs...)
	supp := func(to string, lifted bool, at time.Time) {
		t.Helper()
		sp := &schemas.Suppression{V: 1, App: testApp, To: to, Reason: schemas.SuppressMarketingOptOut, Code: 131050, Lifted: lifted, Time: at}
		b, err := sp.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		s.supp.apply(&kgo.Record{Topic: schemas.TopicSuppressions, Key: sp.Key(), Value: b}, t.Logf)
	}
	n := 0
	run := func(category string) map[string]bool {
		t.Helper()
		n++
		c := &schemas.Campaign{
			ID: fmt.Sprintf("c%d", n), Name: "promo", Filter: `T("Country", EQ, "US")`, Sender: testPNID,
			Template: schemas.Template{Name: "promo", Language: "en_US", Category: category},
		}
		ds, dls := decodeOutputs(t, s.process(t, campaignRecord(t, 0, c)))
		if len(dls) > 0 {
			t.Fatalf("dead letter: %s", dls[0].Reason)
		}
		to := map[string]bool{}
		for _, d := range ds {
			to[d.To] = true
		}
		return to
	}
	supp(phone(1), false, t0.Add(time.Hour))
	if to := run(CategoryMarketing); len(to) != users-1 || to[phone(1)] {
		t.Fatalf("marketing campaign with %s suppressed reached %v", phone(1), to)
	}
	if got := s.metric(t, "herald_segmenter_campaign_skipped_total", "reason", skipOptedOut); got != 1 {
		t.Fatalf("%v opted-out skips, want 1", got)
	}
	if to := run(CategoryUtility); len(to) != users {
		t.Fatalf("utility campaign reached %v, want every user", to)
	}
	supp(phone(1), true, t0.Add(2*time.Hour))     // START
	supp(phone(1), false, t0.Add(90*time.Minute)) // a failed status Meta retried, older than the START
	if to := run(CategoryMarketing); len(to) != users || !to[phone(1)] {
		t.Fatalf("marketing campaign after the lift reached %v, want every user", to)
	}
	// A tombstone lifts too; another app's suppression is not this one's.
	supp(phone(2), false, t0.Add(3*time.Hour))
	s.supp.apply(&kgo.Record{Topic: schemas.TopicSuppressions, Key: schemas.SuppressionKey(testApp, phone(2))}, t.Logf)
	if s.supp.suppressed(testApp, phone(2)) || s.supp.suppressed("other", phone(1)) {
		t.Fatal("suppressed after a tombstone, or across apps")
	}
}
