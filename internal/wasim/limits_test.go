package wasim

import (
	"strconv"
	"testing"
	"time"
)

// TestThroughputBucket sends twice the throughput at one frozen instant:
// exactly one second of tokens passes, the rest gets 130429; tokens come
// back with time; other numbers have their own bucket.
func TestThroughputBucket(t *testing.T) {
	const tput = 10
	h := newHarness(t, hopts{frozen: true, mod: func(c *Config) { c.Throughput = tput }})
	send := func(phone, token string, i int) int {
		return h.send(t, phone, token, templateBody("+1555200"+strconv.Itoa(1000+i), "help_menu", "en_US")).code()
	}
	accepted, limited := 0, 0
	for i := range 2 * tput {
		switch c := send(phone1, token1, i); c {
		case 0:
			accepted++
		case CodeThroughput:
			limited++
		default:
			t.Fatalf("unexpected code %d", c)
		}
	}
	if accepted != tput || limited != tput {
		t.Fatalf("accepted %d, limited %d; want %d each", accepted, limited, tput)
	}
	// Another number has its own bucket, even with the same token.
	if c := send(phone2, token1, 100); c != 0 {
		t.Errorf("phone 1002 got code %d", c)
	}
	// 1/tput of a second gives back one token, and only one.
	h.clock.advance(time.Second / tput)
	if c := send(phone1, token1, 101); c != 0 {
		t.Errorf("after refill: code %d", c)
	}
	if c := send(phone1, token1, 102); c != CodeThroughput {
		t.Errorf("second send after one token: code %d", c)
	}
	// A long pause refills up to one second of tokens, no more.
	h.clock.advance(time.Hour)
	accepted = 0
	for i := range 2 * tput {
		if send(phone1, token1, 200+i) == 0 {
			accepted++
		}
	}
	if accepted != tput {
		t.Errorf("after an hour: accepted %d, want %d", accepted, tput)
	}
	if st := h.sim.Stats(); st.Rejected[CodeThroughput] != 2*tput+1 {
		t.Errorf("Rejected[130429] = %d", st.Rejected[CodeThroughput])
	}
}

// TestThroughputRealClock sends 2x the throughput as fast as it can with
// the real clock: what passes is bounded by the bucket and its refill.
func TestThroughputRealClock(t *testing.T) {
	const tput = 40
	h := newHarness(t, hopts{mod: func(c *Config) { c.Throughput = tput }})
	start := time.Now()
	accepted := 0
	for i := range 2 * tput {
		if h.send(t, phone1, token1, templateBody("+1555300"+strconv.Itoa(1000+i), "help_menu", "en_US")).code() == 0 {
			accepted++
		}
	}
	bound := tput + int(time.Since(start).Seconds()*tput) + 1
	if accepted < tput || accepted > bound {
		t.Errorf("accepted %d, want between %d and %d", accepted, tput, bound)
	}
	if bound < 2*tput && accepted == 2*tput {
		t.Errorf("nothing was limited")
	}
}

func TestPairRate(t *testing.T) {
	h := newHarness(t, hopts{frozen: true})
	to := "+15554440001"
	send := func(phone, token, to string) int {
		return h.send(t, phone, token, templateBody(to, "help_menu", "en_US")).code()
	}
	steps := []struct {
		name    string
		advance time.Duration
		phone   string
		token   string
		to      string
		want    int
	}{
		{"first", 0, phone1, token1, to, 0},
		{"same pair at once", 0, phone1, token1, to, CodePairRate},
		{"other recipient", 0, phone1, token1, "+15554440002", 0},
		{"other number, same recipient", 0, phone2, token1, to, 0},
		{"same pair 5.9s later", 5900 * time.Millisecond, phone1, token1, to, CodePairRate},
		{"same pair 6s after the first", 100 * time.Millisecond, phone1, token1, to, 0},
		// A refused send does not move the pair's clock; the accepted one did.
		{"again at once", 0, phone1, token1, "15554440001", CodePairRate},
	}
	for _, s := range steps {
		h.clock.advance(s.advance)
		if got := send(s.phone, s.token, s.to); got != s.want {
			t.Errorf("%s: code %d, want %d", s.name, got, s.want)
		}
	}
}

func TestPairRateDisabled(t *testing.T) {
	h := newHarness(t, hopts{mod: func(c *Config) { c.PairInterval = -1 }})
	for i := range 3 {
		if r := h.send(t, phone1, token1, templateBody("+15554440003", "help_menu", "en_US")); r.status != 200 {
			t.Fatalf("send %d: HTTP %d %s", i, r.status, r.raw)
		}
	}
}

// TestServiceWindow checks that the window opens with an inbound message
// and closes 24 hours later.
func TestServiceWindow(t *testing.T) {
	h := newHarness(t, hopts{frozen: true, mod: func(c *Config) { c.SyncDeliveryErrors = true; c.PairInterval = -1 }})
	to := "+15554440004"
	text := func() int { return h.send(t, phone1, token1, textBody(to, "hi")).code() }
	if c := text(); c != CodeReEngagement {
		t.Fatalf("before inbound: code %d", c)
	}
	if _, err := h.sim.SendInbound(t.Context(), phone1, to, "hello"); err != nil {
		t.Fatal(err)
	}
	if c := text(); c != 0 {
		t.Errorf("just after inbound: code %d", c)
	}
	h.clock.advance(24*time.Hour - time.Second)
	if c := text(); c != 0 {
		t.Errorf("23:59:59 after inbound: code %d", c)
	}
	h.clock.advance(time.Second)
	if c := text(); c != CodeReEngagement {
		t.Errorf("24h after inbound: code %d", c)
	}
	// Templates need no window.
	if c := h.send(t, phone1, token1, templateBody(to, "help_menu", "en_US")).code(); c != 0 {
		t.Errorf("template outside the window: code %d", c)
	}
}

// TestLimitsSweep checks that expired pair and window entries are dropped.
func TestLimitsSweep(t *testing.T) {
	l := newLimits(-1, time.Second)
	t0 := time.Unix(1_700_000_000, 0)
	l.openWindow("p", "old", t0)
	for i := range sweepEvery - 1 {
		if err := l.admit("p", strconv.Itoa(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	later := t0.Add(25 * time.Hour)
	l.openWindow("p", "new", later)
	if err := l.admit("p", "last", later); err != nil { // the sweepEvery-th admit sweeps
		t.Fatal(err)
	}
	if len(l.lastSend) != 1 || len(l.windows) != 1 {
		t.Errorf("after sweep: %d pairs, %d windows; want 1 and 1", len(l.lastSend), len(l.windows))
	}
	if !l.inWindow("p", "new", later) || l.inWindow("p", "old", later) {
		t.Errorf("wrong window swept")
	}
}

// TestAcceptedPerSecondAndSetThroughput counts accepted messages per second
// of the simulator's clock, and lowers then disables the throughput at run
// time.
func TestAcceptedPerSecondAndSetThroughput(t *testing.T) {
	h := newHarness(t, hopts{frozen: true, mod: func(c *Config) { c.Throughput = 10; c.PairInterval = -1 }})
	send := func(i int) int {
		return h.send(t, phone1, token1, templateBody("+1555500"+strconv.Itoa(1000+i), "help_menu", "en_US")).code()
	}
	sec0 := h.clock.now().Unix()
	for i := range 15 { // 10 pass, 5 get 130429
		send(i)
	}
	h.clock.advance(time.Second)
	h.sim.SetThroughput(4) // the bucket refilled to 10, capped to 4 now
	passed := 0
	for i := range 10 {
		if send(100+i) == 0 {
			passed++
		}
	}
	if passed != 4 {
		t.Errorf("after SetThroughput(4): %d passed, want 4", passed)
	}
	h.clock.advance(time.Second)
	h.sim.SetThroughput(-1)
	for i := range 50 {
		if c := send(200 + i); c != 0 {
			t.Fatalf("throughput disabled: code %d", c)
		}
	}
	got := h.sim.AcceptedPerSecond(phone1)
	want := map[int64]int{sec0: 10, sec0 + 1: 4, sec0 + 2: 50}
	if len(got) != len(want) {
		t.Fatalf("AcceptedPerSecond = %v, want %v", got, want)
	}
	for s, n := range want {
		if got[s] != n {
			t.Errorf("second %d: %d accepted, want %d (all: %v)", s-sec0, got[s], n, got)
		}
	}
	if other := h.sim.AcceptedPerSecond(phone2); len(other) != 0 {
		t.Errorf("phone 1002 counts %v, want none", other)
	}
}
