package xdp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// xdpState reads the XDP attachment of an interface: program id and mode.
func xdpState(name string) (uint32, Mode, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, "", err
	}
	m, err := attachedMode(l.Attrs().Index)
	if err != nil {
		return 0, "", err
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId, m, nil
	}
	return 0, "", nil
}

// sendFrames sends n copies of f out of iface with a raw packet socket; the
// veth pair delivers them to its peer, where the program runs.
func sendFrames(iface, peer string, f frame, n int) error {
	out, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	in, err := net.InterfaceByName(peer)
	if err != nil {
		return err
	}
	pkt := f.bytes()
	copy(pkt[0:6], in.HardwareAddr)
	copy(pkt[6:12], out.HardwareAddr)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	sa := &unix.SockaddrLinklayer{Ifindex: out.Index, Halen: 6}
	copy(sa.Addr[:], in.HardwareAddr)
	for range n {
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	return nil
}

// waitDropped waits until the counter of reason reaches want packets.
func waitDropped(t *testing.T, e *Enforcer, reason string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := e.Counters()
		if err != nil {
			t.Fatal(err)
		}
		got := c.ByReason[reason].Packets
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("dropped %d packets for %q, want %d", got, reason, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAttachPinRestart(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []Mode{ModeGeneric, ModeNative} {
		t.Run(string(mode), func(t *testing.T) {
			ns := newTestNS(t, "pcx0", "pcx1")
			cfg := testConfig(t)
			cfg.Interfaces = []string{"pcx0"}
			cfg.Mode = mode
			t.Cleanup(func() {
				if err := Cleanup(cfg.PinPath); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			ctx := context.Background()
			banned := frame{src: netip.MustParseAddr("192.0.2.66")}
			banned6 := frame{tags: []uint16{ether8021Q}, src: netip.MustParseAddr("2001:db8:66::1")}
			other := frame{src: netip.MustParseAddr("192.0.2.67")}

			var e1 *Enforcer
			if err := ns.do(func() (err error) { e1, err = New(cfg); return err }); err != nil {
				t.Fatalf("New: %v", err)
			}
			at := e1.Attachments()
			if len(at) != 1 || at[0] != (Attachment{Interface: "pcx0", Mode: mode}) {
				t.Fatalf("attachments = %+v", at)
			}
			if err := e1.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{
				ban("192.0.2.66/32", time.Hour, "ssh-bf"),
				ban("192.0.2.99/32", time.Hour, "ssh-bf"),
			}}); err != nil {
				t.Fatal(err)
			}
			if err := e1.Reconcile(ctx, []enforcer.Entry{
				ban("192.0.2.66/32", time.Hour, "ssh-bf"),
				ban("2001:db8:66::/48", time.Hour, "probe"),
			}); err != nil {
				t.Fatal(err)
			}
			if err := ns.do(func() error {
				if err := sendFrames("pcx1", "pcx0", banned, 3); err != nil {
					return err
				}
				if err := sendFrames("pcx1", "pcx0", banned6, 2); err != nil {
					return err
				}
				return sendFrames("pcx1", "pcx0", other, 4)
			}); err != nil {
				t.Fatal(err)
			}
			waitDropped(t, e1, "ssh-bf", 3)
			waitDropped(t, e1, "probe", 2)

			var progID uint32
			if err := ns.do(func() (err error) {
				var m Mode
				progID, m, err = xdpState("pcx0")
				if err == nil && m != mode {
					err = fmt.Errorf("attached in %q mode, want %q", m, mode)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			linkInfo, err := e1.links[0].Info()
			if err != nil {
				t.Fatal(err)
			}
			mapInfo, err := e1.objs.PortcullisIp4.Info()
			if err != nil {
				t.Fatal(err)
			}
			mapID, _ := mapInfo.ID()
			if err := e1.Close(); err != nil {
				t.Fatal(err)
			}

			// With no process holding anything, the pinned link keeps
			// dropping: these packets are counted by the next run.
			if err := ns.do(func() error {
				id, _, err := xdpState("pcx0")
				if err == nil && id != progID {
					err = fmt.Errorf("after Close: program %d attached, want %d", id, progID)
				}
				if err != nil {
					return err
				}
				return sendFrames("pcx1", "pcx0", banned, 5)
			}); err != nil {
				t.Fatal(err)
			}

			var e2 *Enforcer
			if err := ns.do(func() (err error) { e2, err = New(cfg); return err }); err != nil {
				t.Fatalf("New after restart: %v", err)
			}
			defer closeOK(t, e2)
			at = e2.Attachments()
			if len(at) != 1 || at[0] != (Attachment{Interface: "pcx0", Mode: mode, Reused: true}) {
				t.Fatalf("attachments after restart = %+v", at)
			}
			li, err := e2.links[0].Info()
			if err != nil {
				t.Fatal(err)
			}
			if li.ID != linkInfo.ID || li.Program != linkInfo.Program {
				t.Fatalf("link after restart: id %d prog %d, want id %d prog %d", li.ID, li.Program, linkInfo.ID, linkInfo.Program)
			}
			mi, err := e2.objs.PortcullisIp4.Info()
			if err != nil {
				t.Fatal(err)
			}
			if id, _ := mi.ID(); id != mapID {
				t.Fatalf("map after restart has id %d, want the pinned %d", id, mapID)
			}
			assertList(t, e2, []string{"192.0.2.66/32 ssh-bf", "2001:db8:66::/48 probe"})
			waitDropped(t, e2, "ssh-bf", 8)
			waitDropped(t, e2, "probe", 2)
		})
	}
}

// TestUpgradeReplacesProgram pins a link running another program, as an
// older build would have left it, and checks that New swaps the program in
// that same link.
func TestUpgradeReplacesProgram(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNS(t, "pcu0", "pcu1")
	cfg := testConfig(t)
	cfg.Interfaces = []string{"pcu0"}
	cfg.Mode = ModeGeneric
	if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Cleanup(cfg.PinPath); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	old, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:       ebpf.XDP,
		AttachType: ebpf.AttachXDP,
		License:    "MIT",
		Instructions: asm.Instructions{
			asm.LoadImm(asm.R0, xdpPass, asm.DWord),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, old)
	var oldLinkID link.ID
	if err := ns.do(func() error {
		ifc, err := net.InterfaceByName("pcu0")
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: old, Interface: ifc.Index, Flags: link.XDPGenericMode})
		if err != nil {
			return err
		}
		defer closeOK(t, l)
		info, err := l.Info()
		if err != nil {
			return err
		}
		oldLinkID = info.ID
		return l.Pin(cfg.PinPath + "/" + linkPrefix + "pcu0")
	}); err != nil {
		t.Fatal(err)
	}

	var e *Enforcer
	if err := ns.do(func() (err error) { e, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, e)
	at := e.Attachments()
	if len(at) != 1 || at[0] != (Attachment{Interface: "pcu0", Mode: ModeGeneric, Reused: true, Replaced: true}) {
		t.Fatalf("attachments = %+v", at)
	}
	info, err := e.links[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	pi, err := e.objs.PortcullisXdp.Info()
	if err != nil {
		t.Fatal(err)
	}
	newID, _ := pi.ID()
	if info.ID != oldLinkID || info.Program != newID {
		t.Fatalf("link %d runs program %d, want link %d running %d", info.ID, info.Program, oldLinkID, newID)
	}
}

func TestUnlistedInterfaceDetachedAndCleanup(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNS(t, "pcc0", "pcc1")
	cfg := testConfig(t)
	cfg.Interfaces = []string{"pcc0", "pcc1"}
	cfg.Mode = ModeAuto
	t.Cleanup(func() { cleanupOK(t, cfg.PinPath) })

	var e *Enforcer
	if err := ns.do(func() (err error) { e, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	for _, a := range e.Attachments() {
		// veth drivers support native XDP, so auto must not fall back.
		if a.Mode != ModeNative || a.Fallback != nil {
			t.Fatalf("attachment %+v, want native without fallback", a)
		}
	}
	closeOK(t, e)

	cfg.Interfaces = []string{"pcc0"}
	if err := ns.do(func() (err error) { e, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	closeOK(t, e)
	state := func() (map[string]uint32, error) {
		out := map[string]uint32{}
		err := ns.do(func() error {
			for _, n := range []string{"pcc0", "pcc1"} {
				id, _, err := xdpState(n)
				if err != nil {
					return err
				}
				out[n] = id
			}
			return nil
		})
		return out, err
	}
	st, err := state()
	if err != nil {
		t.Fatal(err)
	}
	if st["pcc0"] == 0 || st["pcc1"] != 0 {
		t.Fatalf("programs attached %v, want only on pcc0", st)
	}

	if err := Cleanup(cfg.PinPath); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.PinPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory after cleanup: %v", err)
	}
	st, err = state()
	if err != nil {
		t.Fatal(err)
	}
	if st["pcc0"] != 0 || st["pcc1"] != 0 {
		t.Fatalf("programs attached after cleanup: %v", st)
	}
	if err := Cleanup(cfg.PinPath); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}

// TestModeChangeReattaches forces generic, then native: the generic link
// must give way to a native one.
func TestModeChangeReattaches(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNS(t, "pcm0", "pcm1")
	cfg := testConfig(t)
	cfg.Interfaces = []string{"pcm0"}
	t.Cleanup(func() { cleanupOK(t, cfg.PinPath) })
	for _, mode := range []Mode{ModeGeneric, ModeNative, ModeAuto} {
		cfg.Mode = mode
		var e *Enforcer
		if err := ns.do(func() (err error) { e, err = New(cfg); return err }); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		closeOK(t, e)
		// Auto keeps whatever is attached, here the native link.
		want := Attachment{Interface: "pcm0", Mode: mode, Reused: mode == ModeAuto}
		if mode == ModeAuto {
			want.Mode = ModeNative
		}
		if at := e.Attachments(); len(at) != 1 || at[0] != want {
			t.Fatalf("%s: attachments %+v, want %+v", mode, at, want)
		}
		var got Mode
		if err := ns.do(func() (err error) { _, got, err = xdpState("pcm0"); return err }); err != nil {
			t.Fatal(err)
		}
		if got != want.Mode {
			t.Fatalf("%s: interface reports %q mode", mode, got)
		}
	}
}

// TestIncompatiblePins shows that changed map sizes are refused with advice,
// rather than silently dropping the pinned bans.
func TestIncompatiblePins(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupOK(t, cfg.PinPath) })
	e, err := open(cfg, cfg.PinPath)
	if err != nil {
		t.Fatal(err)
	}
	closeOK(t, e)
	for name, change := range map[string]func(*Config){
		"size":     func(c *Config) { c.MaxExactV4 *= 2 },
		"prealloc": func(c *Config) { c.Prealloc = false },
	} {
		c := cfg
		change(&c)
		e, err = open(c, c.PinPath)
		if err == nil {
			closeOK(t, e)
			t.Fatalf("open with a different %s succeeded", name)
		}
		if !errors.Is(err, ebpf.ErrMapIncompatible) || !strings.Contains(err.Error(), "run cleanup") {
			t.Fatalf("%s: err = %v", name, err)
		}
	}
}
