package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/xdp"
	"github.com/portcullis-ips/portcullis/internal/testenv"
	"github.com/portcullis-ips/portcullis/test/netns"
	"github.com/portcullis-ips/portcullis/test/netns/flood"
)

// floodSources are the flood's source addresses: on the attacker's link,
// so no reverse-path check interferes, and all banned.
func floodSources() []netip.Addr {
	var out []netip.Addr
	for i := 20; i < 220; i++ {
		out = append(out, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	return out
}

// banList is the benchmark's set: filler addresses in 100.64.0.0/10 and
// the flood sources, n in all.
func banList(n int) []netip.Addr {
	src := floodSources()
	out := make([]netip.Addr, 0, n)
	for i := range n - len(src) {
		v := uint32(0x64400000) + uint32(i) + 1
		out = append(out, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
	}
	return append(out, src...)
}

// filter is one way of dropping the flood, installed in its own topology.
type filter struct {
	name    string
	install func(tb testing.TB, top *netns.Topology, bans []netip.Addr)
}

func writeLines(tb testing.TB, name string, head string, bans []netip.Addr, line func(netip.Addr) string, tail string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	// A bufio.Writer's error sticks: Flush reports any failed write.
	w := bufio.NewWriterSize(f, 1<<20)
	_, _ = w.WriteString(head)
	for _, a := range bans {
		_, _ = w.WriteString(line(a))
	}
	_, _ = w.WriteString(tail)
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// nftFilter loads the set with one `nft -f` transaction; hook is the
// chain's hook line. counted gives every element a counter of its own, as
// fw-bouncer's sets have for the drops per ban source.
func nftFilter(name, family, hook string, counted bool) filter {
	return filter{name: name, install: func(tb testing.TB, top *netns.Topology, bans []netip.Addr) {
		flags := ""
		if counted {
			flags = " counter;"
		}
		head := fmt.Sprintf("table %s portcullis_bench {\n set s4 { type ipv4_addr; size %d;%s elements = {\n", family, len(bans)+1024, flags)
		tail := fmt.Sprintf(" }\n }\n chain c { %s; policy accept; ip saddr @s4 drop; }\n}\n", hook)
		first := true
		p := writeLines(tb, "bench.nft", head, bans, func(a netip.Addr) string {
			if first {
				first = false
				return a.String() + "\n"
			}
			return "," + a.String() + "\n"
		}, tail)
		top.Victim.MustRun(tb, "nft", "-f", p)
	}}
}

// xdpFilter loads the bans with the XDP backend; uncounted compiles the
// per-reason drop counters out (xdp.Config.NoDropCounters).
func xdpFilter(name string, uncounted bool) filter {
	return filter{name: name, install: func(tb testing.TB, top *netns.Topology, bans []netip.Addr) {
		cfg := xdp.DefaultConfig()
		cfg.NoDropCounters = uncounted
		cfg.Interfaces = []string{netns.IfaceVictimA}
		cfg.PinPath = fmt.Sprintf("/sys/fs/bpf/portcullis-bench-%d-%s", os.Getpid(), top.Victim.Name)
		tb.Cleanup(func() { _ = xdp.Cleanup(cfg.PinPath) })
		var e *xdp.Enforcer
		if err := top.Victim.Do(func() error {
			var err error
			e, err = xdp.New(cfg)
			return err
		}); err != nil {
			tb.Fatalf("xdp: %v", err)
		}
		tb.Cleanup(func() { _ = e.Close() })
		until := time.Now().Add(2 * time.Hour)
		entries := make([]enforcer.Entry, len(bans))
		for i, a := range bans {
			entries[i] = enforcer.Entry{Prefix: netip.PrefixFrom(a, 32), Until: until, Reason: "bench", Origin: "bench"}
		}
		if err := e.Reconcile(context.Background(), entries); err != nil {
			tb.Fatalf("xdp reconcile: %v", err)
		}
	}}
}

// ipsetFilter loads the bans into an ipset matched from INPUT; counted
// creates it with per-entry counters.
func ipsetFilter(name string, counted bool) filter {
	return filter{name: name, install: func(tb testing.TB, top *netns.Topology, bans []netip.Addr) {
		opt := ""
		if counted {
			opt = " counters"
		}
		head := fmt.Sprintf("create portcullis_bench hash:ip family inet hashsize %d maxelem %d%s\n", 1<<20, len(bans)+1024, opt)
		p := writeLines(tb, "bench.ipset", head, bans, func(a netip.Addr) string {
			return "add portcullis_bench " + a.String() + "\n"
		}, "")
		f, err := os.Open(p)
		if err != nil {
			tb.Fatal(err)
		}
		defer func() {
			if err := f.Close(); err != nil {
				tb.Errorf("close %s: %v", p, err)
			}
		}()
		cmd := exec.Command("ipset", "restore")
		cmd.Stdin = f
		if err := top.Victim.Do(func() error {
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("ipset restore: %w: %s", err, out)
			}
			return nil
		}); err != nil {
			tb.Fatal(err)
		}
		top.Victim.MustRun(tb, "iptables", "-I", "INPUT", "-m", "set", "--match-set", "portcullis_bench", "src", "-j", "DROP")
	}}
}

// filters are the drop paths BenchmarkFloodDrop compares; the counted and
// uncounted twins measure what counting drops per ban costs, in one run.
var filters = []filter{
	{name: "none", install: func(testing.TB, *netns.Topology, []netip.Addr) {}},
	xdpFilter("xdp", false),
	xdpFilter("xdp-uncounted", true),
	nftFilter("nft-netdev-ingress", "netdev", `type filter hook ingress device "`+netns.IfaceVictimA+`" priority -500`, false),
	nftFilter("nft-netdev-ingress-counted", "netdev", `type filter hook ingress device "`+netns.IfaceVictimA+`" priority -500`, true),
	nftFilter("nft-inet-input", "inet", "type filter hook input priority -200", false),
	ipsetFilter("iptables-ipset", false),
	ipsetFilter("iptables-ipset-counted", true),
}

// udpCounters reads the victim's UDP counters that a packet reaching the
// transport layer moves: InDatagrams, NoPorts and InErrors, summed.
func udpCounters(tb testing.TB, n *netns.NS) uint64 {
	tb.Helper()
	var total uint64
	if err := n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, "Udp: ") {
				continue
			}
			f := strings.Fields(l)[1:]
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "InDatagrams" || name == "NoPorts" || name == "InErrors" {
					v, _ := strconv.ParseUint(f[i], 10, 64)
					total += v
				}
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return total
}

// ksoftirqdTicks sums the CPU ticks of the ksoftirqd threads, where
// softirq work goes when it is deferred from the sender's context.
func ksoftirqdTicks(tb testing.TB) uint64 {
	tb.Helper()
	ms, _ := filepath.Glob("/proc/[0-9]*/comm")
	var total uint64
	for _, m := range ms {
		c, err := os.ReadFile(m)
		if err != nil || !strings.HasPrefix(string(c), "ksoftirqd/") {
			continue
		}
		st, err := os.ReadFile(filepath.Join(filepath.Dir(m), "stat"))
		if err != nil {
			continue
		}
		_, rest, _ := strings.Cut(string(st), ") ")
		f := strings.Fields(rest)
		if len(f) > 12 {
			u, _ := strconv.ParseUint(f[11], 10, 64)
			s, _ := strconv.ParseUint(f[12], 10, 64)
			total += u + s
		}
	}
	return total
}

// floodRig is one filter's topology with its flood sender.
type floodRig struct {
	f      filter
	top    *netns.Topology
	sender *flood.Sender
}

func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		tb.Fatalf("%s=%q is not a positive integer", name, s)
	}
	return v
}

// BenchmarkFloodDrop floods the victim with UDP from banned sources and
// compares the filters side by side: every filter gets its own topology
// loaded with the same set, and the rounds interleave the filters so that
// load from elsewhere on the machine hits them alike. It reports, per
// filter, the median over rounds of the sender's rate (Mpps) and of CPU
// per packet (the sender thread, which on veth also runs the receive path,
// plus ksoftirqd). Loading a million bans into five filters takes a
// minute, so one call does every round: run it with -benchtime=1x.
// PORTCULLIS_FLOOD_PACKETS sets the packets per flood (default 1,000,000),
// PORTCULLIS_FLOOD_ROUNDS the rounds (default 5).
func BenchmarkFloodDrop(b *testing.B) {
	testenv.RequireRoot(b)
	packets := envInt(b, "PORTCULLIS_FLOOD_PACKETS", 1_000_000)
	rounds := envInt(b, "PORTCULLIS_FLOOD_ROUNDS", 5)
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("bans=%d", n), func(b *testing.B) {
			bans := banList(n)
			var rigs []*floodRig
			for _, f := range filters {
				top := netns.NewTopology(b)
				start := time.Now()
				f.install(b, top, bans)
				b.Logf("%s: %d bans loaded in %s", f.name, n, time.Since(start).Round(time.Millisecond))
				r := &floodRig{f: f, top: top}
				dstMAC := linkMAC(b, top.Victim, netns.IfaceVictimA)
				srcMAC := linkMAC(b, top.Attacker, netns.IfaceAttacker)
				if err := top.Attacker.Do(func() error {
					var err error
					r.sender, err = flood.Open(flood.Config{
						Iface: netns.IfaceAttacker, SrcMAC: srcMAC, DstMAC: dstMAC,
						Sources: floodSources(), Dst: top.VictimA4, DstPort: 9, Payload: 18,
					})
					return err
				}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = r.sender.Close() })
				rigs = append(rigs, r)
			}
			type sample struct{ mpps, cpuNs, passed float64 }
			results := make(map[string][]sample)
			b.ResetTimer()
			for range rounds {
				for _, r := range rigs {
					before := udpCounters(b, r.top.Victim)
					k0 := ksoftirqdTicks(b)
					res, err := r.sender.Run(context.Background(), packets, 20*time.Second)
					if err != nil {
						b.Fatal(err)
					}
					ksoft := time.Duration(ksoftirqdTicks(b)-k0) * 10 * time.Millisecond
					passed := udpCounters(b, r.top.Victim) - before
					results[r.f.name] = append(results[r.f.name], sample{
						mpps:   float64(res.Sent) / res.Elapsed.Seconds() / 1e6,
						cpuNs:  float64(res.CPU+ksoft) / float64(res.Sent),
						passed: float64(passed) / float64(res.Sent),
					})
				}
			}
			b.StopTimer()
			for _, r := range rigs {
				ss := results[r.f.name]
				med := func(get func(sample) float64) float64 {
					v := make([]float64, len(ss))
					for i, s := range ss {
						v[i] = get(s)
					}
					slices.Sort(v)
					return v[len(v)/2]
				}
				b.ReportMetric(med(func(s sample) float64 { return s.mpps }), r.f.name+"-Mpps")
				b.ReportMetric(med(func(s sample) float64 { return s.cpuNs }), r.f.name+"-cpu-ns/pkt")
				b.ReportMetric(med(func(s sample) float64 { return s.passed }), r.f.name+"-reached-udp")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func linkMAC(tb testing.TB, n *netns.NS, iface string) net.HardwareAddr {
	tb.Helper()
	l, err := n.Netlink(tb).LinkByName(iface)
	if err != nil {
		tb.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}
