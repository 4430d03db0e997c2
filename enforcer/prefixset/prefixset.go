// Package prefixset is the in-memory enforcer of the nginx bouncer: a set of
// IPv4 and IPv6 prefixes (single addresses and ranges), each with a remedy
// (ban or captcha), a reason and an absolute expiry that lookups honor.
//
// Single addresses, nearly all of a large ban list, live in hash maps, so a
// lookup among a million bans costs about one memory access; ranges live in
// a github.com/gaissmai/bart routing table. Lookups share a read lock and
// never allocate. Set implements enforcer.Enforcer for ban entries;
// ApplyRemedies and ReconcileRemedies take entries that carry their remedy.
package prefixset

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
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

// ErrClosed is returned by writes to a closed set.
var ErrClosed = errors.New("prefix set closed")

// value is what the set stores per prefix. Reasons and origins repeat
// across many entries and are interned.
type value struct {
	until  int64 // Unix nanoseconds
	reason unique.Handle[string]
	origin unique.Handle[string]
	remedy Remedy
}

// tables is the content of a set: single addresses by family, and ranges.
type tables struct {
	hosts4 map[[4]byte]value
	hosts6 map[[16]byte]value
	ranges *bart.Table[value]
}

func newTables(hint int) tables {
	return tables{
		hosts4: make(map[[4]byte]value, hint),
		hosts6: make(map[[16]byte]value),
		ranges: new(bart.Table[value]),
	}
}

func (t *tables) len() int { return len(t.hosts4) + len(t.hosts6) + t.ranges.Size() }

func (t *tables) insert(p netip.Prefix, v value) {
	switch {
	case !p.IsSingleIP():
		t.ranges.Insert(p, v)
	case p.Addr().Is4():
		t.hosts4[p.Addr().As4()] = v
	default:
		t.hosts6[p.Addr().As16()] = v
	}
}

func (t *tables) delete(p netip.Prefix) {
	switch {
	case !p.IsSingleIP():
		t.ranges.Delete(p)
	case p.Addr().Is4():
		delete(t.hosts4, p.Addr().As4())
	default:
		delete(t.hosts6, p.Addr().As16())
	}
}

// all yields every stored entry, expired or not, in no particular order.
func (t *tables) all(yield func(netip.Prefix, value) bool) {
	for a, v := range t.hosts4 {
		if !yield(netip.PrefixFrom(netip.AddrFrom4(a), 32), v) {
			return
		}
	}
	for a, v := range t.hosts6 {
		if !yield(netip.PrefixFrom(netip.AddrFrom16(a), 128), v) {
			return
		}
	}
	for p, v := range t.ranges.All() {
		if !yield(p, v) {
			return
		}
	}
}

// Set is a prefix set safe for concurrent use: any number of lookups run in
// parallel; a write excludes them for as long as it changes the maps. The
// zero value is not usable; call New.
type Set struct {
	mu         sync.RWMutex
	t          tables
	closed     bool
	nextExpiry int64 // earliest until in the set, Unix nanoseconds; 0 when none
}

var (
	_ enforcer.Enforcer = (*Set)(nil)
	_ enforcer.Lister   = (*Set)(nil)
)

// New returns an empty set.
func New() *Set {
	return &Set{t: newTables(0)}
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
	n := now.UnixNano()
	host := netip.PrefixFrom(ip, ip.BitLen())
	s.mu.RLock()
	defer s.mu.RUnlock()

	var (
		best    value
		bestPfx netip.Prefix
		found   bool
	)
	var v value
	var ok bool
	if ip.Is4() {
		v, ok = s.t.hosts4[ip.As4()]
	} else {
		v, ok = s.t.hosts6[ip.As16()]
	}
	if ok && v.until > n {
		if v.remedy == RemedyBan {
			return v.match(host), true // nothing outranks a live ban on the address itself
		}
		best, bestPfx, found = v, host, true
	}
	if _, covered := s.t.ranges.Lookup(ip); !covered {
		return best.match(bestPfx), found
	}
	// Ranges, most specific first: the first live ban wins; otherwise the
	// address's own entry or the most specific live range.
	for p, v := range s.t.ranges.Supernets(host) {
		if v.until <= n {
			continue
		}
		if v.remedy == RemedyBan {
			return v.match(p), true
		}
		if !found {
			best, bestPfx, found = v, p, true
		}
	}
	return best.match(bestPfx), found
}

func (v value) match(p netip.Prefix) Match {
	if v.remedy == 0 {
		return Match{}
	}
	return Match{
		Prefix: p,
		Remedy: v.remedy,
		Reason: v.reason.Value(),
		Origin: v.origin.Value(),
		Until:  time.Unix(0, v.until),
	}
}

// Len returns the number of prefixes stored, expired ones not yet swept included.
func (s *Set) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.t.len()
}

// Apply applies a batch of ban entries. It implements enforcer.Enforcer.
func (s *Set) Apply(ctx context.Context, b enforcer.Batch) error {
	return s.ApplyRemedies(ctx, Batch{Add: asBans(b.Add), Delete: b.Delete})
}

// Reconcile makes the set hold exactly the given ban entries. It implements
// enforcer.Enforcer.
func (s *Set) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	return s.ReconcileRemedies(ctx, asBans(entries))
}

func asBans(es []enforcer.Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Entry: e, Remedy: RemedyBan}
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
		if dels[i], err = normalizePrefix(p); err != nil {
			return fmt.Errorf("apply: delete %d: %w", i, err)
		}
	}
	now := time.Now().UnixNano()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("apply: %w", ErrClosed)
	}
	for _, p := range dels {
		s.t.delete(p)
	}
	for _, a := range adds {
		if a.v.until <= now {
			s.t.delete(a.p)
			continue
		}
		s.t.insert(a.p, a.v)
		if s.nextExpiry == 0 || a.v.until < s.nextExpiry {
			s.nextExpiry = a.v.until
		}
	}
	return nil
}

// ReconcileRemedies makes the set hold exactly the given entries (those
// already expired are left out). When a prefix appears twice the later
// entry wins. The new content is built aside and swapped in at once.
func (s *Set) ReconcileRemedies(ctx context.Context, entries []Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	adds, err := normalize(entries)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	now := time.Now().UnixNano()
	next := newTables(len(adds))
	var min int64
	for _, a := range adds {
		if a.v.until <= now {
			continue
		}
		next.insert(a.p, a.v)
		if min == 0 || a.v.until < min {
			min = a.v.until
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("reconcile: %w", ErrClosed)
	}
	s.t, s.nextExpiry = next, min
	return nil
}

// Sweep removes the entries expired at now and returns how many it removed.
// Lookups already ignore expired entries; sweeping only frees their memory.
// It costs nothing until the earliest expiry in the set has passed, and it
// finds the expired entries under the read lock, so lookups wait only for
// the deletions.
func (s *Set) Sweep(now time.Time) (int, error) {
	n := now.UnixNano()
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return 0, fmt.Errorf("sweep: %w", ErrClosed)
	}
	if s.nextExpiry == 0 || s.nextExpiry > n {
		s.mu.RUnlock()
		return 0, nil
	}
	var expired []netip.Prefix
	for p, v := range s.t.all {
		if v.until <= n {
			expired = append(expired, p)
		}
	}
	s.mu.RUnlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("sweep: %w", ErrClosed)
	}
	removed := 0
	for _, p := range expired {
		// Only what is still expired: a write may have renewed it meanwhile.
		if v, ok := s.t.get(p); ok && v.until <= n {
			s.t.delete(p)
			removed++
		}
	}
	var min int64
	for _, v := range s.t.all {
		if min == 0 || v.until < min {
			min = v.until
		}
	}
	s.nextExpiry = min
	return removed, nil
}

func (t *tables) get(p netip.Prefix) (value, bool) {
	switch {
	case !p.IsSingleIP():
		return t.ranges.Get(p)
	case p.Addr().Is4():
		v, ok := t.hosts4[p.Addr().As4()]
		return v, ok
	default:
		v, ok := t.hosts6[p.Addr().As16()]
		return v, ok
	}
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
	}
	return out, nil
}

// Entries returns the entries live now, IPv4 before IPv6, by address and
// then prefix length.
func (s *Set) Entries(ctx context.Context) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	now := time.Now().UnixNano()
	var out []Entry
	s.mu.RLock()
	for p, v := range s.t.all {
		if v.until <= now {
			continue
		}
		m := v.match(p)
		out = append(out, Entry{
			Entry:  enforcer.Entry{Prefix: p, Until: m.Until, Reason: m.Reason, Origin: m.Origin},
			Remedy: v.remedy,
		})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// Close empties the set; later writes fail with ErrClosed and lookups find
// nothing. Closing twice is harmless.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.nextExpiry = 0
	s.t = newTables(0)
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
		p, err := normalizePrefix(e.Prefix)
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
		}}
	}
	return out, nil
}

// normalizePrefix returns p masked, with an IPv4-mapped address turned into
// its IPv4 prefix so that it matches the IPv4 lookups it is meant for.
func normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("prefix %q: invalid", p)
	}
	a := p.Addr().WithZone("")
	if a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("prefix %s: IPv4-mapped with fewer than 96 bits", p)
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), nil
	}
	return netip.PrefixFrom(a, p.Bits()).Masked(), nil
}
