// Package prefixset is the in-memory enforcer of the nginx bouncer: a set of
// IPv4 and IPv6 prefixes (single addresses and ranges), each with a remedy
// (ban or captcha), a reason and an absolute expiry that lookups honor.
//
// Lookups are lock-free: they read an immutable routing table (a
// github.com/gaissmai/bart Fast table, chosen over bart.Table for a banned
// lookup about 20 % cheaper, bench/nginx.md) through an atomic pointer, and
// writers publish a modified copy. Set implements enforcer.Enforcer for ban entries;
// ApplyRemedies and ReconcileRemedies take entries that carry their remedy.
package prefixset

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/gaissmai/bart"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// Remedy is what a matching client gets.
type Remedy uint8

// The remedies the set holds.
const (
	// RemedyBan refuses the request.
	RemedyBan Remedy = iota + 1
	// RemedyCaptcha sends the client to a challenge.
	RemedyCaptcha
)

// String returns the remedy's decision type name: "ban" or "captcha".
func (r Remedy) String() string {
	switch r {
	case RemedyBan:
		return "ban"
	case RemedyCaptcha:
		return "captcha"
	}
	return fmt.Sprintf("remedy(%d)", uint8(r))
}

// Entry is an enforcer entry with its remedy. A zero Until never expires.
type Entry struct {
	enforcer.Entry
	Remedy Remedy
}

// Batch is a set of changes applied together, deletes before adds. A prefix
// must appear at most once in a batch; callers fold several changes of one
// key into the last one.
type Batch struct {
	Add    []Entry
	Delete []netip.Prefix
}

// Match is the live entry that covers a looked-up address.
type Match struct {
	Prefix netip.Prefix
	Remedy Remedy
	Reason string
	Origin string
	Until  time.Time
}

// value is what the table stores per prefix. It is immutable once stored,
// so the shallow copies made by the table's copy-on-write are safe. Reasons
// and origins repeat across many entries and are interned.
type value struct {
	until  int64 // Unix nanoseconds
	reason unique.Handle[string]
	origin unique.Handle[string]
	remedy Remedy
	bits   uint8 // the prefix length, so a plain lookup can name the prefix
}

// copyOnWriteMax is the largest batch applied by per-prefix copy-on-write;
// a bigger one clones the whole table once and mutates the clone in place,
// which is cheaper than cloning a trie path per prefix.
const copyOnWriteMax = 4096

// Set is a prefix set safe for concurrent use: any number of lookups run in
// parallel with one writer at a time. The zero value is not usable; call New.
type Set struct {
	tbl atomic.Pointer[bart.Fast[value]]

	mu         sync.Mutex // serializes writers
	closed     bool
	nextExpiry int64 // earliest until in the table, Unix nanoseconds; 0 when none
}

var (
	_ enforcer.Enforcer = (*Set)(nil)
	_ enforcer.Lister   = (*Set)(nil)
)

// New returns an empty set.
func New() *Set {
	s := &Set{}
	s.tbl.Store(new(bart.Fast[value]))
	return s
}

// Lookup returns the entry covering ip that is live at now. When several
// live prefixes cover ip, a ban wins over a captcha and, among equals, the
// most specific prefix wins. IPv4-mapped IPv6 addresses are looked up as
// IPv4 and zones are ignored.
func (s *Set) Lookup(ip netip.Addr, now time.Time) (Match, bool) {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return Match{}, false
	}
	t := s.tbl.Load()
	v, ok := t.Lookup(ip)
	if !ok {
		return Match{}, false
	}
	n := now.UnixNano()
	if v.until > n && v.remedy == RemedyBan {
		// The common case: the most specific entry is a live ban, which
		// nothing can outrank. A plain lookup is much cheaper than one
		// that reports the prefix, so the prefix is rebuilt from its length.
		p, _ := ip.Prefix(int(v.bits))
		return v.match(p), true
	}
	return slowLookup(t, netip.PrefixFrom(ip, ip.BitLen()), n)
}

func (v value) match(p netip.Prefix) Match {
	return Match{
		Prefix: p,
		Remedy: v.remedy,
		Reason: v.reason.Value(),
		Origin: v.origin.Value(),
		Until:  time.Unix(0, v.until),
	}
}

// slowLookup walks every prefix covering host, most specific first, and
// picks the best live one.
func slowLookup(t *bart.Fast[value], host netip.Prefix, now int64) (Match, bool) {
	var (
		best    value
		bestPfx netip.Prefix
		found   bool
	)
	for p, v := range t.Supernets(host) {
		if v.until <= now {
			continue
		}
		if !found || (v.remedy == RemedyBan && best.remedy != RemedyBan) {
			best, bestPfx, found = v, p, true
		}
		if best.remedy == RemedyBan {
			break
		}
	}
	if !found {
		return Match{}, false
	}
	return best.match(bestPfx), true
}

// Len returns the number of prefixes stored, expired ones not yet swept included.
func (s *Set) Len() int { return s.tbl.Load().Size() }

// Apply applies a batch of ban and captcha entries (enforcer.Entry.Remedy).
// It implements enforcer.Enforcer.
func (s *Set) Apply(ctx context.Context, b enforcer.Batch) error {
	return s.ApplyRemedies(ctx, Batch{Add: withRemedies(b.Add), Delete: b.Delete})
}

// Reconcile makes the set hold exactly the given ban and captcha entries.
// It implements enforcer.Enforcer.
func (s *Set) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	return s.ReconcileRemedies(ctx, withRemedies(entries))
}

func withRemedies(es []enforcer.Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		r := RemedyBan
		if e.Remedy == enforcer.RemedyCaptcha {
			r = RemedyCaptcha
		}
		out[i] = Entry{Entry: e, Remedy: r}
	}
	return out
}

// ApplyRemedies applies a batch: deletes first, then adds. Adding a present
// prefix replaces its entry; deleting an absent one is not an error; an add
// already expired at the time of the call removes the prefix, since the
// key's latest decision is no longer in force. The batch is checked whole
// before anything changes, so an invalid entry leaves the set untouched.
func (s *Set) ApplyRemedies(ctx context.Context, b Batch) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	adds, err := normalize(b.Add)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	dels := make([]netip.Prefix, len(b.Delete))
	for i, p := range b.Delete {
		if dels[i], err = enforcer.Canonical(p); err != nil {
			return fmt.Errorf("apply: delete %d: %w", i, err)
		}
	}
	now := time.Now().UnixNano()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("apply: %w", enforcer.ErrClosed)
	}
	cur := s.tbl.Load()
	var next *bart.Fast[value]
	if len(adds)+len(dels) > copyOnWriteMax {
		next = cur.Clone()
		for _, p := range dels {
			next.Delete(p)
		}
		for _, a := range adds {
			if a.v.until <= now {
				next.Delete(a.p)
				continue
			}
			next.Insert(a.p, a.v)
		}
	} else {
		next = cur
		for _, p := range dels {
			next = next.DeletePersist(p)
		}
		for _, a := range adds {
			if a.v.until <= now {
				next = next.DeletePersist(a.p)
				continue
			}
			next = next.InsertPersist(a.p, a.v)
		}
	}
	for _, a := range adds {
		s.noteExpiry(a.v.until, now)
	}
	s.tbl.Store(next)
	return nil
}

// ReconcileRemedies makes the set hold exactly the given entries (those
// already expired are left out). When a prefix appears twice the later
// entry wins.
func (s *Set) ReconcileRemedies(ctx context.Context, entries []Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	adds, err := normalize(entries)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	now := time.Now().UnixNano()
	next := new(bart.Fast[value])
	var min int64
	for _, a := range adds {
		if a.v.until <= now {
			continue
		}
		next.Insert(a.p, a.v)
		if min == 0 || a.v.until < min {
			min = a.v.until
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("reconcile: %w", enforcer.ErrClosed)
	}
	s.nextExpiry = min
	s.tbl.Store(next)
	return nil
}

// noteExpiry keeps nextExpiry a lower bound of the expiries in the table.
// Callers hold s.mu.
func (s *Set) noteExpiry(until, now int64) {
	if until > now && (s.nextExpiry == 0 || until < s.nextExpiry) {
		s.nextExpiry = until
	}
}

// Sweep removes the entries expired at now and returns how many it removed.
// Lookups already ignore expired entries; sweeping only frees their memory.
// It costs nothing until the earliest expiry in the set has passed.
func (s *Set) Sweep(now time.Time) (int, error) {
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("sweep: %w", enforcer.ErrClosed)
	}
	if s.nextExpiry == 0 || s.nextExpiry > n {
		return 0, nil
	}
	cur := s.tbl.Load()
	var (
		expired []netip.Prefix
		min     int64
	)
	for p, v := range cur.All() {
		if v.until <= n {
			expired = append(expired, p)
		} else if min == 0 || v.until < min {
			min = v.until
		}
	}
	var next *bart.Fast[value]
	if len(expired) > copyOnWriteMax {
		next = cur.Clone()
		for _, p := range expired {
			next.Delete(p)
		}
	} else {
		next = cur
		for _, p := range expired {
			next = next.DeletePersist(p)
		}
	}
	s.nextExpiry = min
	s.tbl.Store(next)
	return len(expired), nil
}

// List returns the ban and captcha entries live now, in prefix order. It
// implements enforcer.Lister; see Entries for the remedies.
func (s *Set) List(ctx context.Context) ([]enforcer.Entry, error) {
	es, err := s.Entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]enforcer.Entry, len(es))
	for i, e := range es {
		out[i] = e.Entry
		if e.Remedy == RemedyCaptcha {
			out[i].Remedy = enforcer.RemedyCaptcha
		}
	}
	return out, nil
}

// Entries returns the entries live now, in prefix order.
func (s *Set) Entries(ctx context.Context) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	now := time.Now().UnixNano()
	var out []Entry
	for p, v := range s.tbl.Load().AllSorted() {
		if v.until <= now {
			continue
		}
		m := v.match(p)
		out = append(out, Entry{
			Entry:  enforcer.Entry{Prefix: p, Until: m.Until, Reason: m.Reason, Origin: m.Origin},
			Remedy: v.remedy,
		})
	}
	return out, nil
}

// Close empties the set; later writes fail with enforcer.ErrClosed and lookups find
// nothing. Closing twice is harmless.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.nextExpiry = 0
	s.tbl.Store(new(bart.Fast[value]))
	return nil
}

type normalized struct {
	p netip.Prefix
	v value
}

// never is the expiry of an entry without one.
const never = int64(1<<63 - 1)

func normalize(es []Entry) ([]normalized, error) {
	out := make([]normalized, len(es))
	for i, e := range es {
		p, err := enforcer.Canonical(e.Prefix)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Remedy != RemedyBan && e.Remedy != RemedyCaptcha {
			return nil, fmt.Errorf("entry %d (%s): unknown remedy %d", i, p, e.Remedy)
		}
		until := never
		if !e.Until.IsZero() {
			until = e.Until.UnixNano()
		}
		out[i] = normalized{p: p, v: value{
			until:  until,
			reason: unique.Make(e.Reason),
			origin: unique.Make(e.Origin),
			remedy: e.Remedy,
			bits:   uint8(p.Bits()),
		}}
	}
	return out, nil
}
