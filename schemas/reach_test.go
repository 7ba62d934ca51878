package schemas

import (
	"strings"
	"testing"
)

// TestReachRecordsRefuseBadInput: records that break the contract fail to
// decode with an error naming the field, never a panic.
func TestReachRecordsRefuseBadInput(t *testing.T) {
	f := func(decode func([]byte) error, value, field string) {
		t.Helper()
		err := decode([]byte(value))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Fatalf("%s: err %v, want it to name %q", value, err, field)
		}
	}
	claim := func(b []byte) error { _, err := DecodeReachClaim(b); return err }
	sup := func(b []byte) error { _, err := DecodeSuppression(b); return err }
	f(claim, `{"v":1,"business":"w","app":"a","to":"+1","tier":250,"time":"2026-01-01T00:00:00Z"}`, "id")
	f(claim, `{"v":1,"id":"c","app":"a","to":"+1","tier":250,"time":"2026-01-01T00:00:00Z"}`, "business")
	f(claim, `{"v":1,"id":"c","business":"w","app":"a","to":"+1","tier":0,"time":"2026-01-01T00:00:00Z"}`, "tier")
	f(claim, `{"v":1,"id":"c","business":"w","app":"a|b","to":"+1","tier":250,"time":"2026-01-01T00:00:00Z"}`, "app")
	f(claim, `{"v":1,"id":"c","business":"w","app":"a","to":"+1","tier":250}`, "time")
	f(claim, `{"v":2}`, "v=2")
	f(sup, `{"v":1,"app":"a","to":"+1","reason":"spam","time":"2026-01-01T00:00:00Z"}`, "reason")
	f(sup, `{"v":1,"app":"a","reason":"marketing_opt_out","time":"2026-01-01T00:00:00Z"}`, "to")
	f(sup, `not json`, "json")
	if _, err := DecodeReachClaim([]byte(`{"v":1,"id":"c","business":"w","app":"a","to":"+1","tier":250,"time":"2026-01-01T00:00:00Z"}`)); err != nil {
		t.Fatalf("a valid claim: %v", err)
	}
}
