package enforcer

import (
	"net/netip"
	"testing"
)

// TestCanonical is the one table of address normalisation edge cases; the
// six copies it replaced disagreed on the mapped and invalid rows.
func TestCanonical(t *testing.T) {
	zoned := netip.PrefixFrom(netip.MustParseAddr("fe80::1%eth0"), 128)
	for _, tc := range []struct {
		name string
		in   netip.Prefix
		want string // "" for an error
	}{
		{"ipv4 host", netip.MustParsePrefix("192.0.2.1/32"), "192.0.2.1/32"},
		{"ipv6 host", netip.MustParsePrefix("2001:db8::1/128"), "2001:db8::1/128"},
		{"ipv4 range masked", netip.MustParsePrefix("198.51.100.77/24"), "198.51.100.0/24"},
		{"ipv6 range masked", netip.MustParsePrefix("2001:db8:1:2::5/48"), "2001:db8:1::/48"},
		{"ipv4 /0", netip.MustParsePrefix("10.1.2.3/0"), "0.0.0.0/0"},
		{"mapped host to /32", netip.MustParsePrefix("::ffff:192.0.2.1/128"), "192.0.2.1/32"},
		{"mapped range to ipv4 range", netip.MustParsePrefix("::ffff:198.51.100.77/120"), "198.51.100.0/24"},
		{"mapped /96 is all of ipv4", netip.MustParsePrefix("::ffff:0.0.0.0/96"), "0.0.0.0/0"},
		{"mapped shorter than /96 is ipv6", netip.MustParsePrefix("::ffff:192.0.2.1/80"), "::/80"},
		{"mapped /95 is ipv6", netip.MustParsePrefix("::ffff:192.0.2.1/95"), "::fffe:0:0/95"},
		{"zone stripped", zoned, "fe80::1/128"},
		{"zero prefix", netip.Prefix{}, ""},
		{"bits out of range", netip.PrefixFrom(netip.MustParseAddr("192.0.2.1"), 33), ""},
		{"ipv6 ::/0", netip.MustParsePrefix("::/0"), "::/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("Canonical(%v) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("Canonical(%v) = %v, %v; want %s", tc.in, got, err, tc.want)
			}
			if again, err := Canonical(got); err != nil || again != got {
				t.Fatalf("Canonical is not idempotent on %v: %v, %v", got, again, err)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1/32"},
		{" 2001:db8::1 ", "2001:db8::1/128"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"fe80::1%eth0", "fe80::1/128"},
		{"198.51.100.9/24", "198.51.100.0/24"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"127.0.0.1/32", "127.0.0.1/32"},
		{"::ffff:1.2.3.4/64", "::/64"},
		{"192.0.2.1/33", ""},
		{"example.com", ""},
		{"", ""},
		{"192.0.2.0/24/1", ""},
	} {
		got, err := ParsePrefix(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParsePrefix(%q) = %v, want an error", tc.in, got)
		case tc.want != "" && (err != nil || got.String() != tc.want):
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := CanonicalAddr(netip.Addr{}); err == nil {
		t.Error("CanonicalAddr(zero) succeeded")
	}
}
