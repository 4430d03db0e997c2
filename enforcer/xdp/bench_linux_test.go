package xdp

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/portcullis-ips/portcullis/bpf"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// benchAddr4 and benchAddr6 return the i-th banned address of a family.
func benchAddr4(i int) netip.Addr { return millionAddr(i) }

func benchAddr6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
}

// benchConfig has room for a million addresses of each family.
func benchConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.MaxExactV4 = 1 << 20
	cfg.MaxExactV6 = 1 << 20
	cfg.MaxRangesV4 = 1 << 16
	cfg.MaxRangesV6 = 1 << 16
	return cfg
}

// benchRange4 and benchRange6 return the i-th banned range of a family:
// every other /24 in 100.0.0.0/7 and every other /64 in 2001:db9::/32, so
// that the gaps between them give misses that walk deep into the trie.
func benchRange4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(100 + i>>15), byte(i >> 7), byte(i&127) * 2, 0}), 24)
}

func benchRange6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb9, 0, byte(i >> 15), byte(i >> 14 & 1), byte(i) * 2}), 64)
}

// fill bans n addresses of each family and that many ranges of each family.
func fill(b *testing.B, e *Enforcer, n, ranges int) {
	b.Helper()
	until := time.Now().Add(time.Hour)
	entries := make([]enforcer.Entry, 0, 2*n+2*ranges)
	for i := range n {
		entries = append(entries,
			enforcer.Entry{Prefix: netip.PrefixFrom(benchAddr4(i), 32), Until: until, Reason: "bench", Origin: "test"},
			enforcer.Entry{Prefix: netip.PrefixFrom(benchAddr6(i), 128), Until: until, Reason: "bench", Origin: "test"})
	}
	for i := range ranges {
		entries = append(entries,
			enforcer.Entry{Prefix: benchRange4(i), Until: until, Reason: "bench", Origin: "test"},
			enforcer.Entry{Prefix: benchRange6(i), Until: until, Reason: "bench", Origin: "test"})
	}
	if err := e.Reconcile(context.Background(), entries); err != nil {
		b.Fatal(err)
	}
}

// benchPacket runs the program b.N times on pkt inside the kernel
// (BPF_PROG_TEST_RUN with repeat) and reports the kernel's ns/packet.
func benchPacket(b *testing.B, e *Enforcer, pkt []byte, want uint32) {
	b.Helper()
	ret, d, err := e.objs.PortcullisXdp.Benchmark(pkt, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("verdict %d, want %d", ret, want)
	}
	b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
}

// BenchmarkProgram measures the program's cost per packet, cache-hot (the
// same packet each time), for exact hits and misses at several map sizes,
// and range lookups with and without ranges present.
func BenchmarkProgram(b *testing.B) {
	testenv.RequireRoot(b)
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("exact=%d", n), func(b *testing.B) {
			e := openUnpinned(b, benchConfig(b))
			fill(b, e, n, 0)
			hit4 := frame{src: benchAddr4(n / 2)}.bytes()
			miss4 := frame{src: netip.MustParseAddr("192.0.2.1")}.bytes()
			hit6 := frame{src: benchAddr6(n / 2)}.bytes()
			miss6 := frame{src: netip.MustParseAddr("2001:db8:ffff::1")}.bytes()
			b.Run("v4/hit", func(b *testing.B) { benchPacket(b, e, hit4, xdpDrop) })
			b.Run("v4/miss", func(b *testing.B) { benchPacket(b, e, miss4, xdpPass) })
			b.Run("v6/hit", func(b *testing.B) { benchPacket(b, e, hit6, xdpDrop) })
			b.Run("v6/miss", func(b *testing.B) { benchPacket(b, e, miss6, xdpPass) })
		})
	}
	for _, r := range []int{1_000, 65_536} {
		b.Run(fmt.Sprintf("exact=1000000/ranges=%d", r), func(b *testing.B) {
			e := openUnpinned(b, benchConfig(b))
			fill(b, e, 1_000_000, r)
			// An address inside the middle range, and one in the gap just
			// after it, which shares all but the last prefix bit.
			in4, in6 := benchRange4(r/2).Addr().As4(), benchRange6(r/2).Addr().As16()
			in4[3], in6[15] = 9, 9
			near4, near6 := in4, in6
			near4[2]++
			near6[7]++
			b.Run("v4/exact-hit", func(b *testing.B) { benchPacket(b, e, frame{src: benchAddr4(7)}.bytes(), xdpDrop) })
			b.Run("v4/range-hit", func(b *testing.B) { benchPacket(b, e, frame{src: netip.AddrFrom4(in4)}.bytes(), xdpDrop) })
			b.Run("v4/range-near-miss", func(b *testing.B) { benchPacket(b, e, frame{src: netip.AddrFrom4(near4)}.bytes(), xdpPass) })
			b.Run("v4/miss", func(b *testing.B) {
				benchPacket(b, e, frame{src: netip.MustParseAddr("192.0.2.1")}.bytes(), xdpPass)
			})
			b.Run("v6/range-hit", func(b *testing.B) { benchPacket(b, e, frame{src: netip.AddrFrom16(in6)}.bytes(), xdpDrop) })
			b.Run("v6/range-near-miss", func(b *testing.B) { benchPacket(b, e, frame{src: netip.AddrFrom16(near6)}.bytes(), xdpPass) })
			b.Run("v6/miss", func(b *testing.B) {
				benchPacket(b, e, frame{src: netip.MustParseAddr("2001:db8:ffff::1")}.bytes(), xdpPass)
			})
		})
	}
	b.Run("parse-only/arp", func(b *testing.B) {
		e := openUnpinned(b, benchConfig(b))
		benchPacket(b, e, frame{src: netip.MustParseAddr("192.0.2.1"), ether: etherARP}.bytes(), xdpPass)
	})
}

// procStatus reads a kB figure from /proc/self/status, in MB.
func procStatus(b *testing.B, field string) float64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func memlockMB(b *testing.B, m *ebpf.Map) float64 {
	b.Helper()
	info, err := m.Info()
	if err != nil {
		b.Fatal(err)
	}
	v, ok := info.Memlock()
	if !ok {
		b.Fatal("kernel reports no memlock")
	}
	return float64(v) / (1 << 20)
}

// BenchmarkLoadMillion measures loading 1,000,000 IPv4 bans into empty maps:
// through Reconcile (the daemon's start-up path, batched) into preallocated
// and into growing maps, through raw batch updates, and with one update
// syscall per ban; then a Reconcile that finds everything in place. Run
// with -benchtime=1x.
func BenchmarkLoadMillion(b *testing.B) {
	testenv.RequireRoot(b)
	const n = 1_000_000
	until := time.Now().Add(time.Hour)
	keys := make([][4]byte, n)
	vals := make([]bpf.XdpBan, n)
	for i := range keys {
		keys[i] = benchAddr4(i).As4()
		vals[i] = bpf.XdpBan{Expires: uint64(until.UnixNano()), Reason: 1}
	}
	entries := make([]enforcer.Entry, n)
	for i := range entries {
		entries[i] = enforcer.Entry{Prefix: netip.PrefixFrom(benchAddr4(i), 32), Until: until, Reason: "bench", Origin: "test"}
	}
	noPrealloc := DefaultConfig()
	noPrealloc.Prealloc = false
	loaders := []struct {
		name string
		cfg  Config
		load func(e *Enforcer) error
	}{
		{"reconcile", DefaultConfig(), func(e *Enforcer) error { return e.Reconcile(context.Background(), entries) }},
		{"reconcile-noprealloc", noPrealloc, func(e *Enforcer) error { return e.Reconcile(context.Background(), entries) }},
		{"batch", DefaultConfig(), func(e *Enforcer) error {
			return update(context.Background(), e.objs.PortcullisIp4, "portcullis_ip4", keys, vals)
		}},
		{"single", DefaultConfig(), func(e *Enforcer) error {
			for i := range keys {
				if err := e.objs.PortcullisIp4.Update(&keys[i], &vals[i], ebpf.UpdateAny); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, l := range loaders {
		b.Run(l.name, func(b *testing.B) {
			var total, cpu time.Duration
			for range b.N {
				e := openUnpinned(b, l.cfg)
				runtime.GC()
				rssBefore := procStatus(b, "VmRSS")
				cpuBefore := testenv.ProcessCPU(b)
				start := time.Now()
				if err := l.load(e); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				cpu += testenv.ProcessCPU(b) - cpuBefore
				b.ReportMetric(procStatus(b, "VmRSS")-rssBefore, "rss-growth-MB")
				b.ReportMetric(memlockMB(b, e.objs.PortcullisIp4), "map-memlock-MB")
				closeOK(b, e)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/load")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/load")
		})
	}
	b.Run("reconcile-unchanged", func(b *testing.B) {
		e := openUnpinned(b, DefaultConfig())
		if err := e.Reconcile(context.Background(), entries); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		cpuBefore := testenv.ProcessCPU(b)
		for range b.N {
			if err := e.Reconcile(context.Background(), entries); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric((testenv.ProcessCPU(b)-cpuBefore).Seconds()/float64(b.N), "cpu-s/load")
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/load")
	})
}

// BenchmarkDropVsPass puts side by side, in one run at a million bans, the
// return-only floor of BPF_PROG_TEST_RUN on this kernel (a program that
// only returns XDP_PASS), a pass (IPv4 miss), a drop (IPv4 hit, counted
// per reason) and a drop with the counters compiled out
// (Config.NoDropCounters).
func BenchmarkDropVsPass(b *testing.B) {
	testenv.RequireRoot(b)
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = floor.Close() }()
	counted := openUnpinned(b, benchConfig(b))
	fill(b, counted, 1_000_000, 0)
	cfg := benchConfig(b)
	cfg.NoDropCounters = true
	uncounted := openUnpinned(b, cfg)
	fill(b, uncounted, 1_000_000, 0)
	hit := frame{src: benchAddr4(500_000)}.bytes()
	miss := frame{src: netip.MustParseAddr("192.0.2.1")}.bytes()
	b.Run("floor", func(b *testing.B) {
		ret, d, err := floor.Benchmark(miss, b.N, nil)
		if err != nil || ret != xdpPass {
			b.Fatalf("floor: %d, %v", ret, err)
		}
		b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
	})
	b.Run("pass", func(b *testing.B) { benchPacket(b, counted, miss, xdpPass) })
	b.Run("drop", func(b *testing.B) { benchPacket(b, counted, hit, xdpDrop) })
	b.Run("drop-uncounted", func(b *testing.B) { benchPacket(b, uncounted, hit, xdpDrop) })
}
