package iptables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// loaderEnv makes the test binary a loader child for TestKillMidLoad.
const loaderEnv = "PORTCULLIS_IPT_LOADER_NETNS"

func TestMain(m *testing.M) {
	if ns := os.Getenv(loaderEnv); ns != "" {
		os.Exit(runLoader(ns))
	}
	os.Exit(m.Run())
}

// snapshot returns n IPv4 addresses from base plus two ranges, all
// expiring at until.
func snapshot(base [4]byte, n int, until time.Time) []enforcer.Entry {
	out := make([]enforcer.Entry, 0, n+2)
	for i := range n {
		a := netip.AddrFrom4([4]byte{base[0], base[1] + byte(i>>16), byte(i >> 8), byte(i)})
		out = append(out, enforcer.Entry{Prefix: netip.PrefixFrom(a, 32), Until: until})
	}
	out = append(out,
		enforcer.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], 200, 0, 0}), 16), Until: until},
		enforcer.Entry{Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/48", base[0])), Until: until})
	return out
}

// runLoader starts loading a big snapshot and kills itself with SIGKILL
// once the loading twin set holds a thousand entries: a crash in the
// middle of a start-up reconcile.
func runLoader(ns string) int {
	cfg := DefaultConfig()
	cfg.NetNS = ns
	e, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, probe, err := handles(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	big := snapshot([4]byte{100, 64}, 100000, time.Now().Add(time.Hour))
	go func() {
		for {
			if r, err := probe.IpsetList(cfg.setName(4, true)); err == nil && len(r.Entries) >= 1000 {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if err := e.Reconcile(context.Background(), big); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

func TestForeignStateUntouched(t *testing.T) {
	for _, flavor := range []string{"legacy", "nft"} {
		t.Run(flavor, func(t *testing.T) {
			path, ns := enforcertest.NetNS(t)
			enforcertest.PreloadForeign(t, ns)
			before := enforcertest.FirewallState(t, ns, true)

			cfg := DefaultConfig()
			cfg.NetNS = path
			cfg.Flavor = flavor
			cfg.Hooks = []string{"INPUT", "FORWARD", "DOCKER-USER"}
			cfg.DenyAction = "reject"
			cfg.Log.Enabled = true
			ctx := context.Background()
			check := func(step string) {
				t.Helper()
				if got := enforcertest.FirewallState(t, ns, false); got != before {
					t.Fatalf("after %s, foreign state changed:\n--- before\n%s\n--- after\n%s", step, before, got)
				}
			}
			save := func() string { return enforcertest.Run(t, ns, "iptables-"+flavor+"-save") }

			e, err := New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			check("New")
			until := time.Now().Add(time.Hour)
			if err := e.Reconcile(ctx, snapshot([4]byte{10, 1}, 100, until)); err != nil {
				t.Fatal(err)
			}
			if err := e.Apply(ctx, enforcer.Batch{Add: snapshot([4]byte{10, 2}, 10, until)}); err != nil {
				t.Fatal(err)
			}
			check("Reconcile and Apply")
			own := save()
			for _, want := range []string{
				"-A INPUT -j PORTCULLIS", "-A FORWARD -j PORTCULLIS", "-A DOCKER-USER -j PORTCULLIS",
				"--match-set portcullis-v4 src -j REJECT --reject-with icmp-admin-prohibited",
				`--match-set portcullis-v4 src -m limit --limit 10/sec --limit-burst 20 -j LOG --log-prefix "portcullis drop: "`,
			} {
				if !strings.Contains(own, want) {
					t.Errorf("iptables-%s-save lacks %q:\n%s", flavor, want, own)
				}
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			// Restart: jumps are not duplicated, the chain is rebuilt once.
			e, err = New(cfg)
			if err != nil {
				t.Fatalf("New after restart: %v", err)
			}
			want := snapshot([4]byte{10, 3}, 50, until)
			if err := e.Reconcile(ctx, want); err != nil {
				t.Fatal(err)
			}
			check("restart and Reconcile")
			own = save()
			for _, hook := range []string{"INPUT", "FORWARD", "DOCKER-USER"} {
				if n := strings.Count(own, "-A "+hook+" -j PORTCULLIS\n"); n != 1 {
					t.Errorf("%d jumps from %s after restart, want 1", n, hook)
				}
			}
			if n := strings.Count(own, "-A PORTCULLIS "); n != 2 {
				t.Errorf("%d rules in PORTCULLIS after restart, want 2 (log and reject)", n)
			}
			got, err := e.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("after restart List has %d entries, want %d", len(got), len(want))
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			for i := range 2 {
				if err := Cleanup(cfg); err != nil {
					t.Fatalf("Cleanup #%d: %v", i+1, err)
				}
			}
			if got := enforcertest.FirewallState(t, ns, true); got != before {
				t.Fatalf("after Cleanup the state differs from before start:\n--- before\n%s\n--- after\n%s", before, got)
			}
		})
	}
}

func TestKillMidLoad(t *testing.T) {
	path, ns := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	ctx := context.Background()
	until := time.Now().Add(time.Hour)

	// A first run installs a small snapshot.
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(ctx, snapshot([4]byte{10, 9}, 300, until)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// A second run is killed while loading a big one.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), loaderEnv+"="+path)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("loader: %v, output %q; want death by SIGKILL", err, out)
	}
	loaded := strings.Count(enforcertest.Run(t, ns, "ipset", "list", cfg.setName(4, true)), "timeout") - 1
	if loaded >= 100000 {
		t.Fatalf("killed with %d of 100000 entries loaded: not mid-load", loaded)
	}
	t.Logf("killed with %d of 100000 entries loaded", loaded)

	// The next start reconciles to a third snapshot: exactly it remains.
	e, err = New(cfg)
	if err != nil {
		t.Fatalf("New after kill: %v", err)
	}
	defer e.Close()
	want := snapshot([4]byte{10, 7}, 500, until)
	if err := e.Reconcile(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := func(es []enforcer.Entry) []string {
		var s []string
		for _, x := range es {
			s = append(s, x.Prefix.String())
		}
		slices.Sort(s)
		return s
	}
	if g, w := key(got), key(want); !slices.Equal(g, w) {
		t.Fatalf("after kill -9 and restart the kernel holds %d entries, want %d", len(g), len(w))
	}
	// The loading twin is gone; only the live sets remain.
	if names := enforcertest.Run(t, ns, "ipset", "list", "-n"); names != "portcullis-v4\nportcullis-v6\n" {
		t.Fatalf("ipsets after restart: %q", names)
	}
}
