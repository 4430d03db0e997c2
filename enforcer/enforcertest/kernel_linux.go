package enforcertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// This file holds the scenarios the kernel backends (nftables, iptables)
// share beyond the conformance suite: foreign state, restarts, a crash
// mid-load, and load benchmarks. The tests' open functions must return
// backends implementing enforcer.Lister.

// Snapshot returns n IPv4 addresses from base plus an IPv4 and an IPv6
// range, all expiring at until.
func Snapshot(base [4]byte, n int, until time.Time) []enforcer.Entry {
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

// TestForeignState checks that a backend leaves the firewall state of other
// owners alone. It preloads ns with such state (PreloadForeign), opens the
// backend with open, reconciles and applies, closes it, opens it again (a
// restart) and reconciles, and finally runs cleanup twice. The foreign state
// must be unchanged after every step, and after cleanup nothing of the
// backend's may remain. checkOwn checks the backend's own state after the
// first run (restarted false) and after the restart (true).
func TestForeignState(t *testing.T, ns string, open func() (enforcer.Enforcer, error), cleanup func() error, checkOwn func(restarted bool)) {
	t.Helper()
	PreloadForeign(t, ns)
	before := FirewallState(t, ns, true)
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		if got := FirewallState(t, ns, false); got != before {
			t.Fatalf("after %s, foreign state changed:\n--- before\n%s\n--- after\n%s", step, before, got)
		}
	}

	e, err := open()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	check("New")
	until := time.Now().Add(time.Hour)
	if err := e.Reconcile(ctx, Snapshot([4]byte{10, 1}, 100, until)); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, enforcer.Batch{Add: Snapshot([4]byte{10, 2}, 10, until)}); err != nil {
		t.Fatal(err)
	}
	check("Reconcile and Apply")
	checkOwn(false)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the backend adopts what it left, nothing is duplicated.
	e, err = open()
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	want := Snapshot([4]byte{10, 3}, 50, until)
	if err := e.Reconcile(ctx, want); err != nil {
		t.Fatal(err)
	}
	check("restart and Reconcile")
	if got := list(t, e); len(got) != len(want) {
		t.Fatalf("after restart List has %d entries, want %d", len(got), len(want))
	}
	checkOwn(true)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if err := cleanup(); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	if got := FirewallState(t, ns, true); got != before {
		t.Fatalf("after Cleanup the state differs from before start:\n--- before\n%s\n--- after\n%s", before, got)
	}
}

// TestDeleteBeforeReconcile checks that after a restart, a delete that
// arrives before the first Reconcile still removes what the previous run
// installed. open opens the backend, each time on the same kernel state.
func TestDeleteBeforeReconcile(t *testing.T, open func() (enforcer.Enforcer, error)) {
	t.Helper()
	ctx := context.Background()
	e, err := open()
	if err != nil {
		t.Fatal(err)
	}
	bans := []enforcer.Entry{
		{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Until: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("2001:db8::9/128"), Until: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Until: time.Now().Add(time.Hour)},
	}
	reconcile(t, e, bans)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e2.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := e2.Apply(ctx, enforcer.Batch{Delete: []netip.Prefix{bans[0].Prefix, bans[1].Prefix, bans[2].Prefix, netip.MustParsePrefix("192.0.2.10/32")}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := list(t, e2); len(got) != 0 {
		t.Fatalf("after deleting everything before Reconcile: %v", got)
	}
}

// KillLoadSize is how many addresses the killed run of TestKillMidLoad
// starts loading (LoaderSnapshot).
const KillLoadSize = 100000

// LoaderSnapshot is the big snapshot the loader child of TestKillMidLoad
// loads: KillLoadSize addresses from 100.64.0.0 plus two ranges.
func LoaderSnapshot(until time.Time) []enforcer.Entry {
	return Snapshot([4]byte{100, 64}, KillLoadSize, until)
}

// Main is the TestMain of a package using TestKillMidLoad: when the
// environment variable env names a namespace, the test binary is the loader
// child and runs loader on it instead of the tests.
func Main(m *testing.M, env string, loader func(netnsPath string) int) {
	if ns := os.Getenv(env); ns != "" {
		os.Exit(loader(ns))
	}
	os.Exit(m.Run())
}

// TestKillMidLoad checks recovery from a crash in the middle of a start-up
// reconcile. open opens the backend in the namespace at path. A first run
// installs a small snapshot; then the test binary runs again with env set to
// path, and its loader (see Main) must load LoaderSnapshot and kill itself
// with SIGKILL midway. loaded reports how many entries the killed run left.
// The next run must converge to exactly a third snapshot; leftovers then
// checks that nothing else of the killed run remains.
func TestKillMidLoad(t *testing.T, env, path string, open func() (enforcer.Enforcer, error), loaded func() int, leftovers func()) {
	t.Helper()
	ctx := context.Background()
	until := time.Now().Add(time.Hour)

	// A first run installs a small snapshot.
	e, err := open()
	if err != nil {
		t.Fatal(err)
	}
	reconcile(t, e, Snapshot([4]byte{10, 9}, 300, until))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// A second run is killed while loading a big one.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+path)
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("loader: %v, output %q; want death by SIGKILL", err, out)
	}
	n := loaded()
	if n >= KillLoadSize {
		t.Fatalf("killed with %d of %d entries loaded: not mid-load", n, KillLoadSize)
	}
	t.Logf("killed with %d of %d entries loaded", n, KillLoadSize)

	// The next start reconciles to a third snapshot: exactly it remains.
	e, err = open()
	if err != nil {
		t.Fatalf("New after kill: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	want := Snapshot([4]byte{10, 7}, 500, until)
	reconcile(t, e, want)
	got, err := e.(enforcer.Lister).List(ctx)
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
	leftovers()
}

// BenchLoad measures a start-up reconcile of n bans into a fresh namespace:
// wall time per load, and the CPU time and kernel memory it took. open
// opens the backend in the namespace at path and returns the backend's
// cleanup for that namespace, run after Close. measure, when not nil, runs
// after each load, before Close, with the namespace's name.
func BenchLoad(b *testing.B, n int, open func(path string) (enforcer.Enforcer, func() error, error), measure func(ns string)) {
	bans := Bans(n, time.Now().Add(4*time.Hour))
	var mem int64
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		path, ns := NetNS(b)
		e, cleanup, err := open(path)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		before := KernelMemory(b)
		cpuBefore := testenv.ProcessCPU(b)
		b.StartTimer()
		if err := e.Reconcile(context.Background(), bans); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += testenv.ProcessCPU(b) - cpuBefore
		mem += KernelMemory(b) - before
		if measure != nil {
			measure(ns)
		}
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		if err := cleanup(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(mem)/float64(b.N)/(1<<20), "kernel-MB")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
}

// BenchApplyOne measures one ban added to e once it holds 100k: from Apply
// to the kernel holding it (Apply returns after the kernel acknowledged).
func BenchApplyOne(b *testing.B, e enforcer.Enforcer) {
	ctx := context.Background()
	until := time.Now().Add(4 * time.Hour)
	if err := e.Reconcile(ctx, Bans(100000, until)); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 32)
		if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{{Prefix: p, Until: until}}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchReconcileUnchanged measures the periodic reconcile of n bans into e
// when nothing changed, reporting the CPU time each took.
func BenchReconcileUnchanged(b *testing.B, e enforcer.Enforcer, n int) {
	bans := Bans(n, time.Now().Add(4*time.Hour))
	if err := e.Reconcile(context.Background(), bans); err != nil {
		b.Fatal(err)
	}
	cpu := testenv.ProcessCPU(b)
	for b.Loop() {
		if err := e.Reconcile(context.Background(), bans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((testenv.ProcessCPU(b)-cpu).Seconds()/float64(b.N), "cpu-s")
}
