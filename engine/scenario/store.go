package scenario

import (
	"strings"
	"time"
)

// key names a bucket: the source address (16 bytes, IPv4 mapped), or the
// groupby value.
type key struct {
	ip [16]byte
	s  string
}

// bucket is one group's state. Times are Unix nanoseconds of event time.
type bucket struct {
	k         key
	tat       int64 // when the bucket will be empty (theoretical arrival time)
	first     int64
	last      int64
	blackhole int64 // silenced until
	count     uint32
	prev      int32    // LRU list: toward most recent
	next      int32    // toward least recent
	dpos      uint8    // next slot to overwrite once distinct is full
	distinct  []uint64 // hashes of the distinct values counted
}

func (b *bucket) resetDistinct() { b.distinct, b.dpos = b.distinct[:0], 0 }

func (b *bucket) seen(h uint64) bool {
	for _, x := range b.distinct {
		if x == h {
			return true
		}
	}
	return false
}

// remember adds h to the distinct values; once MaxDistinct are held it
// overwrites the oldest. The slice grows as needed, so a bucket that sees
// few values costs little.
func (b *bucket) remember(h uint64) {
	if len(b.distinct) < MaxDistinct {
		b.distinct = append(b.distinct, h)
		return
	}
	b.distinct[b.dpos] = h
	b.dpos = uint8((int(b.dpos) + 1) % MaxDistinct)
}

// store holds one scenario's buckets in a slab with an index and an
// intrusive LRU list, so its size is bounded and drained buckets are
// reclaimed in O(1) per event.
type store struct {
	byIP    map[[16]byte]int32 // buckets grouped by address: the fast, common case
	byStr   map[string]int32   // buckets grouped by a groupby value
	slab    []bucket
	free    []int32
	head    int32 // most recently updated, -1 if empty
	tail    int32 // least recently updated
	max     int
	evicted uint64
}

func newStore(max int) *store {
	return &store{byIP: map[[16]byte]int32{}, byStr: map[string]int32{}, head: -1, tail: -1, max: max}
}

func (s *store) len() int { return len(s.byIP) + len(s.byStr) }

// lookup finds the bucket of k.
func (s *store) lookup(k *key) (int32, bool) {
	if k.s == "" {
		i, ok := s.byIP[k.ip]
		return i, ok
	}
	i, ok := s.byStr[k.s]
	return i, ok
}

// get returns the bucket for k, creating it (and evicting the least
// recently updated bucket if the store is full).
func (s *store) get(k key, now int64) (*bucket, int32) {
	if i, ok := s.lookup(&k); ok {
		return &s.slab[i], i
	}
	if s.len() >= s.max {
		s.evicted++
		s.remove(s.tail)
	}
	var i int32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		s.slab = append(s.slab, bucket{})
		i = int32(len(s.slab) - 1)
	}
	b := &s.slab[i]
	d := b.distinct[:0]
	*b = bucket{k: k, tat: now, first: now, last: now, prev: -1, next: s.head, distinct: d}
	if s.head >= 0 {
		s.slab[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
	if k.s == "" {
		s.byIP[k.ip] = i
	} else {
		k.s = strings.Clone(k.s) // the value usually points into a read buffer
		b.k = k
		s.byStr[k.s] = i
	}
	return b, i
}

// touch moves bucket i to the head of the LRU list.
func (s *store) touch(i int32) {
	if s.head == i {
		return
	}
	b := &s.slab[i]
	// unlink
	if b.prev >= 0 {
		s.slab[b.prev].next = b.next
	}
	if b.next >= 0 {
		s.slab[b.next].prev = b.prev
	}
	if s.tail == i {
		s.tail = b.prev
	}
	// push front
	b.prev = -1
	b.next = s.head
	s.slab[s.head].prev = i
	s.head = i
}

func (s *store) remove(i int32) {
	b := &s.slab[i]
	if b.prev >= 0 {
		s.slab[b.prev].next = b.next
	} else {
		s.head = b.next
	}
	if b.next >= 0 {
		s.slab[b.next].prev = b.prev
	} else {
		s.tail = b.prev
	}
	if b.k.s == "" {
		delete(s.byIP, b.k.ip)
	} else {
		delete(s.byStr, b.k.s)
	}
	b.k = key{}
	b.resetDistinct()
	s.free = append(s.free, i)
}

// idleGrace keeps a drained bucket this long after its last event, so an
// active client's bucket is not freed and re-created between requests.
const idleGrace = int64(time.Minute)

// gc drops up to two buckets from the cold end that have drained, are out
// of their blackhole and have been idle a while: they hold nothing a new
// bucket would not.
func (s *store) gc(now int64) {
	for range 2 {
		if s.tail < 0 {
			return
		}
		b := &s.slab[s.tail]
		if b.tat > now || b.blackhole > now || now-b.last < idleGrace {
			return
		}
		s.remove(s.tail)
	}
}
