package xdp

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// millionAddr returns the i-th of the test's banned IPv4 addresses, in
// 10.0.0.0/8.
func millionAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestMillionBans loads 1,000,000 IPv4 bans with the default map sizes and
// checks by running the program that sampled banned addresses drop and
// others pass.
func TestMillionBans(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a million bans")
	}
	const n = 1_000_000
	e := openUnpinned(t, DefaultConfig())
	until := time.Now().Add(time.Hour)
	entries := make([]enforcer.Entry, n)
	for i := range entries {
		entries[i] = enforcer.Entry{Prefix: netip.PrefixFrom(millionAddr(i), 32), Until: until, Reason: "bulk", Origin: "test"}
	}
	start := time.Now()
	if err := e.Reconcile(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile of %d bans into empty maps: %s", n, time.Since(start))
	if got := e.objs.PortcullisIp4.MaxEntries(); got < n {
		t.Fatalf("default map holds %d", got)
	}
	for i := 0; i < n; i += 997 {
		if v := run(t, e, frame{src: millionAddr(i)}.bytes()); v != xdpDrop {
			t.Fatalf("banned %s: verdict %d", millionAddr(i), v)
		}
		miss := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		if v := run(t, e, frame{src: miss}.bytes()); v != xdpPass {
			t.Fatalf("unbanned %s: verdict %d", miss, v)
		}
	}
	// The last and the one past it.
	if v := run(t, e, frame{src: millionAddr(n - 1)}.bytes()); v != xdpDrop {
		t.Fatalf("last ban: verdict %d", v)
	}
	if v := run(t, e, frame{src: millionAddr(n)}.bytes()); v != xdpPass {
		t.Fatalf("one past the last ban: verdict %d", v)
	}

	// Converging to half of the set deletes the other half.
	start = time.Now()
	if err := e.Reconcile(context.Background(), entries[:n/2]); err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile down to %d bans: %s", n/2, time.Since(start))
	cur, err := dump[[4]byte](e.objs.PortcullisIp4, "portcullis_ip4")
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != n/2 {
		t.Fatalf("map holds %d entries, want %d", len(cur), n/2)
	}
	if v := run(t, e, frame{src: millionAddr(n/2 + 1)}.bytes()); v != xdpPass {
		t.Fatalf("ban removed by reconcile: verdict %d", v)
	}
}

// TestMapFull shows a full map is reported as ErrMapFull, for the hash
// maps (preallocated or not) and the range tries.
func TestMapFull(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prealloc bool
		bits     int
	}{{"exact preallocated", true, 32}, {"exact growing", false, 32}, {"ranges", true, 24}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Prealloc = tc.prealloc
			cfg.MaxExactV4, cfg.MaxRangesV4 = 8, 8
			e := openUnpinned(t, cfg)
			var b enforcer.Batch
			for i := range 9 {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), tc.bits)
				b.Add = append(b.Add, enforcer.Entry{Prefix: p, Until: time.Now().Add(time.Hour)})
			}
			err := e.Apply(context.Background(), b)
			if !errors.Is(err, ErrMapFull) {
				t.Fatalf("err = %v, want ErrMapFull", err)
			}
		})
	}
}

// TestMapFullOfExpired shows that expired bans never keep a new one out:
// Apply collects them when the map is full.
func TestMapFullOfExpired(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxExactV4 = 8
	e := openUnpinned(t, cfg)
	for i := range 8 {
		putExpired(t, e, netip.PrefixFrom(millionAddr(i), 32).String())
	}
	fresh := netip.PrefixFrom(millionAddr(100), 32)
	if err := e.Apply(context.Background(), enforcer.Batch{Add: []enforcer.Entry{
		{Prefix: fresh, Until: time.Now().Add(time.Hour), Reason: "r", Origin: "test"},
	}}); err != nil {
		t.Fatal(err)
	}
	assertList(t, e, []string{fresh.String() + " r"})
	if v := run(t, e, frame{src: fresh.Addr()}.bytes()); v != xdpDrop {
		t.Fatalf("verdict %d, want drop", v)
	}
}
