package cloudflare

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzNormalize checks that every accepted prefix becomes an item
// Cloudflare accepts (canonical; IPv4 /8../32 with /32 bare; IPv6
// /12../64) and that normalising it again changes nothing.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"203.0.113.7/32", "198.51.100.9/24", "10.0.0.0/7", "2001:db8::1/128",
		"2001:db8::/64", "2000::/11", "::ffff:192.0.2.1/128", "::/0", "0.0.0.0/0", "fe80::1%eth0/128"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return
		}
		ip, _, err := normalize(p)
		if err != nil {
			return
		}
		q, err := parsePrefix(ip)
		if err != nil {
			t.Fatalf("%s -> %q does not parse: %v", s, ip, err)
		}
		if q.Masked() != q {
			t.Fatalf("%s -> %q is not masked", s, ip)
		}
		switch {
		case q.Addr().Is4() && (q.Bits() < 8 || (q.Bits() == 32) == strings.Contains(ip, "/")):
			t.Fatalf("%s -> %q breaks the IPv4 rules", s, ip)
		case q.Addr().Is6() && (q.Bits() < 12 || q.Bits() > 64 || q.Addr().Zone() != ""):
			t.Fatalf("%s -> %q breaks the IPv6 rules", s, ip)
		}
		again, _, err := normalize(q)
		if err != nil || again != ip {
			t.Fatalf("%s -> %q -> %q, %v", s, ip, again, err)
		}
	})
}
