package flood_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/test/netns"
	"github.com/portcullis-ips/portcullis/test/netns/flood"
)

func mac(t *testing.T, n *netns.NS, iface string) net.HardwareAddr {
	t.Helper()
	l, err := n.Netlink(t).LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// TestFloodDelivers sends a bounded flood from both attacker addresses of
// each family to a socket in the victim, which must receive every packet
// with the right source: the frames and checksums are valid.
func TestFloodDelivers(t *testing.T) {
	top := netns.NewTopology(t)
	for _, v := range []int{4, 6} {
		srcs := top.Sources(v)
		dst, err := top.VictimFor(srcs[0])
		if err != nil {
			t.Fatal(err)
		}
		var pc net.PacketConn
		if err := top.Victim.Do(func() error {
			var err error
			pc, err = net.ListenPacket("udp", net.JoinHostPort(dst.String(), "0"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
		var s *flood.Sender
		if err := top.Attacker.Do(func() error {
			var err error
			s, err = flood.Open(flood.Config{
				Iface: netns.IfaceAttacker, SrcMAC: mac(t, top.Attacker, netns.IfaceAttacker),
				DstMAC: mac(t, top.Victim, netns.IfaceVictimA), Sources: srcs, Dst: dst, DstPort: port,
				Payload: 18, Batch: 8,
			})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		const n = 100
		res, err := s.Run(context.Background(), n, 5*time.Second)
		if cerr := s.Close(); cerr != nil {
			t.Errorf("v%d: close sender: %v", v, cerr)
		}
		if err != nil || res.Sent != n {
			t.Fatalf("v%d: sent %d of %d: %v", v, res.Sent, n, err)
		}
		got := map[netip.Addr]int{}
		buf := make([]byte, 64)
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		for range n {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("v%d: received %v, then %v", v, got, err)
			}
			if k != 18 {
				t.Fatalf("v%d: payload of %d bytes, want 18", v, k)
			}
			got[from.(*net.UDPAddr).AddrPort().Addr().Unmap()]++
		}
		if err := pc.Close(); err != nil {
			t.Errorf("v%d: close receiver: %v", v, err)
		}
		if len(got) != 2 || got[srcs[0]] != n/2 || got[srcs[1]] != n/2 {
			t.Fatalf("v%d: sources %v, want %d from each of %v", v, got, n/2, srcs)
		}
	}
}

func TestFrameChecksums(t *testing.T) {
	m1, m2 := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	f := flood.Frame(m1, m2, 0x0800, netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.1"), 7, 4)
	if len(f) != 14+20+8+4 {
		t.Fatalf("frame length %d", len(f))
	}
	// The IPv4 header sums to 0xffff with its checksum in place.
	var s uint32
	for i := 14; i < 34; i += 2 {
		s += uint32(f[i])<<8 | uint32(f[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	if s != 0xffff {
		t.Fatalf("IPv4 header checksum does not verify: %#x", s)
	}
}
