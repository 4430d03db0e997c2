package config

import "testing"

// FuzzParsePrefixes checks the address-list parser: whatever it accepts is
// valid, masked and unmapped.
func FuzzParsePrefixes(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "198.51.100.7/24", "::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8::/32, 192.0.2.0/24", ",,", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePrefixes(s)
		if err != nil {
			return
		}
		for _, p := range ps {
			if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" {
				t.Fatalf("ParsePrefixes(%q) gave %v", s, p)
			}
			if p.Addr().Is4In6() && p.Bits() == 128 {
				t.Fatalf("ParsePrefixes(%q) kept a mapped address %v", s, p)
			}
		}
	})
}
