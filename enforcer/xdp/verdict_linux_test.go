package xdp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis-ips/portcullis/bpf"
	"github.com/portcullis-ips/portcullis/enforcer"
)

func ban(p string, d time.Duration, reason string) enforcer.Entry {
	return enforcer.Entry{Prefix: netip.MustParsePrefix(p), Until: time.Now().Add(d), Reason: reason, Origin: "test"}
}

// putExpired writes a ban that expired a second ago straight into the map,
// as the kernel would find it after its time ran out.
func putExpired(t *testing.T, e *Enforcer, p string) {
	t.Helper()
	clk, err := readClock()
	if err != nil {
		t.Fatal(err)
	}
	v := bpf.XdpBan{Expires: uint64(clk.boot - int64(time.Second)), Reason: 0}
	pfx := netip.MustParsePrefix(p)
	var w writes
	w.add(pfx, v)
	if err := e.write(context.Background(), &w); err != nil {
		t.Fatal(err)
	}
}

func TestVerdicts(t *testing.T) {
	for _, prealloc := range []bool{true, false} {
		t.Run(fmt.Sprintf("prealloc=%t", prealloc), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Prealloc = prealloc
			testVerdicts(t, openUnpinned(t, cfg))
		})
	}
}

func testVerdicts(t *testing.T, e *Enforcer) {
	ctx := context.Background()
	err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{
		ban("192.0.2.10/32", time.Hour, "ssh-bf"),
		ban("2001:db8::10/128", time.Hour, "ssh-bf"),
		ban("198.51.100.0/24", time.Hour, "http-crawl"),
		ban("2001:db8:1::/48", time.Hour, "http-crawl"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	putExpired(t, e, "192.0.2.20/32")
	putExpired(t, e, "2001:db8::20/128")
	putExpired(t, e, "203.0.113.0/24")
	putExpired(t, e, "198.51.100.7/32") // expired exact inside a live range

	a := netip.MustParseAddr
	tests := []struct {
		name string
		f    frame
		want uint32
	}{
		{"v4 hit", frame{src: a("192.0.2.10")}, xdpDrop},
		{"v4 miss", frame{src: a("192.0.2.11")}, xdpPass},
		{"v6 hit", frame{src: a("2001:db8::10")}, xdpDrop},
		{"v6 miss", frame{src: a("2001:db8::11")}, xdpPass},
		{"802.1Q v4 hit", frame{tags: []uint16{ether8021Q}, src: a("192.0.2.10")}, xdpDrop},
		{"802.1Q v6 hit", frame{tags: []uint16{ether8021Q}, src: a("2001:db8::10")}, xdpDrop},
		{"802.1Q v4 miss", frame{tags: []uint16{ether8021Q}, src: a("192.0.2.11")}, xdpPass},
		{"802.1ad+802.1Q v4 hit", frame{tags: []uint16{ether8021A, ether8021Q}, src: a("192.0.2.10")}, xdpDrop},
		{"802.1ad+802.1Q v6 hit", frame{tags: []uint16{ether8021A, ether8021Q}, src: a("2001:db8::10")}, xdpDrop},
		{"802.1ad+802.1Q v6 miss", frame{tags: []uint16{ether8021A, ether8021Q}, src: a("2001:db8::11")}, xdpPass},
		{"three tags are not parsed", frame{tags: []uint16{ether8021A, ether8021Q, ether8021Q}, src: a("192.0.2.10")}, xdpPass},
		{"v4 expired", frame{src: a("192.0.2.20")}, xdpPass},
		{"v6 expired", frame{src: a("2001:db8::20")}, xdpPass},
		{"v4 range expired", frame{src: a("203.0.113.5")}, xdpPass},
		{"v4 expired exact in live range", frame{src: a("198.51.100.7")}, xdpDrop},
		{"v4 range hit first", frame{src: a("198.51.100.0")}, xdpDrop},
		{"v4 range hit last", frame{src: a("198.51.100.255")}, xdpDrop},
		{"v4 range miss", frame{src: a("198.51.101.0")}, xdpPass},
		{"v6 range hit", frame{src: a("2001:db8:1:ffff::1")}, xdpDrop},
		{"v6 range miss", frame{src: a("2001:db8:2::1")}, xdpPass},
		{"802.1Q v6 range hit", frame{tags: []uint16{ether8021Q}, src: a("2001:db8:1::99")}, xdpDrop},
		{"v4-mapped v6 source is not a v4 ban", frame{src: a("::ffff:192.0.2.10"), ether: etherIPv6}, xdpPass},
		{"ARP carrying a banned address", frame{src: a("192.0.2.10"), ether: etherARP}, xdpPass},
		{"v4 over the v6 ethertype", frame{src: a("192.0.2.10"), ether: etherIPv6}, xdpPass},
		{"truncated: Ethernet only", frame{src: a("192.0.2.10"), trunc: 14}, xdpPass},
		{"truncated: v4 header 19 bytes", frame{src: a("192.0.2.10"), trunc: 14 + 19}, xdpPass},
		{"complete v4 header, no payload", frame{src: a("192.0.2.10"), trunc: 14 + 20}, xdpDrop},
		{"truncated: v6 header 39 bytes", frame{src: a("2001:db8::10"), trunc: 14 + 39}, xdpPass},
		{"complete v6 header, no payload", frame{src: a("2001:db8::10"), trunc: 14 + 40}, xdpDrop},
		{"truncated: VLAN tag", frame{tags: []uint16{ether8021Q}, src: a("192.0.2.10"), trunc: 16}, xdpPass},
		{"truncated: second VLAN tag", frame{tags: []uint16{ether8021A, ether8021Q}, src: a("192.0.2.10"), trunc: 20}, xdpPass},
		{"truncated: v4 header after two tags", frame{tags: []uint16{ether8021A, ether8021Q}, src: a("192.0.2.10"), trunc: 22 + 19}, xdpPass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, e, tc.f.bytes()); got != tc.want {
				t.Errorf("verdict = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestRangeTrieSkipped shows that the trie is not consulted while the
// config flag says it is empty, and that Apply keeps the flag right.
func TestRangeTrieSkipped(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	ctx := context.Background()
	until := uint64(time.Now().Add(time.Hour).UnixNano()) // far ahead of boot time
	k := lpmKey4(netip.MustParsePrefix("198.51.100.0/24"))
	if err := e.objs.PortcullisNet4.Update(&k, &bpf.XdpBan{Expires: until}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	pkt := frame{src: netip.MustParseAddr("198.51.100.1")}.bytes()
	if got := run(t, e, pkt); got != xdpPass {
		t.Fatalf("with the flag down the trie must be skipped: verdict %d", got)
	}
	if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{ban("198.51.100.0/24", time.Hour, "r")}}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, e, pkt); got != xdpDrop {
		t.Fatalf("after Apply: verdict %d, want drop", got)
	}
	if got := flags(t, e); got != (bpf.XdpConfig{RangesV4: 1}) {
		t.Fatalf("config = %+v, want only v4 ranges", got)
	}
	if err := e.Apply(ctx, enforcer.Batch{Delete: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}); err != nil {
		t.Fatal(err)
	}
	if got := flags(t, e); got != (bpf.XdpConfig{}) {
		t.Fatalf("config after deleting the last range = %+v, want zero", got)
	}
	if got := run(t, e, pkt); got != xdpPass {
		t.Fatalf("after delete: verdict %d, want pass", got)
	}
}

func flags(t *testing.T, e *Enforcer) bpf.XdpConfig {
	t.Helper()
	var c bpf.XdpConfig
	if err := e.objs.PortcullisCfg.Lookup(uint32(0), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKernelExpiry shows a ban ending on time with nothing in user space
// acting on it.
func TestKernelExpiry(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	if err := e.Apply(context.Background(), enforcer.Batch{Add: []enforcer.Entry{
		ban("192.0.2.50/32", 300*time.Millisecond, "r"),
		ban("2001:db8:5::/64", 300*time.Millisecond, "r"),
	}}); err != nil {
		t.Fatal(err)
	}
	p4 := frame{src: netip.MustParseAddr("192.0.2.50")}.bytes()
	p6 := frame{src: netip.MustParseAddr("2001:db8:5::1")}.bytes()
	if run(t, e, p4) != xdpDrop || run(t, e, p6) != xdpDrop {
		t.Fatal("bans not in force before expiry")
	}
	time.Sleep(400 * time.Millisecond)
	if run(t, e, p4) != xdpPass || run(t, e, p6) != xdpPass {
		t.Fatal("bans still in force after expiry")
	}
	n, err := e.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("GC deleted %d, want 2", n)
	}
	if got := flags(t, e); got != (bpf.XdpConfig{}) {
		t.Fatalf("config after GC emptied the tries = %+v", got)
	}
}

func TestApplyIdempotentAndReconcile(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	ctx := context.Background()
	first := []enforcer.Entry{
		ban("192.0.2.1/32", time.Hour, "a"),
		ban("192.0.2.2/32", time.Hour, "a"),
		ban("2001:db8::1/128", time.Hour, "b"),
		ban("198.51.100.0/24", time.Hour, "b"),
	}
	for range 2 {
		if err := e.Apply(ctx, enforcer.Batch{Add: first}); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting an absent prefix is no error, in a batch with present ones.
	if err := e.Apply(ctx, enforcer.Batch{Delete: []netip.Prefix{
		netip.MustParsePrefix("203.0.113.9/32"),
		netip.MustParsePrefix("192.0.2.2/32"),
		netip.MustParsePrefix("203.0.113.10/32"),
		netip.MustParsePrefix("2001:db8:9::/48"),
	}}); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{"192.0.2.1/32 a", "2001:db8::1/128 b", "198.51.100.0/24 b"})

	// Refreshing an expiry moves it.
	later := ban("192.0.2.1/32", 5*time.Hour, "a")
	if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{later}}); err != nil {
		t.Fatal(err)
	}
	got := listed(t, e)
	if d := got["192.0.2.1/32"].Until.Sub(later.Until); d > time.Millisecond || d < -time.Millisecond {
		t.Fatalf("refreshed expiry off by %s", d)
	}

	snapshot := []enforcer.Entry{
		ban("192.0.2.1/32", time.Hour, "a"),
		ban("192.0.2.3/32", time.Hour, "c"),
		ban("2001:db8:7::/48", time.Hour, "c"),
		ban("192.0.2.4/32", -time.Second, "c"), // already expired: not installed
	}
	if err := e.Reconcile(ctx, snapshot); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{"192.0.2.1/32 a", "192.0.2.3/32 c", "2001:db8:7::/48 c"})
	if got := flags(t, e); got != (bpf.XdpConfig{RangesV6: 1}) {
		t.Fatalf("config = %+v, want only v6 ranges", got)
	}
	if run(t, e, frame{src: netip.MustParseAddr("198.51.100.1")}.bytes()) != xdpPass {
		t.Fatal("range removed by reconcile still drops")
	}
	if err := e.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, nil)
}

func TestApplyRejectsInvalid(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	ctx := context.Background()
	tests := []struct {
		name string
		b    enforcer.Batch
		want string
	}{
		{"zero prefix", enforcer.Batch{Add: []enforcer.Entry{{Until: time.Now().Add(time.Hour)}}}, "invalid prefix"},
		{"no expiry", enforcer.Batch{Add: []enforcer.Entry{{Prefix: netip.MustParsePrefix("192.0.2.1/32")}}}, "no expiry"},
		{"reason too long", enforcer.Batch{Add: []enforcer.Entry{{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Until: time.Now().Add(time.Hour), Reason: strings.Repeat("x", 257)}}}, "reason: 257 bytes"},
		{"NUL in origin", enforcer.Batch{Add: []enforcer.Entry{{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Until: time.Now().Add(time.Hour), Origin: "a\x00b"}}}, "NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.Apply(ctx, tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	assertList(t, e, nil)
}

func TestIPv4MappedPrefixIsIPv4(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	mapped := netip.PrefixFrom(netip.MustParseAddr("::ffff:192.0.2.77"), 128)
	if err := e.Apply(context.Background(), enforcer.Batch{Add: []enforcer.Entry{
		{Prefix: mapped, Until: time.Now().Add(time.Hour), Reason: "m", Origin: "test"},
	}}); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{"192.0.2.77/32 m"})
	if run(t, e, frame{src: netip.MustParseAddr("192.0.2.77")}.bytes()) != xdpDrop {
		t.Fatal("v4-mapped ban does not drop the v4 address")
	}
}

func TestCounters(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxReasons = 3 // overflow counter plus two reasons
	e := openUnpinned(t, cfg)
	if err := e.Apply(context.Background(), enforcer.Batch{Add: []enforcer.Entry{
		ban("192.0.2.1/32", time.Hour, "ssh-bf"),
		ban("2001:db8::/32", time.Hour, "http-probe"),
		ban("192.0.2.3/32", time.Hour, "third"), // no id left: overflow
	}}); err != nil {
		t.Fatal(err)
	}
	p1 := frame{src: netip.MustParseAddr("192.0.2.1")}.bytes()
	p2 := frame{tags: []uint16{ether8021Q}, src: netip.MustParseAddr("2001:db8:ab::1")}.bytes()
	p3 := frame{src: netip.MustParseAddr("192.0.2.3")}.bytes()
	for range 3 {
		run(t, e, p1)
	}
	run(t, e, p2)
	run(t, e, p2)
	run(t, e, p3)
	run(t, e, frame{src: netip.MustParseAddr("192.0.2.99")}.bytes()) // passes, not counted
	c, err := e.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]enforcer.Count{
		"ssh-bf":       {Packets: 3, Bytes: 3 * uint64(len(p1))},
		"http-probe":   {Packets: 2, Bytes: 2 * uint64(len(p2))},
		OverflowReason: {Packets: 1, Bytes: uint64(len(p3))},
	}
	if len(c.ByReason) != len(want) {
		t.Fatalf("counters = %v, want %v", c.ByReason, want)
	}
	for k, v := range want {
		if c.ByReason[k] != v {
			t.Errorf("counters[%q] = %+v, want %+v", k, c.ByReason[k], v)
		}
	}
}

func TestClosed(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := e.Apply(context.Background(), enforcer.Batch{}); !errors.Is(err, enforcer.ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
	if err := e.Reconcile(context.Background(), nil); !errors.Is(err, enforcer.ErrClosed) {
		t.Fatalf("Reconcile after Close: %v", err)
	}
}

// listed returns the enforcer's entries by prefix.
func listed(t *testing.T, e *Enforcer) map[string]enforcer.Entry {
	t.Helper()
	l, err := e.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]enforcer.Entry, len(l))
	for _, en := range l {
		out[en.Prefix.String()] = en
	}
	return out
}

// assertList checks the listed entries as "prefix reason" strings.
func assertList(t *testing.T, e *Enforcer, want []string) {
	t.Helper()
	l, err := e.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(l))
	for _, en := range l {
		if en.Origin != "test" {
			t.Errorf("%s: origin %q, want test", en.Prefix, en.Origin)
		}
		got = append(got, en.Prefix.String()+" "+en.Reason)
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("entries = %q, want %q", got, want)
	}
}

// TestBatchOrder pins down the order within one batch: deletes first, then
// adds in order, an expired add acting as a delete at its place.
func TestBatchOrder(t *testing.T) {
	e := openUnpinned(t, testConfig(t))
	ctx := context.Background()
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	if err := e.Apply(ctx, enforcer.Batch{
		Delete: []netip.Prefix{p("192.0.2.1/32"), p("198.51.100.0/24")},
		Add: []enforcer.Entry{
			ban("192.0.2.1/32", time.Hour, "deleted-then-added"),
			ban("192.0.2.2/32", time.Hour, "added-then-expired"),
			ban("192.0.2.2/32", -time.Second, "added-then-expired"),
			ban("192.0.2.3/32", -time.Second, "expired-then-added"),
			ban("192.0.2.3/32", time.Hour, "expired-then-added"),
			ban("198.51.100.0/24", time.Hour, "first"),
			ban("198.51.100.0/24", time.Hour, "second"),
		},
	}); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{"192.0.2.1/32 deleted-then-added", "192.0.2.3/32 expired-then-added", "198.51.100.0/24 second"})

	// Reconcile with duplicates: the last occurrence wins there too, whether
	// or not an earlier one matches what the map holds.
	if err := e.Reconcile(ctx, []enforcer.Entry{
		ban("192.0.2.1/32", time.Hour, "deleted-then-added"),
		ban("192.0.2.1/32", time.Hour, "renamed"),
		ban("192.0.2.3/32", time.Hour, "changed"),
		ban("192.0.2.3/32", time.Hour, "expired-then-added"),
		ban("198.51.100.0/24", time.Hour, "second"),
		ban("198.51.100.0/24", -time.Second, "second"),
	}); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{"192.0.2.1/32 renamed", "192.0.2.3/32 expired-then-added"})
}
