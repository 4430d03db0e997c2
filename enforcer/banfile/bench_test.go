package banfile

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// millionBans is the prefix set benchmarks' mix: 900k IPv4 addresses, 50k
// IPv4 /24 and 50k IPv6 /64, fixed seed.
var millionBans = sync.OnceValue(func() []prefixset.Entry {
	rng := rand.New(rand.NewPCG(7, 7))
	until := time.Now().Add(24 * time.Hour)
	es := make([]prefixset.Entry, 0, 1_000_000)
	add := func(p netip.Prefix) {
		es = append(es, prefixset.Entry{Entry: enforcer.Entry{Prefix: p, Until: until, Reason: "crowdsecurity/ssh-bf", Origin: "engine"}, Remedy: prefixset.RemedyBan})
	}
	for range 900_000 {
		v := rng.Uint32()
		add(netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32))
	}
	for range 50_000 {
		v := rng.Uint32()
		add(netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24))
	}
	for range 50_000 {
		var a [16]byte
		a[0], a[1] = 0x2a, 0x02
		for i := 2; i < 8; i++ {
			a[i] = byte(rng.Uint32())
		}
		add(netip.PrefixFrom(netip.AddrFrom16(a), 64))
	}
	return es
})

// BenchmarkReconcile1M measures writing the first generation of one
// million bans (sort, flatten, encode, write, rename) and reports the
// file's size and the Go heap it keeps.
func BenchmarkReconcile1M(b *testing.B) {
	es := millionBans()
	f, _ := newFile(b)
	for b.Loop() {
		if err := f.ReconcileRemedies(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	st := f.Stats()
	b.ReportMetric(float64(st.Bytes)/float64(len(es)), "file-B/ban")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
}

// BenchmarkApplyFlush1M measures one generation for a 10-decision change
// on top of one million bans: what a new ban costs before nginx sees it
// (added to the debounce delay).
func BenchmarkApplyFlush1M(b *testing.B) {
	es := millionBans()
	f, _ := newFile(b)
	if err := f.ReconcileRemedies(ctx, es); err != nil {
		b.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	i := 0
	for b.Loop() {
		var batch prefixset.Batch
		for j := range 10 {
			batch.Add = append(batch.Add, prefixset.Entry{Entry: enforcer.Entry{
				Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), byte(j)}), 32), Until: until, Reason: "r"}, Remedy: prefixset.RemedyBan})
		}
		i++
		if err := f.ApplyRemedies(ctx, batch); err != nil {
			b.Fatal(err)
		}
		if err := f.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTableLookup1M measures the Go reader's lookup in the file of
// one million bans, the same search the Lua reader does, for banned
// addresses (each must be found) and random ones.
func BenchmarkTableLookup1M(b *testing.B) {
	es := millionBans()
	f, path := newFile(b)
	if err := f.ReconcileRemedies(ctx, es); err != nil {
		b.Fatal(err)
	}
	tb := readTable(b, path)
	hits := make([]netip.Addr, 4096)
	for i := range hits {
		hits[i] = es[(i*7919)%len(es)].Prefix.Addr()
	}
	rng := rand.New(rand.NewPCG(3, 3))
	random := make([]netip.Addr, 4096)
	for i := range random {
		v := rng.Uint32()
		random[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	now := time.Now()
	for _, bc := range []struct {
		name    string
		ips     []netip.Addr
		allHits bool
	}{{"hit", hits, true}, {"random", random, false}} {
		b.Run(bc.name, func(b *testing.B) {
			i, found := 0, 0
			for b.Loop() {
				if _, ok := tb.Lookup(bc.ips[i&4095], now); ok {
					found++
				}
				i++
			}
			if bc.allHits && found != i {
				b.Fatalf("%d of %d banned addresses found", found, i)
			}
		})
	}
}
