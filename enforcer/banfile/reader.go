package banfile

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"go4.org/netipx"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// Table is a parsed ban file: the Go twin of the Lua reader, for tests,
// listing and tools. It checks everything the Lua reader relies on.
type Table struct {
	b                           []byte
	n4, n6, nattr               int
	index4, seg4, seg6, attrOff int
	// Generation and Superseded are read from the header.
	Generation uint64
	Superseded bool
	// Heartbeat is the bouncer's last sign of life.
	Heartbeat time.Time
}

// Parse validates a ban file and returns its table. The table refers to b.
func Parse(b []byte) (*Table, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("ban file: %d bytes, shorter than the header", len(b))
	}
	if string(b[:len(Magic)]) != Magic {
		return nil, errors.New("ban file: bad magic")
	}
	if v := le.Uint32(b[offVersion:]); v != Version {
		return nil, fmt.Errorf("ban file: version %d, want %d", v, Version)
	}
	if h := le.Uint32(b[offHeaderSize:]); h != HeaderSize {
		return nil, fmt.Errorf("ban file: header size %d, want %d", h, HeaderSize)
	}
	if s := le.Uint64(b[offFileSize:]); s != uint64(len(b)) {
		return nil, fmt.Errorf("ban file: size field %d, file has %d bytes", s, len(b))
	}
	t := &Table{
		b:          b,
		n4:         int(le.Uint32(b[offN4:])),
		n6:         int(le.Uint32(b[offN6:])),
		nattr:      int(le.Uint32(b[offNAttr:])),
		index4:     int(le.Uint32(b[offIndex4:])),
		seg4:       int(le.Uint32(b[offSeg4:])),
		seg6:       int(le.Uint32(b[offSeg6:])),
		attrOff:    int(le.Uint32(b[offAttrs:])),
		Generation: le.Uint64(b[offGeneration:]),
		Superseded: le.Uint32(b[offSuperseded:]) != 0,
	}
	hb := math.Float64frombits(le.Uint64(b[offHeartbeat:]))
	if math.IsNaN(hb) || math.IsInf(hb, 0) || hb < 0 || hb > 1e11 {
		return nil, fmt.Errorf("ban file: heartbeat %v is not a time", hb)
	}
	t.Heartbeat = time.Unix(0, int64(hb*1e9))
	size := len(b)
	within := func(name string, off, n int) error {
		if off < HeaderSize || off%4 != 0 || n < 0 || off > size || n > size-off {
			return fmt.Errorf("ban file: %s at %d+%d outside %d bytes", name, off, n, size)
		}
		return nil
	}
	if t.n4 > size || t.n6 > size || t.nattr > size {
		return nil, errors.New("ban file: counts exceed the file")
	}
	if err := within("index4", t.index4, 4*index4Len); err != nil {
		return nil, err
	}
	if err := within("ipv4 segments", t.seg4, until4(t.seg4, t.n4)-t.seg4+8*t.n4); err != nil {
		return nil, err
	}
	if err := within("ipv6 segments", t.seg6, until6(t.seg6, t.n6)-t.seg6+8*t.n6); err != nil {
		return nil, err
	}
	if err := within("attrs", t.attrOff, attrSize*t.nattr); err != nil {
		return nil, err
	}
	if t.seg4%8 != 0 || t.seg6%8 != 0 {
		return nil, errors.New("ban file: segment sections not 8-aligned")
	}
	for i := range t.nattr {
		a := t.attrOff + attrSize*i
		r := prefixset.Remedy(le.Uint32(b[a:]))
		if r != prefixset.RemedyBan && r != prefixset.RemedyCaptcha {
			return nil, fmt.Errorf("ban file: attr %d: unknown remedy %d", i, r)
		}
		off, n := int(le.Uint32(b[a+4:])), int(le.Uint32(b[a+8:]))
		if off > size || n > size-off {
			return nil, fmt.Errorf("ban file: attr %d: text outside the file", i)
		}
	}
	// The index must be non-decreasing and within the segments; segments
	// sorted, disjoint and naming known attrs. The Lua reader's binary
	// search is only correct on such a file.
	prev := uint32(0)
	for h := range index4Len {
		v := le.Uint32(b[t.index4+4*h:])
		if v < prev || int(v) > t.n4 {
			return nil, fmt.Errorf("ban file: index4[%d] = %d out of order", h, v)
		}
		prev = v
	}
	for i := range t.n4 {
		s, e := t.start4(i), t.end4(i)
		if e < s || (i > 0 && s <= t.end4(i-1)) {
			return nil, fmt.Errorf("ban file: ipv4 segment %d not sorted and disjoint", i)
		}
		if int(t.attr4(i)) >= t.nattr {
			return nil, fmt.Errorf("ban file: ipv4 segment %d: attr out of range", i)
		}
		if lo, hi := t.idx4(int(s>>16)), t.idx4(int(s>>16)+1); i < lo || i >= hi {
			return nil, fmt.Errorf("ban file: ipv4 segment %d outside its index block", i)
		}
	}
	for i := range t.n6 {
		s, e := t.start6(i), t.end6(i)
		if e.Less(s) || (i > 0 && !t.end6(i-1).Less(s)) {
			return nil, fmt.Errorf("ban file: ipv6 segment %d not sorted and disjoint", i)
		}
		if int(t.attr6(i)) >= t.nattr {
			return nil, fmt.Errorf("ban file: ipv6 segment %d: attr out of range", i)
		}
	}
	return t, nil
}

func (t *Table) u32(off int) uint32 { return le.Uint32(t.b[off:]) }
func (t *Table) f64(off int) float64 {
	return math.Float64frombits(le.Uint64(t.b[off:]))
}
func (t *Table) idx4(h int) int       { return int(t.u32(t.index4 + 4*h)) }
func (t *Table) start4(i int) uint32  { return t.u32(t.seg4 + 4*i) }
func (t *Table) end4(i int) uint32    { return t.u32(t.seg4 + 4*t.n4 + 4*i) }
func (t *Table) attr4(i int) uint32   { return t.u32(t.seg4 + 8*t.n4 + 4*i) }
func (t *Table) until4(i int) float64 { return t.f64(until4(t.seg4, t.n4) + 8*i) }
func (t *Table) addr6(off int) netip.Addr {
	var a [16]byte
	for w := range 4 {
		v := t.u32(off + 4*w)
		a[4*w], a[4*w+1], a[4*w+2], a[4*w+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	return netip.AddrFrom16(a)
}
func (t *Table) start6(i int) netip.Addr { return t.addr6(t.seg6 + 16*i) }
func (t *Table) end6(i int) netip.Addr   { return t.addr6(t.seg6 + 16*t.n6 + 16*i) }
func (t *Table) attr6(i int) uint32      { return t.u32(t.seg6 + 32*t.n6 + 4*i) }
func (t *Table) until6(i int) float64    { return t.f64(until6(t.seg6, t.n6) + 8*i) }

// Len returns the number of IPv4 and IPv6 segments.
func (t *Table) Len() (v4, v6 int) { return t.n4, t.n6 }

// Match is what the file says about an address.
type Match struct {
	Remedy prefixset.Remedy
	// Text is the X-Portcullis-Decision value.
	Text string
	// Until is the expiry; zero for none.
	Until time.Time
}

func (t *Table) match(attr uint32, until float64) Match {
	a := t.attrOff + attrSize*int(attr)
	off, n := int(t.u32(a+4)), int(t.u32(a+8))
	m := Match{Remedy: prefixset.Remedy(t.u32(a)), Text: string(t.b[off : off+n])}
	if !math.IsInf(until, 1) {
		m.Until = time.Unix(0, int64(until*1e9))
	}
	return m
}

// Lookup returns the live decision covering ip at now, searching as the
// Lua reader does.
func (t *Table) Lookup(ip netip.Addr, now time.Time) (Match, bool) {
	ip = ip.Unmap()
	n := float64(now.UnixNano()) / 1e9
	if ip.Is4() {
		b := ip.As4()
		v := le32be(b[:])
		h := int(v >> 16)
		// The last segment starting at or before v is in [lo-1, hi-1].
		lo, hi := t.idx4(h), t.idx4(h+1)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if t.start4(m) <= v {
				lo = m + 1
			} else {
				hi = m
			}
		}
		i := lo - 1
		if i < 0 || t.end4(i) < v || t.until4(i) <= n {
			return Match{}, false
		}
		return t.match(t.attr4(i), t.until4(i)), true
	}
	if !ip.Is6() {
		return Match{}, false
	}
	lo, hi := 0, t.n6
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.start6(m).Compare(ip) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if i < 0 || t.end6(i).Less(ip) || t.until6(i) <= n {
		return Match{}, false
	}
	return t.match(t.attr6(i), t.until6(i)), true
}

// Entries returns the live segments as ban entries, each segment split
// into the prefixes that make it up; Reason is the decision text.
func (t *Table) Entries(now time.Time) []enforcer.Entry {
	n := float64(now.UnixNano()) / 1e9
	var out []enforcer.Entry
	add := func(from, to netip.Addr, attr uint32, until float64) {
		if until <= n {
			return
		}
		m := t.match(attr, until)
		for _, p := range netipx.IPRangeFrom(from, to).Prefixes() {
			out = append(out, enforcer.Entry{Prefix: p, Until: m.Until, Reason: m.Text})
		}
	}
	for i := range t.n4 {
		s, e := t.start4(i), t.end4(i)
		add(netip.AddrFrom4([4]byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)}),
			netip.AddrFrom4([4]byte{byte(e >> 24), byte(e >> 16), byte(e >> 8), byte(e)}), t.attr4(i), t.until4(i))
	}
	for i := range t.n6 {
		add(t.start6(i), t.end6(i), t.attr6(i), t.until6(i))
	}
	return out
}
