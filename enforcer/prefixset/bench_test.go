package prefixset

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// millionBans returns one million ban entries: 900k IPv4 addresses, 50k
// IPv4 /24 ranges and 50k IPv6 /64 ranges, all drawn from a fixed seed.
var millionBans = sync.OnceValue(func() []Entry {
	rng := rand.New(rand.NewPCG(7, 7))
	until := time.Now().Add(24 * time.Hour)
	es := make([]Entry, 0, 1_000_000)
	add := func(p netip.Prefix) {
		es = append(es, Entry{Entry: enforcer.Entry{Prefix: p, Until: until, Reason: "crowdsecurity/ssh-bf", Origin: "engine"}, Remedy: RemedyBan})
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

func loadedSet(b *testing.B) *Set {
	b.Helper()
	s := New()
	if err := s.ReconcileRemedies(ctx, millionBans()); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkLookup1M measures one lookup in a set of one million bans:
// addresses that are banned (hit) and random ones (mostly a miss).
func BenchmarkLookup1M(b *testing.B) {
	s := loadedSet(b)
	es := millionBans()
	hits := make([]netip.Addr, 4096)
	for i := range hits {
		hits[i] = es[(i*7919)%len(es)].Prefix.Addr()
	}
	rng := rand.New(rand.NewPCG(3, 3))
	misses := make([]netip.Addr, 4096)
	for i := range misses {
		v := rng.Uint32()
		misses[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	now := time.Now()
	for _, bc := range []struct {
		name string
		ips  []netip.Addr
		// minHits and maxHits bound the share of lookups that find a ban: every
		// one for "hit"; for "random" at most a few (1M of 2^32 are banned).
		minHits, maxHits float64
	}{{"hit", hits, 1, 1}, {"random", misses, 0, 0.01}} {
		b.Run(bc.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			i, found := 0, 0
			cpu0 := testenv.ThreadCPU(b)
			for b.Loop() {
				if m, ok := s.Lookup(bc.ips[i&4095], now); ok && m.Remedy == RemedyBan {
					found++
				}
				i++
			}
			b.ReportMetric(float64(testenv.ThreadCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			if share := float64(found) / float64(i); share < bc.minHits || share > bc.maxHits {
				b.Fatalf("%d of %d lookups found a ban, want a share in [%v, %v]", found, i, bc.minHits, bc.maxHits)
			}
		})
	}
}

// BenchmarkApplySmallBatch1M measures a 10-decision batch on a set of one
// million bans (copy-on-write).
func BenchmarkApplySmallBatch1M(b *testing.B) {
	s := loadedSet(b)
	until := time.Now().Add(time.Hour)
	batch := Batch{}
	for i := range 10 {
		batch.Add = append(batch.Add, Entry{Entry: enforcer.Entry{
			Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), 32), Until: until, Reason: "r"}, Remedy: RemedyBan})
	}
	for b.Loop() {
		if err := s.ApplyRemedies(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcile1M measures loading a snapshot of one million bans.
func BenchmarkReconcile1M(b *testing.B) {
	es := millionBans()
	s := New()
	for b.Loop() {
		if err := s.ReconcileRemedies(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
}
