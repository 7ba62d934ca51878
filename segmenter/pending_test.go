package segmenter

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/internal/kafkatest"
	"github.com/heraldhq/herald/schemas"
)

// visits is a test load of pending_test.go: users each registered once,
// then increments of their Visits tag.
type visits struct {
	t     *testing.T
	now   time.Time
	users int
	seq   int
}

func (v *visits) hwid(u int) string { return fmt.Sprintf("whatsapp:+1415666%04d", u) }

// register is every user's registration.
func (v *visits) register() []*kgo.Record {
	var recs []*kgo.Record
	for u := range v.users {
		reg := register(fmt.Sprintf("reg-%d", u), v.now.Add(-time.Hour), map[string]any{"Plan": "free"})
		reg.HWID = v.hwid(u)
		recs = append(recs, record(v.t, reg))
	}
	return recs
}

// batch is n increments of every user's Visits.
func (v *visits) batch(n int) []*kgo.Record {
	var recs []*kgo.Record
	for u := range v.users {
		for range n {
			v.seq++
			recs = append(recs, record(v.t, &schemas.Event{
				ID: fmt.Sprintf("visit-%d", v.seq), App: testApp, Kind: schemas.KindTags, Time: v.now.Add(-time.Hour),
				HWID: v.hwid(u), Tags: map[string]any{"Visits": 1.0}, TagOps: map[string]string{"Visits": schemas.OpIncrement},
			}))
		}
	}
	return recs
}

// check fails unless every user's profile in s has want visits.
func (v *visits) check(s *Segmenter, want float64) {
	v.t.Helper()
	for u := range v.users {
		p, ok := s.Profile(testApp, v.hwid(u))
		if !ok {
			v.t.Fatalf("user %d: no profile", u)
		}
		if got := p.Tags()["Visits"].Num; got != want || p.Tags()["Plan"].Str != "free" || !p.Registered {
			v.t.Fatalf("user %d: Visits %v (want %v), Plan %q, registered %v", u, got, want, p.Tags()["Plan"].Str, p.Registered)
		}
	}
}

// waitApplied waits until s applied n events of kind tags in all.
func waitApplied(t *testing.T, s *Segmenter, n float64) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := testutil.ToFloat64(s.m.events[schemas.KindTags])
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("%v tags events applied, want %v", got, n)
		}
	}
}

// TestChangelogCoalesced: while the segmenter is behind (held here), the
// changes of many batches wait: nothing of the changelog or the tags topic
// is written and no offset is committed. An evicted profile with pending
// changes goes on from them, not from an older record. At the stop, each
// profile gets one changelog record and one tags record for all of them,
// the events are committed, and a fresh process restores the exact counts.
func TestChangelogCoalesced(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	v := &visits{t: t, now: time.Now().UTC().Truncate(time.Microsecond), users: 6}
	cfg := Config{ChangelogInterval: time.Hour}
	first, cancel, errc := runSegmenterConfig(t, c, cfg, v.now)
	first.holdPending.Store(true)

	produce(t, c, v.register()...)
	applied := 0.0
	for round := range 4 {
		produce(t, c, v.batch(3)...)
		applied += float64(3 * v.users)
		waitApplied(t, first, applied)
		if round == 1 {
			// Evict every profile, as a full fastcache would: the next
			// events find them in the pending list.
			first.mu.Lock()
			first.clearHot()
			for u := range v.users {
				first.cache.Del(schemas.EventKey(testApp, v.hwid(u), ""))
			}
			first.mu.Unlock()
		}
	}
	v.check(first, 12)
	if n := sum(endOffsets(t, adm, schemas.TopicProfiles)); n != 0 {
		t.Fatalf("%d changelog records written while held, want none", n)
	}
	if n := sum(endOffsets(t, adm, schemas.TopicTags)); n != 0 {
		t.Fatalf("%d tags records written while held, want none", n)
	}
	if n := sum(committed(t, adm)); n != 0 {
		t.Fatalf("%d offsets committed before the changelog was written", n)
	}
	if n := testutil.ToFloat64(first.m.coldLoads); n != 0 {
		t.Fatalf("%v profiles read from the changelog, want none (pending)", n)
	}
	if n := testutil.ToFloat64(first.m.coalesced); n == 0 {
		t.Fatal("no change coalesced")
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	first.Close()
	if n := sum(endOffsets(t, adm, schemas.TopicProfiles)); n != int64(v.users) {
		t.Fatalf("%d changelog records, want one per user (%d)", n, v.users)
	}
	if n := sum(endOffsets(t, adm, schemas.TopicTags)); n != int64(v.users) {
		t.Fatalf("%d tags records, want one per user (%d)", n, v.users)
	}
	waitCommitted(t, adm)

	second, _, _ := runSegmenterConfig(t, c, cfg, v.now)
	produce(t, c, v.batch(1)...)
	waitCommitted(t, adm)
	v.check(second, 13)
	if n := testutil.ToFloat64(second.m.duplicates); n != 0 {
		t.Fatalf("%v duplicates: the committed events were replayed", n)
	}
}

// TestChangelogCoalescedCrash: a process that dies with changes pending
// (processed, their outputs produced, the changelog not written) commits
// none of their events; a fresh process restores what was written and
// replays the rest: every increment counts once.
func TestChangelogCoalescedCrash(t *testing.T) {
	c := kafkatest.New(t, 2)
	adm := kadm.NewClient(c.Client(t))
	v := &visits{t: t, now: time.Now().UTC().Truncate(time.Microsecond), users: 6}
	cfg := Config{ChangelogInterval: time.Hour}
	produce(t, c, v.register()...)
	produce(t, c, v.batch(2)...)
	first, cancel, errc := runSegmenterConfig(t, c, cfg, v.now)
	waitCommitted(t, adm) // caught up: written and committed
	written := sum(endOffsets(t, adm, schemas.TopicProfiles))
	first.holdPending.Store(true)
	for range 2 {
		produce(t, c, v.batch(3)...)
	}
	waitApplied(t, first, float64(8*v.users))
	v.check(first, 8)

	// kill -9: nothing more is written.
	first.pending.poison()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	first.Close()
	if n := sum(endOffsets(t, adm, schemas.TopicProfiles)); n != written {
		t.Fatalf("%d changelog records after the crash, want the %d written before it", n, written)
	}
	if sum(committed(t, adm)) == sum(endOffsets(t, adm, schemas.TopicEvents)) {
		t.Fatal("the pending events were committed")
	}

	second, _, _ := runSegmenterConfig(t, c, cfg, v.now)
	waitCommitted(t, adm)
	v.check(second, 8)
	if n := testutil.ToFloat64(second.m.restoredProfiles); n < float64(v.users) {
		t.Fatalf("restored %v profiles, want %d", n, v.users)
	}
}

// TestChangelogWrittenOnRevoke: a member with changes pending writes them
// before its partitions move to a member joining the group, so the new
// owner restores them: every increment counts once, whoever owns the
// user's partition.
func TestChangelogWrittenOnRevoke(t *testing.T) {
	c := kafkatest.New(t, 4)
	adm := kadm.NewClient(c.Client(t))
	v := &visits{t: t, now: time.Now().UTC().Truncate(time.Microsecond), users: 16}
	cfg := Config{ChangelogInterval: time.Hour}
	first, _, _ := runSegmenterConfig(t, c, cfg, v.now)
	first.holdPending.Store(true)
	produce(t, c, v.register()...)
	produce(t, c, v.batch(3)...)
	waitApplied(t, first, float64(3*v.users))
	if n := sum(committed(t, adm)); n != 0 {
		t.Fatalf("%d offsets committed while held", n)
	}

	second, _, _ := runSegmenterConfig(t, c, cfg, v.now)
	// The rebalance revokes some of first's partitions: it writes what is
	// pending and commits it.
	waitCommitted(t, adm)
	for deadline := time.Now().Add(15 * time.Second); len(second.owned.list()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second member owns no partition")
		}
	}
	first.holdPending.Store(false)
	produce(t, c, v.batch(1)...)
	waitCommitted(t, adm)

	part := map[string]int32{}
	for _, r := range c.ReadAll(t, schemas.TopicEvents, int(sum(endOffsets(t, adm, schemas.TopicEvents)))) {
		part[string(r.Key)] = r.Partition
	}
	owner := func(p int32) *Segmenter {
		for _, s := range []*Segmenter{first, second} {
			for _, q := range s.owned.list() {
				if q == p {
					return s
				}
			}
		}
		t.Fatalf("partition %d has no owner", p)
		return nil
	}
	moved := 0
	for u := range v.users {
		key := schemas.EventKey(testApp, v.hwid(u), "")
		s := owner(part[string(key)])
		if s == second {
			moved++
		}
		p, ok := s.Profile(testApp, v.hwid(u))
		if !ok || p.Tags()["Visits"].Num != 4 {
			t.Fatalf("user %d (partition %d): profile %v, Visits %v: want 4", u, part[string(key)], ok, p.Tags()["Visits"].Num)
		}
	}
	if moved == 0 {
		t.Fatal("no user's partition moved to the second member")
	}
	// The new owner restored the first member's changes and replayed
	// nothing: it applied only the last batch's increments of its users.
	if n := testutil.ToFloat64(second.m.events[schemas.KindTags]); n != float64(moved) {
		t.Fatalf("the second member applied %v increments, want %d (one per user it took over)", n, moved)
	}
}

// TestChangelogBytesBound: pending changes are written when they hold
// Config.ChangelogBytes, in the middle of a batch too (a campaign over
// more profiles than that), and their events committed, while the
// segmenter is still behind; at the stop the rest is written, and a fresh
// process restores every profile with the campaign counted once.
func TestChangelogBytesBound(t *testing.T) {
	const users = partChunk * 3 / 2
	c := kafkatest.New(t, 1)
	adm := kadm.NewClient(c.Client(t))
	now := time.Now().UTC().Truncate(time.Microsecond)
	cfg := Config{ChangelogInterval: time.Hour, ChangelogBytes: 1 << 20, Limits: Limits{MaxMarketing: 3}}
	first, cancel, errc := runSegmenterConfig(t, c, cfg, now)
	first.holdPending.Store(true)
	recs := make([]*kgo.Record, users)
	for i := range users {
		recs[i] = record(t, &schemas.Event{
			ID: fmt.Sprintf("r%d", i), App: testApp, Kind: schemas.KindRegister, Name: schemas.EventDeviceRegistered,
			Time: now, HWID: partsHWID(i), DeviceType: schemas.DeviceWhatsApp, Country: "US",
		})
	}
	produce(t, c, recs...)
	for deadline := time.Now().Add(15 * time.Second); testutil.ToFloat64(first.m.events[schemas.KindRegister]) < users; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the registrations were not applied")
		}
	}
	if n := testutil.ToFloat64(first.m.changelogFlushes.WithLabelValues(writeBytes)); n < 1 {
		t.Fatalf("%v changelog writes while held, want them every MiB", n)
	}
	for deadline := time.Now().Add(10 * time.Second); sum(committed(t, adm)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing committed after the writes")
		}
	}
	if n := sum(endOffsets(t, adm, schemas.TopicProfiles)); n == 0 {
		t.Fatal("no changelog record while held")
	}

	// A campaign over them all, one record: the pending changes are
	// written while it runs, before all its requests are out. (The hook
	// sees each write once its records are acknowledged; returning nil
	// leaves that write's events unmarked, the next write marks them.)
	var atFirst atomic.Int64
	atFirst.Store(-1)
	seeWrite := func() error {
		atFirst.CompareAndSwap(-1, sum(endOffsets(t, adm, schemas.TopicDispatch)))
		return nil
	}
	first.crashAfterProduce.Store(&seeWrite)
	camp := &schemas.Campaign{
		ID: "m1", Filter: `T("Registered", EQ, true)`, Sender: testPNID,
		Template: schemas.Template{Name: "promo_offer", Language: "en_US", Category: CategoryMarketing, Body: []string{"x"}},
	}
	produce(t, c, campaignRecord(t, 0, camp))
	for deadline := time.Now().Add(30 * time.Second); sum(endOffsets(t, adm, schemas.TopicDispatch)) < users; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the campaign was not sent")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); atFirst.Load() < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no changelog write during or after the campaign")
		}
	}
	if n := atFirst.Load(); n >= users {
		t.Fatalf("the first write came after all %d requests, want it while the campaign ran", n)
	}
	first.crashAfterProduce.Store(nil)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	first.Close()
	waitCommitted(t, adm)

	second, _, _ := runSegmenterConfig(t, c, cfg, now)
	for deadline := time.Now().Add(15 * time.Second); testutil.ToFloat64(second.m.restoredProfiles) < users; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("restored %v profiles, want %d", testutil.ToFloat64(second.m.restoredProfiles), users)
		}
	}
	for i := range users {
		p, ok := second.Profile(testApp, partsHWID(i))
		if !ok || !p.Registered || len(p.sends) != 1 {
			t.Fatalf("user %d: profile %v: want registered, the campaign counted once", i, ok)
		}
	}
}
