package decisionfeed

import "net/netip"

// PrefixKey returns the key a decision built by NewDecision for p would
// have, without building one (no random id): "ip:VALUE" or "range:VALUE".
func PrefixKey(p netip.Prefix) string {
	s, v := canonical(p)
	return string(s) + ":" + v
}
