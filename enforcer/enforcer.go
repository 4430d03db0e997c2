// Package enforcer defines the small interface every enforcement backend
// (XDP, nftables, iptables+ipset, Cloudflare) implements, and the one place
// where a feed decision becomes an enforcer entry.
package enforcer

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// Entry is one banned prefix as a backend sees it: a /32 or /128 for a
// single address, a shorter prefix for a range.
type Entry struct {
	Prefix netip.Prefix
	// Until is the absolute expiry; backends enforce it even when no
	// user-space process runs, where the backend can.
	Until time.Time
	// Reason names the scenario (or the origin when there is none), for
	// per-reason counters.
	Reason string
	// Origin is where the decision came from (engine, cli, blocklist, crowdsec).
	Origin string
	// Remedy is what the entry asks for: a ban (the zero value) or, for
	// the backends that enforce it (nginx, Cloudflare), a captcha. Kernel
	// backends only ever receive bans and ignore the field.
	Remedy Remedy
}

// Remedy is the action an entry asks of a backend.
type Remedy uint8

// The remedies. The zero value is a ban, so that an Entry built without
// one is what every kernel backend enforces.
const (
	RemedyBan Remedy = iota
	RemedyCaptcha
)

// String returns the decision type the remedy comes from.
func (r Remedy) String() string {
	if r == RemedyCaptcha {
		return string(decisionfeed.TypeCaptcha)
	}
	return string(decisionfeed.TypeBan)
}

// Batch is a set of changes applied together.
type Batch struct {
	Add    []Entry
	Delete []netip.Prefix
}

// Len returns the number of changes in the batch.
func (b Batch) Len() int { return len(b.Add) + len(b.Delete) }

// Enforcer is implemented by every backend.
//
// Apply must be idempotent: adding a present prefix refreshes its expiry,
// deleting an absent one is not an error. Reconcile makes the backend hold
// exactly the given entries, removing everything else it owns.
type Enforcer interface {
	Apply(ctx context.Context, b Batch) error
	Reconcile(ctx context.Context, entries []Entry) error
	Close() error
}

// Counters is what a backend reports about the packets it stopped.
type Counters struct {
	// ByReason maps a reason to the packets and bytes dropped for it.
	ByReason map[string]Count
}

// Count is a packet and byte count.
type Count struct {
	Packets uint64
	Bytes   uint64
}

// CounterReader is implemented by backends that count what they drop.
type CounterReader interface {
	Counters() (Counters, error)
}

// Lister is implemented by backends that can read back what they enforce.
// It is meant for tests and small sets; big kernel sets are slow to list.
type Lister interface {
	List(ctx context.Context) ([]Entry, error)
}

// FromDecision converts a validated add or delete decision to an entry. A
// captcha decision becomes a RemedyCaptcha entry, any other type a ban
// entry: which types reach a backend at all is the policy's choice.
func FromDecision(d *decisionfeed.Decision) (Entry, error) {
	p, err := d.Prefix()
	if err != nil {
		return Entry{}, fmt.Errorf("decision %s: %w", d.Key(), err)
	}
	reason := d.Scenario
	if reason == "" {
		reason = d.Origin
	}
	e := Entry{Prefix: p, Until: d.Until, Reason: reason, Origin: d.Origin}
	if d.Type == decisionfeed.TypeCaptcha {
		e.Remedy = RemedyCaptcha
	}
	return e, nil
}
