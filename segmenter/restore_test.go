package segmenter

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// TestRestoreAfterCrash: a segmenter that dies after its outputs (the
// changelog included) were acknowledged but before its offsets were
// committed is replaced by a fresh process. The new one restores the
// profiles from the changelog before processing, and the redelivered batch
// is not applied twice: every increment counts exactly once, no update is
// lost.
func TestRestoreAfterCrash(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	const users = 6
	hwid := func(u int) string { return fmt.Sprintf("whatsapp:+1415555%04d", u) }
	seq := 0
	batch := func(visits int) []*kgo.Record {
		var recs []*kgo.Record
		first := seq == 0
		for u := range users {
			if first {
				reg := register(fmt.Sprintf("reg-%d", u), now.Add(-time.Hour), map[string]any{"Plan": "free"})
				reg.HWID = hwid(u)
				recs = append(recs, record(t, reg))
			}
			for range visits {
				seq++
				ev := &schemas.Event{
					ID: fmt.Sprintf("visit-%d", seq), App: testApp, Kind: schemas.KindTags, Time: now.Add(-time.Hour),
					HWID: hwid(u), Tags: map[string]any{"Visits": 1.0}, TagOps: map[string]string{"Visits": schemas.OpIncrement},
				}
				recs = append(recs, record(t, ev))
			}
		}
		return recs
	}
	check := func(t *testing.T, s *Segmenter, visits float64) {
		t.Helper()
		for u := range users {
			p, ok := s.Profile(testApp, hwid(u))
			if !ok {
				t.Fatalf("user %d: no profile", u)
			}
			if got := p.Tags()["Visits"].Num; got != visits || p.Tags()["Plan"].Str != "free" || !p.Registered {
				t.Fatalf("user %d: Visits %v (want %v), Plan %q, registered %v", u, got, visits, p.Tags()["Plan"].Str, p.Registered)
			}
		}
	}

	// The first process applies 20 visits per user and commits them.
	produce(t, c, batch(20)...)
	first, _, errc := runSegmenter(t, c, now)
	waitCommitted(t, adm)
	check(t, first, 20)

	// Then it dies between producing the outputs of the next batch and
	// marking it.
	crashed := make(chan struct{})
	crash := func() error { close(crashed); return errors.New("killed") }
	first.crashAfterProduce.Store(&crash)
	produce(t, c, batch(10)...)
	select {
	case <-crashed:
	case <-time.After(15 * time.Second):
		t.Fatal("the second batch was not processed")
	}
	if err := <-errc; err == nil {
		t.Fatal("Run returned nil after the crash")
	}
	first.Close()
	if sum(committed(t, adm)) == sum(endOffsets(t, adm, schemas.TopicEvents)) {
		t.Fatal("the crashed batch was committed")
	}

	// A fresh process with an empty cache: restored, the redelivered batch
	// skipped, then new events applied on top.
	second, _, _ := runSegmenter(t, c, now)
	waitCommitted(t, adm)
	check(t, second, 30)
	produce(t, c, batch(5)...)
	waitCommitted(t, adm)
	check(t, second, 35)
	if n := testutil.ToFloat64(second.m.restoredProfiles); n < users {
		t.Fatalf("restored %v profiles, want at least %d", n, users)
	}
	if n := testutil.ToFloat64(second.m.duplicates); n == 0 {
		t.Fatal("the redelivered batch was not recognised")
	}

	// Every changelog record sits on the partition of its user's events.
	evPart := map[string]int32{}
	nEvents := sum(endOffsets(t, adm, schemas.TopicEvents))
	for _, r := range c.ReadAll(t, schemas.TopicEvents, int(nEvents)) {
		evPart[string(r.Key)] = r.Partition
	}
	nLog := sum(endOffsets(t, adm, schemas.TopicProfiles))
	for _, r := range c.ReadAll(t, schemas.TopicProfiles, int(nLog)) {
		if p, ok := evPart[string(r.Key)]; !ok || p != r.Partition {
			t.Fatalf("changelog record of %q on partition %d, its events on %d", r.Key, r.Partition, p)
		}
	}
}

// TestRunRefusesSmallChangelog: a changelog with fewer partitions than the
// events topic cannot hold every partition's profiles.
func TestRunRefusesSmallChangelog(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	if _, err := adm.CreatePartitions(t.Context(), 4, schemas.TopicEvents); err != nil { // 2 + 4
		t.Fatal(err)
	}
	_, _, errc := runSegmenter(t, c, time.Now())
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "fewer than the 6") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not refuse")
	}
}
