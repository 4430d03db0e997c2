package policy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// benchDecisions are 4096 add decisions from several origins and
// scenarios, single addresses and ranges, none of them protected.
func benchDecisions() []decisionfeed.Decision {
	now := time.Now()
	origins := []string{"engine", "cli", "blocklist", "crowdsec"}
	out := make([]decisionfeed.Decision, 4096)
	for i := range out {
		a := netip.AddrFrom4([4]byte{100, byte(64 + i>>10), byte(i >> 2), byte(i<<6 | 1)})
		p := netip.PrefixFrom(a, 32)
		if i%8 == 0 {
			p = netip.PrefixFrom(a, 24).Masked()
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, time.Hour, origins[i%4], now)
		d.Scenario = "crowdsecurity/ssh-bf"
		out[i] = d
	}
	return out
}

// benchPolicy is a busy edge policy: 64 whitelisted ranges, four host
// addresses, three brokers, origin and scenario filters.
func benchPolicy(b *testing.B) *Policy {
	cfg := DefaultConfig()
	for i := range 64 {
		cfg.Whitelist = append(cfg.Whitelist, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24))
	}
	cfg.Origins = []string{"engine", "cli", "blocklist", "crowdsec"}
	cfg.Scenarios = []string{"crowdsecurity/*", "blocklist/*"}
	p, err := New(context.Background(), cfg, Options{
		HostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"),
				netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::1")}, nil
		},
		Dependencies: []string{"192.0.2.10:9092", "192.0.2.11:9092", "192.0.2.12:9092"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkDecision is the cost of the policy per decision (wall and
// process CPU time, which a busy machine inflates less), beside the
// conversion every decision needs anyway (enforcer.FromDecision and
// enforcer.Canonical): "convert" is without policy, "convert+policy" with
// the filters and the protection checks of benchPolicy.
func BenchmarkDecision(b *testing.B) {
	ds := benchDecisions()
	p := benchPolicy(b)
	convert := func(d *decisionfeed.Decision) netip.Prefix {
		e, err := enforcer.FromDecision(d)
		if err != nil {
			b.Fatal(err)
		}
		c, err := enforcer.Canonical(e.Prefix)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	b.Run("convert", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		cpu0 := testenv.ProcessCPU(b)
		for b.Loop() {
			_ = convert(&ds[i&4095])
			i++
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("convert+policy", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		cpu0 := testenv.ProcessCPU(b)
		for b.Loop() {
			d := &ds[i&4095]
			pf := convert(d)
			if p.Filter(d) != "" || p.Protected(pf) != "" {
				b.Fatal("a benchmark decision was refused")
			}
			i++
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	})
	b.Run("policy", func(b *testing.B) {
		pfs := make([]netip.Prefix, len(ds))
		for i := range ds {
			pfs[i] = convert(&ds[i])
		}
		b.ReportAllocs()
		i := 0
		cpu0 := testenv.ProcessCPU(b)
		for b.Loop() {
			if p.Filter(&ds[i&4095]) != "" || p.Protected(pfs[i&4095]) != "" {
				b.Fatal("a benchmark decision was refused")
			}
			i++
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	})
}
