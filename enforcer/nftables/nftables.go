// Package nftables enforces bans with nftables: one inet table of its own
// holding, per address family, a hash set of banned addresses and an
// interval set of banned ranges, both with per-element timeouts so expiry
// happens in the kernel even when no bouncer runs, and base chains on the
// input hook (forward and per-interface ingress when configured) with one
// set-match rule per set.
//
// Changes go to the kernel in batched netlink transactions. The backend
// keeps the authoritative copy of what it installed in memory, because
// reading a big set back from the kernel is very slow; a Reconcile against
// that copy sends only the difference. The first Reconcile after start (and
// any after a failure) cannot trust the kernel, so it loads fresh sets in
// chunks that no rule references yet and then swaps the rules over to them
// in one transaction: the old bans stay enforced until the new ones are
// complete, and a crash mid-load leaves only an unreferenced set that the
// next start deletes.
package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// Set kinds, in the order of Enforcer.sets.
const (
	kindAddr4 = iota
	kindRange4
	kindAddr6
	kindRange6
	numKinds
)

// kindNames name the sets (with a generation suffix) and their counters.
var kindNames = [numKinds]string{"addr4", "range4", "addr6", "range6"}

func kindOf(p netip.Prefix) int {
	k := kindAddr4
	if p.Addr().Is6() {
		k = kindAddr6
	}
	if !p.IsSingleIP() {
		k++
	}
	return k
}

func isRange(kind int) bool { return kind == kindRange4 || kind == kindRange6 }

// expiryMargin is how close to its expiry an element is treated as already
// gone: the kernel answers a delete of an expired element with ENOENT and
// fails the whole transaction, so such deletes are not sent.
const expiryMargin = time.Second

// maxPerMessage bounds the elements in one netlink message: the element
// list is one attribute, whose length field has 16 bits, and an IPv6
// element with its timeout takes about 40 bytes.
const maxPerMessage = 1000

// sndBuf is the socket send buffer forced on the netlink socket, so one
// transaction may carry a full chunk of elements.
const sndBuf = 32 << 20

// Enforcer is the nftables backend. It implements enforcer.Enforcer,
// enforcer.Lister and enforcer.CounterReader; its methods are safe for
// concurrent use.
type Enforcer struct {
	cfg   Config
	nsFd  int
	conn  *nft.Conn
	table *nft.Table

	mu     sync.Mutex
	closed bool
	gen    int
	sets   [numKinds]*nft.Set
	// elems mirrors what the live sets hold: for address sets, keyed by the
	// /32 or /128; for range sets, keyed by the kernel piece.
	addrs  [numKinds]map[netip.Addr]time.Time
	pieces [numKinds]map[piece]time.Time
	// ranges are the banned ranges the pieces are computed from.
	ranges [numKinds]map[netip.Prefix]time.Time
	// synced is false until the live sets are known to equal the maps.
	synced bool
	// monitor is Watch's event subscription, closed (paused true) while
	// the backend loads a generation of sets itself.
	monitor *nft.Monitor
	paused  bool
}

var (
	_ enforcer.Enforcer      = (*Enforcer)(nil)
	_ enforcer.Lister        = (*Enforcer)(nil)
	_ enforcer.CounterReader = (*Enforcer)(nil)
)

// dial opens a lasting nftables connection in the configured namespace.
// The returned fd (or -1) belongs to the caller.
func dial(cfg Config) (*nft.Conn, int, error) {
	fd := -1
	opts := []nft.ConnOption{nft.AsLasting(), nft.WithSockOptions(forceSendBuffer)}
	if cfg.NetNS != "" {
		f, err := unix.Open(cfg.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, -1, fmt.Errorf("open netns %s: %w", cfg.NetNS, err)
		}
		fd = f
		opts = append(opts, nft.WithNetNSFd(fd))
	}
	c, err := nft.New(opts...)
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return nil, -1, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return c, fd, nil
}

func forceSendBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink raw conn: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBuf)
	}); err != nil {
		return fmt.Errorf("netlink socket control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set SO_SNDBUFFORCE: %w", serr)
	}
	return nil
}

// New validates cfg, installs the table, sets, counters and chains (keeping
// any sets a previous run left, so bans stay enforced across a restart) and
// returns the backend. Call Reconcile next to bring the sets to the feed's
// snapshot.
func New(cfg Config) (*Enforcer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nftables config: %w", err)
	}
	conn, fd, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{
		cfg:   cfg,
		nsFd:  fd,
		conn:  conn,
		table: &nft.Table{Name: cfg.Table, Family: nft.TableFamilyINet},
	}
	for k := range numKinds {
		e.addrs[k] = map[netip.Addr]time.Time{}
		e.pieces[k] = map[piece]time.Time{}
		e.ranges[k] = map[netip.Prefix]time.Time{}
	}
	if err := e.install(); err != nil {
		e.closeConn()
		return nil, err
	}
	return e, nil
}

func (e *Enforcer) closeConn() {
	_ = e.conn.CloseLasting()
	if e.nsFd >= 0 {
		_ = unix.Close(e.nsFd)
		e.nsFd = -1
	}
}

func setName(kind, gen int) string { return kindNames[kind] + "-" + strconv.Itoa(gen) }

// parseSetName returns the kind and generation of one of our set names.
func parseSetName(name string) (kind, gen int, ok bool) {
	base, num, found := strings.Cut(name, "-")
	if !found {
		return 0, 0, false
	}
	g, err := strconv.Atoi(num)
	if err != nil || g < 1 {
		return 0, 0, false
	}
	k := slices.Index(kindNames[:], base)
	return k, g, k >= 0
}

func (e *Enforcer) newSet(kind, gen int) *nft.Set {
	key := nft.TypeIPAddr
	if kind >= kindAddr6 {
		key = nft.TypeIP6Addr
	}
	return &nft.Set{
		Table:      e.table,
		Name:       setName(kind, gen),
		KeyType:    key,
		HasTimeout: true,
		Interval:   isRange(kind),
	}
}

// install creates what is missing and rebuilds the chains. Sets of a
// complete generation referenced by the existing rules are kept as the
// live sets; any other set of ours (a load interrupted by a crash) is
// deleted.
func (e *Enforcer) install() error {
	existing := map[string]bool{}
	live := 0
	if t, err := e.conn.ListTableOfFamily(e.table.Name, e.table.Family); err == nil && t != nil {
		sets, err := e.conn.GetSets(e.table)
		if err != nil {
			return fmt.Errorf("list sets of table %s: %w", e.table.Name, err)
		}
		for _, s := range sets {
			existing[s.Name] = true
		}
		live = e.referencedGen(existing)
	}
	gen := live
	if gen == 0 {
		for name := range existing {
			if _, g, ok := parseSetName(name); ok && g > gen {
				gen = g
			}
		}
		gen++
	}
	c := e.conn
	c.AddTable(e.table)
	for k := range numKinds {
		c.AddObj(&nft.CounterObj{Table: e.table, Name: kindNames[k]})
		s := e.newSet(k, gen)
		if !existing[s.Name] {
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("add set %s: %w", s.Name, err)
			}
		}
		e.sets[k] = s
	}
	for name := range existing {
		if _, g, ok := parseSetName(name); ok && g != gen {
			c.DelSet(&nft.Set{Table: e.table, Name: name})
		}
	}
	if err := e.addChains(); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install table %s: %w", e.table.Name, err)
	}
	e.gen = gen
	return e.setGC(e.sets[:])
}

// referencedGen returns the generation the existing input chain's rules
// look up, when all four of its sets exist, or 0.
func (e *Enforcer) referencedGen(existing map[string]bool) int {
	rules, err := e.conn.GetRules(e.table, &nft.Chain{Name: "input", Table: e.table})
	if err != nil {
		return 0
	}
	for _, r := range rules {
		for _, x := range r.Exprs {
			l, ok := x.(*expr.Lookup)
			if !ok {
				continue
			}
			_, g, ok := parseSetName(l.SetName)
			if !ok {
				continue
			}
			for k := range numKinds {
				if !existing[setName(k, g)] {
					return 0
				}
			}
			return g
		}
	}
	return 0
}

// chainSpec is one base chain of the table.
type chainSpec struct {
	name     string
	hook     *nft.ChainHook
	priority int32
	device   string
	reject   bool
}

// inetIngress is the ingress hook of an inet table (NF_INET_INGRESS, 5, in
// linux/netfilter.h; x/sys/unix lacks it). nft.ChainHookIngress is the
// netdev family's number (0), which in an inet table means prerouting.
var inetIngress = nft.ChainHookRef(5)

func (e *Enforcer) chainSpecs() []chainSpec {
	reject := e.cfg.DenyAction == "reject"
	specs := []chainSpec{{name: "input", hook: nft.ChainHookInput, priority: e.cfg.Priority, reject: reject}}
	if e.cfg.Forward {
		specs = append(specs, chainSpec{name: "forward", hook: nft.ChainHookForward, priority: e.cfg.Priority, reject: reject})
	}
	for _, dev := range e.cfg.Ingress {
		specs = append(specs, chainSpec{name: "ingress-" + dev, hook: inetIngress, priority: e.cfg.IngressPriority, device: dev})
	}
	return specs
}

// addChains queues the chains and their rules, looking up e.sets. Chains
// of ours that the configuration no longer wants, or whose hook changed,
// are deleted first: the kernel cannot move a base chain to another hook.
func (e *Enforcer) addChains() error {
	specs := e.chainSpecs()
	c := e.conn
	if chains, err := c.ListChainsOfTableFamily(e.table.Family); err == nil {
		for _, ch := range chains {
			if ch.Table.Name != e.table.Name {
				continue
			}
			i := slices.IndexFunc(specs, func(s chainSpec) bool { return s.name == ch.Name })
			if i < 0 || ch.Hooknum == nil || *ch.Hooknum != *specs[i].hook ||
				ch.Priority == nil || int32(*ch.Priority) != specs[i].priority {
				c.FlushChain(ch)
				c.DelChain(ch)
			}
		}
	}
	policy := nft.ChainPolicyAccept
	for _, s := range specs {
		prio := nft.ChainPriority(s.priority)
		ch := c.AddChain(&nft.Chain{
			Name: s.name, Table: e.table, Type: nft.ChainTypeFilter,
			Hooknum: s.hook, Priority: &prio, Device: s.device, Policy: &policy,
		})
		c.FlushChain(ch)
		for k := range numKinds {
			for _, r := range e.rules(ch, k, s.reject) {
				c.AddRule(r)
			}
		}
	}
	return nil
}

// rules returns the rules matching the source address against set kind:
// an optional rate-limited log rule (a limit that does not match ends its
// rule, so it cannot share the verdict's) and the counted verdict.
func (e *Enforcer) rules(ch *nft.Chain, kind int, reject bool) []*nft.Rule {
	proto, off, size := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if kind >= kindAddr6 {
		proto, off, size = unix.NFPROTO_IPV6, 8, 16
	}
	s := e.sets[kind]
	match := func() []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		}
	}
	var out []*nft.Rule
	if e.cfg.Log.Enabled {
		out = append(out, &nft.Rule{Table: e.table, Chain: ch, Exprs: append(match(),
			&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(e.cfg.Log.Rate), Unit: expr.LimitTimeSecond, Burst: e.cfg.Log.Burst},
			&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(e.cfg.Log.Prefix)},
		)})
	}
	verdict := []expr.Any{&expr.Objref{Type: int(nft.ObjTypeCounter), Name: kindNames[kind]}}
	if reject {
		verdict = append(verdict, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	} else {
		verdict = append(verdict, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	return append(out, &nft.Rule{Table: e.table, Chain: ch, Exprs: append(match(), verdict...)})
}

// timeoutOf converts an absolute expiry to an element timeout; ok is false
// when the expiry has passed.
func timeoutOf(until, now time.Time) (time.Duration, bool) {
	if until.IsZero() {
		return 0, true
	}
	// The kernel takes element timeouts in milliseconds up to centuries:
	// any ban the feed accepts fits without a cap.
	d := until.Sub(now)
	if d < time.Millisecond {
		return 0, false
	}
	return d, true
}

// txn collects element changes per set and sends them in transactions of
// at most cfg.ChunkSize elements.
type txn struct {
	e   *Enforcer
	now time.Time
	add [numKinds][]nft.SetElement
	del [numKinds][]nft.SetElement
}

func addrBytes(a netip.Addr) []byte { return a.AsSlice() }

func (t *txn) addAddr(kind int, a netip.Addr, until time.Time) {
	to, _ := timeoutOf(until, t.now)
	t.add[kind] = append(t.add[kind], nft.SetElement{Key: addrBytes(a), Timeout: to})
}

func (t *txn) delAddr(kind int, a netip.Addr) {
	t.del[kind] = append(t.del[kind], nft.SetElement{Key: addrBytes(a)})
}

// pieceElems returns the interval start and, unless the piece runs to the
// top of the address space, the interval end (the first address after it).
// Only the start carries the timeout: the kernel refuses one on an end
// element and expires the interval by its start.
func pieceElems(p piece, timeout time.Duration) []nft.SetElement {
	out := []nft.SetElement{{Key: addrBytes(p.lo), Timeout: timeout}}
	if next := p.hi.Next(); next.IsValid() {
		out = append(out, nft.SetElement{Key: addrBytes(next), IntervalEnd: true})
	}
	return out
}

func (t *txn) addPiece(kind int, p piece, until time.Time) {
	to, _ := timeoutOf(until, t.now)
	t.add[kind] = append(t.add[kind], pieceElems(p, to)...)
}

func (t *txn) delPiece(kind int, p piece) {
	t.del[kind] = append(t.del[kind], pieceElems(p, 0)...)
}

func (t *txn) empty() bool {
	for k := range numKinds {
		if len(t.add[k])+len(t.del[k]) > 0 {
			return false
		}
	}
	return true
}

// send queues deletes before adds (a piece may be replaced by pieces that
// overlap it) and flushes every ChunkSize elements. A range's start and end
// elements never straddle two transactions.
func (t *txn) send(ctx context.Context, sets [numKinds]*nft.Set) error {
	c := t.e.conn
	chunk := t.e.cfg.ChunkSize
	pending := 0
	flush := func() error {
		if pending == 0 {
			return nil
		}
		pending = 0
		if err := ctx.Err(); err != nil {
			return err
		}
		return c.Flush()
	}
	queue := func(kind int, elems []nft.SetElement, del bool) error {
		for len(elems) > 0 {
			n := min(len(elems), max(chunk-pending, 1), maxPerMessage)
			if n < len(elems) && n > 1 && elems[n].IntervalEnd {
				n--
			}
			part := elems[:n]
			elems = elems[n:]
			var err error
			if del {
				err = c.SetDeleteElements(sets[kind], part)
			} else {
				err = c.SetAddElements(sets[kind], part)
			}
			if err != nil {
				return fmt.Errorf("queue elements of set %s: %w", sets[kind].Name, err)
			}
			if pending += n; pending >= chunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for k := range numKinds {
		if err := queue(k, t.del[k], true); err != nil {
			return err
		}
	}
	for k := range numKinds {
		if err := queue(k, t.add[k], false); err != nil {
			return err
		}
	}
	return flush()
}

// undo restores map entries a failed change had modified.
type undo struct {
	addrs  []func()
	ranges []func()
}

func (e *Enforcer) setAddr(u *undo, kind int, a netip.Addr, until time.Time, present bool) {
	old, had := e.addrs[kind][a]
	u.addrs = append(u.addrs, func() {
		if had {
			e.addrs[kind][a] = old
		} else {
			delete(e.addrs[kind], a)
		}
	})
	if present {
		e.addrs[kind][a] = until
	} else {
		delete(e.addrs[kind], a)
	}
}

func (e *Enforcer) setRange(u *undo, kind int, p netip.Prefix, until time.Time, present bool) {
	old, had := e.ranges[kind][p]
	u.ranges = append(u.ranges, func() {
		if had {
			e.ranges[kind][p] = old
		} else {
			delete(e.ranges[kind], p)
		}
	})
	if present {
		e.ranges[kind][p] = until
	} else {
		delete(e.ranges[kind], p)
	}
}

func (u *undo) run() {
	for i := len(u.addrs) - 1; i >= 0; i-- {
		u.addrs[i]()
	}
	for i := len(u.ranges) - 1; i >= 0; i-- {
		u.ranges[i]()
	}
}

// gone reports whether the kernel has (or is about to have) expired an
// element with this expiry.
func gone(until, now time.Time) bool {
	return !until.IsZero() && until.Before(now.Add(expiryMargin))
}

// diffAddr queues the change of one address from (old, had) to the
// current map state.
func (e *Enforcer) diffAddr(t *txn, kind int, a netip.Addr, old time.Time, had bool) {
	cur, has := e.addrs[kind][a]
	switch {
	case has && (!had || !cur.Equal(old)):
		t.addAddr(kind, a, cur)
	case !has && had && !gone(old, t.now):
		t.delAddr(kind, a)
	case !has && !had && !e.synced:
		// Before the first Reconcile the sets hold what a previous run
		// left, unknown here: delete blindly (ENOENT is tolerated).
		t.delAddr(kind, a)
	}
}

// diffPieces recomputes the pieces of range kind and queues the change.
func (e *Enforcer) diffPieces(t *txn, kind int) map[piece]time.Time {
	next := partition(e.ranges[kind])
	for p, old := range e.pieces[kind] {
		if _, ok := next[p]; !ok && !gone(old, t.now) {
			t.delPiece(kind, p)
		}
	}
	for p, until := range next {
		if old, ok := e.pieces[kind][p]; !ok || !old.Equal(until) || gone(old, t.now) {
			t.addPiece(kind, p, until)
		}
	}
	return next
}

// Apply adds and deletes entries in one transaction (several for a batch
// bigger than the chunk size). An add whose expiry has passed counts as a
// delete; an add of a present entry refreshes its timeout.
func (e *Enforcer) Apply(ctx context.Context, b enforcer.Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("nftables apply: %w", enforcer.ErrClosed)
	}
	if err := enforcer.CheckBatch(b); err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	t := &txn{e: e, now: time.Now()}
	var u undo
	type touched struct {
		kind int
		addr netip.Addr
		old  time.Time
		had  bool
	}
	var addrs []touched
	var rangeKinds [numKinds]bool
	touch := func(p netip.Prefix, until time.Time, present bool) {
		p = enforcer.MustCanonical(p)
		k := kindOf(p)
		if isRange(k) {
			if _, known := e.ranges[k][p]; !present && !known && !e.synced {
				// As for addresses: a range a previous run installed.
				t.delPiece(k, piece{p.Addr(), lastAddr(p)})
			}
			e.setRange(&u, k, p, until, present)
			rangeKinds[k] = true
			return
		}
		old, had := e.addrs[k][p.Addr()]
		addrs = append(addrs, touched{k, p.Addr(), old, had})
		e.setAddr(&u, k, p.Addr(), until, present)
	}
	for _, p := range b.Delete {
		if p.IsValid() {
			touch(p, time.Time{}, false)
		}
	}
	for _, en := range b.Add {
		_, live := timeoutOf(en.Until, t.now)
		touch(en.Prefix, en.Until, live)
	}
	// Several changes to one address in a batch: only the first saw the
	// state before the batch.
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !seen[a.addr] {
			seen[a.addr] = true
			e.diffAddr(t, a.kind, a.addr, a.old, a.had)
		}
	}
	var newPieces [numKinds]map[piece]time.Time
	for k, dirty := range rangeKinds {
		if dirty {
			newPieces[k] = e.diffPieces(t, k)
		}
	}
	return e.commit(ctx, t, &u, newPieces)
}

// commit sends t. If that fails it rolls the in-memory state back with u
// and leaves the next Reconcile to resync in full; otherwise it adopts the
// range pieces computed for the kinds whose entry in newPieces is not nil.
func (e *Enforcer) commit(ctx context.Context, t *txn, u *undo, newPieces [numKinds]map[piece]time.Time) error {
	if err := e.sendWithRetry(ctx, t); err != nil {
		u.run()
		e.synced = false
		return err
	}
	for k, p := range newPieces {
		if p != nil {
			e.pieces[k] = p
		}
	}
	return nil
}

// sendWithRetry sends t. A delete racing the kernel's own expiry fails the
// whole transaction with ENOENT (nothing applied); then adds are sent
// alone and each delete in a transaction of its own, where ENOENT only
// means the element is already gone.
func (e *Enforcer) sendWithRetry(ctx context.Context, t *txn) error {
	if t.empty() {
		return nil
	}
	err := t.send(ctx, e.sets)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return fmt.Errorf("nftables transaction: %w", err)
		}
		return nil
	}
	adds := &txn{e: e, now: t.now, add: t.add}
	if err := adds.send(ctx, e.sets); err != nil {
		return fmt.Errorf("nftables transaction (adds): %w", err)
	}
	for k := range numKinds {
		elems := t.del[k]
		for len(elems) > 0 {
			n := 1
			if len(elems) > 1 && elems[1].IntervalEnd {
				n = 2
			}
			if err := e.conn.SetDeleteElements(e.sets[k], elems[:n]); err != nil {
				return fmt.Errorf("queue delete in set %s: %w", e.sets[k].Name, err)
			}
			if err := e.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("nftables delete in set %s: %w", e.sets[k].Name, err)
			}
			elems = elems[n:]
		}
	}
	return nil
}

// desired builds the maps of a snapshot, the later expiry winning for a
// prefix listed twice and expired entries left out.
func desired(entries []enforcer.Entry, now time.Time) (addrs [numKinds]map[netip.Addr]time.Time, ranges [numKinds]map[netip.Prefix]time.Time) {
	for k := range numKinds {
		addrs[k] = map[netip.Addr]time.Time{}
		ranges[k] = map[netip.Prefix]time.Time{}
	}
	for _, en := range entries {
		if _, live := timeoutOf(en.Until, now); !live {
			continue
		}
		p := enforcer.MustCanonical(en.Prefix)
		k := kindOf(p)
		if isRange(k) {
			if old, ok := ranges[k][p]; ok {
				ranges[k][p] = laterOf(old, en.Until)
			} else {
				ranges[k][p] = en.Until
			}
			continue
		}
		if old, ok := addrs[k][p.Addr()]; ok {
			addrs[k][p.Addr()] = laterOf(old, en.Until)
		} else {
			addrs[k][p.Addr()] = en.Until
		}
	}
	return addrs, ranges
}

// Reconcile makes the sets hold exactly entries. While the in-memory copy
// is known to match the kernel it sends the difference; otherwise (first
// call after New, or after a failed change) it loads a new generation of
// sets and swaps the rules over to it atomically.
func (e *Enforcer) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("nftables reconcile: %w", enforcer.ErrClosed)
	}
	if err := enforcer.CheckEntries(entries); err != nil {
		return fmt.Errorf("nftables reconcile: %w", err)
	}
	now := time.Now()
	addrs, ranges := desired(entries, now)
	if !e.synced {
		return e.swap(ctx, addrs, ranges, now)
	}
	t := &txn{e: e, now: now}
	var u undo
	for k := range numKinds {
		if isRange(k) {
			continue
		}
		old := e.addrs[k]
		e.addrs[k] = addrs[k]
		for a, until := range old {
			e.diffAddr(t, k, a, until, true)
		}
		for a := range addrs[k] {
			if _, had := old[a]; !had {
				e.diffAddr(t, k, a, time.Time{}, false)
			}
		}
		u.addrs = append(u.addrs, func() { e.addrs[k] = old })
	}
	var newPieces [numKinds]map[piece]time.Time
	for k := range numKinds {
		if !isRange(k) {
			continue
		}
		old := e.ranges[k]
		e.ranges[k] = ranges[k]
		u.ranges = append(u.ranges, func() { e.ranges[k] = old })
		newPieces[k] = e.diffPieces(t, k)
	}
	return e.commit(ctx, t, &u, newPieces)
}

// swap loads the snapshot into a new generation of sets, then in one
// transaction points the rules at them and deletes the old sets.
func (e *Enforcer) swap(ctx context.Context, addrs [numKinds]map[netip.Addr]time.Time, ranges [numKinds]map[netip.Prefix]time.Time, now time.Time) error {
	e.pauseMonitor()
	gen := e.gen + 1
	var sets [numKinds]*nft.Set
	for k := range numKinds {
		sets[k] = e.newSet(k, gen)
		// A set of this generation may survive from an interrupted swap.
		e.conn.DelSet(sets[k])
	}
	if err := e.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete stale sets of generation %d: %w", gen, err)
	}
	for k := range numKinds {
		if err := e.conn.AddSet(sets[k], nil); err != nil {
			return fmt.Errorf("add set %s: %w", sets[k].Name, err)
		}
	}
	if err := e.conn.Flush(); err != nil {
		return fmt.Errorf("create sets of generation %d: %w", gen, err)
	}
	if err := e.setGC(sets[:]); err != nil {
		return err
	}
	t := &txn{e: e, now: now}
	var pieces [numKinds]map[piece]time.Time
	for k := range numKinds {
		if isRange(k) {
			pieces[k] = partition(ranges[k])
			for p, until := range pieces[k] {
				t.addPiece(k, p, until)
			}
			continue
		}
		for a, until := range addrs[k] {
			t.addAddr(k, a, until)
		}
	}
	if err := t.send(ctx, sets); err != nil {
		return fmt.Errorf("load sets of generation %d: %w", gen, err)
	}
	old := e.sets
	e.sets = sets
	if err := e.addChains(); err != nil {
		e.sets = old
		return err
	}
	for k := range numKinds {
		e.conn.DelSet(old[k])
	}
	if err := e.conn.Flush(); err != nil {
		e.sets = old
		return fmt.Errorf("swap to sets of generation %d: %w", gen, err)
	}
	e.gen = gen
	e.addrs, e.ranges, e.pieces = addrs, ranges, pieces
	e.synced = true
	return nil
}

// List reads the live sets back from the kernel. It is slow for big sets
// (it dumps every element) and meant for tests and diagnostics. Ranges are
// reported as the kernel holds them: nested bans show as the pieces the
// outer range was split into.
func (e *Enforcer) List(ctx context.Context) ([]enforcer.Entry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("nftables list: %w", enforcer.ErrClosed)
	}
	now := time.Now()
	var out []enforcer.Entry
	for k := range numKinds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		elems, err := e.conn.GetSetElements(e.sets[k])
		if err != nil {
			return nil, fmt.Errorf("list set %s: %w", e.sets[k].Name, err)
		}
		if !isRange(k) {
			for _, el := range elems {
				a, ok := netip.AddrFromSlice(el.Key)
				if !ok {
					return nil, fmt.Errorf("set %s: element key of %d bytes", e.sets[k].Name, len(el.Key))
				}
				out = append(out, enforcer.Entry{Prefix: netip.PrefixFrom(a, a.BitLen()), Until: untilOf(el, now)})
			}
			continue
		}
		ranges, err := intervalsOf(elems, now)
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", e.sets[k].Name, err)
		}
		out = append(out, ranges...)
	}
	return out, nil
}

func untilOf(el nft.SetElement, now time.Time) time.Time {
	if el.Timeout == 0 {
		return time.Time{}
	}
	return now.Add(el.Expires)
}

// intervalsOf pairs interval start and end elements into CIDR entries.
func intervalsOf(elems []nft.SetElement, now time.Time) ([]enforcer.Entry, error) {
	type bound struct {
		a     netip.Addr
		end   bool
		until time.Time
	}
	bs := make([]bound, 0, len(elems))
	for _, el := range elems {
		a, ok := netip.AddrFromSlice(el.Key)
		if !ok {
			return nil, fmt.Errorf("element key of %d bytes", len(el.Key))
		}
		bs = append(bs, bound{a, el.IntervalEnd, untilOf(el, now)})
	}
	// An end and the next start can share an address; the end sorts first.
	slices.SortFunc(bs, func(x, y bound) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		switch {
		case x.end == y.end:
			return 0
		case x.end:
			return -1
		}
		return 1
	})
	var out []enforcer.Entry
	for i := 0; i < len(bs); i++ {
		if bs[i].end {
			// The all-zero address is the kernel's implicit end marker.
			continue
		}
		lo := bs[i]
		var hi netip.Addr
		if i+1 < len(bs) && bs[i+1].end {
			hi = bs[i+1].a.Prev()
			i++
		} else {
			hi = lastAddr(netip.PrefixFrom(lo.a, 0))
		}
		for _, p := range prefixesOf(lo.a, hi) {
			out = append(out, enforcer.Entry{Prefix: p, Until: lo.until})
		}
	}
	return out, nil
}

// Counters reports the packets and bytes dropped through each set, keyed
// "addr4", "range4", "addr6" and "range6".
func (e *Enforcer) Counters() (enforcer.Counters, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return enforcer.Counters{}, fmt.Errorf("nftables counters: %w", enforcer.ErrClosed)
	}
	out := enforcer.Counters{ByReason: map[string]enforcer.Count{}}
	for _, name := range kindNames {
		o, err := e.conn.GetObject(&nft.CounterObj{Table: e.table, Name: name})
		if err != nil {
			return enforcer.Counters{}, fmt.Errorf("read counter %s: %w", name, err)
		}
		switch c := o.(type) {
		case *nft.CounterObj:
			out.ByReason[name] = enforcer.Count{Packets: c.Packets, Bytes: c.Bytes}
		case *nft.NamedObj:
			if x, ok := c.Obj.(*expr.Counter); ok {
				out.ByReason[name] = enforcer.Count{Packets: x.Packets, Bytes: x.Bytes}
			}
		}
	}
	return out, nil
}

// Close releases the netlink socket. The table and its bans stay in the
// kernel, enforced and expiring on their own, until Cleanup.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.pauseMonitor()
	e.closeConn()
	return nil
}

// Cleanup removes the table cfg names and everything in it. A missing
// table is not an error.
func Cleanup(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("nftables config: %w", err)
	}
	conn, fd, err := dial(cfg)
	if err != nil {
		return err
	}
	defer func() {
		_ = conn.CloseLasting()
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}()
	t, err := conn.ListTableOfFamily(cfg.Table, nft.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("look up table %s: %w", cfg.Table, err)
	}
	conn.DelTable(t)
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete table %s: %w", cfg.Table, err)
	}
	return nil
}
