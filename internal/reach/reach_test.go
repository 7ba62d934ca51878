package reach

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/schemas"
)

func TestLedger(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLedger()
	claim := func(to string, at time.Duration) *schemas.ReachClaim {
		return &schemas.ReachClaim{ID: to, Business: "w1", App: "a", To: to, Tier: 2, Time: t0.Add(at)}
	}
	f := func(to string, at time.Duration, want bool) {
		t.Helper()
		if got := l.Apply(claim(to, at)); got != want {
			t.Fatalf("claim %s at %v: granted %v, want %v", to, at, got, want)
		}
	}
	f("+1", 0, true)
	f("+2", time.Hour, true)
	f("+3", 2*time.Hour, false) // tier 2 full
	f("+1", 3*time.Hour, true)  // renewal: +1 counts until 27 h
	if n := l.Used("w1", t0.Add(4*time.Hour)); n != 2 {
		t.Fatalf("used at 4h = %d, want 2", n)
	}
	if n := l.Used("w1", t0.Add(25*time.Hour)); n != 1 { // +2 gone at 25 h
		t.Fatalf("used at 25h = %d, want 1", n)
	}
	if n := l.Used("other", t0); n != 0 {
		t.Fatalf("used of an unknown business = %d", n)
	}
	f("+3", 25*time.Hour, true)  // +2's place freed
	f("+4", 26*time.Hour, false) // +1 (renewed at 3 h) still counts
	f("+4", 27*time.Hour, true)  // +1 gone
	if !l.Counted("w1", "+3", t0.Add(27*time.Hour)) || l.Counted("w1", "+1", t0.Add(27*time.Hour)) {
		t.Fatal("counted: want +3 and not +1 at 27 h")
	}
	// Other businesses have their own tier.
	c := claim("+9", 27*time.Hour)
	c.Business = "w2"
	if !l.Apply(c) {
		t.Fatal("w2's first claim refused")
	}
}
