package scenario

import (
	"hash/maphash"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// evalState is the per-event scratch of compiled filters: the event and
// the literal masks of the matchers computed so far for it.
type evalState struct {
	// ev is a copy, so the caller's event does not escape to the heap.
	ev   event.Event
	lits *literals
	done []bool
	mask []uint64

	// The hub view of ev, filled on first use by a hub scenario.
	hubEv   HubEvent
	hubDone bool
	env     hubEnv
	vm      vm.VM
	addrs   addrCache
}

func (st *evalState) reset(ev *event.Event) {
	st.ev = *ev
	clear(st.done)
	st.hubDone = false
}

// hub returns the hub view of the current event.
func (st *evalState) hub() *HubEvent {
	if !st.hubDone {
		fillHub(&st.hubEv, &st.ev, &st.addrs)
		st.hubDone = true
		st.env.Evt = &st.hubEv
	}
	return &st.hubEv
}

// hubFilter compiles a hub scenario's filter.
func hubFilter(p *hubProgs) pred {
	types, prog := p.logTypes, p.filter
	return func(st *evalState) bool {
		h := st.hub()
		if types != nil && !contains(types, h.Meta.LogType) {
			return false
		}
		return runBool(&st.vm, prog, &st.env)
	}
}

// found returns the mask of the patterns of matcher m present in the event.
func (st *evalState) found(m int) uint64 {
	if !st.done[m] {
		mt := st.lits.ms[m]
		st.mask[m] = mt.find(strField(&st.ev, mt.field))
		st.done[m] = true
	}
	return st.mask[m]
}

type pred func(*evalState) bool

// literals gathers the contains literals of a set of filters, up to 64 per
// automaton, one or more automata per (field, case mapping).
type literals struct {
	ms  []*acMatcher
	cur map[[2]int]int // (field, fold) → matcher being filled
}

func newLiterals() *literals { return &literals{cur: map[[2]int]int{}} }

func (l *literals) add(field int, fold byte, lit string) (int, uint64) {
	if fold == 0 && caseless(lit) {
		// Case mapping leaves ASCII non-letters alone and never produces
		// them from other runes, so such a literal is found in the mapped
		// text exactly when in the original: share the lower() automaton.
		fold = 'l'
	}
	k := [2]int{field, int(fold)}
	m, ok := l.cur[k]
	if ok {
		mt := l.ms[m]
		for i, p := range mt.pats {
			if p == lit {
				return m, mt.bits[i]
			}
		}
	}
	if !ok || len(l.ms[m].pats) == 64 {
		l.ms = append(l.ms, &acMatcher{field: field, fold: fold})
		m = len(l.ms) - 1
		l.cur[k] = m
	}
	mt := l.ms[m]
	bit := uint64(1) << len(mt.pats)
	mt.pats = append(mt.pats, lit)
	mt.bits = append(mt.bits, bit)
	return m, bit
}

// caseless reports whether lit holds only ASCII non-letters.
func caseless(lit string) bool {
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		if c >= 0x80 || (c|0x20 >= 'a' && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}

// build makes the automata once every literal is known, and the scratch
// an evaluation needs.
func (l *literals) build() *evalState {
	for _, m := range l.ms {
		m.build()
	}
	return &evalState{lits: l, done: make([]bool, len(l.ms)), mask: make([]uint64, len(l.ms))}
}

// compile turns a lowered node into a closure.
func compile(n *node, lits *literals) pred {
	switch n.op {
	case opAnd:
		kids := compileAll(n.kids, lits)
		if len(kids) == 2 {
			a, b := kids[0], kids[1]
			return func(st *evalState) bool { return a(st) && b(st) }
		}
		return func(st *evalState) bool {
			for _, k := range kids {
				if !k(st) {
					return false
				}
			}
			return true
		}
	case opOr:
		kids := compileOr(n.kids, lits)
		if len(kids) == 2 {
			a, b := kids[0], kids[1]
			return func(st *evalState) bool { return a(st) || b(st) }
		}
		return func(st *evalState) bool {
			for _, k := range kids {
				if k(st) {
					return true
				}
			}
			return false
		}
	case opNot:
		k := compile(n.kids[0], lits)
		return func(st *evalState) bool { return !k(st) }
	case opConst:
		b := n.b
		return func(*evalState) bool { return b }
	case opBoolField:
		f := n.field
		return func(st *evalState) bool { return boolField(&st.ev, f) }
	case opStrEq:
		f, s := n.field, n.str
		return func(st *evalState) bool { return strField(&st.ev, f) == s }
	case opStrIn:
		f, set := n.field, n.strs
		return func(st *evalState) bool { _, ok := set[strField(&st.ev, f)]; return ok }
	case opIntCmp:
		return intCmp(n.field, n.cmp, n.ints[0])
	case opIntIn:
		f, vals := n.field, n.ints
		return func(st *evalState) bool {
			x := intField(&st.ev, f)
			for _, v := range vals {
				if v == x {
					return true
				}
			}
			return false
		}
	case opContains:
		if n.str == "" {
			return func(*evalState) bool { return true }
		}
		m, bit := lits.add(n.field, n.fold, n.str)
		return func(st *evalState) bool { return st.found(m)&bit != 0 }
	case opPrefix, opSuffix:
		return affix(n)
	case opRegex:
		f, re := n.field, n.re
		return func(st *evalState) bool { return re.MatchString(strField(&st.ev, f)) }
	}
	prog := n.prog
	return func(st *evalState) bool {
		out, err := expr.Run(prog, &st.ev)
		if err != nil {
			return false // a runtime error (nil, index) means no match
		}
		b, _ := out.(bool)
		return b
	}
}

// compileOr compiles the alternatives of an ||, folding every `contains`
// on one automaton into a single mask test.
func compileOr(ns []*node, lits *literals) []pred {
	var out []pred
	masks := map[int]uint64{}
	var order []int
	for _, n := range ns {
		if n.op != opContains || n.str == "" {
			out = append(out, compile(n, lits))
			continue
		}
		m, bit := lits.add(n.field, n.fold, n.str)
		if _, ok := masks[m]; !ok {
			order = append(order, m)
		}
		masks[m] |= bit
	}
	for _, m := range order {
		m, mask := m, masks[m]
		out = append(out, func(st *evalState) bool { return st.found(m)&mask != 0 })
	}
	return out
}

func compileAll(ns []*node, lits *literals) []pred {
	out := make([]pred, len(ns))
	for i, n := range ns {
		out[i] = compile(n, lits)
	}
	return out
}

func intCmp(f int, op string, x int64) pred {
	switch op {
	case "==":
		return func(st *evalState) bool { return intField(&st.ev, f) == x }
	case "<":
		return func(st *evalState) bool { return intField(&st.ev, f) < x }
	case "<=":
		return func(st *evalState) bool { return intField(&st.ev, f) <= x }
	case ">":
		return func(st *evalState) bool { return intField(&st.ev, f) > x }
	}
	return func(st *evalState) bool { return intField(&st.ev, f) >= x }
}

// affix compiles startsWith/endsWith, with lower()/upper() applied to the
// field as expr does: ASCII input is compared byte by byte, other input
// goes through the strings package so Unicode rules stay expr's.
func affix(n *node) pred {
	f, lit, fold, prefix := n.field, n.str, n.fold, n.op == opPrefix
	has := strings.HasSuffix
	if prefix {
		has = strings.HasPrefix
	}
	if fold == 0 {
		return func(st *evalState) bool { return has(strField(&st.ev, f), lit) }
	}
	upper := fold == 'u'
	possible := inCase(lit, upper)
	return func(st *evalState) bool {
		s := strField(&st.ev, f)
		if !isASCII(s) {
			return has(mapCase(s, upper), lit)
		}
		if !possible || len(s) < len(lit) {
			return false
		}
		if prefix {
			return equalFold(s[:len(lit)], lit, upper)
		}
		return equalFold(s[len(s)-len(lit):], lit, upper)
	}
}

func mapCase(s string, upper bool) string {
	if upper {
		return strings.ToUpper(s)
	}
	return strings.ToLower(s)
}

// inCase reports whether lit has no letter of the other case, i.e. could
// match a case-mapped ASCII string at all.
func inCase(lit string, upper bool) bool {
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		if (upper && c >= 'a' && c <= 'z') || (!upper && c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func foldByte(c byte, fold byte) byte {
	switch {
	case fold == 'u' && c >= 'a' && c <= 'z':
		return c - 'a' + 'A'
	case fold == 'l' && c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// equalFold compares s, case-mapped, with sub, already in the target case.
func equalFold(s, sub string, upper bool) bool {
	fold := byte('l')
	if upper {
		fold = 'u'
	}
	for i := 0; i < len(sub); i++ {
		if foldByte(s[i], fold) != sub[i] {
			return false
		}
	}
	return true
}

// acMatcher finds which of up to 64 literals occur in a string in one pass
// (Aho-Corasick over a dense table of byte classes). For lower()/upper()
// the byte classes fold case, so ASCII text is never copied; non-ASCII text
// is case-mapped by the strings package and searched literal by literal.
type acMatcher struct {
	field int
	fold  byte
	pats  []string
	bits  []uint64

	class [256]uint8
	ncls  int
	next  []int32  // state*ncls + class → next state*ncls
	out   []uint64 // by state*ncls: literals ending in that state
	gate  []byte   // when set, every literal starts with one of these bytes
	memo  memo
}

func (m *acMatcher) build() {
	// Literals that cannot match case-mapped ASCII never enter the automaton.
	var usable []int
	for i, p := range m.pats {
		if m.fold == 0 || inCase(p, m.fold == 'u') {
			usable = append(usable, i)
		}
	}
	var cls [256]uint8
	n := 1
	for _, i := range usable {
		for j := 0; j < len(m.pats[i]); j++ {
			if c := m.pats[i][j]; cls[c] == 0 {
				cls[c] = uint8(n)
				n++
			}
		}
	}
	m.ncls = n
	for c := range 256 {
		m.class[c] = cls[foldByte(byte(c), m.fold)]
	}
	// Trie.
	type tnode struct{ kids map[uint8]int32 }
	trie := []tnode{{kids: map[uint8]int32{}}}
	out := []uint64{0}
	for _, i := range usable {
		s := int32(0)
		for j := 0; j < len(m.pats[i]); j++ {
			c := cls[m.pats[i][j]]
			t, ok := trie[s].kids[c]
			if !ok {
				trie = append(trie, tnode{kids: map[uint8]int32{}})
				out = append(out, 0)
				t = int32(len(trie) - 1)
				trie[s].kids[c] = t
			}
			s = t
		}
		out[s] |= m.bits[i]
	}
	// A text holding none of the literals' first bytes holds no literal:
	// with few such bytes, a vectorised IndexByte per byte rules most
	// texts out before the automaton runs.
	var first []byte
	for _, i := range usable {
		p := m.pats[i]
		for _, c := range []byte{p[0], foldByte(p[0], 'l'), foldByte(p[0], 'u')} {
			if (m.fold != 0 || c == p[0]) && !slices.Contains(first, c) {
				first = append(first, c)
			}
		}
	}
	if len(first) <= 2 && (m.fold == 0 || len(usable) == len(m.pats)) {
		m.gate = first
	}
	// Breadth-first: fail links and the dense transition table.
	m.next = make([]int32, len(trie)*n)
	fail := make([]int32, len(trie))
	queue := []int32{0}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for c := 1; c < n; c++ {
			t, ok := trie[s].kids[uint8(c)]
			if !ok {
				if s != 0 {
					m.next[int(s)*n+c] = m.next[int(fail[s])*n+c]
				}
				continue
			}
			if s != 0 {
				fail[t] = m.next[int(fail[s])*n+c]
				out[t] |= out[fail[t]]
			}
			m.next[int(s)*n+c] = t
			queue = append(queue, t)
		}
	}
	// Store states as row offsets so the scan loop needs no multiply.
	for i := range m.next {
		m.next[i] *= int32(n)
	}
	m.out = make([]uint64, len(m.next))
	for st, o := range out {
		m.out[st*n] = o
	}
}

// find returns the bits of the literals found in s.
func (m *acMatcher) find(s string) uint64 {
	if len(s) >= memoMinLen {
		if v, ok := m.memo.get(s); ok {
			return v
		}
	}
	v := m.scan(s)
	if len(s) >= memoMinLen {
		m.memo.put(s, v)
	}
	return v
}

func (m *acMatcher) scan(s string) uint64 {
	if m.gate != nil && !containsAny(s, m.gate) {
		if m.fold == 0 || isASCII(s) {
			return 0
		}
	}
	var found uint64
	var hi byte
	st := int32(0)
	next, out, class := m.next, m.out, &m.class
	for i := 0; i < len(s); i++ {
		c := s[i]
		hi |= c
		st = next[st+int32(class[c])]
		found |= out[st]
	}
	if hi < 0x80 || m.fold == 0 {
		return found
	}
	// Non-ASCII under lower()/upper(): map case as expr does, then search.
	mapped := mapCase(s, m.fold == 'u')
	found = 0
	for i, p := range m.pats {
		if strings.Contains(mapped, p) {
			found |= m.bits[i]
		}
	}
	return found
}

func containsAny(s string, bytes []byte) bool {
	for _, c := range bytes {
		if strings.IndexByte(s, c) >= 0 {
			return true
		}
	}
	return false
}

// memo remembers the result for long strings (user agents, referers),
// which repeat across requests far more than they vary.
type memo struct {
	keys [memoSize]string
	vals [memoSize]uint64
}

const (
	memoSize   = 256
	memoMinLen = 48
)

var memoSeed = maphash.MakeSeed()

func (c *memo) get(s string) (uint64, bool) {
	i := maphash.String(memoSeed, s) % memoSize
	if c.keys[i] == s {
		return c.vals[i], true
	}
	return 0, false
}

func (c *memo) put(s string, v uint64) {
	i := maphash.String(memoSeed, s) % memoSize
	// A copy: s usually points into a large read buffer.
	c.keys[i], c.vals[i] = strings.Clone(s), v
}
