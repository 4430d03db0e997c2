package xdp

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// fuzzBans are the bans FuzzVerdict installs.
var fuzzBans = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.10/32"),
	netip.MustParsePrefix("2001:db8::10/128"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("2001:db8:1::/48"),
}

// modelVerdict is the program's parser written in Go: Ethernet, at most
// two VLAN tags, then the IPv4 or IPv6 source address of a complete header.
func modelVerdict(b []byte) uint32 {
	if len(b) < 14 {
		return xdpPass
	}
	proto := binary.BigEndian.Uint16(b[12:])
	off := 14
	for range 2 {
		if proto != ether8021Q && proto != ether8021A {
			break
		}
		if off+4 > len(b) {
			return xdpPass
		}
		proto = binary.BigEndian.Uint16(b[off+2:])
		off += 4
	}
	var src netip.Addr
	switch {
	case proto == etherIPv4 && off+20 <= len(b):
		src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
	case proto == etherIPv6 && off+40 <= len(b):
		src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
	default:
		return xdpPass
	}
	for _, p := range fuzzBans {
		if p.Contains(src) {
			return xdpDrop
		}
	}
	return xdpPass
}

// FuzzVerdict runs the program on arbitrary frames and compares its
// verdict with modelVerdict.
func FuzzVerdict(f *testing.F) {
	a := netip.MustParseAddr
	for _, fr := range []frame{
		{src: a("192.0.2.10")},
		{src: a("192.0.2.11")},
		{src: a("2001:db8::10")},
		{src: a("2001:db8:1::5"), tags: []uint16{ether8021Q}},
		{src: a("198.51.100.9"), tags: []uint16{ether8021A, ether8021Q}},
		{src: a("198.51.100.9"), tags: []uint16{ether8021A, ether8021Q, ether8021Q}},
		{src: a("192.0.2.10"), trunc: 33},
		{src: a("192.0.2.10"), ether: etherARP},
	} {
		f.Add(fr.bytes())
	}
	e := openUnpinned(f, testConfig(f))
	var b enforcer.Batch
	for _, p := range fuzzBans {
		b.Add = append(b.Add, enforcer.Entry{Prefix: p, Until: time.Now().Add(24 * time.Hour), Reason: "fuzz", Origin: "test"})
	}
	if err := e.Apply(context.Background(), b); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		// The kernel runs XDP test packets of an Ethernet header up to
		// about a page.
		if len(pkt) < 14 || len(pkt) > 1500 {
			return
		}
		if got, want := run(t, e, pkt), modelVerdict(pkt); got != want {
			t.Fatalf("verdict %d, model says %d for % x", got, want, pkt)
		}
	})
}
