package segmenter

import (
	"testing"

	"github.com/VictoriaMetrics/fastcache"
)

// TestPrefault checks that prefault's writes allocate every chunk of the
// cache, one Set each, and that it leaves the cache empty and
// working.
func TestPrefault(t *testing.T) {
	c := fastcache.New(MinCacheBytes)
	defer c.Reset()
	full, sets := fill(c)
	chunks := MinCacheBytes / prefaultChunk
	if !full || sets != chunks {
		t.Fatalf("fill: full %v after %d Sets, want every one of %d chunks allocated, a Set each", full, sets, chunks)
	}
	t.Logf("%d Sets for %d chunks", sets, chunks)
	c.Reset()

	c = fastcache.New(MinCacheBytes)
	defer c.Reset()
	prefault(c)
	var st fastcache.Stats
	c.UpdateStats(&st)
	if st.EntriesCount != 0 || st.BytesSize != 0 {
		t.Fatalf("after prefault: %d entries, %d bytes of chunks: want an empty cache", st.EntriesCount, st.BytesSize)
	}
	c.Set([]byte("k"), []byte("v"))
	if v := c.Get(nil, []byte("k")); string(v) != "v" {
		t.Fatalf("Get after prefault: %q", v)
	}
}

// TestPrefaultedSegmenter runs a segmenter as `herald segmenter` makes it
// (CacheLazy unset): a profile written after the prefault reads back.
func TestPrefaultedSegmenter(t *testing.T) {
	s, err := newSegmenter(Config{CacheBytes: MinCacheBytes}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var st fastcache.Stats
	s.cache.UpdateStats(&st)
	if st.EntriesCount != 0 {
		t.Fatalf("%d entries after the prefault", st.EntriesCount)
	}
	p := &Profile{UserID: "u1", Country: "IN"}
	if err := s.save([]byte("app\x00hwid"), p); err != nil {
		t.Fatal(err)
	}
	got, ok := s.loadStored([]byte("app\x00hwid"))
	if !ok || got.UserID != "u1" || got.Country != "IN" {
		t.Fatalf("loadStored after the prefault: %+v, %v", got, ok)
	}
}
