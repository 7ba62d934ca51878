package ingest

import (
	"hash/maphash"
	"sync"
)

// phoneCache remembers the parses of phone numbers seen recently: parsing
// and validating with libphonenumber costs microseconds (regular
// expressions per region), and the same subscribers call again and again.
// Only valid numbers are kept. Memory is bounded: a shard that is full is
// emptied, so the cache never holds more than phoneCacheShards *
// phoneCacheShardSize entries, 262,144 numbers (about 25 MB).
type phoneCache struct {
	seed   maphash.Seed
	shards [phoneCacheShards]phoneShard
}

const (
	phoneCacheShards    = 16
	phoneCacheShardSize = 16384
)

type phoneShard struct {
	mu sync.Mutex
	m  map[string]phoneEntry
}

type phoneEntry struct{ e164, country string }

func newPhoneCache() *phoneCache { return &phoneCache{seed: maphash.MakeSeed()} }

// numbers is the cache of parsePhone.
var numbers = newPhoneCache()

func (c *phoneCache) shard(s string) *phoneShard {
	return &c.shards[maphash.String(c.seed, s)%phoneCacheShards]
}

// get returns the E.164 form and country of s, if cached.
func (c *phoneCache) get(s string) (e164, country string, ok bool) {
	sh := c.shard(s)
	sh.mu.Lock()
	e, ok := sh.m[s]
	sh.mu.Unlock()
	return e.e164, e.country, ok
}

// put remembers a valid number's parse.
func (c *phoneCache) put(s, e164, country string) {
	sh := c.shard(s)
	sh.mu.Lock()
	if sh.m == nil || len(sh.m) >= phoneCacheShardSize {
		sh.m = make(map[string]phoneEntry, phoneCacheShardSize/4)
	}
	sh.m[s] = phoneEntry{e164: e164, country: country}
	sh.mu.Unlock()
}
