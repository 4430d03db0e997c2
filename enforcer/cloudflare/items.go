package cloudflare

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// Action is what Cloudflare does to a listed address.
type Action int

// The actions, one list each.
const (
	// Block puts the address in the ban list (rule action block).
	Block Action = iota
	// Challenge puts it in the captcha list (rule action managed_challenge).
	Challenge
)

// String names the action as Cloudflare's rule action.
func (a Action) String() string {
	if a == Challenge {
		return "managed_challenge"
	}
	return "block"
}

// Item is one live decision as the Cloudflare enforcer sees it.
type Item struct {
	// Prefix is the address (a /32 or /128) or range.
	Prefix netip.Prefix
	// Until is the expiry; the zero time never expires.
	Until time.Time
	// Scenario names the reason, for the item comment and the priority.
	Scenario string
	// Action picks the list.
	Action Action
}

// listItem is an item as written to a list: its canonical ip string and
// its comment.
type listItem struct {
	ip       string
	comment  string
	until    time.Time
	priority int
	action   Action
}

// normalize turns a prefix into the form Cloudflare lists accept: IPv4
// /8../32 with a /32 written as the bare address, IPv6 /12../64 with a
// longer prefix (a single address included) widened to its /64. note
// says what was changed, for the item comment.
func normalize(p netip.Prefix) (ip, note string, err error) {
	p, err = enforcer.Canonical(p)
	if err != nil {
		return "", "", err
	}
	addr := p.Addr()
	if addr.Is4() {
		if p.Bits() < 8 {
			return "", "", fmt.Errorf("%s: IPv4 prefixes shorter than /8 are not accepted by Cloudflare lists", p)
		}
		if p.Bits() == 32 {
			return p.Addr().String(), "", nil
		}
		return p.String(), "", nil
	}
	if p.Bits() < 12 {
		return "", "", fmt.Errorf("%s: IPv6 prefixes shorter than /12 are not accepted by Cloudflare lists", p)
	}
	if p.Bits() > 64 {
		w := netip.PrefixFrom(p.Addr(), 64).Masked()
		return w.String(), fmt.Sprintf("widened from %s to its /64 (Cloudflare lists hold IPv6 up to /64)", p), nil
	}
	return p.String(), "", nil
}

// selection is the wanted content of the lists after normalisation,
// deduplication and the item budget.
type selection struct {
	// byAction maps an action to its wanted items by ip string.
	byAction map[Action]map[string]listItem
	// leftOut counts the items dropped by the budget; refused those that
	// Cloudflare would not accept; unsupported those whose action has no
	// list.
	leftOut, refused, unsupported int
	// refusedExample is one refusal reason, for the log.
	refusedExample string
}

// selectItems normalises and deduplicates items and keeps at most budget
// of them: the longest remaining time first, then the higher scenario
// priority. An address both blocked and challenged is only blocked.
// Items already expired at now are dropped without counting.
// norm is the normaliser of the mode: normalize for lists, accessValue
// for IP Access Rules.
func selectItems(items []Item, now time.Time, budget int, priority map[string]int, captcha bool, norm func(netip.Prefix) (string, string, error)) selection {
	sel := selection{byAction: map[Action]map[string]listItem{Block: {}, Challenge: {}}}
	merged := map[string]listItem{}
	for _, it := range items {
		if !it.Until.IsZero() && !it.Until.After(now) {
			continue
		}
		if it.Action == Challenge && !captcha {
			sel.unsupported++
			continue
		}
		ip, note, err := norm(it.Prefix)
		if err != nil {
			sel.refused++
			sel.refusedExample = err.Error()
			continue
		}
		li := listItem{ip: ip, until: it.Until, priority: priority[it.Scenario], action: it.Action}
		li.comment = comment(it.Scenario, note)
		old, ok := merged[ip]
		if !ok {
			merged[ip] = li
			continue
		}
		// Several decisions land on one item: block beats challenge, and
		// the item lives as long as the longest of them.
		if li.action == Block && old.action == Challenge {
			old.action, old.comment = Block, li.comment
		}
		if later(li.until, old.until) {
			old.until = li.until
		}
		old.priority = max(old.priority, li.priority)
		merged[ip] = old
	}
	all := make([]listItem, 0, len(merged))
	for _, li := range merged {
		all = append(all, li)
	}
	slices.SortFunc(all, func(a, b listItem) int {
		switch {
		case later(a.until, b.until):
			return -1
		case later(b.until, a.until):
			return 1
		}
		if c := cmp.Compare(b.priority, a.priority); c != 0 {
			return c
		}
		return cmp.Compare(a.ip, b.ip)
	})
	budget = max(budget, 0)
	if len(all) > budget {
		sel.leftOut = len(all) - budget
		all = all[:budget]
	}
	for _, li := range all {
		sel.byAction[li.action][li.ip] = li
	}
	return sel
}

// later reports whether expiry a is later than b; the zero time (no
// expiry) is the latest.
func later(a, b time.Time) bool {
	if a.IsZero() {
		return !b.IsZero()
	}
	return !b.IsZero() && a.After(b)
}

// comment is the item comment: ownership, the reason, and what
// normalisation changed. Cloudflare caps comments; the scenario is cut.
func comment(scenario, note string) string {
	if len(scenario) > 120 {
		scenario = strings.ToValidUTF8(scenario[:120], "")
	}
	c := "portcullis"
	if scenario != "" {
		c += " " + scenario
	}
	if note != "" {
		c += "; " + note
	}
	return c
}

// accessValue turns a prefix into the value of an IP Access Rule:
// an IPv4 or IPv6 address (targets ip, ip6) or a range of the lengths
// Cloudflare accepts (ip_range: IPv4 /16 and /24, IPv6 /32, /48 and
// /64). A longer IPv6 prefix is widened to its /64; other lengths are
// refused, as widening an IPv4 range would block bystanders.
func accessValue(p netip.Prefix) (value, note string, err error) {
	p, err = enforcer.Canonical(p)
	if err != nil {
		return "", "", err
	}
	switch {
	case p.Bits() == p.Addr().BitLen():
		return p.Addr().String(), "", nil
	case p.Addr().Is4() && (p.Bits() == 16 || p.Bits() == 24):
		return p.String(), "", nil
	case p.Addr().Is6() && (p.Bits() == 32 || p.Bits() == 48 || p.Bits() == 64):
		return p.String(), "", nil
	case p.Addr().Is6() && p.Bits() > 64:
		w := netip.PrefixFrom(p.Addr(), 64).Masked()
		return w.String(), fmt.Sprintf("widened from %s to its /64 (IP Access Rules take IPv6 ranges of /32, /48 or /64)", p), nil
	}
	return "", "", fmt.Errorf("%s: IP Access Rules take single addresses and ranges of IPv4 /16, /24 and IPv6 /32, /48, /64 only", p)
}

// accessTarget is the configuration target of an access rule value.
func accessTarget(value string) string {
	switch {
	case strings.Contains(value, "/"):
		return "ip_range"
	case strings.Contains(value, ":"):
		return "ip6"
	}
	return "ip"
}
