package nftables

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

	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// loaderEnv makes the test binary a loader child for TestKillMidLoad.
const loaderEnv = "PORTCULLIS_NFT_LOADER_NETNS"

func TestMain(m *testing.M) {
	if ns := os.Getenv(loaderEnv); ns != "" {
		os.Exit(runLoader(ns))
	}
	os.Exit(m.Run())
}

// snapshot returns n IPv4 addresses from base plus a few ranges, all
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

// runLoader starts loading a big snapshot in small transactions and kills
// itself with SIGKILL once the new generation's IPv4 set holds a thousand
// elements: a crash in the middle of a start-up reconcile.
func runLoader(ns string) int {
	cfg := DefaultConfig()
	cfg.NetNS = ns
	cfg.ChunkSize = 100
	e, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	probe, fd, err := dial(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = unix.Close(fd) }()
	big := snapshot([4]byte{100, 64}, 100000, time.Now().Add(time.Hour))
	next := e.newSet(kindAddr4, e.gen+1)
	go func() {
		for {
			if els, err := probe.GetSetElements(next); err == nil && len(els) >= 1000 {
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
	path, ns := enforcertest.NetNS(t)
	enforcertest.Run(t, ns, "ip", "link", "add", "pc0", "type", "veth", "peer", "name", "pc1")
	enforcertest.Run(t, ns, "ip", "link", "set", "pc0", "up")
	enforcertest.PreloadForeign(t, ns)
	before := enforcertest.FirewallState(t, ns, true)

	cfg := DefaultConfig()
	cfg.NetNS = path
	cfg.Forward = true
	cfg.Ingress = []string{"pc0"}
	cfg.DenyAction = "reject"
	cfg.Log.Enabled = true
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		if got := enforcertest.FirewallState(t, ns, false); got != before {
			t.Fatalf("after %s, foreign state changed:\n--- before\n%s\n--- after\n%s", step, before, got)
		}
	}

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
	own := enforcertest.Run(t, ns, "nft", "list", "table", "inet", "portcullis")
	for _, want := range []string{
		"hook input priority -200", "hook forward priority -200", `hook ingress device "pc0" priority -500`,
		"reject with icmpx admin-prohibited", `log prefix "portcullis drop: "`, "limit rate 10/second burst 20 packets",
		"gc-interval 1h",
	} {
		if !strings.Contains(own, want) {
			t.Errorf("own table lacks %q:\n%s", want, own)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the same table is adopted, nothing is duplicated.
	e, err = New(cfg)
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	want := snapshot([4]byte{10, 3}, 50, until)
	if err := e.Reconcile(ctx, want); err != nil {
		t.Fatal(err)
	}
	check("restart and Reconcile")
	got, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after restart List has %d entries, want %d", len(got), len(want))
	}
	input := enforcertest.Run(t, ns, "nft", "list", "chain", "inet", "portcullis", "input")
	if r, l := strings.Count(input, "reject with"), strings.Count(input, "log prefix"); r != numKinds || l != numKinds {
		t.Errorf("input chain has %d reject and %d log rules after restart, want %d of each:\n%s", r, l, numKinds, input)
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
	loaded := strings.Count(enforcertest.Run(t, ns, "nft", "list", "set", "inet", "portcullis", "addr4-3"), "expires")
	if loaded >= 100000 {
		t.Fatalf("killed with %d of 100000 elements loaded: not mid-load", loaded)
	}
	t.Logf("killed with %d of 100000 elements loaded", loaded)

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
		t.Fatalf("after kill -9 and restart the kernel holds %d entries, want %d (first: %v vs %v)", len(g), len(w), g[:min(3, len(g))], w[:3])
	}
	// Only the four live sets are left: the killed run's sets are gone.
	names := enforcertest.Run(t, ns, "nft", "-t", "list", "sets", "inet")
	if n := strings.Count(names, "\tset "); n != numKinds {
		t.Fatalf("%d sets left after restart, want %d:\n%s", n, numKinds, names)
	}
}
