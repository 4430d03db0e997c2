package crowdsec

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// BenchmarkQueryDuringHostileFilter measures one bouncer's ?ip= query
// while another key streams the full set, without pause, with a
// scenarios_not_containing list of the given size over 20,000 live
// decisions: the red-team case of issue 11. Reported: the query's p50,
// p99 and max latency, and the hostile requests answered. ns/op includes
// the 2 ms pause between queries; read the latency metrics.
func BenchmarkQueryDuringHostileFilter(b *testing.B) {
	const n = 20_000
	for _, entries := range []int{64, 40_000} { // 64: MaxFilterEntries
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			s, err := NewServer(ServerConfig{APIKeys: []string{"victim", "attacker"}})
			if err != nil {
				b.Fatal(err)
			}
			live := make([]decisionfeed.Decision, n)
			for i := range n {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
				live[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, 4*time.Hour, "engine", time.Now())
				live[i].Scenario = "crowdsecurity/ssh-bf"
			}
			if err := s.Snapshot(context.Background(), slices.Values(live)); err != nil {
				b.Fatal(err)
			}
			list := make([]string, entries)
			for i := range list {
				list[i] = fmt.Sprintf("no-such-scenario-%d", i)
			}
			hostile := "/v1/decisions/stream?startup=true&scenarios_not_containing=" + strings.Join(list, ",")
			do := func(key, target string) int {
				r := httptest.NewRequest(http.MethodGet, target, nil)
				r.Header.Set("X-Api-Key", key)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				return w.Code
			}
			var (
				stop    atomic.Bool
				answers atomic.Int64
				wg      sync.WaitGroup
			)
			wg.Go(func() {
				for !stop.Load() {
					do("attacker", hostile)
					answers.Add(1)
				}
			})
			time.Sleep(50 * time.Millisecond) // the attack is under way
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if code := do("victim", "/v1/decisions?ip=100.64.0.7"); code != http.StatusOK {
					b.Fatalf("query: status %d", code)
				}
				lat = append(lat, time.Since(t0))
				time.Sleep(2 * time.Millisecond) // a query every 2 ms, as a busy nginx bouncer would ask
			}
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(float64(answers.Load()), "hostile-answers")
		})
	}
}
