package pricing

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestParseMicros(t *testing.T) {
	f := func(in string, want Micros, wantErr string) {
		t.Helper()
		got, err := ParseMicros(in)
		switch {
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("ParseMicros(%q) = %d, %v, want an error with %q", in, got, err, wantErr)
		case wantErr == "" && (err != nil || got != want):
			t.Fatalf("ParseMicros(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	f("0.0250", 25_000, "")
	f(" 0.0014 ", 1_400, "")
	f("12", 12_000_000, "")
	f(".5", 500_000, "")
	f("0.000001", 1, "")
	f("1,234.5", 1_234_500_000, "")
	f("1,234,567", 1_234_567_000_000, "")
	f("999999999999.999999", 999_999_999_999_999_999, "")
	f("", 0, "is empty")
	f("1.", 0, "no digits after the decimal point")
	f("0.0000001", 0, "more than 6 decimals")
	f("-1", 0, "not a decimal amount")
	f("+1", 0, "not a decimal amount")
	f("1e3", 0, "not a decimal amount")
	f("$1", 0, "not a decimal amount")
	f("1.2.3", 0, "not a decimal amount")
	f("1,23", 0, "groups of three")
	f(",123", 0, "groups of three")
	f("1234,567", 0, "groups of three")
	f("1000000000000", 0, "too large")
	f("0.5x", 0, "not a decimal amount")
}

func TestMicrosText(t *testing.T) {
	for m, want := range map[Micros]string{
		0: "0", 1: "0.000001", 25_000: "0.025", 1_000_000: "1", 1_500_000: "1.5", 123_456_789: "123.456789",
		-1_500_000: "-1.5", math.MaxInt64: "9223372036854.775807", math.MinInt64: "-9223372036854.775808",
	} {
		if got := m.String(); got != want {
			t.Errorf("Micros(%d).String() = %q, want %q", int64(m), got, want)
		}
		b, err := json.Marshal(struct{ A Micros }{m})
		if err != nil || string(b) != `{"A":`+want+`}` {
			t.Errorf("json of %d: %s %v", int64(m), b, err)
		}
	}
}

func TestMicrosOverflow(t *testing.T) {
	if _, err := Micros(math.MaxInt64 / 2).mul(3); err == nil {
		t.Fatal("mul did not overflow")
	}
	if got, err := Micros(25_000).mul(4); err != nil || got != 100_000 {
		t.Fatalf("mul: %d %v", got, err)
	}
	if _, err := Micros(math.MaxInt64).add(1); err == nil {
		t.Fatal("add did not overflow")
	}
	if _, err := Micros(-1).mul(2); err == nil {
		t.Fatal("a negative amount multiplied")
	}
}
