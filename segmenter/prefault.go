package segmenter

import (
	"encoding/binary"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
)

// fastcache's layout, which prefault follows: a cache is 512 buckets, a
// key's bucket its xxhash modulo 512, and each bucket holds its entries in
// chunks of 64 KiB, taken from a process-wide pool of memory mapped 64 MiB
// at a time and never returned to the system.
const (
	prefaultBuckets = 512
	prefaultChunk   = 64 << 10
)

// prefault writes every byte of c's memory once and empties c again, so
// that the pages are in memory before the first profile: a write to a page
// of a fresh mapping faults, which the segmenter would otherwise pay, 4 KiB
// at a time, through the whole first pass of the cache over its memory.
//
// It fills each bucket with entries of a chunk each, then Resets c, which
// puts the chunks back in fastcache's pool, from which c's buckets take
// them again. That leans on how fastcache allocates, not on its API: were
// it to change, prefault would cost its writes (the cache's size, once)
// and no more, and never a profile (c is empty after it either way).
func prefault(c *fastcache.Cache) {
	fill(c)
	c.Reset()
}

// fill is prefault's writes: a key of each bucket, Set once per chunk of
// the bucket with a value that takes the chunk. It reports whether every
// chunk of c was allocated, and the number of Sets.
func fill(c *fastcache.Cache) (full bool, sets int) {
	var st fastcache.Stats
	c.UpdateStats(&st)
	perBucket := int(st.MaxBytesSize / prefaultBuckets / prefaultChunk)
	var keys [prefaultBuckets][]byte
	for i, found := uint64(0), 0; found < prefaultBuckets && i < 1<<20; i++ {
		k := binary.LittleEndian.AppendUint64(nil, i)
		if b := xxhash.Sum64(k) % prefaultBuckets; keys[b] == nil {
			keys[b] = k
			found++
		}
	}
	// One chunk less a byte with fastcache's 4-byte length prefix: the
	// next Set of the bucket does not fit after it and takes the next chunk.
	v := make([]byte, prefaultChunk-1-4-8)
	for _, k := range keys {
		for range perBucket {
			if k != nil {
				c.Set(k, v)
				sets++
			}
		}
	}
	st = fastcache.Stats{}
	c.UpdateStats(&st)
	return st.BytesSize == st.MaxBytesSize, sets
}
