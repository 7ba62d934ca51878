package jsonenc

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"b\s`, "<a&b>", "\b\f\n\r\t\x00\x1f", "\u2028\u2029", "bad \xff utf8", "héllo 🍣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := String(nil, s); string(got) != string(want) {
			t.Fatalf("String(%q) = %s, encoding/json %s", s, got, want)
		}
	})
}

// TestStringEveryByte checks each byte alone and inside plain text, and
// each pair of bytes, against encoding/json: the plain-byte table must
// leave to the escapes every byte they handle.
func TestStringEveryByte(t *testing.T) {
	check := func(s string) {
		t.Helper()
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := String(nil, s); string(got) != string(want) {
			t.Fatalf("String(%q) = %s, encoding/json %s", s, got, want)
		}
	}
	for c := range 256 {
		check(string([]byte{byte(c)}))
		check("ab" + string([]byte{byte(c)}) + "cd")
		for d := range 256 {
			check(string([]byte{byte(c), byte(d)}))
		}
	}
}

func TestTime(t *testing.T) {
	for _, tm := range []time.Time{
		{},
		time.Date(2026, 12, 1, 19, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 1, 19, 0, 0, 123456789, time.UTC),
		time.Date(2026, 12, 1, 19, 0, 0, 120000000, time.FixedZone("x", 5*3600+30*60)),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("s", 17)),
	} {
		want, err := json.Marshal(tm)
		got, ok := Time(nil, tm)
		switch {
		case err != nil && ok:
			t.Errorf("Time(%v) = %s, encoding/json refuses it: %v", tm, got, err)
		case err == nil && ok && string(got) != string(want):
			t.Errorf("Time(%v) = %s, encoding/json %s", tm, got, want)
		case !ok && len(got) != 0:
			t.Errorf("Time(%v) appended %s but said not ok", tm, got)
		}
	}
}

// TestTimeYearBounds checks the year range in the time's own zone, where
// encoding/json reads it, at both ends: Time must write what encoding/json
// writes and refuse what it refuses.
func TestTimeYearBounds(t *testing.T) {
	east, west := time.FixedZone("east", 3600), time.FixedZone("west", -3600)
	for _, tm := range []time.Time{
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(0, 1, 1, 0, 30, 0, 0, east),     // year -1 in UTC
		time.Date(-1, 12, 31, 23, 30, 0, 0, west), // year 0 in UTC
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 30, 0, 0, east),   // year 9999 in UTC
		time.Date(9999, 12, 31, 23, 30, 0, 0, west), // year 10000 in UTC
	} {
		want, err := json.Marshal(tm)
		got, ok := Time(nil, tm)
		switch {
		case err != nil && ok:
			t.Errorf("Time(%v) = %s, encoding/json refuses it: %v", tm, got, err)
		case err == nil && !ok:
			t.Errorf("Time(%v) refused, encoding/json writes %s", tm, want)
		case ok && string(got) != string(want):
			t.Errorf("Time(%v) = %s, encoding/json %s", tm, got, want)
		}
	}
}

func FuzzTime(f *testing.F) {
	f.Add(int64(0), int64(0), 0)
	f.Add(int64(253402300799), int64(999999999), -3600)
	f.Add(int64(-62167219200), int64(0), 3600)
	f.Fuzz(func(t *testing.T, sec, nsec int64, off int) {
		tm := time.Unix(sec, nsec).In(time.FixedZone("z", off%(48*3600)))
		want, err := json.Marshal(tm)
		got, ok := Time(nil, tm)
		switch {
		case err != nil && ok:
			t.Fatalf("Time(%v) = %s, encoding/json refuses it: %v", tm, got, err)
		case ok && string(got) != string(want):
			t.Fatalf("Time(%v) = %s, encoding/json %s", tm, got, want)
		case err == nil && !ok && off%60 == 0:
			t.Fatalf("Time(%v) refused, encoding/json writes %s", tm, want)
		}
	})
}

// TestTimeAcrossYears compares Time with encoding/json on days spread over
// years 0-9999 (leap days, century years, both sides of 1970) and on
// random instants with random fractions and zones.
func TestTimeAcrossYears(t *testing.T) {
	check := func(tm time.Time) {
		t.Helper()
		want, err := json.Marshal(tm)
		got, ok := Time(nil, tm)
		if err != nil || !ok || string(got) != string(want) {
			t.Fatalf("Time(%v) = %s, %v; encoding/json %s, %v", tm, got, ok, want, err)
		}
	}
	for sec := int64(year0); sec < year10000; sec += 997*86400 + 3601 {
		check(time.Unix(sec, 0).UTC())
	}
	for y := 0; y < 10000; y += 97 {
		check(time.Date(y, 2, 28, 23, 59, 59, 999999999, time.UTC))
		check(time.Date(y, 3, 1, 0, 0, 0, 1, time.UTC))
		check(time.Date(y, 12, 31, 23, 59, 59, 100, time.UTC))
	}
	for _, y := range []int{0, 4, 100, 400, 1900, 2000, 2024, 2100, 9996} {
		check(time.Date(y, 2, 29, 12, 0, 0, 0, time.UTC))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20_000 {
		zone := time.FixedZone("z", (rng.IntN(47)-23)*3600+rng.IntN(4)*15*60)
		tm := time.Unix(year0+86400+rng.Int64N(year10000-year0-2*86400), rng.Int64N(1e9)).In(zone)
		if rng.IntN(4) == 0 {
			tm = tm.Truncate(time.Millisecond)
		}
		check(tm)
	}
}
