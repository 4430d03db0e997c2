package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	nft "github.com/google/nftables"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func pieceString(ps map[piece]time.Time) string {
	var out []string
	for p, u := range ps {
		until := "never"
		if !u.IsZero() {
			until = u.Sub(t0).String()
		}
		out = append(out, fmt.Sprintf("%s-%s@%s", p.lo, p.hi, until))
	}
	slices.SortFunc(out, func(a, b string) int {
		pa, _ := netip.ParseAddr(a[:strings.IndexByte(a, '-')])
		pb, _ := netip.ParseAddr(b[:strings.IndexByte(b, '-')])
		return pa.Compare(pb)
	})
	return strings.Join(out, " ")
}

func TestPartition(t *testing.T) {
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	cases := []struct {
		name   string
		ranges map[string]time.Time
		want   string
	}{
		{"empty", nil, ""},
		{"disjoint", map[string]time.Time{"10.0.0.0/24": h(1), "10.0.2.0/24": h(2)},
			"10.0.0.0-10.0.0.255@1h0m0s 10.0.2.0-10.0.2.255@2h0m0s"},
		{"adjacent", map[string]time.Time{"10.0.0.0/25": h(1), "10.0.0.128/25": h(1)},
			"10.0.0.0-10.0.0.127@1h0m0s 10.0.0.128-10.0.0.255@1h0m0s"},
		{"inner outlives outer", map[string]time.Time{"10.0.0.0/8": h(1), "10.1.0.0/16": h(5)},
			"10.0.0.0-10.0.255.255@1h0m0s 10.1.0.0-10.1.255.255@5h0m0s 10.2.0.0-10.255.255.255@1h0m0s"},
		{"outer outlives inner", map[string]time.Time{"10.0.0.0/8": h(5), "10.1.0.0/16": h(1)},
			"10.0.0.0-10.0.255.255@5h0m0s 10.1.0.0-10.1.255.255@5h0m0s 10.2.0.0-10.255.255.255@5h0m0s"},
		{"inner at start and end", map[string]time.Time{"10.0.0.0/8": h(1), "10.0.0.0/16": h(2), "10.255.0.0/16": h(3)},
			"10.0.0.0-10.0.255.255@2h0m0s 10.1.0.0-10.254.255.255@1h0m0s 10.255.0.0-10.255.255.255@3h0m0s"},
		{"three levels, never", map[string]time.Time{"10.0.0.0/8": {}, "10.1.0.0/16": h(1), "10.1.1.0/24": h(9)},
			"10.0.0.0-10.0.255.255@never 10.1.0.0-10.1.0.255@never 10.1.1.0-10.1.1.255@never 10.1.2.0-10.1.255.255@never 10.2.0.0-10.255.255.255@never"},
		{"top of the space", map[string]time.Time{"255.255.255.0/24": h(1), "255.255.255.128/25": h(2)},
			"255.255.255.0-255.255.255.127@1h0m0s 255.255.255.128-255.255.255.255@2h0m0s"},
		{"ipv6", map[string]time.Time{"2001:db8::/32": h(1), "2001:db8:1::/48": h(2)},
			"2001:db8::-2001:db8:0:ffff:ffff:ffff:ffff:ffff@1h0m0s 2001:db8:1::-2001:db8:1:ffff:ffff:ffff:ffff:ffff@2h0m0s 2001:db8:2::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff@1h0m0s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := map[netip.Prefix]time.Time{}
			for p, u := range c.ranges {
				in[netip.MustParsePrefix(p)] = u
			}
			if got := pieceString(partition(in)); got != c.want {
				t.Fatalf("partition:\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestPrefixesOf(t *testing.T) {
	cases := []struct{ lo, hi, want string }{
		{"10.0.0.0", "10.255.255.255", "10.0.0.0/8"},
		{"10.0.0.1", "10.0.0.1", "10.0.0.1/32"},
		{"10.2.0.0", "10.255.255.255", "10.2.0.0/15 10.4.0.0/14 10.8.0.0/13 10.16.0.0/12 10.32.0.0/11 10.64.0.0/10 10.128.0.0/9"},
		{"10.0.0.3", "10.0.0.8", "10.0.0.3/32 10.0.0.4/30 10.0.0.8/32"},
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"2001:db8::", "2001:db8::ff", "2001:db8::/120"},
	}
	for _, c := range cases {
		var got []string
		for _, p := range prefixesOf(netip.MustParseAddr(c.lo), netip.MustParseAddr(c.hi)) {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("prefixesOf(%s, %s) = %s, want %s", c.lo, c.hi, strings.Join(got, " "), c.want)
		}
	}
}

// FuzzPartition checks partition against a brute-force model on a small
// address space: the pieces are disjoint, cover exactly the union of the
// ranges, and each address expires at the latest expiry covering it.
func FuzzPartition(f *testing.F) {
	f.Add([]byte{0, 8, 1, 0, 16, 5})
	f.Add([]byte{10, 24, 3, 10, 25, 1, 10, 26, 2, 200, 30, 0})
	f.Add([]byte{0, 24, 0, 255, 32, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Each triple: last address byte, prefix length 24..32, expiry hour
		// (0: never), all inside 192.0.2.0/24.
		ranges := map[netip.Prefix]time.Time{}
		for i := 0; i+2 < len(data) && len(ranges) < 12; i += 3 {
			bits := 24 + int(data[i+1])%9
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, data[i]}), bits).Masked()
			var until time.Time
			if data[i+2]%8 != 0 {
				until = t0.Add(time.Duration(data[i+2]%8) * time.Hour)
			}
			ranges[p] = until
		}
		pieces := partition(ranges)
		covered := map[netip.Addr]time.Time{}
		for p, u := range pieces {
			if p.hi.Less(p.lo) {
				t.Fatalf("piece %s-%s is reversed", p.lo, p.hi)
			}
			for a := p.lo; ; a = a.Next() {
				if _, dup := covered[a]; dup {
					t.Fatalf("%s is in two pieces", a)
				}
				covered[a] = u
				if a == p.hi {
					break
				}
			}
		}
		for b := range 256 {
			a := netip.AddrFrom4([4]byte{192, 0, 2, byte(b)})
			var want time.Time
			in := false
			for p, u := range ranges {
				if p.Contains(a) {
					if !in {
						want = u
					} else {
						want = laterOf(want, u)
					}
					in = true
				}
			}
			got, has := covered[a]
			if has != in || (in && !got.Equal(want)) {
				t.Fatalf("%s: covered %v until %v, want %v until %v (ranges %v)", a, has, got, in, want, ranges)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	enforcertest.TestValidate(t, DefaultConfig, []enforcertest.ValidateCase[Config]{
		{Mod: func(c *Config) { c.Table = "filter" }, Want: `table: "filter" does not start with "portcullis"`},
		{Mod: func(c *Config) { c.DenyAction = "tarpit" }, Want: `deny_action: "tarpit" is neither drop nor reject`},
		{Mod: func(c *Config) { c.Ingress = []string{"eth0", "eth0"} }, Want: `ingress: "eth0" listed twice`},
		{Mod: func(c *Config) { c.Ingress = []string{"a/b"} }, Want: `ingress: "a/b" is not an interface name`},
		{Mod: func(c *Config) { c.Log.Enabled = true; c.Log.Rate = 0 }, Want: "log.rate: must be at least 1 per second"},
		{Mod: func(c *Config) { c.GCInterval = 0 }, Want: "gc_interval: 0s is outside 1s..24h"},
		{Mod: func(c *Config) { c.ChunkSize = 0 }, Want: "chunk_size: 0 is outside 1..200000"},
	})
}

func TestSetNames(t *testing.T) {
	for k := range numKinds {
		name := setName(k, 42)
		gotK, gotGen, ok := parseSetName(name)
		if !ok || gotK != k || gotGen != 42 {
			t.Errorf("parseSetName(%q) = %d, %d, %v", name, gotK, gotGen, ok)
		}
	}
	for _, bad := range []string{"addr4", "addr4-0", "addr4-x", "other-3", "blocked"} {
		if _, _, ok := parseSetName(bad); ok {
			t.Errorf("parseSetName(%q) accepted a foreign name", bad)
		}
	}
}

func TestIntervalsOf(t *testing.T) {
	key := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	// As the kernel dumps them: unordered, ends flagged, the timeout on the
	// start only; adjacent intervals share an address.
	elems := []nft.SetElement{
		{Key: key("10.0.1.0"), IntervalEnd: true},
		{Key: key("10.0.0.128"), Timeout: time.Hour, Expires: 30 * time.Minute},
		{Key: key("10.0.0.128"), IntervalEnd: true},
		{Key: key("10.0.0.0"), Timeout: time.Hour, Expires: 10 * time.Minute},
		{Key: key("255.255.255.0")},
	}
	got, err := intervalsOf(elems, t0)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range got {
		until := "never"
		if !e.Until.IsZero() {
			until = e.Until.Sub(t0).String()
		}
		s = append(s, e.Prefix.String()+"@"+until)
	}
	want := "10.0.0.0/25@10m0s 10.0.0.128/25@30m0s 255.255.255.0/24@never"
	if strings.Join(s, " ") != want {
		t.Fatalf("intervalsOf = %s, want %s", strings.Join(s, " "), want)
	}
	if _, err := intervalsOf([]nft.SetElement{{Key: []byte{1, 2, 3}}}, t0); err == nil {
		t.Fatal("a 3-byte key was accepted")
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7/24":         "192.0.2.0/24",
		"::ffff:192.0.2.7/128": "192.0.2.7/32",
		"::ffff:192.0.2.0/120": "192.0.2.0/24",
		"::ffff:0:0/80":        "::/80",
		"2001:db8::1/32":       "2001:db8::/32",
	} {
		if got, err := enforcer.Canonical(netip.MustParsePrefix(in)); err != nil || got.String() != want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
}
