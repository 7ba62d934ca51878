package segmenter

import "github.com/cespare/xxhash/v2"

// A worker keeps the profiles it saved decoded (Segmenter.hot), so that the
// next event of the same user skips the cache read and the decode. That
// pays when users come back soon: a burst of one user's events, a
// campaign's statuses. When they do not (many users, each event of a user
// further apart than hotMax saves: `herald bench` writes user i % 100,000)
// every event pays for a map probe that misses, a map insert and a
// decoded profile kept alive for the collector to scan, for nothing: about
// 9% of the segmenter's CPU a record there (docs/BENCHMARKS.md).
//
// So each worker watches what the hot map would give it. A ghost table
// holds the key hashes of its latest saves, each with the number of the
// save (ghostSlots of them, by hash, a newer save taking the slot of an
// older one): an event whose key is there, saved within the last hotMax
// saves, would find its profile hot. The table has four times hotMax
// slots, so that its collisions miss few of those. Over each window of
// hotWindow events, the share of such events decides: the hot map stays
// on at hotOff or more, and comes back at hotOn or more. The table is kept
// in both states, so the decision reads the same signal whichever way the
// map is.

const (
	// hotWindow is the events over which hotPolicy decides.
	hotWindow = 4096
	// hotOn and hotOff are the shares of events (in 1/hotWindow) whose
	// profile would be hot at which the map comes back or goes away: the
	// gap between them keeps a share near the line from switching the
	// map at every window.
	hotOn  = hotWindow * 2 / 5
	hotOff = hotWindow / 5
	// ghostSlots is the size of the ghost table (16 bytes a slot).
	ghostSlots = 4 * hotMax
)

// ghostSlot is a save in the ghost table.
type ghostSlot struct {
	hash uint64 // ghostHash of the key (0: none)
	save uint64 // hotPolicy.saves when it was saved
}

// hotPolicy is a worker's decision to keep decoded profiles.
type hotPolicy struct {
	off   bool        // the zero value keeps them
	ghost []ghostSlot // the latest saves, by key hash modulo ghostSlots
	saves uint64      // saves noted
	seen  int         // events in the current window
	would int         // of them, those whose profile the ghost had
}

// observe counts an event of key, and reports whether the map was
// switched, and which way, at the end of a window.
func (h *hotPolicy) observe(key []byte) (switched, on bool) {
	k, g := h.slot(key)
	if g.hash == k && h.saves-g.save < hotMax {
		h.would++
	}
	if h.seen++; h.seen < hotWindow {
		return false, !h.off
	}
	switch {
	case !h.off && h.would < hotOff:
		h.off, switched = true, true
	case h.off && h.would >= hotOn:
		h.off, switched = false, true
	}
	h.seen, h.would = 0, 0
	return switched, !h.off
}

// saved notes a save of key's profile in the ghost table.
func (h *hotPolicy) saved(key []byte) {
	k, g := h.slot(key)
	h.saves++
	*g = ghostSlot{hash: k, save: h.saves}
}

// slot returns key's hash and its slot in the ghost table.
func (h *hotPolicy) slot(key []byte) (uint64, *ghostSlot) {
	if h.ghost == nil {
		h.ghost = make([]ghostSlot, ghostSlots)
	}
	k := ghostHash(key)
	return k, &h.ghost[k%ghostSlots]
}

// ghostHash is key's hash in the ghost table, never 0 (an empty slot).
func ghostHash(key []byte) uint64 { return xxhash.Sum64(key) | 1 }
