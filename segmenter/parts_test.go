package segmenter

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// partsBatch is a batch of partition 0 for the partition-wide record
// tests: users registrations, then rec (a campaign or sweep), then a tag
// update of every third user, which changes again profiles rec changed.
func partsBatch(t *testing.T, users int, rec *kgo.Record) (regs, batch []*kgo.Record) {
	t.Helper()
	for i := range users {
		r := record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: t0, HWID: partsHWID(i), DeviceType: schemas.DeviceWhatsApp, Country: "US", Timezone: "UTC",
			Tags: map[string]any{"Name": fmt.Sprintf("User %d", i)},
		})
		regs = append(regs, r)
	}
	batch = append(batch, rec)
	for i := 0; i < users; i += 3 {
		batch = append(batch, record(t, &schemas.Event{
			ID: fmt.Sprintf("t%d", i), App: testApp, Kind: schemas.KindTags, Time: t0.Add(time.Minute), HWID: partsHWID(i),
			Tags: map[string]any{"tier": "gold"},
		}))
	}
	return regs, batch
}

func partsHWID(i int) string { return fmt.Sprintf("whatsapp:+1415557%04d", i) }

// processParts runs recs through s.process with an emit that collects the
// parts; the rest it returns is the last part.
func processParts(t *testing.T, s *testSegmenter, recs []*kgo.Record) [][]*kgo.Record {
	t.Helper()
	var parts [][]*kgo.Record
	rest, err := s.Segmenter.process(context.Background(), recs, func(out []*kgo.Record) { parts = append(parts, out) })
	if err != nil {
		t.Fatal(err)
	}
	return append(parts, rest)
}

// TestPartitionWidePartsMatchWhole: a campaign (under either frequency
// cap) or a sweep run by handle hands out its outputs in parts of at most
// partChunk changed profiles (flushPart) instead of holding every profile
// it changed until the batch ends. The parts together must be what one
// Process call returns: the same dispatch requests and events, the same
// latest changelog record and tags record per profile, the same profiles;
// and every dispatch request of a counted send comes before a changelog
// record of its profile.
func TestPartitionWidePartsMatchWhole(t *testing.T) {
	const users, chunk = 40, 6
	filter := `T("Registered", EQ, true)`
	camp := func(c *schemas.Campaign) *kgo.Record {
		c.Filter, c.Sender = filter, testPNID
		c.Template = schemas.Template{Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:Name|there}}"}}
		return campaignRecord(t, 0, c)
	}
	sweep := record(t, &schemas.Event{ID: "sw1", App: testApp, Kind: schemas.KindSweep, Time: t0, Received: t0, Sweep: &schemas.Sweep{Segment: "all", Filter: filter}})
	for _, tt := range []struct {
		name   string
		limits Limits
		rec    *kgo.Record
	}{
		{name: "marketing cap", limits: Limits{MaxMarketing: 3}, rec: camp(&schemas.Campaign{ID: "m1"})},
		{name: "own cap", rec: camp(&schemas.Campaign{ID: "o1", FrequencyCap: &schemas.FrequencyCap{Max: 2, PeriodSeconds: 86400}})},
		{name: "no cap", rec: camp(&schemas.Campaign{ID: "n1"})},
		{name: "sweep", rec: sweep},
	} {
		for _, workers := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/workers=%d", tt.name, workers), func(t *testing.T) {
				regs, batch := partsBatch(t, users, tt.rec)
				whole := newTest(t, Config{Workers: workers, Limits: tt.limits})
				parted := newTest(t, Config{Workers: workers, Limits: tt.limits})
				parted.partChunk = chunk
				whole.process(t, regs...)
				parted.process(t, regs...)
				want, err := whole.Process(context.Background(), batch)
				if err != nil {
					t.Fatal(err)
				}
				parts := processParts(t, parted, batch)
				if len(parts) < users/chunk {
					t.Fatalf("%d parts of a record over %d users with partChunk %d: the outputs were held", len(parts), users, chunk)
				}
				var got []*kgo.Record
				for i, part := range parts {
					n := 0
					for _, r := range part {
						if r.Topic == schemas.TopicProfiles {
							n++
						}
					}
					// (The last part, the rest, also holds the changes of
					// the records after the campaign.)
					if n > chunk && i < len(parts)-1 {
						t.Fatalf("part %d holds %d changed profiles, over partChunk %d", i, n, chunk)
					}
					got = append(got, part...)
				}
				wantOther, wantLogs := summary(t, want)
				gotOther, gotLogs := summary(t, got)
				if len(gotOther) != len(wantOther) {
					t.Fatalf("parts hold %d records but the changelog, one Process call %d:\nwhole %s\nparts %s", len(gotOther), len(wantOther), strings.Join(wantOther, "\n"), strings.Join(gotOther, "\n"))
				}
				for i := range wantOther {
					if gotOther[i] != wantOther[i] {
						t.Fatalf("parts differ from one Process call:\nwhole %s\nparts %s", wantOther[i], gotOther[i])
					}
				}
				if len(gotLogs) != len(wantLogs) {
					t.Fatalf("parts' changelog has %d keys, one Process call's %d", len(gotLogs), len(wantLogs))
				}
				for k, p := range wantLogs {
					if !reflect.DeepEqual(loaded(gotLogs[k]), loaded(p)) {
						t.Fatalf("latest changelog record of %s: %+v, want %+v", k, gotLogs[k], p)
					}
				}
				// A counted send is produced before the changelog record
				// that counts it.
				lastLog := map[string]int{}
				for i, r := range got {
					if r.Topic == schemas.TopicProfiles {
						lastLog[string(r.Key)] = i
					}
				}
				ds := 0
				for i, r := range got {
					if r.Topic != schemas.TopicDispatch {
						continue
					}
					ds++
					d, err := schemas.DecodeDispatchRequest(r.Value)
					if err != nil {
						t.Fatal(err)
					}
					if j, ok := lastLog[testApp+"|"+d.HWID]; tt.name != "no cap" && (!ok || j < i) {
						t.Fatalf("dispatch request %d to %s has no changelog record after it (last at %d, %v)", i, d.HWID, j, ok)
					}
				}
				if tt.rec != sweep && ds != users {
					t.Fatalf("%d dispatch requests, want %d", ds, users)
				}
				for i := range users {
					a, _ := whole.Profile(testApp, partsHWID(i))
					b, _ := parted.Profile(testApp, partsHWID(i))
					if !reflect.DeepEqual(loaded(a), loaded(b)) {
						t.Fatalf("user %d: profile %+v, want %+v", i, b, a)
					}
				}
			})
		}
	}
}

// summary is what a batch's outputs must agree on, whatever their order:
// every record but the changelog and tags ones, and the last changelog and
// tags record of each key (with parts, a profile changed again after its
// part was handed out has two in one call), the changelog's decoded (the
// encoding's order of tags is the map's), and the set of tag registry
// records.
func summary(t *testing.T, recs []*kgo.Record) (other []string, logs map[string]*Profile) {
	t.Helper()
	logs = map[string]*Profile{}
	tags := map[string]string{}
	for _, r := range recs {
		switch r.Topic {
		case schemas.TopicProfiles:
			p, err := decodeProfile(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			logs[string(r.Key)] = p
		case schemas.TopicTags:
			tags[string(r.Key)] = string(r.Value)
		case schemas.TopicTagDefs:
			// With several workers, each may or may not write the record
			// of a tag new to the registry (whichever checks it first).
			tags["def "+string(r.Key)] = string(r.Value)
		default:
			other = append(other, fmt.Sprintf("%s %d %s %s", r.Topic, r.Partition, r.Key, r.Value))
		}
	}
	for k, v := range tags {
		other = append(other, schemas.TopicTags+" "+k+" "+v)
	}
	slices.Sort(other)
	return other, logs
}

// TestCampaignPartsCrash: a process that dies in the middle of a capped
// campaign after its first part was produced (dispatch requests, then the
// changelog records counting them) and before the campaign record's offset
// was committed. A fresh process restores the changelog and is given the
// campaign again: every user gets their request (nothing lost; the same id
// for those already sent) and every send is counted once in the profile,
// not twice for the users of the first part.
func TestCampaignPartsCrash(t *testing.T) {
	const users, chunk = 30, 6
	c := &schemas.Campaign{
		ID: "m1", Filter: `T("Registered", EQ, true)`, Sender: testPNID,
		Template: schemas.Template{Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Body: []string{"{{tag:Name|there}}"}},
	}
	regs, batch := partsBatch(t, users, campaignRecord(t, 0, c))
	cfg := Config{Limits: Limits{MaxMarketing: 3}}
	first := newTest(t, cfg)
	first.partChunk = chunk
	log, err := first.Process(context.Background(), regs)
	if err != nil {
		t.Fatal(err)
	}
	parts := processParts(t, first, batch)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want several", len(parts))
	}
	sentFirst := map[string]bool{}
	for _, r := range parts[0] {
		switch r.Topic {
		case schemas.TopicDispatch:
			d, err := schemas.DecodeDispatchRequest(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			sentFirst[d.ID] = true
		case schemas.TopicProfiles:
			log = append(log, r)
		}
	}
	if len(sentFirst) == 0 {
		t.Fatal("the first part sent nothing")
	}

	// The new process: the changelog as written (the first part's
	// records last), then the campaign's batch again.
	second := newTest(t, cfg)
	var logb, cacheb []byte
	for _, r := range log {
		if r.Topic != schemas.TopicProfiles {
			continue
		}
		logb, cacheb = cacheEncoding(logb[:0], cacheb[:0], r.Value)
		second.cache.Set(r.Key, cacheb)
		second.keys.setOffset(r.Partition, r.Key, r.Offset)
	}
	ds, dls := decodeOutputs(t, second.process(t, batch...))
	if len(dls) > 0 {
		t.Fatalf("dead letters %+v", dls)
	}
	ids := map[string]bool{}
	for _, d := range ds {
		ids[d.ID] = true
	}
	if len(ids) != users {
		t.Fatalf("the replay sent to %d users, want %d", len(ids), users)
	}
	for id := range sentFirst {
		if !ids[id] {
			t.Fatalf("request %s of the first part has another id in the replay", id)
		}
	}
	for i := range users {
		p, ok := second.Profile(testApp, partsHWID(i))
		if !ok {
			t.Fatalf("user %d: no profile", i)
		}
		if len(p.sends) != 1 {
			t.Fatalf("user %d: sends %+v, want the campaign counted once", i, p.sends)
		}
	}
}

// TestCampaignPartsRestart: on kfake, a capped campaign over more users
// than partChunk holds (so Run produces it in parts) by a process that dies
// after producing everything and before committing the campaign record. A
// fresh process restores the changelog and runs the campaign again: every
// user has a request under one id (the topic holds each twice), and every
// profile counts the send once.
func TestCampaignPartsRestart(t *testing.T) {
	const users = partChunk * 3 / 2 // two records a profile: three parts
	c := kafkatest.New(t, 1)
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	recs := make([]*kgo.Record, users)
	for i := range users {
		recs[i] = record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: now, HWID: partsHWID(i), DeviceType: schemas.DeviceWhatsApp, Country: "US",
		})
	}
	produce(t, c, recs...)
	cfg := Config{Limits: Limits{MaxMarketing: 3}}
	first, _, errc := runSegmenterConfig(t, c, cfg, now)
	waitCommitted(t, adm)

	crashed := make(chan struct{})
	crash := func() error { close(crashed); return errors.New("killed") }
	first.crashAfterProduce.Store(&crash)
	camp := &schemas.Campaign{
		ID: "m1", Filter: `T("Registered", EQ, true)`, Sender: testPNID,
		Template: schemas.Template{Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Body: []string{"x"}},
	}
	produce(t, c, campaignRecord(t, 0, camp))
	select {
	case <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("the campaign was not run")
	}
	if err := <-errc; err == nil {
		t.Fatal("Run returned nil after the crash")
	}
	first.Close()
	if n := sum(endOffsets(t, adm, schemas.TopicDispatch)); n != users {
		t.Fatalf("%d requests before the crash, want %d", n, users)
	}

	second, _, _ := runSegmenterConfig(t, c, cfg, now)
	waitCommitted(t, adm)
	ds, _ := decodeOutputs(t, c.ReadAll(t, schemas.TopicDispatch, 2*users))
	ids := map[string]int{}
	for _, d := range ds {
		ids[d.ID]++
	}
	if len(ids) != users {
		t.Fatalf("requests to %d users, want %d", len(ids), users)
	}
	for id, n := range ids {
		if n != 2 {
			t.Fatalf("request %s produced %d times, want twice (before the crash and in the replay)", id, n)
		}
	}
	for i := range users {
		p, ok := second.Profile(testApp, partsHWID(i))
		if !ok || len(p.sends) != 1 {
			t.Fatalf("user %d: profile %v, sends %+v: want the campaign counted once", i, ok, p)
		}
	}
}
