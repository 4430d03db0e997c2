package decisionfeed

import (
	"hash/maphash"
	"sync"
	"time"
)

// liveSet is the live set under construction: the latest add per key.
// Values are unique across scopes (a range holds a '/', an address none),
// so the value identifies the key. The index maps a 64-bit hash of the
// value to its slot, which costs a third of a map keyed by string; the
// rare value whose hash collides with another's goes to spill.
type liveSet struct {
	mu    sync.Mutex
	seed  maphash.Seed
	idx   map[uint64]int32
	spill map[string]int32
	slots []Decision
	free  []int32
	// hashFn replaces the hash in tests that force collisions.
	hashFn func(string) uint64
}

func newLiveSet(capHint int) *liveSet {
	return &liveSet{
		seed:  maphash.MakeSeed(),
		idx:   make(map[uint64]int32, capHint),
		spill: map[string]int32{},
		slots: make([]Decision, 0, capHint),
	}
}

func (l *liveSet) hash(value string) uint64 {
	if l.hashFn != nil {
		return l.hashFn(value)
	}
	return maphash.String(l.seed, value)
}

// apply applies one change. Changes of one partition come in order;
// partitions share no key, so their interleaving does not matter.
func (l *liveSet) apply(c change) {
	h := l.hash(c.value)
	l.mu.Lock()
	defer l.mu.Unlock()
	slot, taken := l.idx[h]
	inIdx := taken && l.slots[slot].Value == c.value // else another value has this hash
	inSpill := false
	if !inIdx && len(l.spill) > 0 {
		slot, inSpill = l.spill[c.value]
	}
	switch {
	case c.del && inIdx:
		delete(l.idx, h)
	case c.del && inSpill:
		delete(l.spill, c.value)
	case c.del:
		return
	case inIdx || inSpill:
		l.slots[slot] = c.d
		return
	default:
		if n := len(l.free); n > 0 {
			slot = l.free[n-1]
			l.free = l.free[:n-1]
			l.slots[slot] = c.d
		} else {
			slot = int32(len(l.slots))
			l.slots = append(l.slots, c.d)
		}
		if taken {
			l.spill[c.value] = slot
		} else {
			l.idx[h] = slot
		}
		return
	}
	l.slots[slot] = Decision{}
	l.free = append(l.free, slot)
}

// handOver drops the free slots and the adds expired at now, and returns
// the live decisions. What is left is a set of the hashes of the live
// keys, which the subscriber keeps to count them.
func (l *liveSet) handOver(now time.Time) ([]Decision, keySet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.slots[:0]
	for i := range l.slots {
		d := &l.slots[i]
		if d.ID == "" {
			continue
		}
		if d.Expired(now) {
			if _, ok := l.spill[d.Value]; ok {
				delete(l.spill, d.Value)
			} else {
				delete(l.idx, l.hash(d.Value))
			}
			continue
		}
		out = append(out, *d)
	}
	clear(l.slots[len(out):])
	for v := range l.spill {
		l.idx[l.hash(v)] = 0
	}
	keys := keySet{hash: l.hash, m: l.idx}
	l.slots, l.free, l.idx, l.spill = nil, nil, nil, nil
	return out, keys
}

// keySet is the set of live keys after the snapshot, by 64-bit hash of
// the value; it only feeds the live gauge, where a collision in a million
// keys (odds about 1 in 10^7) would be an off-by-one.
type keySet struct {
	hash func(string) uint64
	m    map[uint64]int32
}

func (k keySet) add(v string) { k.m[k.hash(v)] = 0 }
func (k keySet) del(v string) { delete(k.m, k.hash(v)) }
func (k keySet) len() int     { return len(k.m) }
