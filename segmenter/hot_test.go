package segmenter

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/schemas"
)

// TestHotPolicy drives a policy with keys that never come back soon (a
// new user each event): it turns the map off after one window and stays
// off; then with a few users that come back at once: it turns it on again
// after one window and stays on.
func TestHotPolicy(t *testing.T) {
	var h hotPolicy
	key := func(i int) []byte { return fmt.Appendf(nil, "app\x00user:%d", i) }
	switches := 0
	for i := range 3 * hotWindow {
		sw, on := h.observe(key(i))
		h.saved(key(i))
		if sw {
			switches++
			if on || i != hotWindow-1 {
				t.Fatalf("event %d of new users: switched, on %v; want off at the end of the first window (%d)", i, on, hotWindow-1)
			}
		}
	}
	if !h.off || switches != 1 {
		t.Fatalf("after %d events of new users: off %v after %d switches, want off after 1", 3*hotWindow, h.off, switches)
	}
	switches = 0
	for i := range 3 * hotWindow {
		k := key(i % 16)
		sw, on := h.observe(k)
		h.saved(k)
		if sw {
			switches++
			if !on || i != hotWindow-1 {
				t.Fatalf("event %d of 16 users: switched, on %v; want on at the end of the first window", i, on)
			}
		}
	}
	if h.off || switches != 1 {
		t.Fatalf("after %d events of 16 users: off %v after %d switches, want on after 1", 3*hotWindow, h.off, switches)
	}
	// Users coming back after more saves than the map holds: off. Half
	// as many: on (a map of hotMax holds them, whatever the ghost's
	// collisions).
	for _, tc := range []struct {
		users int
		off   bool
	}{{2 * hotMax, true}, {hotMax / 2, false}} {
		h = hotPolicy{}
		for i := range 8 * hotWindow {
			k := key(i % tc.users)
			h.observe(k)
			h.saved(k)
		}
		if h.off != tc.off {
			t.Fatalf("%d users in turn: off %v, want %v", tc.users, h.off, tc.off)
		}
	}
	// Near the line, between hotOff and hotOn, it stays as it is.
	for _, off := range []bool{false, true} {
		h = hotPolicy{off: off}
		users := hotMax * 10 // most keys new: the repeats below decide
		for i := range 2 * hotWindow {
			k := key(users + i)
			if i%10 < 3 { // 30% of the events a user seen just before
				k = key(0)
			}
			if sw, _ := h.observe(k); sw {
				t.Fatalf("off %v: switched at event %d with 30%% of the events hot, between hotOff and hotOn", off, i)
			}
			h.saved(k)
		}
	}
}

// TestHotOffSameOutputs processes the same events with the decoded
// profiles kept and with them off: the outputs and the stored profiles
// are the same, byte for byte.
func TestHotOffSameOutputs(t *testing.T) {
	recs := benchEvents(t, 64, 40) // 2,560 events, under a window: no switch
	on, off := newTest(t, Config{}), newTest(t, Config{})
	for _, w := range off.workers {
		w.hotp.off = true
	}
	for part := range slices.Chunk(recs, 100) {
		a, b := on.process(t, part...), off.process(t, part...)
		if len(a) != len(b) {
			t.Fatalf("%d outputs with the profiles kept, %d without", len(a), len(b))
		}
		for i := range a {
			if a[i].Topic != b[i].Topic || !bytes.Equal(a[i].Key, b[i].Key) || !bytes.Equal(a[i].Value, b[i].Value) {
				t.Fatalf("output %d differs:\n kept %s %q %s\n  off %s %q %s", i, a[i].Topic, a[i].Key, a[i].Value, b[i].Topic, b[i].Key, b[i].Value)
			}
		}
		if err := sameChangelog(on.changelog, off.changelog); err != nil {
			t.Fatal(err)
		}
	}
	hot := 0
	for _, w := range on.workers {
		hot += len(w.hot)
		if w.hotp.off {
			t.Fatal("a worker turned its decoded profiles off: the comparison needs them on")
		}
	}
	for _, w := range off.workers {
		if len(w.hot) != 0 || !w.hotp.off {
			t.Fatalf("a worker with them off keeps %d decoded profiles (off %v)", len(w.hot), w.hotp.off)
		}
	}
	if hot == 0 {
		t.Fatal("no decoded profiles kept: the comparison compares nothing")
	}
	for _, r := range recs[:64] {
		a, okA := on.loadStored(r.Key)
		b, okB := off.loadStored(r.Key)
		if !okA || !okB {
			t.Fatalf("profile %q stored %v / %v", r.Key, okA, okB)
		}
		if err := equalProfile(a, b); err != nil {
			t.Fatalf("profile %q: %v", r.Key, err)
		}
	}
}

// sameChangelog compares two batches' changelog records.
func sameChangelog(a, b []*Profile) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d changelog records with the profiles kept, %d without", len(a), len(b))
	}
	for i := range a {
		if err := equalProfile(a[i], b[i]); err != nil {
			return fmt.Errorf("changelog record %d: %w", i, err)
		}
	}
	return nil
}

// TestHotSwitchForgets turns a worker's decoded profiles off and on again
// while one user's profile changes in between: the change is not lost to
// the copy kept from before (off forgets them all).
func TestHotSwitchForgets(t *testing.T) {
	s := newTest(t, Config{Workers: 1})
	w := s.workers[0]
	user := func(id string, n int) *schemas.Event { // user 0 is testHWID's
		e := custom(id, "Visit", t0.Add(time.Duration(n)*time.Millisecond))
		if n > 0 {
			e.HWID = fmt.Sprintf("whatsapp:+1415666%04d", n)
		}
		return e
	}
	counts := func() uint64 {
		p, ok := s.loadStored(record(t, user("x", 0)).Key)
		if !ok {
			t.Fatal("user 0 has no profile")
		}
		for _, c := range p.Events {
			if c.Name == "Visit" {
				return c.Count
			}
		}
		return 0
	}
	s.process(t, record(t, user("a-1", 0)))
	if len(w.hot) != 1 {
		t.Fatalf("%d decoded profiles kept after one event, want 1", len(w.hot))
	}
	// A window of new users: off, and user 0's copy forgotten.
	var batch []*kgo.Record
	for i := range hotWindow {
		batch = append(batch, record(t, user(fmt.Sprintf("n-%d", i), 1+i%9000)))
	}
	s.process(t, batch...)
	if !w.hotp.off || len(w.hot) != 0 {
		t.Fatalf("after a window of new users: off %v, %d decoded profiles kept; want off, none", w.hotp.off, len(w.hot))
	}
	s.process(t, record(t, user("a-2", 0))) // the cache has it, no kept copy
	// A window of a few users coming back: on again.
	batch = batch[:0]
	for i := range hotWindow {
		batch = append(batch, record(t, user(fmt.Sprintf("r-%d", i), 1+i%8)))
	}
	s.process(t, batch...)
	if w.hotp.off {
		t.Fatal("after a window of 8 users: still off")
	}
	s.process(t, record(t, user("a-3", 0)))
	if n := counts(); n != 3 {
		t.Fatalf("user 0 counted %d visits, want 3", n)
	}
	if got := s.metric(t, "herald_segmenter_hot_switches_total", "to", "off"); got != 1 {
		t.Fatalf("hot_switches_total{to=off} = %v, want 1", got)
	}
	if got := s.metric(t, "herald_segmenter_hot_switches_total", "to", "on"); got != 1 {
		t.Fatalf("hot_switches_total{to=on} = %v, want 1", got)
	}
}
