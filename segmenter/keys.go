package segmenter

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// keyIndex lists the profile keys of each TopicEvents partition, so that a
// campaign can visit every profile of a partition (fastcache cannot list
// its keys). Keys are appended to one byte arena per partition; a set of
// their 64-bit hashes keeps each key once. It costs about 30 bytes plus the
// key per profile. Safe for concurrent use.
type keyIndex struct {
	mu    sync.Mutex
	parts map[int32]*partKeys
}

type partKeys struct {
	seen  map[uint64]struct{}
	arena []byte
	ends  []uint32 // end offset of each key in arena
}

func newKeyIndex() *keyIndex { return &keyIndex{parts: make(map[int32]*partKeys)} }

// add records key as a profile of partition.
func (ix *keyIndex) add(partition int32, key []byte) {
	h := xxhash.Sum64(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	pk := ix.parts[partition]
	if pk == nil {
		pk = &partKeys{seen: make(map[uint64]struct{})}
		ix.parts[partition] = pk
	}
	if _, ok := pk.seen[h]; ok {
		return
	}
	pk.seen[h] = struct{}{}
	pk.arena = append(pk.arena, key...)
	pk.ends = append(pk.ends, uint32(len(pk.arena)))
}

// keys returns a snapshot of partition's keys: slices of the arena, valid
// until the index is changed (appends never move what is already there
// unless the arena grows: the snapshot keeps the old array alive).
func (ix *keyIndex) keys(partition int32) [][]byte {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	pk := ix.parts[partition]
	if pk == nil {
		return nil
	}
	out := make([][]byte, len(pk.ends))
	start := uint32(0)
	for i, end := range pk.ends {
		out[i] = pk.arena[start:end:end]
		start = end
	}
	return out
}

// count is the number of keys of partition.
func (ix *keyIndex) count(partition int32) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if pk := ix.parts[partition]; pk != nil {
		return len(pk.ends)
	}
	return 0
}
