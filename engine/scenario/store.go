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
// The fields a pour reads come first, in one cache line.
type bucket struct {
	tat       int64 // when the bucket will be empty (theoretical arrival time)
	first     int64
	last      int64
	blackhole int64 // silenced until
	count     uint32
	used      bool       // the slot holds a bucket
	ref       bool       // used since the eviction hand last passed
	dpos      uint8      // next slot to overwrite once distinct is full
	distinct  []uint64   // hashes of the distinct values counted
	win       []winEntry // window scenarios: the events inside the window, from wh
	wh        int32
	k         key
}

// winEntry is one event counted by a window scenario.
type winEntry struct {
	t int64  // event time
	h uint64 // hash of its distinct value, if the scenario has one
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

// store holds one scenario's buckets in a slab with an index. When full,
// a CLOCK hand evicts a bucket not used since the hand last passed (an
// approximation of least recently updated that costs a pour no writes
// beyond its own bucket); a second hand reclaims drained buckets a couple
// per event, so memory tracks live groups, not history.
type store struct {
	byIP    map[[16]byte]int32 // buckets grouped by address: the fast, common case
	byStr   map[string]int32   // buckets grouped by a groupby value
	slab    []bucket
	free    []int32
	hand    int // eviction hand
	gcHand  int // reclaiming hand
	max     int
	evicted uint64
}

func newStore(max int) *store {
	return &store{byIP: map[[16]byte]int32{}, byStr: map[string]int32{}, max: max}
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

// get returns the bucket for k, marked as used, creating it (and evicting
// a bucket if the store is full).
func (s *store) get(k key, now int64) (*bucket, int32) {
	if i, ok := s.lookup(&k); ok {
		b := &s.slab[i]
		b.ref = true
		return b, i
	}
	if s.len() >= s.max {
		s.evicted++
		s.remove(s.victim())
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
	d, w := b.distinct[:0], b.win[:0]
	*b = bucket{tat: now, first: now, last: now, used: true, ref: true, distinct: d, win: w}
	if k.s == "" {
		s.byIP[k.ip] = i
	} else {
		k.s = strings.Clone(k.s) // the value usually points into a read buffer
		s.byStr[k.s] = i
	}
	b.k = k
	return b, i
}

// victim advances the eviction hand to a bucket not used since its last
// pass, clearing the marks it passes over.
func (s *store) victim() int32 {
	for {
		if s.hand >= len(s.slab) {
			s.hand = 0
		}
		b := &s.slab[s.hand]
		s.hand++
		if !b.used {
			continue
		}
		if b.ref {
			b.ref = false
			continue
		}
		return int32(s.hand - 1)
	}
}

func (s *store) remove(i int32) {
	b := &s.slab[i]
	if b.k.s == "" {
		delete(s.byIP, b.k.ip)
	} else {
		delete(s.byStr, b.k.s)
	}
	b.k = key{}
	b.used = false
	b.resetDistinct()
	b.wh = 0
	if cap(b.win) > 64 {
		b.win = nil // a flood's window is not kept for the next tenant
	}
	s.free = append(s.free, i)
}

// idleGrace keeps a drained bucket this long after its last event, so an
// active client's bucket is not freed and re-created between requests.
const idleGrace = int64(time.Minute)

// reorderSlack is how far behind the newest event time a bucket is judged
// drained. Lines reach the engine out of time order when a backlog is read
// partition by partition or several hosts ship with delays; a bucket freed
// against the newest time would lose an attacker whose older lines are
// still arriving.
const reorderSlack = int64(15 * time.Minute)

// gc looks at the next two slots and frees those whose bucket has
// drained, is out of its blackhole and has been idle a while, judged at
// reorderSlack before newest: it holds nothing a new bucket would not.
func (s *store) gc(newest int64) {
	now := newest - reorderSlack
	for range 2 {
		if len(s.slab) == 0 {
			return
		}
		if s.gcHand >= len(s.slab) {
			s.gcHand = 0
		}
		b := &s.slab[s.gcHand]
		if b.used && b.tat <= now && b.blackhole <= now && now-b.last >= idleGrace {
			s.remove(int32(s.gcHand))
		}
		s.gcHand++
	}
}
