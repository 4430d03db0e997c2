package enforcer

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrClosed is returned, wrapped, by every method of a backend called
// after its Close. Test with errors.Is.
var ErrClosed = errors.New("enforcer closed")

// Canonical returns the form of p every backend stores and compares:
// without zone, masked, and an IPv4-mapped IPv6 prefix turned into the IPv4
// prefix it means (::ffff:192.0.2.1/128 is 192.0.2.1/32), so that it lands
// where IPv4 packets are matched. Masking comes first, so a mapped address
// with fewer than 96 bits is the plain IPv6 prefix it masks to
// (::ffff:192.0.2.1/80 is ::/80), never a short IPv4 range. An invalid
// prefix is an error.
func Canonical(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid prefix %q", p)
	}
	p = netip.PrefixFrom(p.Addr().WithZone(""), p.Bits()).Masked()
	if a := p.Addr(); a.Is4In6() {
		// Masked with 96 bits or more: the ::ffff:0:0/96 block is kept.
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}

// CanonicalAddr returns the single-address prefix (/32 or /128) of a,
// unmapped and without zone, or an error for the zero Addr.
func CanonicalAddr(a netip.Addr) (netip.Prefix, error) {
	if !a.IsValid() {
		return netip.Prefix{}, errors.New("address: invalid")
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsePrefix parses an address ("192.0.2.1", "fe80::1%eth0") or a CIDR
// range ("198.51.100.0/24") as written in flags and config files, and
// returns its canonical prefix (see Canonical): a bare address is its /32
// or /128 and a range with host bits set is masked.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range", s)
		}
		c, err := Canonical(p)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: %w", s, err)
		}
		return c, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
	}
	return CanonicalAddr(a)
}

// CheckBatch returns an error naming the first prefix of b that Canonical
// refuses. Backends call it before changing anything, so that a batch
// holding an invalid prefix is refused whole.
func CheckBatch(b Batch) error {
	for i, p := range b.Delete {
		if _, err := Canonical(p); err != nil {
			return fmt.Errorf("delete %d: %w", i, err)
		}
	}
	return CheckEntries(b.Add)
}

// CheckEntries returns an error naming the first entry whose prefix
// Canonical refuses.
func CheckEntries(es []Entry) error {
	for i, e := range es {
		if _, err := Canonical(e.Prefix); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// MustCanonical is Canonical for a prefix already checked (CheckBatch,
// CheckEntries); it panics on one that is not.
func MustCanonical(p netip.Prefix) netip.Prefix {
	c, err := Canonical(p)
	if err != nil {
		panic(err)
	}
	return c
}
