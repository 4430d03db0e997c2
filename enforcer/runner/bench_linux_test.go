package runner

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// BenchmarkChanges times one decision through Changes (conversion, policy,
// queueing), with no protected address and no filter ("minimal") and with a
// busy edge policy (64 whitelisted ranges, host addresses,
// three brokers, origin and scenario filters), for the ratio of the two.
func BenchmarkChanges(b *testing.B) {
	now := time.Now()
	ds := make([]decisionfeed.Decision, 4096)
	for i := range ds {
		a := netip.AddrFrom4([4]byte{100, byte(64 + i>>10), byte(i >> 2), byte(i<<6 | 1)})
		ds[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), time.Hour, "engine", now)
		ds[i].Scenario = "crowdsecurity/ssh-bf"
	}
	minimal, err := policy.New(context.Background(), policy.Config{}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	edge := policy.DefaultConfig()
	for i := range 64 {
		edge.Whitelist = append(edge.Whitelist, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24))
	}
	edge.Origins = []string{"engine", "cli"}
	edge.Scenarios = []string{"crowdsecurity/*"}
	edgePol, err := policy.New(context.Background(), edge, policy.Options{
		HostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}, nil
		},
		Dependencies: []string{"192.0.2.10:9092", "192.0.2.11:9092", "192.0.2.12:9092"},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		pol  *policy.Policy
	}{{"minimal", minimal}, {"edge", edgePol}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Policy = bc.pol
			r, err := New(cfg, nopBackend{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			cpu0 := testenv.ProcessCPU(b)
			for b.Loop() {
				_ = r.Changes(context.Background(), ds[i&4095:i&4095+1])
				i++
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			if r.Pending() != 4096 {
				b.Fatalf("pending %d, want 4096", r.Pending())
			}
		})
	}
}
