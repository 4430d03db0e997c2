package netns

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/testenv"
)

func hostLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

func TestTopologyReachabilityAndTeardown(t *testing.T) {
	testenv.RequireRoot(t)
	before := hostLinks(t)
	var names []string
	t.Run("topology", func(t *testing.T) {
		top := NewTopology(t)
		names = []string{top.Attacker.Name, top.Victim.Name, top.Bystander.Name}
		srv := top.Victim.Serve(t)
		type peer struct {
			ns   *NS
			srcs []netip.Addr
		}
		peers := []peer{
			{top.Attacker, top.Sources(0)},
			{top.Bystander, []netip.Addr{top.Bystander4, top.Bystander6}},
		}
		for _, p := range peers {
			for _, src := range p.srcs {
				dst, err := top.VictimFor(src)
				if err != nil {
					t.Fatal(err)
				}
				for _, proto := range Protos {
					if err := p.ns.Probe(proto, src, dst, srv, 2*time.Second); err != nil {
						t.Errorf("%s %s -> %s: %v", proto, src, dst, err)
					}
				}
			}
		}
		// With the attacker's link down, every probe of it must fail: the
		// probes can tell an answer from none.
		top.Attacker.MustRun(t, "ip", "link", "set", IfaceAttacker, "down")
		for _, src := range top.Sources(0) {
			dst, _ := top.VictimFor(src)
			for _, proto := range Protos {
				if err := top.Attacker.Probe(proto, src, dst, srv, 200*time.Millisecond); err == nil {
					t.Errorf("%s %s -> %s answered over a link that is down", proto, src, dst)
				}
			}
		}
		if err := top.Bystander.Probe(ICMP, top.Bystander4, top.VictimB4, srv, 2*time.Second); err != nil {
			t.Errorf("bystander lost its link too: %v", err)
		}
	})
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after cleanup (stat: %v)", n, err)
		}
	}
	if after := hostLinks(t); !slices.Equal(before, after) {
		t.Errorf("host interfaces changed: before %v, after %v", before, after)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	n := New(t, "do")
	var inside []string
	if err := n.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			inside = append(inside, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inside, []string{"lo"}) {
		t.Fatalf("interfaces inside a fresh namespace = %v, want [lo]", inside)
	}
	// A panic inside Do is reported, and its thread does not come back.
	err := n.Do(func() error { panic("boom") })
	if err == nil {
		t.Fatal("Do swallowed a panic")
	}
	for range 20 {
		if got := hostLinks(t); slices.Equal(got, []string{"lo"}) {
			t.Fatal("a thread left inside the test namespace was reused")
		}
	}
}

func TestForwardReachesHostLoopback(t *testing.T) {
	testenv.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ln.Close(); err != nil {
			t.Errorf("close listener: %v", err)
		}
	})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("hello from the host"))
		_ = c.Close()
	}()
	n := New(t, "fwd")
	n.Forward(t, ln.Addr().String())
	c, err := n.DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close connection: %v", err)
		}
	})
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	k, _ := c.Read(buf)
	if got := string(buf[:k]); got != "hello from the host" {
		t.Fatalf("read %q through the forward", got)
	}
}

func TestStalePid(t *testing.T) {
	for name, want := range map[string]int{
		"pc-vic-1234-7":  1234,
		"pc-att-99-12":   99,
		"pc-vic-1234":    0,
		"pc-vic-x-7":     0,
		"pc-vic-12-x":    0,
		"cni-1234-5-6":   0,
		"pc-a-b-1234-7":  0,
		"pc-vic-0-1":     0,
		"pc-vic--5-1":    0,
		"mynamespace":    0,
		"pc-bys-4321-01": 4321,
	} {
		got, ok := stalePid(name)
		if (want != 0) != ok || got != want {
			t.Errorf("stalePid(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
