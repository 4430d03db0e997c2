package nftables

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// benchLoad measures a start-up reconcile of n bans into a fresh namespace
// (enforcertest.BenchLoad) in transactions of chunk elements.
func benchLoad(b *testing.B, n, chunk int) {
	enforcertest.BenchLoad(b, n, func(path string) (enforcer.Enforcer, func() error, error) {
		cfg := DefaultConfig()
		cfg.NetNS = path
		cfg.ChunkSize = chunk
		e, err := New(cfg)
		return e, func() error { return Cleanup(cfg) }, err
	}, nil)
}

func BenchmarkLoad100k(b *testing.B) { benchLoad(b, 100000, DefaultConfig().ChunkSize) }
func BenchmarkLoad1M(b *testing.B)   { benchLoad(b, 1000000, DefaultConfig().ChunkSize) }

// BenchmarkLoad1MChunk shows what the transaction size costs: every
// commit waits for the kernel (RCU), so fewer, bigger transactions load
// faster but hold the nftables commit lock longer each.
func BenchmarkLoad1MChunk(b *testing.B) {
	for _, chunk := range []int{5000, 50000, 200000} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) { benchLoad(b, 1000000, chunk) })
	}
}

// BenchmarkApplyOne measures one ban added to a set of 100k: from Apply to
// the kernel holding it (Apply returns after the kernel acknowledged).
func BenchmarkApplyOne(b *testing.B) {
	e, _, _ := newInNS(b, nil)
	enforcertest.BenchApplyOne(b, e)
}

// BenchmarkSetGC measures what the kernel's garbage collector costs with a
// million timed elements loaded, at nft's default interval (1 s) and at
// this backend's default (1 h): kernel worker CPU over a 10 s window.
func BenchmarkSetGC(b *testing.B) {
	for _, gc := range []time.Duration{time.Second, time.Hour} {
		b.Run("gc="+gc.String(), func(b *testing.B) {
			var busy time.Duration
			for b.Loop() {
				b.StopTimer()
				path, _ := enforcertest.NetNS(b)
				cfg := DefaultConfig()
				cfg.NetNS = path
				cfg.GCInterval = gc
				e, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := e.Reconcile(context.Background(), enforcertest.Bans(1000000, time.Now().Add(4*time.Hour))); err != nil {
					b.Fatal(err)
				}
				before := enforcertest.KworkerCPU(b)
				b.StartTimer()
				time.Sleep(10 * time.Second)
				b.StopTimer()
				busy += enforcertest.KworkerCPU(b) - before
				if err := e.Close(); err != nil {
					b.Fatal(err)
				}
				if err := Cleanup(cfg); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(100*busy.Seconds()/10/float64(b.N), "kworker-cpu-%")
		})
	}
}

// BenchmarkReconcileUnchanged1M measures the periodic reconcile of 1M bans
// when nothing changed: a diff against the in-memory copy, no kernel dump.
func BenchmarkReconcileUnchanged1M(b *testing.B) {
	e, _, _ := newInNS(b, nil)
	enforcertest.BenchReconcileUnchanged(b, e, 1000000)
}
