package decisionfeed

import "net/netip"

// PrefixTarget returns the Target a decision built by NewDecision for p
// would have, without building one (no random id): "ip:VALUE" or
// "range:VALUE".
func PrefixTarget(p netip.Prefix) string {
	s, v := canonical(p)
	return string(s) + ":" + v
}
