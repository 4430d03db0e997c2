package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// benchLoad measures a start-up reconcile of n bans into a fresh
// namespace: wall time per load, and the kernel memory it took.
func benchLoad(b *testing.B, n int) {
	bans := enforcertest.Bans(n, time.Now().Add(4*time.Hour))
	var mem, ipsetMem int64
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		path, ns := enforcertest.NetNS(b)
		cfg := DefaultConfig()
		cfg.NetNS = path
		e, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		before := enforcertest.KernelMemory(b)
		cpuBefore := enforcertest.CPUTime(b)
		b.StartTimer()
		if err := e.Reconcile(context.Background(), bans); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += enforcertest.CPUTime(b) - cpuBefore
		mem += enforcertest.KernelMemory(b) - before
		// The terse listing gives the header alone: no 1M-entry dump.
		hdr := enforcertest.Run(b, ns, "ipset", "list", "-t", cfg.setName(4, false))
		if _, after, ok := strings.Cut(hdr, "Size in memory: "); ok {
			var n int64
			if _, err := fmt.Sscan(after, &n); err != nil {
				b.Fatalf("ipset header %q: %v", hdr, err)
			}
			ipsetMem += n
		}
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
		if err := Cleanup(cfg); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(mem)/float64(b.N)/(1<<20), "kernel-MB")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
	b.ReportMetric(float64(ipsetMem)/float64(b.N)/(1<<20), "ipset-memsize-MB")
}

func BenchmarkLoad100k(b *testing.B) { benchLoad(b, 100000) }
func BenchmarkLoad1M(b *testing.B)   { benchLoad(b, 1000000) }

// BenchmarkApplyOne measures one ban added to a set of 100k: from Apply to
// the kernel holding it (Apply returns after the kernel acknowledged).
func BenchmarkApplyOne(b *testing.B) {
	path, _ := enforcertest.NetNS(b)
	cfg := DefaultConfig()
	cfg.NetNS = path
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	until := time.Now().Add(4 * time.Hour)
	if err := e.Reconcile(ctx, enforcertest.Bans(100000, until)); err != nil {
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

// BenchmarkReconcileUnchanged1M measures the periodic reconcile of 1M bans
// when nothing changed: a diff against the in-memory copy, no kernel dump.
func BenchmarkReconcileUnchanged1M(b *testing.B) {
	path, _ := enforcertest.NetNS(b)
	cfg := DefaultConfig()
	cfg.NetNS = path
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	bans := enforcertest.Bans(1000000, time.Now().Add(4*time.Hour))
	if err := e.Reconcile(context.Background(), bans); err != nil {
		b.Fatal(err)
	}
	cpu := enforcertest.CPUTime(b)
	for b.Loop() {
		if err := e.Reconcile(context.Background(), bans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((enforcertest.CPUTime(b)-cpu).Seconds()/float64(b.N), "cpu-s")
}
