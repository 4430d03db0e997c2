//go:build linux

package netns

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// Topology is the standard test network: a victim with one veth link to an
// attacker and another to a bystander. Every address is from the
// documentation ranges (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
//
//	attacker  att0 ─── vic-a  victim  vic-b ─── bys0  bystander
//	198.51.100.10,.11   .1      |       .1   203.0.113.10
//	2001:db8:a::10,::11 ::1     |      ::1   2001:db8:b::10
type Topology struct {
	Attacker, Victim, Bystander *NS

	// VictimIfaces are the victim's interfaces, towards the attacker and
	// towards the bystander: what a bouncer attaches to.
	VictimIfaces []string
	// AttackerIface and BystanderIface are the peers' interfaces.
	AttackerIface, BystanderIface string

	// VictimA4/VictimA6 are the victim's addresses on the attacker link,
	// VictimB4/VictimB6 on the bystander link.
	VictimA4, VictimA6, VictimB4, VictimB6 netip.Addr
	// Attacker4 and Attacker6 hold two addresses each, so that a range
	// ban can be shown to cover more than one source.
	Attacker4, Attacker6 []netip.Addr
	// Bystander4 and Bystander6 are the bystander's addresses.
	Bystander4, Bystander6 netip.Addr
}

// Interface names of the standard topology.
const (
	IfaceVictimA  = "vic-a"
	IfaceVictimB  = "vic-b"
	IfaceAttacker = "att0"
	IfaceBystand  = "bys0"
)

// NewTopology builds the standard topology in three fresh namespaces; all of
// it is removed at test cleanup.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	testenv.RequireRoot(t)
	mp := netip.MustParseAddr
	top := &Topology{
		Attacker:       New(t, "att"),
		Victim:         New(t, "vic"),
		Bystander:      New(t, "bys"),
		VictimIfaces:   []string{IfaceVictimA, IfaceVictimB},
		AttackerIface:  IfaceAttacker,
		BystanderIface: IfaceBystand,
		VictimA4:       mp("198.51.100.1"),
		VictimA6:       mp("2001:db8:a::1"),
		VictimB4:       mp("203.0.113.1"),
		VictimB6:       mp("2001:db8:b::1"),
		Attacker4:      []netip.Addr{mp("198.51.100.10"), mp("198.51.100.11")},
		Attacker6:      []netip.Addr{mp("2001:db8:a::10"), mp("2001:db8:a::11")},
		Bystander4:     mp("203.0.113.10"),
		Bystander6:     mp("2001:db8:b::10"),
	}
	Link(t, top.Victim, IfaceVictimA, top.Attacker, IfaceAttacker)
	Link(t, top.Victim, IfaceVictimB, top.Bystander, IfaceBystand)
	AddAddrs(t, top.Victim, IfaceVictimA, netip.PrefixFrom(top.VictimA4, 24), netip.PrefixFrom(top.VictimA6, 64))
	AddAddrs(t, top.Victim, IfaceVictimB, netip.PrefixFrom(top.VictimB4, 24), netip.PrefixFrom(top.VictimB6, 64))
	var att []netip.Prefix
	for _, a := range top.Attacker4 {
		att = append(att, netip.PrefixFrom(a, 24))
	}
	for _, a := range top.Attacker6 {
		att = append(att, netip.PrefixFrom(a, 64))
	}
	AddAddrs(t, top.Attacker, IfaceAttacker, att...)
	AddAddrs(t, top.Bystander, IfaceBystand,
		netip.PrefixFrom(top.Bystander4, 24), netip.PrefixFrom(top.Bystander6, 64))
	return top
}

// Link creates a veth pair, aName inside a and bName inside b, and sets
// both ends up. The pair disappears with either namespace.
func Link(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	ha := a.Netlink(t)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName, TxQLen: 1000},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.handle)),
	}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s (%s -> %s): %v", aName, bName, a.Name, b.Name, err)
	}
	setUp(t, a, aName)
	setUp(t, b, bName)
}

func setUp(t testing.TB, n *NS, name string) {
	t.Helper()
	h := n.Netlink(t)
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s in %s: %v", name, n.Name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up in %s: %v", name, n.Name, err)
	}
}

// AddAddrs adds addresses to an interface of n. IPv6 addresses skip
// duplicate address detection, so they are usable at once.
func AddAddrs(t testing.TB, n *NS, iface string, ps ...netip.Prefix) {
	t.Helper()
	h := n.Netlink(t)
	l, err := h.LinkByName(iface)
	if err != nil {
		t.Fatalf("find %s in %s: %v", iface, n.Name, err)
	}
	for _, p := range ps {
		a := &netlink.Addr{IPNet: &net.IPNet{
			IP:   p.Addr().AsSlice(),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("add %s to %s in %s: %v", p, iface, n.Name, err)
		}
	}
}

// Sources returns the attacker's addresses of family v (4 or 6), or of
// both families when v is 0.
func (top *Topology) Sources(v int) []netip.Addr {
	var out []netip.Addr
	if v != 6 {
		out = append(out, top.Attacker4...)
	}
	if v != 4 {
		out = append(out, top.Attacker6...)
	}
	return out
}

// VictimFor returns the victim's address on the link of src.
func (top *Topology) VictimFor(src netip.Addr) (netip.Addr, error) {
	switch {
	case src.Is4() && netip.MustParsePrefix("198.51.100.0/24").Contains(src):
		return top.VictimA4, nil
	case src.Is4() && netip.MustParsePrefix("203.0.113.0/24").Contains(src):
		return top.VictimB4, nil
	case netip.MustParsePrefix("2001:db8:a::/64").Contains(src):
		return top.VictimA6, nil
	case netip.MustParsePrefix("2001:db8:b::/64").Contains(src):
		return top.VictimB6, nil
	}
	return netip.Addr{}, fmt.Errorf("no victim address on the link of %s", src)
}
