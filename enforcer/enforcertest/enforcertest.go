// Package enforcertest is the conformance suite every enforcement backend
// passes, in the manner of testing/fstest: a backend's own test hands
// TestEnforcer a factory for fresh, isolated instances (for kernel backends,
// each in a network namespace of its own) and the suite checks the
// behaviour the enforcer.Enforcer contract promises, observing the backend
// through enforcer.Lister.
package enforcertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// Tolerance is how far a listed expiry may be from the one applied: kernel
// timeouts are kept in milliseconds (nftables) or whole seconds (ipset), and
// time passes between Apply and List.
const Tolerance = 2 * time.Second

// TestEnforcer runs the conformance suite. newEnforcer must return a fresh
// backend holding no entries, isolated from every other instance it returns,
// and implementing enforcer.Lister; it registers its own cleanup with t.
func TestEnforcer(t *testing.T, newEnforcer func(t *testing.T) enforcer.Enforcer) {
	t.Helper()
	cases := []struct {
		name string
		run  func(t *testing.T, e enforcer.Enforcer)
	}{
		{"ApplyIsIdempotent", testApplyIdempotent},
		{"DeleteAbsentIsHarmless", testDeleteAbsent},
		{"ReconcileConverges", testReconcileConverges},
		{"ReconcileToEmpty", testReconcileEmpty},
		{"ReconcileDuplicateInput", testReconcileDuplicates},
		{"ReconcileMany", testReconcileMany},
		{"AddAfterReconcile", testAddAfterReconcile},
		{"ExpiredAddIsNotEnforced", testExpiredAdd},
		{"KernelExpiry", testExpiry},
		{"ReAddRefreshesExpiry", testRefresh},
		{"CanonicalForms", testCanonicalForms},
		{"InvalidPrefixRefused", testInvalidPrefix},
		{"DoubleClose", testDoubleClose},
		{"ClosedIsErrClosed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnforcer(t)
			if _, ok := e.(enforcer.Lister); !ok {
				t.Fatalf("%T does not implement enforcer.Lister", e)
			}
			c.run(t, e)
		})
	}
}

var mixed = []string{"203.0.113.7/32", "198.51.100.0/24", "2001:db8::1/128", "2001:db8:1::/48"}

func entries(until time.Time, prefixes ...string) []enforcer.Entry {
	out := make([]enforcer.Entry, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, enforcer.Entry{Prefix: netip.MustParsePrefix(p), Until: until, Reason: "conformance", Origin: "test"})
	}
	return out
}

func apply(t *testing.T, e enforcer.Enforcer, b enforcer.Batch) {
	t.Helper()
	if err := e.Apply(context.Background(), b); err != nil {
		t.Fatalf("Apply(%d adds, %d deletes): %v", len(b.Add), len(b.Delete), err)
	}
}

func reconcile(t *testing.T, e enforcer.Enforcer, es []enforcer.Entry) {
	t.Helper()
	if err := e.Reconcile(context.Background(), es); err != nil {
		t.Fatalf("Reconcile(%d entries): %v", len(es), err)
	}
}

// list returns what the backend enforces, sorted by prefix, failing on a
// duplicate prefix.
func list(t *testing.T, e enforcer.Enforcer) []enforcer.Entry {
	t.Helper()
	got, err := e.(enforcer.Lister).List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	slices.SortFunc(got, func(a, b enforcer.Entry) int { return comparePrefix(a.Prefix, b.Prefix) })
	for i := 1; i < len(got); i++ {
		if got[i].Prefix == got[i-1].Prefix {
			t.Fatalf("List holds %s twice", got[i].Prefix)
		}
	}
	return got
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// expect checks that the backend holds exactly want (prefix and expiry).
func expect(t *testing.T, e enforcer.Enforcer, want []enforcer.Entry) {
	t.Helper()
	got := list(t, e)
	want = slices.Clone(want)
	slices.SortFunc(want, func(a, b enforcer.Entry) int { return comparePrefix(a.Prefix, b.Prefix) })
	if diff := diffEntries(got, want); diff != "" {
		t.Fatalf("backend state differs from expected (-missing +extra):\n%s", diff)
	}
}

// maxDiffLines bounds a reported difference; big sets differ in bulk.
const maxDiffLines = 20

func diffEntries(got, want []enforcer.Entry) string {
	var b strings.Builder
	gi, wi, lines := 0, 0, 0
	for gi < len(got) || wi < len(want) {
		if lines = strings.Count(b.String(), "\n"); lines >= maxDiffLines {
			fmt.Fprintf(&b, "... (more differences; %d listed, %d expected)\n", len(got), len(want))
			break
		}
		switch {
		case wi == len(want) || (gi < len(got) && comparePrefix(got[gi].Prefix, want[wi].Prefix) < 0):
			fmt.Fprintf(&b, "+ %s until %s\n", got[gi].Prefix, got[gi].Until.Format(time.RFC3339))
			gi++
		case gi == len(got) || comparePrefix(got[gi].Prefix, want[wi].Prefix) > 0:
			fmt.Fprintf(&b, "- %s until %s\n", want[wi].Prefix, want[wi].Until.Format(time.RFC3339))
			wi++
		default:
			g, w := got[gi], want[wi]
			if d := g.Until.Sub(w.Until).Abs(); d > Tolerance || g.Until.IsZero() != w.Until.IsZero() {
				fmt.Fprintf(&b, "~ %s until %s, want %s\n", g.Prefix, g.Until.Format(time.RFC3339), w.Until.Format(time.RFC3339))
			}
			gi++
			wi++
		}
	}
	return b.String()
}

func testApplyIdempotent(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	add := entries(until, mixed...)
	apply(t, e, enforcer.Batch{Add: add})
	apply(t, e, enforcer.Batch{Add: add})
	expect(t, e, add)

	gone := []netip.Prefix{add[0].Prefix, add[3].Prefix}
	apply(t, e, enforcer.Batch{Delete: gone})
	apply(t, e, enforcer.Batch{Delete: gone})
	expect(t, e, add[1:3])
}

func testDeleteAbsent(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	keep := entries(until, "192.0.2.1/32")
	apply(t, e, enforcer.Batch{Add: keep, Delete: []netip.Prefix{
		netip.MustParsePrefix("192.0.2.2/32"), netip.MustParsePrefix("2001:db8::2/128"), netip.MustParsePrefix("10.0.0.0/8"),
	}})
	expect(t, e, keep)
}

func testReconcileConverges(t *testing.T, e enforcer.Enforcer) {
	now := time.Now().Truncate(time.Second)
	apply(t, e, enforcer.Batch{Add: entries(now.Add(time.Hour), mixed...)})
	// Keep two, change the expiry of one, drop the others and add new ones.
	want := append(entries(now.Add(time.Hour), mixed[1], mixed[2]),
		entries(now.Add(3*time.Hour), mixed[3], "192.0.2.0/25", "192.0.2.128/25", "2001:db8:ffff::9/128")...)
	reconcile(t, e, want)
	expect(t, e, want)
	reconcile(t, e, want)
	expect(t, e, want)
}

func testReconcileEmpty(t *testing.T, e enforcer.Enforcer) {
	apply(t, e, enforcer.Batch{Add: entries(time.Now().Add(time.Hour), mixed...)})
	reconcile(t, e, nil)
	expect(t, e, nil)
}

func testReconcileDuplicates(t *testing.T, e enforcer.Enforcer) {
	now := time.Now().Truncate(time.Second)
	in := append(entries(now.Add(time.Hour), "192.0.2.7/32", "2001:db8::7/128"),
		entries(now.Add(2*time.Hour), "192.0.2.7/32", "2001:db8::7/128")...)
	reconcile(t, e, in)
	// The suite only requires one entry per prefix; which expiry wins is the
	// backend's choice, so compare prefixes alone.
	got := list(t, e)
	if len(got) != 2 || got[0].Prefix.String() != "192.0.2.7/32" || got[1].Prefix.String() != "2001:db8::7/128" {
		t.Fatalf("after Reconcile with duplicates: %v, want 192.0.2.7/32 and 2001:db8::7/128 once each", got)
	}
}

func testReconcileMany(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	var first, second []enforcer.Entry
	for i := range 3000 {
		p4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}), 32)
		p6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), 128)
		e4 := enforcer.Entry{Prefix: p4, Until: until, Reason: "many"}
		e6 := enforcer.Entry{Prefix: p6, Until: until, Reason: "many"}
		first = append(first, e4, e6)
		if i%3 != 0 {
			second = append(second, e4)
		}
	}
	second = append(second, entries(until, "172.16.0.0/12")...)
	reconcile(t, e, first)
	expect(t, e, first)
	reconcile(t, e, second)
	expect(t, e, second)
}

func testAddAfterReconcile(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	base := entries(until, mixed[:2]...)
	reconcile(t, e, base)
	extra := entries(until, "192.0.2.77/32")
	apply(t, e, enforcer.Batch{Add: extra, Delete: []netip.Prefix{base[0].Prefix}})
	expect(t, e, append(base[1:], extra...))
}

func testExpiredAdd(t *testing.T, e enforcer.Enforcer) {
	now := time.Now().Truncate(time.Second)
	live := entries(now.Add(time.Hour), "192.0.2.10/32")
	apply(t, e, enforcer.Batch{Add: append(entries(now.Add(-time.Minute), "192.0.2.11/32", "2001:db8::11/128"), live...)})
	expect(t, e, live)
	reconcile(t, e, append(entries(now.Add(-time.Second), "192.0.2.12/32"), live...))
	expect(t, e, live)
}

func testExpiry(t *testing.T, e enforcer.Enforcer) {
	now := time.Now()
	short := entries(now.Add(2*time.Second), "192.0.2.20/32", "2001:db8::20/128", "198.51.100.128/25")
	long := entries(now.Add(time.Hour), "192.0.2.21/32")
	apply(t, e, enforcer.Batch{Add: append(short, long...)})
	expect(t, e, append(slices.Clone(short), long...))
	time.Sleep(time.Until(now.Add(2*time.Second + Tolerance)))
	// Expiry is the backend's job, without any further call but List.
	expect(t, e, long)
	// Deleting what expired on its own is harmless, and so is re-adding it.
	apply(t, e, enforcer.Batch{Delete: []netip.Prefix{short[0].Prefix, short[1].Prefix}})
	again := entries(time.Now().Add(time.Hour).Truncate(time.Second), "198.51.100.128/25")
	apply(t, e, enforcer.Batch{Add: again})
	expect(t, e, append(long, again...))
}

func testRefresh(t *testing.T, e enforcer.Enforcer) {
	now := time.Now()
	apply(t, e, enforcer.Batch{Add: entries(now.Add(3*time.Second), "192.0.2.30/32", "2001:db8::30/128", "198.51.100.0/26")})
	refreshed := entries(now.Add(time.Hour).Truncate(time.Second), "192.0.2.30/32", "2001:db8::30/128", "198.51.100.0/26")
	apply(t, e, enforcer.Batch{Add: refreshed})
	expect(t, e, refreshed)
	time.Sleep(time.Until(now.Add(3*time.Second + Tolerance)))
	expect(t, e, refreshed)
}

func testDoubleClose(t *testing.T, e enforcer.Enforcer) {
	apply(t, e, enforcer.Batch{Add: entries(time.Now().Add(time.Hour), mixed[0])})
	if err := e.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testCanonicalForms hands the backend prefixes in every form
// enforcer.Canonical accepts and expects them back canonical; a delete
// written in another form of the same prefix removes it.
func testCanonicalForms(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	in := entries(until, "198.51.100.77/24", "::ffff:192.0.2.9/128", "::ffff:203.0.113.0/120", "2001:db8:5::7/48")
	apply(t, e, enforcer.Batch{Add: in})
	want := entries(until, "198.51.100.0/24", "192.0.2.9/32", "203.0.113.0/24", "2001:db8:5::/48")
	expect(t, e, want)
	apply(t, e, enforcer.Batch{Delete: []netip.Prefix{
		netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("::ffff:192.0.2.9/128"),
	}})
	expect(t, e, want[2:])
	reconcile(t, e, entries(until, "::ffff:192.0.2.10/128", "2001:db8:5::1/48"))
	expect(t, e, entries(until, "192.0.2.10/32", "2001:db8:5::/48"))
}

// testInvalidPrefix checks that a batch or snapshot holding a prefix
// enforcer.Canonical refuses is refused whole, leaving the backend as it was.
func testInvalidPrefix(t *testing.T, e enforcer.Enforcer) {
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	base := entries(until, "192.0.2.40/32")
	apply(t, e, enforcer.Batch{Add: base})
	bad := []netip.Prefix{{}, netip.PrefixFrom(netip.MustParseAddr("192.0.2.41"), 33)}
	for _, p := range bad {
		add := append(entries(until, "192.0.2.42/32"), enforcer.Entry{Prefix: p, Until: until})
		if err := e.Apply(context.Background(), enforcer.Batch{Add: add}); err == nil {
			t.Errorf("Apply with an add of %#v: no error", p)
		}
		if err := e.Apply(context.Background(), enforcer.Batch{Delete: []netip.Prefix{base[0].Prefix, p}}); err == nil {
			t.Errorf("Apply with a delete of %#v: no error", p)
		}
		if err := e.Reconcile(context.Background(), add); err == nil {
			t.Errorf("Reconcile with %#v: no error", p)
		}
	}
	expect(t, e, base)
}

// testClosed checks that writes after Close fail with enforcer.ErrClosed.
func testClosed(t *testing.T, e enforcer.Enforcer) {
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	add := entries(time.Now().Add(time.Hour), mixed[0])
	if err := e.Apply(context.Background(), enforcer.Batch{Add: add}); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Apply after Close = %v, want enforcer.ErrClosed", err)
	}
	if err := e.Reconcile(context.Background(), add); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Reconcile after Close = %v, want enforcer.ErrClosed", err)
	}
}

// ValidateCase is a change to a backend's default config and the error its
// Validate must then return.
type ValidateCase[C any] struct {
	Mod  func(*C)
	Want string
}

// TestValidate checks that the default config def returns is valid, and
// that each case's change makes Validate fail with exactly the case's error.
func TestValidate[C interface{ Validate() error }](t *testing.T, def func() C, cases []ValidateCase[C]) {
	t.Helper()
	if err := def().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, c := range cases {
		cfg := def()
		c.Mod(&cfg)
		if err := cfg.Validate(); err == nil || err.Error() != c.Want {
			t.Errorf("Validate() = %v, want %q", err, c.Want)
		}
	}
}
