package enforcer

import (
	"net/netip"
	"testing"
)

// FuzzParsePrefix checks that whatever ParsePrefix accepts is canonical:
// valid, masked, never IPv4-mapped, printed and parsed back unchanged, and
// left alone by Canonical.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "198.51.100.9/24", "::ffff:192.0.2.1", "::ffff:10.0.0.0/104",
		"::ffff:1.2.3.4/80", "fe80::1%eth0", "2001:db8::1/128", "0.0.0.0/0", "::/0", "192.0.2.1/33", "", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v, not canonical", s, p)
		}
		if c, err := Canonical(p); err != nil || c != p {
			t.Fatalf("Canonical(%v) = %v, %v", p, c, err)
		}
		back, err := ParsePrefix(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePrefix(%q) = %v, %v; want %v", p.String(), back, err, p)
		}
		if a := netip.PrefixFrom(p.Addr(), p.Addr().BitLen()); !a.IsValid() {
			t.Fatalf("address of %v invalid", p)
		}
	})
}
