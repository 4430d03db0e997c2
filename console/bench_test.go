package console

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// loaded returns a server holding n decisions and alerts alerts, and a
// logged-in admin.
func loaded(b *testing.B, n, alerts int) (*Server, *client) {
	s, _ := newTestServer(b)
	live := make([]decisionfeed.Decision, 0, n)
	origins := []string{"engine", "cli", "lists:firehol", "crowdsec:cscli"}
	scenarios := []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-crawl", "blocklist/firehol", "portcullis/wp-bf"}
	for i := range n {
		a := netip.AddrFrom4([4]byte{byte(1 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), 4*time.Hour, origins[i%4], now.Add(-time.Minute))
		d.Scenario = scenarios[i%4]
		live = append(live, d)
	}
	if err := s.decisions.Snapshot(context.Background(), live); err != nil {
		b.Fatal(err)
	}
	for i := range alerts {
		s.Alert(engine.Alert{V: 1, IP: fmt.Sprintf("198.51.%d.%d", i/250%250, i%250+1), Scenario: scenarios[i%4], Country: []string{"RU", "CN", "US", "BR"}[i%4],
			Events: 6, FirstSeen: now.Add(-time.Duration(i) * time.Second), LastSeen: now.Add(-time.Duration(i) * time.Second),
			Decision: &engine.AlertDecision{Type: decisionfeed.TypeBan, Duration: "4h0m0s"}})
	}
	return s, loginAs(b, s, "alice", "alice-pass-1")
}

// BenchmarkConsolePages renders each page and search with 1M decisions
// and 100k alerts in memory and reports p50/p99 per request; the aim is
// p99 < 100 ms. Heap in use after loading is reported as heap-MiB.
func BenchmarkConsolePages(b *testing.B) {
	_, c := loaded(b, 1_000_000, 100_000)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap := float64(ms.HeapInuse) / (1 << 20)
	for _, p := range []string{
		"/", "/decisions", "/decisions?q=1.0.200.7", "/decisions?q=1.0.0.0/16", "/decisions?scenario=wp-bf&origin=cli",
		"/decisions?type=captcha", "/alerts", "/alerts?scenario=ssh&country=RU&since=1h", "/scenarios", "/alerts/99999",
	} {
		b.Run(p, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				t0 := time.Now()
				w := c.get(p)
				lat = append(lat, time.Since(t0))
				if w.Code != http.StatusOK {
					b.Fatalf("GET %s: %d", p, w.Code)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(heap, "heap-MiB")
		})
	}
}
