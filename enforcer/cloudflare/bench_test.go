package cloudflare

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
)

// The fake's latency and bulk-operation speed for the benchmarks: 100ms
// per request (a round trip to api.cloudflare.com from a European VM is
// 30-150ms, more under load) and bulk operations that answer pending,
// then running, before they complete. The client runs with the
// production defaults (request budget, poll backoff 250ms..5s).
const (
	benchLatency = 100 * time.Millisecond
	benchOpPolls = 2
)

func benchClient(b *testing.B, url string) *Client {
	cfg := DefaultConfig()
	cfg.APIBase, cfg.AccountID, cfg.ZoneIDs = url, testAccount, []string{testZone}
	c, err := New(cfg, testToken)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func benchFake(b *testing.B) *cffake.Server {
	fake := cffake.New(testToken, testAccount, testZone)
	fake.SetRules(testZone, `{"id":"op1","action":"log","expression":"true","ref":"op1"}`)
	fake.SetOpPolls(benchOpPolls)
	return fake
}

// BenchmarkColdSync10k: 10,000 bans into an account with no lists and a
// zone with one operator rule.
func BenchmarkColdSync10k(b *testing.B) {
	items := bans(10000, time.Now())
	var calls, writes uint64
	for b.Loop() {
		b.StopTimer()
		fake := benchFake(b)
		c := benchClient(b, fake.URL)
		fake.SetLatency(benchLatency)
		b.StartTimer()
		sum, err := c.Sync(context.Background(), items)
		if err != nil {
			b.Fatal(err)
		}
		calls, writes = calls+sum.Calls, writes+sum.Writes
		b.StopTimer()
		fake.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
}

// BenchmarkWarm100Changes: 50 expiries and 50 new bans on a list of
// 10,000 whose item ids the client knows (it read the list at start).
func BenchmarkWarm100Changes(b *testing.B) {
	benchWarm(b, true)
}

// BenchmarkWarm100ChangesAfterAdds: the same change right after the
// client added the 10,000 itself, so it reads the list once to learn the
// ids of the items to delete.
func BenchmarkWarm100ChangesAfterAdds(b *testing.B) {
	benchWarm(b, false)
}

func benchWarm(b *testing.B, known bool) {
	now := time.Now()
	base := bans(10000, now)
	next := append(base[50:len(base):len(base)], shifted(50, now)...)
	var calls, writes uint64
	for b.Loop() {
		b.StopTimer()
		fake := benchFake(b)
		c := benchClient(b, fake.URL)
		if _, err := c.Sync(context.Background(), base); err != nil {
			b.Fatal(err)
		}
		if known {
			c = benchClient(b, fake.URL) // a restart: adopts the list, reads it
			if _, err := c.Sync(context.Background(), base); err != nil {
				b.Fatal(err)
			}
		}
		fake.SetLatency(benchLatency)
		b.StartTimer()
		sum, err := c.Sync(context.Background(), next)
		if err != nil {
			b.Fatal(err)
		}
		if sum.Adds != 50 || sum.Deletes != 50 {
			b.Fatalf("summary %+v", sum)
		}
		calls, writes = calls+sum.Calls, writes+sum.Writes
		b.StopTimer()
		fake.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
}

// shifted returns n bans outside the range bans uses.
func shifted(n int, now time.Time) []Item {
	out := make([]Item, n)
	a := netip.MustParseAddr("172.16.0.0")
	for i := range out {
		a = a.Next()
		out[i] = Item{Prefix: netip.PrefixFrom(a, 32), Until: now.Add(2 * time.Hour), Scenario: "test/new"}
	}
	return out
}
