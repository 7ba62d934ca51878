package dispatcher

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func TestFairShare(t *testing.T) {
	f := func(rate float64, demands []float64, want []float64) {
		t.Helper()
		sum := 0.0
		for i := range demands {
			got := fairShare(rate, demands, i)
			sum += got
			if math.Abs(got-want[i]) > 1e-9 {
				t.Errorf("fairShare(%v, %v, %d) = %v, want %v", rate, demands, i, got, want[i])
			}
		}
		if len(demands) > 0 && math.Abs(sum-rate) > 1e-9 {
			t.Errorf("shares of %v add up to %v, want the rate %v", demands, sum, rate)
		}
	}
	f(80, []float64{1000}, []float64{80})
	f(80, []float64{1000, 1000}, []float64{40, 40})
	// Max-min: the small demand is met, the rest split among the others.
	f(80, []float64{10, 1000, 1000}, []float64{10, 35, 35})
	f(80, []float64{10, 20, 1000}, []float64{10, 20, 50})
	// Nobody saturated: what is left over is split equally.
	f(80, []float64{10, 20, 0, 0}, []float64{22.5, 32.5, 12.5, 12.5})
	f(80, []float64{0, 0}, []float64{40, 40})
	// Members that want nothing get nothing while others want more.
	f(80, []float64{0, 1000, 0}, []float64{0, 80, 0})
	if got := fairShare(80, nil, 0); got != 0 {
		t.Errorf("no members: %v", got)
	}
}

// testCoord is a coord of member id with the test defaults (heartbeat
// 250ms, 80 msg/s configured, lowering by 0.7, +5% every 5s).
func testCoord(id string, now time.Time) *coord {
	cfg := LimiterConfig{}
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	return newCoord(id, cfg, func(string) float64 { return 80 }, now)
}

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// warm makes c ready at now: past the warm-up, its own heartbeat read back.
func warm(c *coord, now time.Time) {
	c.started = now.Add(-time.Hour)
	c.receive(&schemas.SenderState{Member: c.member, PeriodMS: 250, Time: now}, now)
}

func TestCoordReadyAndBlind(t *testing.T) {
	c := testCoord("a", t0)
	backlog := map[string]usage{"1001": {waiting: 64}}
	c.work("1001", t0)
	// Warming up: no share, even alone, even with its echo.
	c.receive(&schemas.SenderState{Member: "a", PeriodMS: 250, Time: t0}, t0.Add(100*time.Millisecond))
	c.tick(t0.Add(250*time.Millisecond), backlog)
	if g := c.senders["1001"].grant; g != 0 {
		t.Fatalf("grant %v while warming up", g)
	}
	// Past the warm-up and echoed: the grant comes after the raise
	// delay (two beats of the same target).
	now := t0.Add(500 * time.Millisecond)
	c.receive(&schemas.SenderState{Member: "a", PeriodMS: 250, Time: now}, now)
	c.tick(now, backlog)
	if g := c.senders["1001"].grant; g != 0 {
		t.Fatalf("grant %v at the first ready beat, want 0 (the targets before were 0)", g)
	}
	for _, ms := range []int{750, 1000} {
		now = t0.Add(time.Duration(ms) * time.Millisecond)
		c.receive(&schemas.SenderState{Member: "a", PeriodMS: 250, Time: now}, now)
		c.tick(now, backlog)
	}
	if g := c.senders["1001"].grant; g != 80 {
		t.Fatalf("grant %v alone after the raise delay, want 80", g)
	}
	// No echo for longer than the ttl: blind, nothing granted.
	now = now.Add(800 * time.Millisecond)
	if !c.blind(now) {
		t.Fatal("not blind after 800ms without an echo")
	}
	c.tick(now, backlog)
	if g := c.senders["1001"].grant; g != 0 {
		t.Fatalf("grant %v while blind", g)
	}
}

func TestCoordLowerAndClimb(t *testing.T) {
	c := testCoord("a", t0)
	warm(c, t0)
	st := c.work("1001", t0)
	st.grant = 80
	if !c.lower("1001", codeThroughput, t0) {
		t.Fatal("130429 did not lower the rate")
	}
	if st.rate != 56 || st.grant != 56 {
		t.Fatalf("after one lowering rate %v grant %v, want 56 and 56", st.rate, st.grant)
	}
	// Within the cooldown: the answers of calls made at the old rate.
	if c.lower("1001", codeThroughput, t0.Add(500*time.Millisecond)) {
		t.Fatal("lowered again within the cooldown")
	}
	if !c.lower("1001", codeRateLimitHit, t0.Add(1500*time.Millisecond)) {
		t.Fatal("80007 after the cooldown did not lower")
	}
	if got := c.rate(st, t0.Add(1500*time.Millisecond)); math.Abs(got-39.2) > 1e-9 {
		t.Fatalf("rate %v after two lowerings, want 39.2", got)
	}
	// Quiet: +4 (5% of 80) every 5 s from the last lowering, back to 80.
	for _, tc := range []struct {
		after time.Duration
		want  float64
	}{
		{4 * time.Second, 39.2}, {5 * time.Second, 43.2}, {25 * time.Second, 59.2}, {60 * time.Second, 80},
	} {
		if got := c.rate(st, t0.Add(1500*time.Millisecond+tc.after)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("rate %v after %v, want %v", got, tc.after, tc.want)
		}
	}
	if len(st.lowerings) != 0 {
		t.Errorf("lowerings %v kept after the rate climbed back", st.lowerings)
	}
	// The floor.
	c.cfg.MinRate = 30
	for i := range 10 {
		c.lower("1001", codeTooManyCalls, t0.Add(time.Hour+time.Duration(i)*2*time.Second))
	}
	if got := c.rate(st, t0.Add(time.Hour+20*time.Second)); got != 30 {
		t.Errorf("rate %v after many lowerings, want the floor 30", got)
	}
	if lowersRate(codePairRate) || !lowersRate(codeThroughput) || !lowersRate(codeRateLimitHit) || !lowersRate(codeTooManyCalls) {
		t.Error("lowersRate: want 4, 80007, 130429 and not 131056")
	}
}

// TestCoordLoweringTravels: a lowering in another member's record cuts
// this member's rate and grant at once, the smallest lowering wins, and a
// member's configured rate caps everyone's.
func TestCoordLoweringTravels(t *testing.T) {
	c := testCoord("a", t0)
	warm(c, t0)
	st := c.work("1001", t0)
	st.grant = 40
	rec := func(member string, rate float64, at time.Time, configured float64) *schemas.SenderState {
		return &schemas.SenderState{
			Member: member, Sender: "1001", PeriodMS: 250, Demand: 100, Grant: 40,
			Rate: rate, Configured: configured, LoweredRate: rate, LoweredAt: at, LoweredCode: codeThroughput, Time: t0,
		}
	}
	if cut := c.receive(rec("b", 56, t0, 80), t0); cut != "1001" {
		t.Fatalf("receive of a lowering returned %q, want the sender", cut)
	}
	if st.rate != 56 || st.grant != 28 {
		t.Fatalf("rate %v grant %v, want 56 and 28 (the grant cut in proportion)", st.rate, st.grant)
	}
	// The same lowering again: nothing new.
	if cut := c.receive(rec("b", 56, t0, 80), t0.Add(250*time.Millisecond)); cut != "" {
		t.Fatalf("a repeated lowering cut again")
	}
	// A higher one from a third member does not raise the rate.
	c.receive(rec("c", 70, t0, 80), t0)
	if got := c.rate(st, t0.Add(time.Second)); got != 56 {
		t.Fatalf("rate %v with lowerings to 56 and 70, want 56", got)
	}
	// A member configured lower caps the rate (a rolling config change
	// goes down at once, up only when every member has it).
	c.receive(&schemas.SenderState{Member: "d", Sender: "1001", PeriodMS: 250, Rate: 50, Configured: 50, Time: t0}, t0)
	if got := c.rate(st, t0.Add(time.Second)); got != 50 {
		t.Fatalf("rate %v with a member configured at 50, want 50", got)
	}
	// Once that member is gone the lowering to 56 holds again.
	defer func() {
		c.tick(t0.Add(2*time.Second), nil)
		if got := c.rate(st, t0.Add(2*time.Second)); got != 56 {
			t.Errorf("rate %v after the member configured at 50 left, want 56", got)
		}
	}()
	recs := c.tick(t0.Add(500*time.Millisecond), nil)
	var mine *schemas.SenderState
	for _, r := range recs {
		if r.Sender == "1001" {
			mine = r
		}
	}
	if mine == nil || mine.LoweredRate != 56 || !mine.LoweredAt.Equal(t0) || mine.Configured != 50 {
		t.Fatalf("published %+v, want the dominant lowering (56 at t0) and configured 50", mine)
	}
	if last := recs[len(recs)-1]; last.Sender != "" || last.Member != "a" {
		t.Fatalf("last record %+v, want the member heartbeat", last)
	}
}

// simMember is one replica in TestCoordSimulation.
type simMember struct {
	c       *coord
	alive   bool
	phase   time.Duration // tick offset within the heartbeat
	backlog bool          // has work for the sender
	// lastDelivery per receiver keeps a sender's records in order.
	lastDelivery map[int]time.Time
}

type simMsg struct {
	to  int
	at  time.Time
	rec *schemas.SenderState
}

// coordSim runs coords exchanging records with random delays on a fake
// clock in 5 ms steps and checks after every step that the live members'
// grants of sender 1001 add up to at most the highest rate any of them
// believes.
type coordSim struct {
	t        *testing.T
	rng      *rand.Rand
	now      time.Time
	maxDelay time.Duration
	members  []*simMember
	inbox    []simMsg
	// worst is the largest sum of grants over the rate seen.
	worst float64
	// lax records overshoot in worst instead of failing.
	lax bool
}

func (s *coordSim) join(backlog bool) int {
	id := len(s.members)
	c := testCoord(fmt.Sprint("m", id), s.now)
	s.members = append(s.members, &simMember{
		c: c, alive: true, backlog: backlog,
		phase:        time.Duration(s.rng.Int64N(int64(250 * time.Millisecond))),
		lastDelivery: make(map[int]time.Time),
	})
	return id
}

func (s *coordSim) leave(id int, farewell bool) {
	m := s.members[id]
	m.alive = false
	if farewell {
		s.send(id, []*schemas.SenderState{{Member: m.c.member, PeriodMS: 250, Leaving: true, Time: s.now}})
	}
}

func (s *coordSim) send(from int, recs []*schemas.SenderState) {
	for to := range s.members {
		at := s.now.Add(time.Millisecond + time.Duration(s.rng.Int64N(int64(s.maxDelay))))
		if last := s.members[from].lastDelivery[to]; at.Before(last) {
			at = last
		}
		s.members[from].lastDelivery[to] = at
		for _, r := range recs {
			s.inbox = append(s.inbox, simMsg{to: to, at: at, rec: r})
		}
	}
}

func (s *coordSim) run(d time.Duration) {
	end := s.now.Add(d)
	for s.now.Before(end) {
		s.now = s.now.Add(5 * time.Millisecond)
		kept := s.inbox[:0]
		for _, msg := range s.inbox {
			if msg.at.After(s.now) {
				kept = append(kept, msg)
				continue
			}
			if m := s.members[msg.to]; m.alive {
				m.c.receive(msg.rec, s.now)
			}
		}
		s.inbox = kept
		for id, m := range s.members {
			if !m.alive || (s.now.Sub(t0)-m.phase)%(250*time.Millisecond) >= 5*time.Millisecond {
				continue
			}
			use := map[string]usage{}
			if m.backlog {
				m.c.work("1001", s.now)
				g := 0.0
				if st := m.c.senders["1001"]; st != nil {
					g = st.grant
				}
				use["1001"] = usage{granted: int(math.Round(g * 0.25)), waiting: 64}
			}
			s.send(id, m.c.tick(s.now, use))
		}
		s.check()
	}
}

// sum is the live members' grants and the highest rate among them.
func (s *coordSim) sum() (grants, rate float64) {
	for _, m := range s.members {
		if !m.alive {
			continue
		}
		if st := m.c.senders["1001"]; st != nil {
			grants += st.grant
			rate = max(rate, st.rate)
		}
	}
	return grants, rate
}

func (s *coordSim) check() {
	g, r := s.sum()
	if r > 0 && g/r > s.worst {
		s.worst = g / r
	}
	if g > r+1e-6 && !s.lax {
		s.t.Fatalf("at %v the grants add up to %.3f, above the rate %.3f", s.now.Sub(t0), g, r)
	}
}

// reach runs d and returns the least sum of grants over its second half,
// as a fraction of the rate.
func (s *coordSim) reach(d time.Duration) float64 {
	s.run(d / 2)
	least := math.Inf(1)
	for end := s.now.Add(d / 2); s.now.Before(end); {
		s.run(5 * time.Millisecond)
		g, r := s.sum()
		least = min(least, g/r)
	}
	return least
}

// TestCoordSimulation: replicas joining, leaving (with and without a
// farewell), starting and stopping work, and lowering the rate, with
// record delays from 1 ms up to maxDelay: the sum of grants never exceeds
// the rate, and with a stable set of busy replicas it reaches the whole
// rate. The design holds while the delays vary by less than two
// heartbeats (500 ms; a member is gone after three without a record); at
// 600 ms and more the same run overshoots (docs/LIMITS.md).
func TestCoordSimulation(t *testing.T) {
	for _, maxDelay := range []time.Duration{20 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond} {
		t.Run(fmt.Sprint("delay ", maxDelay), func(t *testing.T) {
			s := &coordSim{t: t, rng: rand.New(rand.NewPCG(1, uint64(maxDelay))), now: t0, maxDelay: maxDelay}
			s.join(true)
			if r := s.reach(4 * time.Second); r < 0.999 {
				t.Errorf("one replica reaches %.3f of the rate, want all of it", r)
			}
			s.join(true)
			if r := s.reach(4 * time.Second); r < 0.999 {
				t.Errorf("two replicas reach %.3f", r)
			}
			for range 6 {
				s.join(true)
				s.run(100 * time.Millisecond)
			}
			if r := s.reach(6 * time.Second); r < 0.999 {
				t.Errorf("eight replicas reach %.3f", r)
			}
			shares := []float64{}
			for _, m := range s.members {
				shares = append(shares, m.c.senders["1001"].grant)
			}
			if lo, hi := slices.Min(shares), slices.Max(shares); hi-lo > 1e-6 {
				t.Errorf("equal backlogs got unequal shares %v", shares)
			}
			s.leave(1, true)
			s.leave(2, false) // a crash: gone after the ttl
			s.leave(3, true)
			if r := s.reach(6 * time.Second); r < 0.999 {
				t.Errorf("five replicas after three left reach %.3f", r)
			}
			// Two stop having work, then get it back: their shares go to
			// the others and come back.
			s.members[4].backlog, s.members[5].backlog = false, false
			s.run(3 * time.Second)
			g4 := s.members[4].c.senders["1001"].grant
			if g4 > 1 {
				t.Errorf("an idle replica keeps a grant of %.2f while others have a backlog", g4)
			}
			if r := s.reach(4 * time.Second); r < 0.999 {
				t.Errorf("three busy of five reach %.3f", r)
			}
			s.members[4].backlog, s.members[5].backlog = true, true
			s.join(true)
			if r := s.reach(6 * time.Second); r < 0.999 {
				t.Errorf("six busy reach %.3f", r)
			}
			// Meta throttles: one replica lowers, every one follows.
			s.members[0].c.lower("1001", codeThroughput, s.now)
			s.run(2 * time.Second)
			for i, m := range s.members {
				if m.alive && math.Abs(m.c.senders["1001"].rate-56) > 1e-9 {
					t.Errorf("member %d believes rate %v after the lowering, want 56", i, m.c.senders["1001"].rate)
				}
			}
			if g, _ := s.sum(); g > 56+1e-6 || g < 56*0.999 {
				t.Errorf("grants add up to %.3f after the lowering, want 56", g)
			}
			t.Logf("largest sum of grants over the rate: %.4f", s.worst)
		})
	}
}
