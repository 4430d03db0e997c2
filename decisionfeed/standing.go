package decisionfeed

import (
	"encoding/hex"
	"hash/maphash"
	"iter"
	"strings"
	"sync"
	"time"
)

// standingSet holds the decision standing under every key of the topic,
// grouped by address, and derives the decision a bouncer enforces for an
// address: the union of those standing there (see effective).
//
// It is built for a million keys: an address is a value string and the
// head of a list of entries; an entry is 56 bytes of numbers, its origin,
// scenario, host and duration interned in a string table, its id packed to
// 16 bytes when it is 32 hex digits (as NewDecision makes them); the rare
// reason and odd id live in side maps. The index is an open-addressing
// table of address slots (4 bytes each, linear probing on a hash of the
// value), a quarter of the cost of a Go map from hash to slot.
type standingSet struct {
	mu     sync.Mutex
	seed   maphash.Seed
	hashFn func(string) uint64 // replaces the hash in tests that force collisions
	accept func(*Decision) bool

	idx   []int32 // address slot + 1 at the value's hash, probing on; 0 is empty
	addrs []addrSlot
	ents  []entry
	// freeAddrs and freeEnts are slots to reuse.
	freeAddrs, freeEnts []int32
	strs                strtab
	reasons             map[int32]string // entry -> reason
	ids                 map[int32]string // entry -> id that is not 32 hex digits
	keys                int              // entries in use
	live                int              // addresses in use
}

// addrSlot is one address (or range) with at least one decision standing.
type addrSlot struct {
	value string // "" when the slot is free
	head  int32  // first entry, -1 when none
}

// entry is the decision standing under one key.
type entry struct {
	until, created int64 // unix nanoseconds
	id             [16]byte
	next           int32 // next entry of the same address, -1 at the end
	origin         uint32
	scenario       uint32
	host           uint32
	duration       uint32
	country        [2]byte
	rank           uint8 // of the type; 0 marks a free entry
	flags          uint8
}

const (
	flagLegacy uint8 = 1 << iota // under a schema v1 key without origin
	flagSideID                   // id in ids, not in entry.id
	flagReason                   // reason in reasons
)

// rank orders the remedies: ban > captcha > throttle.
func rank(t Type) uint8 {
	switch t {
	case TypeBan:
		return 3
	case TypeCaptcha:
		return 2
	case TypeThrottle:
		return 1
	}
	return 0
}

var rankType = [...]Type{1: TypeThrottle, 2: TypeCaptcha, 3: TypeBan}

// strtab interns strings as small numbers; 0 is "".
type strtab struct {
	idx  map[string]uint32
	strs []string
}

func (t *strtab) id(s string) uint32 {
	if s == "" {
		return 0
	}
	if i, ok := t.idx[s]; ok {
		return i
	}
	if t.idx == nil {
		t.idx = map[string]uint32{}
		t.strs = []string{""}
	}
	i := uint32(len(t.strs))
	s = strings.Clone(s) // do not pin the decoder's buffer
	t.strs = append(t.strs, s)
	t.idx[s] = i
	return i
}

func (t *strtab) str(i uint32) string {
	if i == 0 {
		return ""
	}
	return t.strs[i]
}

func newStandingSet(capHint int, accept func(*Decision) bool) *standingSet {
	n := 16
	for n*3 < capHint*4 {
		n *= 2
	}
	return &standingSet{
		seed:    maphash.MakeSeed(),
		accept:  accept,
		idx:     make([]int32, n),
		addrs:   make([]addrSlot, 0, capHint),
		ents:    make([]entry, 0, capHint),
		reasons: map[int32]string{},
		ids:     map[int32]string{},
	}
}

func (s *standingSet) hash(value string) uint64 {
	if s.hashFn != nil {
		return s.hashFn(value)
	}
	return maphash.String(s.seed, value)
}

// find returns the slot of value, or -1.
func (s *standingSet) find(value string) int32 {
	mask := uint64(len(s.idx) - 1)
	for i := s.hash(value) & mask; ; i = (i + 1) & mask {
		e := s.idx[i]
		if e == 0 {
			return -1
		}
		if s.addrs[e-1].value == value {
			return e - 1
		}
	}
}

// home is where the index would put slot if nothing were in the way.
func (s *standingSet) home(slot int32) uint64 {
	return s.hash(s.addrs[slot].value) & uint64(len(s.idx)-1)
}

// place puts slot in the index, at its home or the first free place after.
func (s *standingSet) place(slot int32) {
	mask := uint64(len(s.idx) - 1)
	i := s.home(slot)
	for s.idx[i] != 0 {
		i = (i + 1) & mask
	}
	s.idx[i] = slot + 1
}

// addAddr gives value a slot.
func (s *standingSet) addAddr(value string) int32 {
	if (s.live+1)*4 > len(s.idx)*3 {
		old := s.idx
		s.idx = make([]int32, 2*len(old))
		for _, e := range old {
			if e != 0 {
				s.place(e - 1)
			}
		}
	}
	a := addrSlot{value: strings.Clone(value), head: -1}
	var slot int32
	if n := len(s.freeAddrs); n > 0 {
		slot = s.freeAddrs[n-1]
		s.freeAddrs = s.freeAddrs[:n-1]
		s.addrs[slot] = a
	} else {
		slot = int32(len(s.addrs))
		s.addrs = append(s.addrs, a)
	}
	s.place(slot)
	s.live++
	return slot
}

// dropAddr frees an address slot whose last entry went. The index entry
// is removed by shifting back those that probed past it, so that no
// lookup ever stops short of its value.
func (s *standingSet) dropAddr(slot int32) {
	mask := uint64(len(s.idx) - 1)
	i := s.home(slot)
	for s.idx[i] != slot+1 {
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		e := s.idx[j]
		if e == 0 {
			break
		}
		// e may move back to i unless its home lies cyclically in (i, j].
		if k := s.home(e - 1); (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			s.idx[i] = e
			i = j
		}
	}
	s.idx[i] = 0
	s.addrs[slot] = addrSlot{head: -1}
	s.freeAddrs = append(s.freeAddrs, slot)
	s.live--
}

// lookup returns the entry of the key (origin, legacy) at slot and its
// predecessor in the list, or -1s.
func (s *standingSet) lookup(slot int32, origin uint32, legacy bool) (at, prev int32) {
	prev = -1
	for i := s.addrs[slot].head; i >= 0; prev, i = i, s.ents[i].next {
		e := &s.ents[i]
		if legacy {
			if e.flags&flagLegacy != 0 {
				return i, prev
			}
		} else if e.flags&flagLegacy == 0 && e.origin == origin {
			return i, prev
		}
	}
	return -1, -1
}

// unlink removes entry at (after prev) from slot's list and frees it.
func (s *standingSet) unlink(slot, at, prev int32) {
	if prev < 0 {
		s.addrs[slot].head = s.ents[at].next
	} else {
		s.ents[prev].next = s.ents[at].next
	}
	if s.ents[at].flags&flagReason != 0 {
		delete(s.reasons, at)
	}
	if s.ents[at].flags&flagSideID != 0 {
		delete(s.ids, at)
	}
	s.ents[at] = entry{next: -1}
	s.freeEnts = append(s.freeEnts, at)
	s.keys--
}

// put applies one change to the key it was read under and returns the
// address slot it touched (-1 when none) and the entry now standing under
// the key (-1 when none). A delete of a key that holds nothing changes
// nothing: noop is true. An add the accept filter refuses withdraws what
// stood under its key, as a delete would.
func (s *standingSet) put(c *change) (slot, at int32, noop bool) {
	d := &c.d
	del := c.del || (s.accept != nil && !s.accept(d))
	slot = s.find(d.Value)
	origin, _ := s.strs.idx[d.Origin]
	if slot < 0 {
		if del {
			return -1, -1, c.del
		}
		slot = s.addAddr(d.Value)
	}
	var prev int32
	at = -1
	if d.Legacy || origin != 0 {
		at, prev = s.lookup(slot, origin, d.Legacy)
	}
	if del {
		if at < 0 {
			return slot, -1, c.del
		}
		s.unlink(slot, at, prev)
		if s.addrs[slot].head < 0 {
			s.dropAddr(slot)
			return -1, -1, false
		}
		return slot, -1, false
	}
	if at < 0 {
		if n := len(s.freeEnts); n > 0 {
			at = s.freeEnts[n-1]
			s.freeEnts = s.freeEnts[:n-1]
		} else {
			at = int32(len(s.ents))
			s.ents = append(s.ents, entry{})
		}
		s.ents[at].next = s.addrs[slot].head
		s.addrs[slot].head = at
		s.keys++
	}
	s.fill(at, d)
	return slot, at, false
}

// fill stores d in entry at, keeping its place in the list.
func (s *standingSet) fill(at int32, d *Decision) {
	e := &s.ents[at]
	if e.flags&flagReason != 0 {
		delete(s.reasons, at)
	}
	if e.flags&flagSideID != 0 {
		delete(s.ids, at)
	}
	*e = entry{
		until:    d.Until.UnixNano(),
		created:  d.CreatedAt.UnixNano(),
		next:     e.next,
		origin:   s.strs.id(d.Origin),
		scenario: s.strs.id(d.Scenario),
		host:     s.strs.id(d.Host),
		duration: s.strs.id(d.Duration),
		rank:     rank(d.Type),
	}
	if d.Legacy {
		e.flags |= flagLegacy
	}
	if len(d.Country) == 2 { // validated: two capital letters
		e.country = [2]byte{d.Country[0], d.Country[1]}
	}
	if len(d.ID) == 32 && isLowerHex(d.ID) {
		_, _ = hex.Decode(e.id[:], []byte(d.ID))
	} else {
		e.flags |= flagSideID
		s.ids[at] = strings.Clone(d.ID)
	}
	if d.Reason != "" {
		e.flags |= flagReason
		s.reasons[at] = strings.Clone(d.Reason)
	}
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// eff is the union of the decisions standing on one address: the entry
// whose remedy is enforced (the strongest, the latest expiry among
// equals) and the latest expiry of all of them, until which it is.
type eff struct {
	at    int32 // -1 when nothing stands
	until int64
}

// effective returns the union at slot of the entries not expired at now.
func (s *standingSet) effective(slot int32, now int64) eff {
	best := eff{at: -1}
	if slot < 0 {
		return best
	}
	for i := s.addrs[slot].head; i >= 0; i = s.ents[i].next {
		e := &s.ents[i]
		if e.until <= now {
			continue
		}
		best.until = max(best.until, e.until)
		if best.at < 0 {
			best.at = i
			continue
		}
		b := &s.ents[best.at]
		if e.rank > b.rank || e.rank == b.rank && (e.until > b.until ||
			e.until == b.until && s.strs.str(e.origin) < s.strs.str(b.origin)) {
			best.at = i
		}
	}
	return best
}

// decision materialises entry at of slot as a Decision.
func (s *standingSet) decision(slot, at int32) Decision {
	e := &s.ents[at]
	v := s.addrs[slot].value
	d := Decision{
		V:         SchemaVersion,
		Op:        OpAdd,
		Type:      rankType[e.rank],
		Scope:     scopeOf(v),
		Value:     v,
		Duration:  s.strs.str(e.duration),
		Until:     time.Unix(0, e.until).UTC(),
		Scenario:  s.strs.str(e.scenario),
		Origin:    s.strs.str(e.origin),
		CreatedAt: time.Unix(0, e.created).UTC(),
		Country:   countryCode(e.country),
		Host:      s.strs.str(e.host),
		Legacy:    e.flags&flagLegacy != 0,
	}
	if e.flags&flagSideID != 0 {
		d.ID = s.ids[at]
	} else {
		d.ID = hex.EncodeToString(e.id[:])
	}
	if e.flags&flagReason != 0 {
		d.Reason = s.reasons[at]
	}
	return d
}

// enforced returns the decision a bouncer enforces for the union u at
// slot: the enforced entry's, lasting until the union's expiry.
func (s *standingSet) enforced(slot int32, u eff) Decision {
	d := s.decision(slot, u.at)
	d.Until = time.Unix(0, u.until).UTC()
	return d
}

// countries holds every ISO 3166 alpha-2 shaped code, so that a decision
// materialised from an entry shares its country string.
var countries = func() (t [26 * 26]string) {
	for i := range t {
		t[i] = string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
	}
	return t
}()

// countryCode returns the string of a packed country code ("" for none).
func countryCode(c [2]byte) string {
	if c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return ""
	}
	return countries[int(c[0]-'A')*26+int(c[1]-'A')]
}

// scopeOf tells a range (it holds a '/') from an address.
func scopeOf(v string) Scope {
	if strings.IndexByte(v, '/') >= 0 {
		return ScopeRange
	}
	return ScopeIP
}

// sweep drops the entries expired at now, and the addresses left empty.
func (s *standingSet) sweep(now int64) {
	for slot := range s.addrs {
		slot := int32(slot)
		if s.addrs[slot].value == "" {
			continue
		}
		prev := int32(-1)
		for i := s.addrs[slot].head; i >= 0; {
			next := s.ents[i].next
			if s.ents[i].until <= now {
				s.unlink(slot, i, prev)
			} else {
				prev = i
			}
			i = next
		}
		if s.addrs[slot].head < 0 {
			s.dropAddr(slot)
		}
	}
}

// live yields the enforced decision of every address at now. It must not
// run concurrently with a change to the set.
func (s *standingSet) liveSeq(now int64) iter.Seq[Decision] {
	return func(yield func(Decision) bool) {
		for slot := range s.addrs {
			slot := int32(slot)
			if s.addrs[slot].value == "" {
				continue
			}
			u := s.effective(slot, now)
			if u.at < 0 {
				continue
			}
			if !yield(s.enforced(slot, u)) {
				return
			}
		}
	}
}

// Standing is one decision standing on the feed, as "decisions list"
// shows it: the decision and whether it is the one enforced for its
// address.
type Standing struct {
	Decision
	// Enforced is true for the decision whose remedy bouncers apply to
	// the address (its Until is the decision's own, not the union's).
	Enforced bool `json:"enforced"`
}

// standing returns every decision standing at now, unsorted.
func (s *standingSet) standing(now int64) []Standing {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Standing, 0, s.keys)
	for slot := range s.addrs {
		slot := int32(slot)
		if s.addrs[slot].value == "" {
			continue
		}
		u := s.effective(slot, now)
		for i := s.addrs[slot].head; i >= 0; i = s.ents[i].next {
			if s.ents[i].until <= now {
				continue
			}
			out = append(out, Standing{Decision: s.decision(slot, i), Enforced: i == u.at})
		}
	}
	return out
}

// apply applies c while streaming and returns what changes for the
// bouncers: the address's new enforced decision, or a delete when nothing
// stands there any more; ok is false when the enforced decision is the
// same as before. noop is true for a delete of a key holding nothing.
func (s *standingSet) apply(c *change, now int64) (out Decision, ok, noop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.effective(s.find(c.d.Value), now)
	var prevType Type
	if before.at >= 0 {
		prevType = rankType[s.ents[before.at].rank]
	}
	slot, at, noop := s.put(c)
	after := s.effective(slot, now)
	switch {
	case after.at < 0 && before.at < 0:
		return Decision{}, false, noop
	case after.at < 0:
		d := Decision{
			V: SchemaVersion, ID: c.d.ID, Op: OpDelete, Type: prevType, Scope: c.d.Scope, Value: c.d.Value,
			Duration: "0s", Origin: c.d.Origin, CreatedAt: time.Unix(0, now).UTC(),
		}
		if d.Origin == "" {
			d.Origin = "legacy"
		}
		return d, true, noop
	case after != before || after.at == at:
		return s.enforced(slot, after), true, noop
	}
	return Decision{}, false, noop
}

// Counted yields what live yields and counts it in *n (reset to 0 first),
// for a handler that logs how many decisions its snapshot held.
func Counted(live iter.Seq[Decision], n *int) iter.Seq[Decision] {
	return func(yield func(Decision) bool) {
		*n = 0
		for d := range live {
			*n++
			if !yield(d) {
				return
			}
		}
	}
}
