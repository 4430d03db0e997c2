package prefixset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

var ctx = context.Background()

func entry(p string, r Remedy, until time.Time, reason string) Entry {
	return Entry{
		Entry:  enforcer.Entry{Prefix: netip.MustParsePrefix(p), Until: until, Reason: reason, Origin: "test"},
		Remedy: r,
	}
}

func mustApply(t *testing.T, s *Set, b Batch) {
	t.Helper()
	if err := s.ApplyRemedies(ctx, b); err != nil {
		t.Fatalf("ApplyRemedies: %v", err)
	}
}

func TestLookup(t *testing.T) {
	now := time.Now()
	hour := now.Add(time.Hour)
	s := New()
	mustApply(t, s, Batch{Add: []Entry{
		entry("203.0.113.7/32", RemedyBan, hour, "ssh-bf"),
		entry("198.51.100.0/24", RemedyBan, hour, "range"),
		entry("198.51.100.128/25", RemedyCaptcha, hour, "crawl"),
		entry("192.0.2.0/24", RemedyCaptcha, hour, "bot"),
		entry("192.0.2.9/32", RemedyBan, now.Add(time.Second), "short"),
		entry("2001:db8::/48", RemedyBan, hour, "v6range"),
		entry("2001:db8:1::5/128", RemedyCaptcha, hour, "v6ip"),
		entry("10.9.0.0/16", RemedyBan, now.Add(-time.Second), "expired"),
	}})
	tests := []struct {
		ip     string
		at     time.Time
		want   bool
		remedy Remedy
		reason string
		prefix string
	}{
		{"203.0.113.7", now, true, RemedyBan, "ssh-bf", "203.0.113.7/32"},
		{"203.0.113.8", now, false, 0, "", ""},
		{"::ffff:203.0.113.7", now, true, RemedyBan, "ssh-bf", "203.0.113.7/32"},
		{"198.51.100.1", now, true, RemedyBan, "range", "198.51.100.0/24"},
		// The /25 captcha is more specific, but the /24 ban outranks it.
		{"198.51.100.200", now, true, RemedyBan, "range", "198.51.100.0/24"},
		{"192.0.2.1", now, true, RemedyCaptcha, "bot", "192.0.2.0/24"},
		{"192.0.2.9", now, true, RemedyBan, "short", "192.0.2.9/32"},
		// Once the /32 ban has expired, the covering captcha applies.
		{"192.0.2.9", now.Add(time.Second), true, RemedyCaptcha, "bot", "192.0.2.0/24"},
		{"2001:db8:0:ffff::1", now, true, RemedyBan, "v6range", "2001:db8::/48"},
		{"2001:db8:1::5", now, true, RemedyCaptcha, "v6ip", "2001:db8:1::5/128"},
		{"2001:db8:1::6", now, false, 0, "", ""},
		{"fe80::1%eth0", now, false, 0, "", ""},
		{"10.9.1.1", now, false, 0, "", ""}, // added already expired
		{"203.0.113.7", hour, false, 0, "", ""},
	}
	for _, tc := range tests {
		m, ok := s.Lookup(netip.MustParseAddr(tc.ip), tc.at)
		if ok != tc.want {
			t.Errorf("Lookup(%s, +%s) found %v, want %v (%+v)", tc.ip, tc.at.Sub(now), ok, tc.want, m)
			continue
		}
		if !ok {
			continue
		}
		if m.Remedy != tc.remedy || m.Reason != tc.reason || m.Prefix.String() != tc.prefix || m.Origin != "test" {
			t.Errorf("Lookup(%s) = %+v, want %s %s %s", tc.ip, m, tc.remedy, tc.reason, tc.prefix)
		}
	}
	if _, ok := s.Lookup(netip.Addr{}, now); ok {
		t.Error("Lookup of the zero address found an entry")
	}
}

func TestUntilIsExactBoundary(t *testing.T) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	s := New()
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.1/32", RemedyBan, until, "x")}})
	ip := netip.MustParseAddr("203.0.113.1")
	if _, ok := s.Lookup(ip, until.Add(-time.Nanosecond)); !ok {
		t.Error("entry not live one nanosecond before until")
	}
	if _, ok := s.Lookup(ip, until); ok {
		t.Error("entry live at until")
	}
	m, _ := s.Lookup(ip, until.Add(-time.Minute))
	if !m.Until.Equal(until) {
		t.Errorf("Until = %s, want %s", m.Until, until)
	}
}

func TestApplyIdempotentAndDelete(t *testing.T) {
	hour := time.Now().Add(time.Hour)
	s := New()
	b := enforcer.Batch{Add: []enforcer.Entry{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Until: hour, Reason: "r", Origin: "o"},
		{Prefix: netip.MustParsePrefix("2001:db8::1/128"), Until: hour, Reason: "r", Origin: "o"},
	}}
	for range 2 {
		if err := s.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d after applying the same batch twice, want 2", s.Len())
	}
	// A refreshed add replaces the entry, here with a captcha.
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.0/24", RemedyCaptcha, hour.Add(time.Hour), "again")}})
	m, ok := s.Lookup(netip.MustParseAddr("203.0.113.50"), time.Now())
	if !ok || m.Remedy != RemedyCaptcha || m.Reason != "again" {
		t.Fatalf("after replacing: %+v %v", m, ok)
	}
	del := enforcer.Batch{Delete: []netip.Prefix{
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"), // absent
	}}
	for range 2 {
		if err := s.Apply(ctx, del); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := s.Lookup(netip.MustParseAddr("203.0.113.50"), time.Now()); ok {
		t.Error("deleted range still matches")
	}
	got, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Prefix.String() != "2001:db8::1/128" || !got[0].Until.Equal(hour) {
		t.Errorf("List = %+v", got)
	}
}

func TestExpiredAddRemovesPrefix(t *testing.T) {
	s := New()
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.9/32", RemedyBan, time.Now().Add(time.Hour), "r")}})
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.9/32", RemedyBan, time.Now().Add(-time.Second), "r")}})
	if s.Len() != 0 {
		t.Errorf("Len = %d, want 0", s.Len())
	}
}

func TestNormalization(t *testing.T) {
	hour := time.Now().Add(time.Hour)
	s := New()
	mustApply(t, s, Batch{Add: []Entry{
		entry("::ffff:192.0.2.0/120", RemedyBan, hour, "mapped"),
		entry("198.51.100.77/24", RemedyBan, hour, "unmasked"),
	}})
	got, _ := s.Entries(ctx)
	if len(got) != 2 || got[0].Prefix.String() != "192.0.2.0/24" || got[1].Prefix.String() != "198.51.100.0/24" {
		t.Fatalf("Entries = %+v", got)
	}
}

func TestInvalidBatchLeavesSetUntouched(t *testing.T) {
	hour := time.Now().Add(time.Hour)
	s := New()
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.1/32", RemedyBan, hour, "r")}})
	bad := []Batch{
		{Add: []Entry{entry("203.0.113.2/32", RemedyBan, hour, "r"), {Entry: enforcer.Entry{Until: hour}, Remedy: RemedyBan}}},
		{Add: []Entry{entry("203.0.113.2/32", 9, hour, "r")}},
		{Add: []Entry{{Entry: enforcer.Entry{Prefix: netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 33), Until: hour}, Remedy: RemedyBan}}},
		{Delete: []netip.Prefix{{}}},
	}
	for i, b := range bad {
		if err := s.ApplyRemedies(ctx, b); err == nil {
			t.Errorf("batch %d: no error", i)
		}
	}
	if err := s.ReconcileRemedies(ctx, bad[0].Add); err == nil {
		t.Error("reconcile with an invalid entry: no error")
	}
	if got, _ := s.Entries(ctx); len(got) != 1 || got[0].Prefix.String() != "203.0.113.1/32" {
		t.Errorf("set changed by invalid batches: %+v", got)
	}
}

func TestReconcile(t *testing.T) {
	hour := time.Now().Add(time.Hour)
	s := New()
	mustApply(t, s, Batch{Add: []Entry{
		entry("203.0.113.1/32", RemedyBan, hour, "stale"),
		entry("203.0.113.2/32", RemedyBan, hour, "kept"),
	}})
	err := s.ReconcileRemedies(ctx, []Entry{
		entry("203.0.113.2/32", RemedyBan, hour, "first"),
		entry("203.0.113.2/32", RemedyCaptcha, hour, "second"),
		entry("2001:db8::/32", RemedyBan, hour, "new"),
		entry("198.51.100.0/24", RemedyBan, time.Now().Add(-time.Second), "expired"),
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Entries(ctx)
	want := []string{"203.0.113.2/32 captcha second", "2001:db8::/32 ban new"}
	if len(got) != len(want) {
		t.Fatalf("Entries = %+v, want %v", got, want)
	}
	for i, e := range got {
		if s := fmt.Sprintf("%s %s %s", e.Prefix, e.Remedy, e.Reason); s != want[i] {
			t.Errorf("entry %d = %q, want %q", i, s, want[i])
		}
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d, want 2 (expired entries are not stored)", s.Len())
	}
}

func TestSweep(t *testing.T) {
	now := time.Now()
	s := New()
	mustApply(t, s, Batch{Add: []Entry{
		entry("203.0.113.1/32", RemedyBan, now.Add(time.Second), "a"),
		entry("203.0.113.2/32", RemedyBan, now.Add(2*time.Second), "b"),
		entry("203.0.113.3/32", RemedyBan, time.Time{}, "forever"),
	}})
	for _, tc := range []struct {
		at   time.Duration
		want int
		left int
	}{{0, 0, 3}, {time.Second, 1, 2}, {time.Second, 0, 2}, {time.Hour, 1, 1}, {time.Hour, 0, 1}} {
		n, err := s.Sweep(now.Add(tc.at))
		if err != nil {
			t.Fatal(err)
		}
		if n != tc.want || s.Len() != tc.left {
			t.Errorf("Sweep(+%s) removed %d leaving %d, want %d leaving %d", tc.at, n, s.Len(), tc.want, tc.left)
		}
	}
}

func TestClose(t *testing.T) {
	s := New()
	mustApply(t, s, Batch{Add: []Entry{entry("203.0.113.1/32", RemedyBan, time.Time{}, "a")}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := s.Lookup(netip.MustParseAddr("203.0.113.1"), time.Now()); ok {
		t.Error("closed set still matches")
	}
	if err := s.Apply(ctx, enforcer.Batch{}); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	if err := s.Reconcile(ctx, nil); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Reconcile after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Sweep(time.Now()); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Sweep after Close: %v, want ErrClosed", err)
	}
}

// model is the obvious linear implementation the set is checked against.
type model map[netip.Prefix]Entry

func (m model) lookup(ip netip.Addr, now time.Time) (Entry, bool) {
	var best Entry
	found := false
	for p, e := range m {
		if !p.Contains(ip) || !e.Until.After(now) {
			continue
		}
		better := !found ||
			(e.Remedy == RemedyBan && best.Remedy != RemedyBan) ||
			(e.Remedy == best.Remedy && p.Bits() > best.Prefix.Bits())
		if better {
			best, found = e, true
		}
	}
	return best, found
}

// TestAgainstModel applies random batches, small ones by copy-on-write and
// big ones by cloning, and compares every lookup with the model.
func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(time.Hour)
	randPrefix := func() netip.Prefix {
		if rng.IntN(4) == 0 {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(rng.IntN(4)), 15: byte(rng.IntN(8))})
			return netip.PrefixFrom(a, []int{48, 64, 128}[rng.IntN(3)]).Masked()
		}
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(16))})
		return netip.PrefixFrom(a, []int{16, 24, 28, 32}[rng.IntN(4)]).Masked()
	}
	s := New()
	m := model{}
	for round := range 40 {
		size := 1 + rng.IntN(20)
		if round%10 == 9 {
			size = copyOnWriteMax + 100
		}
		var b Batch
		seen := map[netip.Prefix]bool{}
		for range size {
			p := randPrefix()
			if seen[p] {
				continue
			}
			seen[p] = true
			if rng.IntN(3) == 0 {
				b.Delete = append(b.Delete, p)
				delete(m, p)
				continue
			}
			e := entry(p.String(), Remedy(1+rng.IntN(2)), base.Add(time.Duration(rng.IntN(600))*time.Second), fmt.Sprint(round))
			b.Add = append(b.Add, e)
			m[p] = e
		}
		mustApply(t, s, b)
		if s.Len() != len(m) {
			t.Fatalf("round %d: Len = %d, model %d", round, s.Len(), len(m))
		}
		for range 300 {
			p := randPrefix()
			ip := p.Addr()
			at := base.Add(time.Duration(rng.IntN(600)) * time.Second)
			got, ok := s.Lookup(ip, at)
			want, wok := m.lookup(ip, at)
			if ok != wok || (ok && (got.Prefix != want.Prefix || got.Remedy != want.Remedy || got.Reason != want.Reason)) {
				t.Fatalf("round %d: Lookup(%s, %s) = %+v %v, model %+v %v", round, ip, at, got, ok, want, wok)
			}
		}
	}
}

// TestConcurrentReadersAndWriter is meant for -race: lookups go on while
// batches are applied and the set is reconciled and swept.
func TestConcurrentReadersAndWriter(t *testing.T) {
	s := New()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(r)})
			for {
				select {
				case <-stop:
					return
				default:
					s.Lookup(ip, time.Now())
				}
			}
		}()
	}
	hour := time.Now().Add(time.Hour)
	for i := range 200 {
		p := fmt.Sprintf("203.0.113.%d/32", i%4)
		mustApply(t, s, Batch{Add: []Entry{entry(p, RemedyBan, hour, "r")}})
		if i%50 == 0 {
			if err := s.ReconcileRemedies(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Sweep(time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
}

// TestSweepMany removes more expired entries than copy-on-write handles
// one by one, so the table is cloned, and keeps the live ones.
func TestSweepMany(t *testing.T) {
	now := time.Now()
	s := New()
	var b Batch
	for i := range copyOnWriteMax + 1000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		until := now.Add(time.Second)
		if i%2 == 0 {
			until = now.Add(time.Hour)
		}
		b.Add = append(b.Add, Entry{Entry: enforcer.Entry{Prefix: p, Until: until, Reason: "r"}, Remedy: RemedyBan})
	}
	mustApply(t, s, b)
	n, err := s.Sweep(now.Add(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := (copyOnWriteMax + 1000) / 2
	if n != want || s.Len() != want {
		t.Fatalf("Sweep removed %d leaving %d, want %d and %d", n, s.Len(), want, want)
	}
	if _, ok := s.Lookup(netip.MustParseAddr("10.0.0.0"), now); !ok {
		t.Error("live entry gone after the sweep")
	}
	if _, ok := s.Lookup(netip.MustParseAddr("10.0.0.1"), now); ok {
		t.Error("swept entry still found")
	}
}
