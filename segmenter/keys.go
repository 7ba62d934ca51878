package segmenter

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// keyIndex lists the profile keys of each TopicEvents partition, so that a
// campaign can visit every profile of a partition (fastcache cannot list
// its keys), and where each profile's latest changelog record is, so that
// a profile fastcache evicted is read back from the changelog instead of
// starting empty (cold.go). Keys are appended to one byte arena per
// partition; a map of their 64-bit hashes to the changelog offset keeps
// each key once. It costs about 40 bytes plus the key per profile. Safe for
// concurrent use.
type keyIndex struct {
	mu    sync.Mutex
	parts map[int32]*partKeys
}

type partKeys struct {
	seen  map[uint64]int64 // key hash -> changelog offset, noOffset until known
	arena []byte
	ends  []uint32 // end offset of each key in arena
}

// noOffset marks a key whose changelog record is not acknowledged yet.
const noOffset = -1

func newKeyIndex() *keyIndex { return &keyIndex{parts: make(map[int32]*partKeys)} }

// part returns partition's keys, made on first use; ix.mu is held.
func (ix *keyIndex) part(partition int32) *partKeys {
	pk := ix.parts[partition]
	if pk == nil {
		pk = &partKeys{seen: make(map[uint64]int64)}
		ix.parts[partition] = pk
	}
	return pk
}

// addLocked records key (hash h) as a profile of pk, at offset when it is
// new.
func (pk *partKeys) addLocked(key []byte, h uint64, offset int64) {
	if _, ok := pk.seen[h]; ok {
		return
	}
	pk.seen[h] = offset
	pk.arena = append(pk.arena, key...)
	pk.ends = append(pk.ends, uint32(len(pk.arena)))
}

// add records key as a profile of partition.
func (ix *keyIndex) add(partition int32, key []byte) {
	h := xxhash.Sum64(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.part(partition).addLocked(key, h, noOffset)
}

// setOffset records that the latest changelog record of key (a profile of
// partition, added if new) is at offset.
func (ix *keyIndex) setOffset(partition int32, key []byte, offset int64) {
	h := xxhash.Sum64(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	pk := ix.part(partition)
	pk.addLocked(key, h, offset)
	if offset > pk.seen[h] {
		pk.seen[h] = offset
	}
}

// drop forgets the changelog position of key (a tombstone): the profile
// is gone, not evicted.
func (ix *keyIndex) drop(partition int32, key []byte) {
	h := xxhash.Sum64(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if pk := ix.parts[partition]; pk != nil {
		if _, ok := pk.seen[h]; ok {
			pk.seen[h] = noOffset
		}
	}
}

// offset returns the offset of key's latest changelog record in
// partition; false when the key is not a profile of partition or its
// record is not acknowledged yet.
func (ix *keyIndex) offset(partition int32, key []byte) (int64, bool) {
	h := xxhash.Sum64(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	pk := ix.parts[partition]
	if pk == nil {
		return 0, false
	}
	off, ok := pk.seen[h]
	return off, ok && off != noOffset
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
