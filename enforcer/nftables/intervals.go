package nftables

import (
	"net/netip"
	"slices"
	"time"
)

// piece is one interval of an nft interval set: lo and hi inclusive, both
// of one family.
type piece struct {
	lo, hi netip.Addr
}

// laterOf returns the later expiry, the zero time meaning "never".
func laterOf(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// partition turns ranges of one family into disjoint pieces, each expiring
// at the latest expiry of the ranges that cover it.
//
// The kernel refuses overlapping intervals in one set, yet the feed may ban
// 10.0.0.0/8 for an hour and 10.1.0.0/16 inside it for a day. Prefixes nest
// or are disjoint, so one sorted pass with a stack of open ranges yields the
// pieces: the inner range gets its own piece, and the outer one is split
// around it, so each part expires in the kernel exactly when no ban covers
// it any more.
func partition(ranges map[netip.Prefix]time.Time) map[piece]time.Time {
	out := make(map[piece]time.Time, len(ranges))
	if len(ranges) == 0 {
		return out
	}
	sorted := make([]netip.Prefix, 0, len(ranges))
	for p := range ranges {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	type open struct {
		hi    netip.Addr
		until time.Time
	}
	var stack []open
	// cursor is the first address not yet assigned to a piece; invalid once
	// the top of the address space has been assigned.
	var cursor netip.Addr
	emit := func(lo, hi netip.Addr, until time.Time) {
		if lo.IsValid() && lo.Compare(hi) <= 0 {
			out[piece{lo, hi}] = until
		}
	}
	closeTop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		emit(cursor, top.hi, top.until)
		cursor = top.hi.Next()
	}
	for _, p := range sorted {
		lo := p.Addr()
		for len(stack) > 0 && stack[len(stack)-1].hi.Less(lo) {
			closeTop()
		}
		until := ranges[p]
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			emit(cursor, lo.Prev(), top.until)
			until = laterOf(until, top.until)
		}
		stack = append(stack, open{hi: lastAddr(p), until: until})
		cursor = lo
	}
	for len(stack) > 0 {
		closeTop()
	}
	return out
}

// prefixesOf splits the interval lo..hi (inclusive) into the fewest CIDR
// prefixes that cover exactly it.
func prefixesOf(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for lo.IsValid() && lo.Compare(hi) <= 0 {
		bits := lo.BitLen()
		// Widen while the prefix stays aligned on lo and ends within hi.
		for bits > 0 {
			wider := netip.PrefixFrom(lo, bits-1).Masked()
			if wider.Addr() != lo || lastAddr(wider).Compare(hi) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		lo = lastAddr(p).Next()
	}
	return out
}
