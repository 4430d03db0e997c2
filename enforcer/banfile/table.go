package banfile

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// never is the expiry of an entry without one, in Unix nanoseconds.
const never = int64(math.MaxInt64)

// rec is one stored prefix. IPv4 addresses live in the low 32 bits of lo.
type rec struct {
	hi, lo uint64
	until  int64 // Unix nanoseconds
	attr   uint32
	seq    uint32 // input order, for "the later entry wins" while sorting
	bits   uint8
	v6     bool
}

func compareRec(a, b *rec) int {
	if a.v6 != b.v6 {
		if a.v6 {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	if c := cmp.Compare(a.lo, b.lo); c != 0 {
		return c
	}
	return cmp.Compare(a.bits, b.bits)
}

// end returns the last address the prefix covers.
func (r *rec) end() (hi, lo uint64) {
	if !r.v6 {
		return 0, r.lo | (1<<(32-uint(r.bits)) - 1)
	}
	if r.bits <= 64 {
		return r.hi | hostMask(64-uint(r.bits)), math.MaxUint64
	}
	return r.hi, r.lo | hostMask(128-uint(r.bits))
}

// hostMask returns n low bits set (n ≤ 64).
func hostMask(n uint) uint64 {
	if n >= 64 {
		return math.MaxUint64
	}
	return 1<<n - 1
}

// recFor converts a canonical prefix to a rec without attr and expiry.
func recFor(p netip.Prefix) rec {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		return rec{lo: uint64(le32be(b[:])), bits: uint8(p.Bits())}
	}
	b := a.As16()
	return rec{hi: be64(b[:8]), lo: be64(b[8:]), bits: uint8(p.Bits()), v6: true}
}

// prefix converts a rec back to its prefix.
func (r *rec) prefix() netip.Prefix {
	if !r.v6 {
		v := uint32(r.lo)
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), int(r.bits))
	}
	var b [16]byte
	putBE64(b[:8], r.hi)
	putBE64(b[8:], r.lo)
	return netip.PrefixFrom(netip.AddrFrom16(b), int(r.bits))
}

func le32be(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func be64(b []byte) uint64 {
	return uint64(le32be(b[:4]))<<32 | uint64(le32be(b[4:8]))
}

func putBE64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// attrKey is one kind of decision: what the reader needs besides the range.
type attrKey struct {
	remedy         prefixset.Remedy
	reason, origin string
}

// text is the X-Portcullis-Decision value of the kind, with control
// characters replaced so that it is safe as a header value.
func (k attrKey) text() string {
	s := k.remedy.String() + "; reason=" + k.reason + "; origin=" + k.origin
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// attrs interns decision kinds; records refer to them by index.
type attrs struct {
	keys []attrKey
	idx  map[attrKey]uint32
}

func (a *attrs) intern(k attrKey) uint32 {
	if i, ok := a.idx[k]; ok {
		return i
	}
	if a.idx == nil {
		a.idx = map[attrKey]uint32{}
	}
	i := uint32(len(a.keys))
	a.keys = append(a.keys, k)
	a.idx[k] = i
	return i
}

// toRecs validates and converts entries; the attrs table interns their kinds.
func toRecs(es []prefixset.Entry, at *attrs) ([]rec, error) {
	out := make([]rec, len(es))
	for i, e := range es {
		p, err := enforcer.Canonical(e.Prefix)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Remedy != prefixset.RemedyBan && e.Remedy != prefixset.RemedyCaptcha {
			return nil, fmt.Errorf("entry %d (%s): unknown remedy %d", i, p, e.Remedy)
		}
		r := recFor(p)
		r.until = never
		if !e.Until.IsZero() {
			r.until = e.Until.UnixNano()
		}
		r.attr = at.intern(attrKey{remedy: e.Remedy, reason: e.Reason, origin: e.Origin})
		r.seq = uint32(i)
		out[i] = r
	}
	return out, nil
}

// sortDedup sorts recs and keeps the last (by seq) of each prefix.
func sortDedup(rs []rec) []rec {
	slices.SortFunc(rs, func(a, b rec) int {
		if c := compareRec(&a, &b); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	out := rs[:0]
	for i := range rs {
		if len(out) > 0 && compareRec(&out[len(out)-1], &rs[i]) == 0 {
			out[len(out)-1] = rs[i]
			continue
		}
		out = append(out, rs[i])
	}
	return out
}

// change is a pending add (del false) or delete of one prefix.
type change struct {
	r   rec
	del bool
}

// merge applies sorted, distinct changes to sorted, distinct recs, dropping
// what expired at now, into dst (reused). It returns the result and the
// earliest expiry left (never when none).
func merge(dst, cur []rec, chs []change, now int64) ([]rec, int64) {
	dst = dst[:0]
	next := never
	keep := func(r rec) {
		if r.until <= now {
			return
		}
		next = min(next, r.until)
		dst = append(dst, r)
	}
	i, j := 0, 0
	for i < len(cur) || j < len(chs) {
		var c int
		switch {
		case i == len(cur):
			c = 1
		case j == len(chs):
			c = -1
		default:
			c = compareRec(&cur[i], &chs[j].r)
		}
		switch {
		case c < 0:
			keep(cur[i])
			i++
		default:
			if !chs[j].del {
				keep(chs[j].r)
			}
			if c == 0 {
				i++
			}
			j++
		}
	}
	return dst, next
}

// segments is the flattened, encodable form of the recs.
type segments struct {
	start4, end4, attr4 []uint32
	until4              []float64
	start6, end6        []uint32 // four words per address
	attr6               []uint32
	until6              []float64
}

func (s *segments) reset() {
	s.start4, s.end4, s.attr4, s.until4 = s.start4[:0], s.end4[:0], s.attr4[:0], s.until4[:0]
	s.start6, s.end6, s.attr6, s.until6 = s.start6[:0], s.end6[:0], s.attr6[:0], s.until6[:0]
}

// wins reports whether the child c takes precedence over the decision w
// that wins on its parent: a ban over a captcha, then the later expiry;
// the most specific prefix on a tie.
func wins(c, w *rec, at []attrKey) bool {
	rc, rw := at[c.attr].remedy, at[w.attr].remedy
	if rc != rw {
		return rc == prefixset.RemedyBan
	}
	return c.until >= w.until
}

// u128 is an address as two 64-bit halves.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// inc returns a+1 and whether it overflowed.
func (a u128) inc() (u128, bool) {
	a.lo++
	if a.lo == 0 {
		a.hi++
		return a, a.hi == 0
	}
	return a, false
}

func (a u128) dec() u128 {
	if a.lo == 0 {
		a.hi--
	}
	a.lo--
	return a
}

// flatten turns sorted, distinct recs (CIDR prefixes nest or are
// disjoint) into disjoint segments, each with its winning decision.
func flatten(rs []rec, at []attrKey, s *segments) {
	s.reset()
	type frame struct {
		end u128
		win int // index of the winning rec
	}
	var (
		stack  []frame
		cursor u128
		past   bool // cursor overflowed: everything up to the top is emitted
		lastV6 bool
		last   = -1 // the winning rec of the last segment, for merging
	)
	emit := func(from, to u128, win int, v6 bool) {
		r := &rs[win]
		if !v6 {
			if last == win && lastV6 == v6 && len(s.end4) > 0 && uint64(s.end4[len(s.end4)-1])+1 == from.lo {
				s.end4[len(s.end4)-1] = uint32(to.lo)
				return
			}
			s.start4 = append(s.start4, uint32(from.lo))
			s.end4 = append(s.end4, uint32(to.lo))
			s.attr4 = append(s.attr4, r.attr)
			s.until4 = append(s.until4, unixSeconds(r.until))
		} else {
			n := len(s.end6)
			if last == win && lastV6 == v6 && n > 0 {
				prev := u128{uint64(s.end6[n-4])<<32 | uint64(s.end6[n-3]), uint64(s.end6[n-2])<<32 | uint64(s.end6[n-1])}
				if nx, of := prev.inc(); !of && nx == from {
					s.end6 = append(s.end6[:n-4], words(to)...)
					return
				}
			}
			s.start6 = append(s.start6, words(from)...)
			s.end6 = append(s.end6, words(to)...)
			s.attr6 = append(s.attr6, r.attr)
			s.until6 = append(s.until6, unixSeconds(r.until))
		}
		last, lastV6 = win, v6
	}
	pop := func(v6 bool) {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !past && !top.end.less(cursor) {
			emit(cursor, top.end, top.win, v6)
		}
		if !past || len(stack) == 0 {
			cursor, past = top.end.inc()
		}
	}
	for i := range rs {
		r := &rs[i]
		if i > 0 && r.v6 != rs[i-1].v6 {
			for len(stack) > 0 {
				pop(rs[i-1].v6)
			}
			past = false
		}
		start := u128{r.hi, r.lo}
		for len(stack) > 0 && stack[len(stack)-1].end.less(start) {
			pop(r.v6)
		}
		win := i
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			if !past && cursor.less(start) {
				emit(cursor, start.dec(), top.win, r.v6)
			}
			if !wins(r, &rs[top.win], at) {
				win = top.win
			}
		}
		cursor, past = start, false
		eh, el := r.end()
		stack = append(stack, frame{end: u128{eh, el}, win: win})
	}
	if len(rs) > 0 {
		for len(stack) > 0 {
			pop(rs[len(rs)-1].v6)
		}
	}
}

func words(a u128) []uint32 {
	return []uint32{uint32(a.hi >> 32), uint32(a.hi), uint32(a.lo >> 32), uint32(a.lo)}
}

// encode writes the file for the segments into buf (reused) and returns it.
func encode(buf []byte, s *segments, at []attrKey, generation uint64, now time.Time) []byte {
	n4, n6 := len(s.attr4), len(s.attr6)
	texts := make([]string, len(at))
	textLen := 0
	for i, k := range at {
		texts[i] = k.text()
		textLen += len(texts[i])
	}
	l := newLayout(n4, n6, len(at), textLen)
	if cap(buf) < l.size {
		// Headroom, so that a set growing by a few entries per generation
		// does not allocate a new buffer for each.
		buf = make([]byte, l.size, l.size+l.size/8)
	}
	buf = buf[:l.size]
	clear(buf)
	copy(buf, Magic)
	le.PutUint32(buf[offVersion:], Version)
	le.PutUint32(buf[offHeaderSize:], HeaderSize)
	le.PutUint64(buf[offGeneration:], generation)
	t := float64(now.UnixNano()) / 1e9
	le.PutUint64(buf[offHeartbeat:], math.Float64bits(t))
	le.PutUint64(buf[offBuilt:], math.Float64bits(t))
	le.PutUint32(buf[offN4:], uint32(n4))
	le.PutUint32(buf[offN6:], uint32(n6))
	le.PutUint32(buf[offNAttr:], uint32(len(at)))
	le.PutUint32(buf[offIndex4:], uint32(l.index4))
	le.PutUint32(buf[offSeg4:], uint32(l.seg4))
	le.PutUint32(buf[offSeg6:], uint32(l.seg6))
	le.PutUint32(buf[offAttrs:], uint32(l.attrs))
	le.PutUint64(buf[offFileSize:], uint64(l.size))

	// index4[h] = first segment whose start >= h<<16.
	j := 0
	for h := range index4Len {
		for j < n4 && uint64(s.start4[j]) < uint64(h)<<16 {
			j++
		}
		le.PutUint32(buf[l.index4+4*h:], uint32(j))
	}
	putU32s(buf[l.seg4:], s.start4)
	putU32s(buf[l.seg4+4*n4:], s.end4)
	putU32s(buf[l.seg4+8*n4:], s.attr4)
	putF64s(buf[until4(l.seg4, n4):], s.until4)
	putU32s(buf[l.seg6:], s.start6)
	putU32s(buf[l.seg6+16*n6:], s.end6)
	putU32s(buf[l.seg6+32*n6:], s.attr6)
	putF64s(buf[until6(l.seg6, n6):], s.until6)
	off := l.text
	for i, k := range at {
		a := l.attrs + attrSize*i
		le.PutUint32(buf[a:], uint32(k.remedy))
		le.PutUint32(buf[a+4:], uint32(off))
		le.PutUint32(buf[a+8:], uint32(len(texts[i])))
		off += copy(buf[off:], texts[i])
	}
	return buf
}

func putU32s(b []byte, vs []uint32) {
	for i, v := range vs {
		le.PutUint32(b[4*i:], v)
	}
}

func putF64s(b []byte, vs []float64) {
	for i, v := range vs {
		le.PutUint64(b[8*i:], math.Float64bits(v))
	}
}
