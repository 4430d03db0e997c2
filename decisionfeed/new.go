package decisionfeed

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"time"
)

// NewDecision builds a schema v1 decision for prefix: it fills v, a random
// id, the canonical scope and value (a single address becomes scope ip, a
// 4-in-6 address is unmapped, a range is masked), created_at (now, UTC, to
// the millisecond) and, when dur is positive, until (created_at + dur) and
// duration; a delete without a duration gets duration "0s". The result is
// not validated; Publish and Encode do that.
func NewDecision(op Op, typ Type, prefix netip.Prefix, dur time.Duration, origin string, now time.Time) Decision {
	d := Decision{
		V:         SchemaVersion,
		ID:        newID(),
		Op:        op,
		Type:      typ,
		Origin:    origin,
		CreatedAt: now.UTC().Truncate(time.Millisecond),
	}
	d.Scope, d.Value = canonical(prefix)
	switch {
	case dur > 0:
		d.Until = d.CreatedAt.Add(dur)
		d.Duration = dur.String()
	case op == OpDelete:
		// What is left of a deleted decision lasts nothing. Consumers that
		// know no op, like the seed's Python one, read duration from every
		// message and fail without it.
		d.Duration = "0s"
	}
	return d
}

// canonical returns the scope and canonical value of a prefix.
func canonical(p netip.Prefix) (Scope, string) {
	if !p.IsValid() {
		return ScopeIP, ""
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() {
		a = a.Unmap()
		bits -= 96
		if bits < 0 {
			bits = 0
		}
	}
	if bits == a.BitLen() {
		return ScopeIP, a.String()
	}
	return ScopeRange, netip.PrefixFrom(a, bits).Masked().String()
}

// newID returns 16 random bytes in hex, the id of a new decision.
func newID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error (it panics instead, since Go 1.24).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
