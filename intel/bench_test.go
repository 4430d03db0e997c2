package intel

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// BenchmarkPlan is a re-import with 1% of the list replaced, against a live
// set that holds the previous import.
func BenchmarkPlan(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			l := List{Name: "bench", Type: decisionfeed.TypeBan, Duration: 24 * time.Hour}
			addr := func(i int) netip.Prefix {
				return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
			}
			prev := make([]netip.Prefix, n)
			next := make([]netip.Prefix, n)
			for i := range n {
				prev[i], next[i] = addr(i), addr(i)
				if i%100 == 7 {
					next[i] = addr(i + n)
				}
			}
			first, err := Plan(l, prev, nil, t0)
			if err != nil {
				b.Fatal(err)
			}
			live := first.AddDecisions(0, len(first.Adds))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ch, err := Plan(l, next, live, t0.Add(time.Hour))
				if err != nil || len(ch.Adds) != n/100 || len(ch.Deletes) != n/100 {
					b.Fatalf("plan: %v, %d adds %d deletes", err, len(ch.Adds), len(ch.Deletes))
				}
			}
		})
	}
}
