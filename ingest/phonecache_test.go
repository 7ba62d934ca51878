package ingest

import (
	"fmt"
	"testing"
)

func TestPhoneCacheBounded(t *testing.T) {
	c := newPhoneCache()
	if _, _, ok := c.get("+1"); ok {
		t.Fatal("empty cache has an entry")
	}
	c.put("+1 650-555-1234", "+16505551234", "US")
	if e, cc, ok := c.get("+1 650-555-1234"); !ok || e != "+16505551234" || cc != "US" {
		t.Fatalf("get = %q %q %v", e, cc, ok)
	}
	for i := range 10 * phoneCacheShards * phoneCacheShardSize {
		c.put(fmt.Sprint(i), "x", "")
	}
	n := 0
	for i := range c.shards {
		if l := len(c.shards[i].m); l > phoneCacheShardSize {
			t.Fatalf("shard %d holds %d entries, over %d", i, l, phoneCacheShardSize)
		} else {
			n += l
		}
	}
	if n == 0 {
		t.Fatal("cache empty after puts")
	}
}

// TestParsePhoneCached: a cached parse answers exactly as a fresh one, and
// invalid numbers are never cached.
func TestParsePhoneCached(t *testing.T) {
	for _, in := range []string{"+1 (650) 555-1234", "+4915123456789", "+44 7400 123456"} {
		e1, c1, err1 := parsePhone("f", in)
		if err1 != nil {
			t.Fatal(err1)
		}
		if _, _, ok := numbers.get(in); !ok {
			t.Fatalf("%s not cached", in)
		}
		e2, c2, err2 := parsePhone("f", in)
		if err2 != nil || e1 != e2 || c1 != c2 {
			t.Fatalf("%s: fresh %s %s, cached %s %s %v", in, e1, c1, e2, c2, err2)
		}
		w, wc, ok := waNumber(e1[1:])
		if !ok || w != e1 || wc != c1 {
			t.Fatalf("waNumber(%s) = %s %s %v, want %s %s", e1[1:], w, wc, ok, e1, c1)
		}
	}
	for range 2 {
		if _, _, err := parsePhone("f", "+15550000000"); err == nil {
			t.Fatal("invalid number accepted")
		}
	}
	if _, _, ok := numbers.get("+15550000000"); ok {
		t.Fatal("invalid number cached")
	}
}
