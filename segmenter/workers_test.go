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

// TestWorkersMatchOneWorker runs the same batches through one worker and
// through several: events of many users on two partitions, a campaign in
// the middle of a batch (it visits every profile of its partition while the
// other records are shared among the workers by key) and events after it
// that change the profiles it changed. Both must produce the same dispatch
// requests, the same changelog (one record per profile, its latest state,
// in the order of the profiles' first change) and the same profiles.
func TestWorkersMatchOneWorker(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	var recs []*kgo.Record
	add := func(partition int32, e *schemas.Event) {
		r := record(t, e)
		r.Partition = partition
		recs = append(recs, r)
	}
	const users = 40
	hwid := func(i int) string { return fmt.Sprintf("whatsapp:+1415556%04d", i) }
	for i := range users {
		add(int32(i%2), &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: at(0), HWID: hwid(i), DeviceType: schemas.DeviceWhatsApp, Country: "US", Timezone: "UTC",
			Tags: map[string]any{"Name": fmt.Sprintf("User %d", i)},
		})
		add(int32(i%2), &schemas.Event{
			ID: fmt.Sprintf("o%d", i), App: testApp, Kind: schemas.KindEvent, Name: "OrderPlaced", Time: at(1),
			HWID: hwid(i), Attributes: map[string]any{"cuisine": []string{"asian", "italian"}[i/2%2]},
		})
	}
	c := &schemas.Campaign{
		ID: "sushi-w", Name: "sushi", Filter: `Event("OrderPlaced", "cuisine", EQ, "asian")`, Sender: testPNID,
		Template: schemas.Template{Name: "sushi_promo", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:Name|there}}"}},
	}
	c.FrequencyCap = &schemas.FrequencyCap{Max: 4, PeriodSeconds: 86400} // so the send is part of the profile
	recs = append(recs, campaignRecord(t, 0, c))
	for i := range users {
		add(int32(i%2), &schemas.Event{
			ID: fmt.Sprintf("t%d", i), App: testApp, Kind: schemas.KindTags, Time: at(3), HWID: hwid(i),
			Tags: map[string]any{"tier": []string{"gold", "silver", "bronze"}[i%3]},
		})
	}

	type result struct {
		dispatch  []string
		changelog []*Profile
		profiles  []*Profile
	}
	run := func(workers int) result {
		s := newTest(t, Config{Workers: workers})
		var res result
		// Two batches: the second replays nothing and changes every
		// profile again.
		for _, batch := range [][]*kgo.Record{recs[:len(recs)-users/2], recs[len(recs)-users/2:]} {
			ds, dls := decodeOutputs(t, s.process(t, batch...))
			if len(dls) > 0 {
				t.Fatalf("%d workers: dead letter: %s", workers, dls[0].Reason)
			}
			for _, d := range ds {
				res.dispatch = append(res.dispatch, d.ID+" "+d.To+" "+d.Template.Body[0])
			}
			res.changelog = append(res.changelog, s.changelog...)
		}
		for i := range users {
			p, ok := s.Profile(testApp, hwid(i))
			if !ok {
				t.Fatalf("%d workers: no profile for user %d", workers, i)
			}
			res.profiles = append(res.profiles, p)
		}
		slices.Sort(res.dispatch)
		return res
	}
	one, many := run(1), run(3)
	if len(one.dispatch) != users/4 { // users 0, 1, 4, 5, ... ordered asian; half of them are on partition 0
		t.Fatalf("one worker: %d dispatch requests, want %d:\n%s", len(one.dispatch), users/4, strings.Join(one.dispatch, "\n"))
	}
	if !slices.Equal(one.dispatch, many.dispatch) {
		t.Fatalf("dispatch requests differ:\none worker:\n%s\nthree:\n%s", strings.Join(one.dispatch, "\n"), strings.Join(many.dispatch, "\n"))
	}
	if len(one.changelog) != len(many.changelog) {
		t.Fatalf("changelog: %d records with one worker, %d with three", len(one.changelog), len(many.changelog))
	}
	for i := range one.changelog {
		if err := equalProfile(many.changelog[i], one.changelog[i]); err != nil {
			t.Fatalf("changelog record %d: %v", i, err)
		}
	}
	for i := range one.profiles {
		if err := equalProfile(many.profiles[i], one.profiles[i]); err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		if len(one.profiles[i].sends) == 0 && i%2 == 0 && i/2%2 == 0 {
			t.Fatalf("user %d: the campaign's send is not in the profile", i)
		}
		if one.profiles[i].Tags()["tier"].Str == "" {
			t.Fatalf("user %d: the tags after the campaign are not in the profile", i)
		}
	}
}
