package xdp

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// XDP verdicts (uapi bpf.h).
const (
	xdpDrop = 1
	xdpPass = 2
)

// Ethertypes.
const (
	etherIPv4  = 0x0800
	etherIPv6  = 0x86dd
	etherARP   = 0x0806
	ether8021Q = 0x8100
	ether8021A = 0x88a8
)

// testConfig returns a configuration with small maps and a unique pin path.
func testConfig(t testing.TB) Config {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PinPath = BPFFSRoot + "/portcullis-test-" + hex.EncodeToString(b[:])
	cfg.MaxExactV4 = 4096
	cfg.MaxExactV6 = 4096
	cfg.MaxRangesV4 = 256
	cfg.MaxRangesV6 = 256
	cfg.MaxReasons = 16
	return cfg
}

// openUnpinned loads the program with fresh, unpinned maps, attached nowhere.
func openUnpinned(t testing.TB, cfg Config) *Enforcer {
	t.Helper()
	testenv.RequireRoot(t)
	e, err := open(cfg, "")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { closeOK(t, e) })
	return e
}

// closeOK closes c, reporting a failure as a test error.
func closeOK(t testing.TB, c io.Closer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close %T: %v", c, err)
	}
}

// cleanupOK removes the pins under pinPath, reporting a failure.
func cleanupOK(t testing.TB, pinPath string) {
	t.Helper()
	if err := Cleanup(pinPath); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// run runs the program once on pkt and returns its verdict.
func run(t testing.TB, e *Enforcer, pkt []byte) uint32 {
	t.Helper()
	v, err := e.objs.PortcullisXdp.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("run program: %v", err)
	}
	return v
}

// frame is a test packet description.
type frame struct {
	tags  []uint16 // TPIDs of the VLAN tags, outermost first
	src   netip.Addr
	ether uint16 // ethertype after the tags; derived from src when 0
	trunc int    // when > 0, the frame is cut to this many bytes
}

// bytes builds the Ethernet frame: headers, then a UDP header and payload.
func (f frame) bytes() []byte {
	b := []byte{
		0x02, 0, 0, 0, 0, 0x01, // destination
		0x02, 0, 0, 0, 0, 0x02, // source
	}
	for i, tpid := range f.tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // TCI: VLAN id
	}
	ether := f.ether
	if ether == 0 {
		ether = etherIPv4
		if f.src.Is6() {
			ether = etherIPv6
		}
	}
	b = binary.BigEndian.AppendUint16(b, ether)
	udp := []byte{0x30, 0x39, 0x00, 0x35, 0, 16, 0, 0, 'p', 'o', 'r', 't', 'c', 'u', 'l', 'l'}
	switch {
	case ether == etherIPv4 && f.src.Is4():
		s := f.src.As4()
		ip := []byte{0x45, 0, 0, byte(20 + len(udp)), 0, 0, 0x40, 0, 64, 17, 0, 0}
		ip = append(ip, s[:]...)
		ip = append(ip, 192, 0, 2, 1)
		b = append(b, ip...)
	case ether == etherIPv6 && f.src.Is6():
		s := f.src.As16()
		ip := []byte{0x60, 0, 0, 0, 0, byte(len(udp)), 17, 64}
		ip = append(ip, s[:]...)
		ip = append(ip, netip.MustParseAddr("2001:db8::1").AsSlice()...)
		b = append(b, ip...)
	default:
		// A non-IP payload that still carries the address bytes, to show
		// they are not looked at.
		b = append(b, f.src.AsSlice()...)
	}
	b = append(b, udp...)
	if f.trunc > 0 {
		b = b[:f.trunc]
	}
	return b
}

// testNS is a throw-away network namespace holding one veth pair.
type testNS struct {
	ns netns.NsHandle
}

// newTestNS creates a network namespace with a veth pair a<->b, both up.
// The namespace goes away when the test ends.
func newTestNS(t *testing.T, a, b string) *testNS {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("get netns: %w", err)}
			return
		}
		defer func() { _ = orig.Close() }()
		ns, err := netns.New()
		if err != nil {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{err: fmt.Errorf("new netns: %w", err)}
			return
		}
		err = setupVeth(a, b)
		if rerr := netns.Set(orig); rerr != nil {
			// Leave the thread locked so that it dies with the goroutine
			// rather than serve others in the wrong namespace.
			ch <- result{err: errors.Join(err, fmt.Errorf("restore netns: %w", rerr), ns.Close())}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = errors.Join(err, ns.Close())
		}
		ch <- result{ns: ns, err: err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { closeOK(t, &r.ns) })
	return &testNS{ns: r.ns}
}

func setupVeth(a, b string) error {
	la := netlink.NewLinkAttrs()
	la.Name = a
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: b}); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", a, b, err)
	}
	for _, n := range []string{"lo", a, b} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return fmt.Errorf("find %s: %w", n, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", n, err)
		}
	}
	return nil
}

// do runs fn on a locked OS thread inside the namespace and restores the
// thread's namespace afterwards; a thread that cannot be restored is never
// unlocked, so it exits with its goroutine.
func (n *testNS) do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("get netns: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		if err := netns.Set(n.ns); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			ch <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}
