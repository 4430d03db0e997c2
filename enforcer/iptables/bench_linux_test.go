package iptables

import (
	"fmt"
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// benchLoad measures a start-up reconcile of n bans into a fresh
// namespace (enforcertest.BenchLoad), and the memory ipset reports for
// the IPv4 set.
func benchLoad(b *testing.B, n int) {
	var ipsetMem int64
	var cfg Config
	open := func(path string) (enforcer.Enforcer, func() error, error) {
		cfg = DefaultConfig()
		cfg.NetNS = path
		e, err := New(cfg)
		return e, func() error { return Cleanup(cfg) }, err
	}
	enforcertest.BenchLoad(b, n, open, func(ns string) {
		// The terse listing gives the header alone: no 1M-entry dump.
		hdr := enforcertest.Run(b, ns, "ipset", "list", "-t", cfg.setName(4, false))
		if _, after, ok := strings.Cut(hdr, "Size in memory: "); ok {
			var n int64
			if _, err := fmt.Sscan(after, &n); err != nil {
				b.Fatalf("ipset header %q: %v", hdr, err)
			}
			ipsetMem += n
		}
	})
	b.ReportMetric(float64(ipsetMem)/float64(b.N)/(1<<20), "ipset-memsize-MB")
}

func BenchmarkLoad100k(b *testing.B) { benchLoad(b, 100000) }
func BenchmarkLoad1M(b *testing.B)   { benchLoad(b, 1000000) }

// BenchmarkApplyOne measures one ban added to a set of 100k: from Apply to
// the kernel holding it (Apply returns after the kernel acknowledged).
func BenchmarkApplyOne(b *testing.B) {
	e, _, _ := newInNS(b, nil)
	enforcertest.BenchApplyOne(b, e)
}

// BenchmarkReconcileUnchanged1M measures the periodic reconcile of 1M bans
// when nothing changed: a diff against the in-memory copy, no kernel dump.
func BenchmarkReconcileUnchanged1M(b *testing.B) {
	e, _, _ := newInNS(b, nil)
	enforcertest.BenchReconcileUnchanged(b, e, 1000000)
}
