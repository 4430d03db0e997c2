package banfile

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

var ctx = context.Background()

func newFile(t testing.TB) (*File, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "bans")
	cfg.Debounce = 20 * time.Millisecond
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, cfg.Path
}

func TestConformance(t *testing.T) {
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		f, _ := newFile(t)
		return f
	})
}

func readTable(t testing.TB, path string) *Table {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func entry(p string, r prefixset.Remedy, until time.Time, reason string) prefixset.Entry {
	return prefixset.Entry{Entry: enforcer.Entry{Prefix: netip.MustParsePrefix(p), Until: until, Reason: reason, Origin: "test"}, Remedy: r}
}

// TestNestedDecisions checks the winner rule on nested prefixes: a ban
// beats a captcha whatever the nesting, and the file is read as written.
func TestNestedDecisions(t *testing.T) {
	f, path := newFile(t)
	hour := time.Now().Add(time.Hour)
	err := f.ReconcileRemedies(ctx, []prefixset.Entry{
		entry("10.0.0.0/8", prefixset.RemedyCaptcha, hour, "wide-captcha"),
		entry("10.1.0.0/16", prefixset.RemedyBan, hour, "ban16"),
		entry("10.1.2.3/32", prefixset.RemedyCaptcha, hour, "inner-captcha"),
		entry("10.2.0.0/24", prefixset.RemedyCaptcha, hour.Add(time.Hour), "longer-captcha"),
		entry("255.255.255.255/32", prefixset.RemedyBan, time.Time{}, "last"),
		entry("::/8", prefixset.RemedyBan, hour, "v6-wide"),
		entry("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", prefixset.RemedyBan, hour, "v6-last"),
		entry("2001:db8::/32", prefixset.RemedyCaptcha, hour, "v6-captcha"),
		entry("2001:db8::1/128", prefixset.RemedyBan, hour, "v6-ban"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tb := readTable(t, path)
	now := time.Now()
	for ip, want := range map[string]string{
		"9.255.255.255":   "",
		"10.0.0.1":        "captcha; reason=wide-captcha; origin=test",
		"10.1.0.0":        "ban; reason=ban16; origin=test",
		"10.1.2.3":        "ban; reason=ban16; origin=test",
		"10.1.255.255":    "ban; reason=ban16; origin=test",
		"10.2.0.7":        "captcha; reason=longer-captcha; origin=test",
		"10.2.1.0":        "captcha; reason=wide-captcha; origin=test",
		"10.255.255.255":  "captcha; reason=wide-captcha; origin=test",
		"11.0.0.0":        "",
		"255.255.255.255": "ban; reason=last; origin=test",
		"255.255.255.254": "",
		"::ffff:10.1.0.9": "ban; reason=ban16; origin=test",
		"::1":             "ban; reason=v6-wide; origin=test",
		"2001:db8::1":     "ban; reason=v6-ban; origin=test",
		"2001:db8::2":     "captcha; reason=v6-captcha; origin=test",
		"2001:db9::":      "",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": "ban; reason=v6-last; origin=test",
	} {
		m, ok := tb.Lookup(netip.MustParseAddr(ip), now)
		if ok != (want != "") || m.Text != want {
			t.Errorf("%s: %q %v, want %q", ip, m.Text, ok, want)
		}
	}
	if got := f.Stats(); got.Prefixes != 9 || got.Generation != 1 {
		t.Errorf("stats %+v", got)
	}
}

// TestAgainstPrefixSet compares the file with the in-memory prefix set on
// random sets of nested and overlapping decisions, changed by batches.
func TestAgainstPrefixSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randPrefix := func() netip.Prefix {
		if rng.IntN(4) == 0 {
			var a [16]byte
			a[0], a[1], a[2] = 0x20, 0x01, byte(rng.IntN(4))
			a[3] = byte(rng.IntN(4))
			a[15] = byte(rng.IntN(8))
			return netip.PrefixFrom(netip.AddrFrom16(a), []int{16, 24, 32, 126, 128}[rng.IntN(5)]).Masked()
		}
		a := [4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(8))}
		return netip.PrefixFrom(netip.AddrFrom4(a), []int{8, 16, 22, 24, 30, 31, 32}[rng.IntN(7)]).Masked()
	}
	randEntry := func(now time.Time) prefixset.Entry {
		r := prefixset.RemedyBan
		if rng.IntN(2) == 0 {
			r = prefixset.RemedyCaptcha
		}
		return prefixset.Entry{Entry: enforcer.Entry{Prefix: randPrefix(), Until: now.Add(time.Duration(1+rng.IntN(100)) * time.Minute)}, Remedy: r}
	}
	probe := func() netip.Addr {
		if rng.IntN(4) == 0 {
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, byte(rng.IntN(4)), byte(rng.IntN(4))
			a[15] = byte(rng.IntN(8))
			return netip.AddrFrom16(a)
		}
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(8))})
	}
	for round := range 50 {
		f, path := newFile(t)
		set := prefixset.New()
		now := time.Now()
		var es []prefixset.Entry
		for range rng.IntN(40) {
			es = append(es, randEntry(now))
		}
		if err := f.ReconcileRemedies(ctx, es); err != nil {
			t.Fatal(err)
		}
		if err := set.ReconcileRemedies(ctx, es); err != nil {
			t.Fatal(err)
		}
		for step := range 4 {
			if step > 0 {
				var b prefixset.Batch
				seen := map[netip.Prefix]bool{}
				for range rng.IntN(10) {
					if rng.IntN(3) == 0 {
						p := randPrefix()
						if !seen[p] {
							seen[p] = true
							b.Delete = append(b.Delete, p)
						}
						continue
					}
					e := randEntry(now)
					if !seen[e.Prefix] {
						seen[e.Prefix] = true
						b.Add = append(b.Add, e)
					}
				}
				if err := f.ApplyRemedies(ctx, b); err != nil {
					t.Fatal(err)
				}
				if err := set.ApplyRemedies(ctx, b); err != nil {
					t.Fatal(err)
				}
				if err := f.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			tb := readTable(t, path)
			for range 200 {
				ip := probe()
				want, wok := set.Lookup(ip, now)
				got, gok := tb.Lookup(ip, now)
				if wok != gok || (wok && want.Remedy != got.Remedy) {
					t.Fatalf("round %d step %d, %s: file %v %v, prefix set %v %v", round, step, ip, gok, got, wok, want)
				}
			}
		}
	}
}

// TestChangeVisibleWithinDebounce checks that an applied change reaches
// the file by itself, that the old generation is marked superseded and
// that the heartbeat moves.
func TestChangeVisibleWithinDebounce(t *testing.T) {
	f, path := newFile(t)
	if err := f.ReconcileRemedies(ctx, nil); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := readTable(t, path)
	oldFile, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = oldFile.Close() }()
	start := time.Now()
	if err := f.ApplyRemedies(ctx, prefixset.Batch{Add: []prefixset.Entry{entry("192.0.2.1/32", prefixset.RemedyBan, time.Now().Add(time.Hour), "x")}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := tb.Lookup(netip.MustParseAddr("192.0.2.1"), time.Now()); ok {
			t.Logf("visible after %s", time.Since(start))
			if tb.Generation != first.Generation+1 {
				t.Errorf("generation %d after %d", tb.Generation, first.Generation)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("change not in the file after 1s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The old inode now says superseded; its content is otherwise unchanged.
	b := make([]byte, len(old))
	if _, err := oldFile.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if tb, err := Parse(b); err != nil || !tb.Superseded {
		t.Errorf("previous generation not marked superseded: %v", err)
	}
	hb := readTable(t, path).Heartbeat
	time.Sleep(1500 * time.Millisecond)
	if hb2 := readTable(t, path).Heartbeat; !hb2.After(hb) {
		t.Errorf("heartbeat did not move: %s then %s", hb, hb2)
	}
}

// TestExpiryRewrites checks that an expired entry leaves the file without
// further calls, uncovering the decision beneath it.
func TestExpiryRewrites(t *testing.T) {
	f, path := newFile(t)
	now := time.Now()
	err := f.ReconcileRemedies(ctx, []prefixset.Entry{
		entry("198.51.100.0/24", prefixset.RemedyCaptcha, now.Add(time.Hour), "outer"),
		entry("198.51.100.7/32", prefixset.RemedyBan, now.Add(300*time.Millisecond), "inner"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("198.51.100.7")
	if m, _ := readTable(t, path).Lookup(ip, now); m.Remedy != prefixset.RemedyBan {
		t.Fatalf("before expiry: %+v", m)
	}
	time.Sleep(700 * time.Millisecond)
	if m, _ := readTable(t, path).Lookup(ip, time.Now()); m.Remedy != prefixset.RemedyCaptcha {
		t.Fatalf("after expiry: %+v, want the outer captcha", m)
	}
}

func TestBadInput(t *testing.T) {
	f, _ := newFile(t)
	err := f.ApplyRemedies(ctx, prefixset.Batch{Add: []prefixset.Entry{{Entry: enforcer.Entry{Prefix: netip.MustParsePrefix("192.0.2.0/24")}, Remedy: 9}}})
	if err == nil {
		t.Error("unknown remedy accepted")
	}
	if err := f.ApplyRemedies(ctx, prefixset.Batch{Delete: []netip.Prefix{{}}}); err == nil {
		t.Error("invalid prefix accepted")
	}
	for _, c := range []Config{{Path: "rel"}, {Path: "/x", Debounce: 2 * time.Second, Heartbeat: time.Second}, {Path: "/x", Heartbeat: 0}} {
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	if _, err := New(Config{Path: "/nonexistent-dir/bans", Debounce: time.Millisecond, Heartbeat: time.Second}); err == nil {
		t.Error("missing directory accepted")
	}
}
