// Package iptables enforces bans with iptables and ipset: a hash:net ipset
// per address family with per-entry timeouts (so expiry happens in the
// kernel even when no bouncer runs), and one filter-table chain of its own
// holding a single set-match rule per family, jumped to from INPUT (and
// FORWARD or DOCKER-USER when configured). It works with iptables-legacy
// and iptables-nft alike; ipsets are shared by both.
//
// The backend keeps the authoritative copy of what it installed in memory.
// A Reconcile against that copy sends only the difference; the first one
// after start (and any after a failure) loads a twin set and swaps it with
// the live one atomically (ipset swap), so old bans stay enforced until the
// new set is complete.
package iptables

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// MaxTimeout is the longest timeout ipset accepts for an entry; a longer
// ban is installed with it and refreshed by Reconcile before it runs out.
const MaxTimeout = 2147483 * time.Second

// expiryMargin is how close to its expiry an entry is treated as gone.
const expiryMargin = time.Second

// Enforcer is the iptables+ipset backend. It implements enforcer.Enforcer,
// enforcer.Lister and enforcer.CounterReader; its methods are safe for
// concurrent use.
type Enforcer struct {
	cfg   Config
	ns    netns.NsHandle
	h     *netlink.Handle
	batch *ipsetBatcher

	mu     sync.Mutex
	closed bool
	fams   []*family
	synced bool
}

// family is the state of one address family.
type family struct {
	v    int // 4 or 6
	ipt  *goipt.IPTables
	live string
	tmp  string
	// installed maps each prefix in the live set to what was installed.
	installed map[netip.Prefix]inst
}

// inst is an installed entry: the ban's expiry and the kernel's, which is
// earlier when the ban outlasts MaxTimeout (zero: none).
type inst struct {
	until, expires time.Time
}

func instOf(until, now time.Time) inst {
	if until.IsZero() {
		return inst{}
	}
	return inst{until: until, expires: minTime(until, now.Add(MaxTimeout))}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// current reports whether the installed entry already enforces until and
// will not run out in the kernel before half of MaxTimeout has passed.
func (i inst) current(until, now time.Time) bool {
	if !i.until.Equal(until) || gone(i.expires, now) {
		return false
	}
	return i.expires.Equal(i.until) || i.expires.Sub(now) > MaxTimeout/2
}

var (
	_ enforcer.Enforcer      = (*Enforcer)(nil)
	_ enforcer.Lister        = (*Enforcer)(nil)
	_ enforcer.CounterReader = (*Enforcer)(nil)
)

// handles opens the netlink handle (and namespace) cfg names.
func handles(cfg Config) (netns.NsHandle, *netlink.Handle, error) {
	if cfg.NetNS == "" {
		h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			return netns.None(), nil, fmt.Errorf("open ipset netlink socket: %w", err)
		}
		return netns.None(), h, nil
	}
	ns, err := netns.GetFromPath(cfg.NetNS)
	if err != nil {
		return netns.None(), nil, fmt.Errorf("open netns %s: %w", cfg.NetNS, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		_ = ns.Close()
		return netns.None(), nil, fmt.Errorf("open ipset netlink socket in %s: %w", cfg.NetNS, err)
	}
	return ns, h, nil
}

// inNS runs fn with the calling thread in ns (when set): the iptables
// binaries that go-iptables runs inherit the namespace of the thread that
// starts them.
func inNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer func() { _ = origin.Close() }()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(origin); err != nil {
			// The thread stays locked and ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func newIPT(path string, proto goipt.Protocol) (*goipt.IPTables, error) {
	full, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", path, err)
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(full), goipt.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", full, err)
	}
	return ipt, nil
}

// New validates cfg, creates the ipsets (keeping existing content, so bans
// stay enforced across a restart), rebuilds the chain and inserts the jumps
// that are missing. Call Reconcile next to bring the sets to the feed's
// snapshot.
func New(cfg Config) (*Enforcer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("iptables config: %w", err)
	}
	ns, h, err := handles(cfg)
	if err != nil {
		return nil, err
	}
	b, err := dialIpset(ns)
	if err != nil {
		h.Close()
		if ns.IsOpen() {
			_ = ns.Close()
		}
		return nil, err
	}
	e := &Enforcer{cfg: cfg, ns: ns, h: h, batch: b}
	v4, v6 := cfg.binaries()
	specs := []struct {
		v     int
		bin   string
		proto goipt.Protocol
	}{{4, v4, goipt.ProtocolIPv4}}
	if cfg.IPv6 {
		specs = append(specs, struct {
			v     int
			bin   string
			proto goipt.Protocol
		}{6, v6, goipt.ProtocolIPv6})
	}
	for _, s := range specs {
		ipt, err := newIPT(s.bin, s.proto)
		if err != nil {
			e.release()
			return nil, err
		}
		e.fams = append(e.fams, &family{
			v: s.v, ipt: ipt, live: cfg.setName(s.v, false), tmp: cfg.setName(s.v, true),
			installed: map[netip.Prefix]inst{},
		})
	}
	for _, f := range e.fams {
		if err := e.createSet(f.live, f.v); err != nil {
			e.release()
			return nil, err
		}
	}
	if err := inNS(ns, e.installChains); err != nil {
		e.release()
		return nil, err
	}
	return e, nil
}

func (e *Enforcer) release() {
	_ = e.batch.close()
	e.h.Close()
	if e.ns.IsOpen() {
		_ = e.ns.Close()
	}
}

func (e *Enforcer) createSet(name string, v int) error {
	fam := uint8(unix.AF_INET)
	if v == 6 {
		fam = unix.AF_INET6
	}
	zero := uint32(0)
	// Replace drops NLM_F_EXCL: an existing set of the same type is kept.
	err := e.h.IpsetCreate(name, "hash:net", netlink.IpsetCreateOptions{
		Replace: true, Family: fam, Timeout: &zero, MaxElements: e.cfg.MaxElements,
	})
	if err != nil {
		return fmt.Errorf("create ipset %s: %w", name, err)
	}
	return nil
}

// rules returns the rules of our chain for one family.
func (e *Enforcer) rules(f *family) [][]string {
	match := []string{"-m", "set", "--match-set", f.live, "src"}
	var out [][]string
	if l := e.cfg.Log; l.Enabled {
		out = append(out, append(append([]string{}, match...),
			"-m", "limit", "--limit", strconv.Itoa(int(l.Rate))+"/second", "--limit-burst", strconv.Itoa(int(max(l.Burst, 1))),
			"-j", "LOG", "--log-prefix", l.Prefix))
	}
	deny := []string{"-j", "DROP"}
	if e.cfg.DenyAction == "reject" {
		with := "icmp-admin-prohibited"
		if f.v == 6 {
			with = "icmp6-adm-prohibited"
		}
		deny = []string{"-j", "REJECT", "--reject-with", with}
	}
	return append(out, append(append([]string{}, match...), deny...))
}

// installChains creates our chain or replaces its rules (new ones appended
// before the old ones are deleted, so there is no moment without them),
// inserts each configured jump once, and removes jumps from hooks no
// longer configured.
func (e *Enforcer) installChains() error {
	chain := e.cfg.chain()
	for _, f := range e.fams {
		ok, err := f.ipt.ChainExists("filter", chain)
		if err != nil {
			return fmt.Errorf("ip%stables look up chain %s: %w", v6tag(f.v), chain, err)
		}
		old := 0
		if ok {
			rules, err := f.ipt.List("filter", chain)
			if err != nil {
				return fmt.Errorf("ip%stables list chain %s: %w", v6tag(f.v), chain, err)
			}
			for _, r := range rules {
				if strings.HasPrefix(r, "-A ") {
					old++
				}
			}
		} else if err := f.ipt.NewChain("filter", chain); err != nil {
			return fmt.Errorf("ip%stables create chain %s: %w", v6tag(f.v), chain, err)
		}
		for _, r := range e.rules(f) {
			if err := f.ipt.Append("filter", chain, r...); err != nil {
				return fmt.Errorf("ip%stables append to %s: %w", v6tag(f.v), chain, err)
			}
		}
		for range old {
			if err := f.ipt.DeleteById("filter", chain, 1); err != nil {
				return fmt.Errorf("ip%stables delete old rule of %s: %w", v6tag(f.v), chain, err)
			}
		}
		for _, hook := range knownHooks {
			want := false
			for _, h := range e.cfg.Hooks {
				want = want || h == hook
			}
			exists, err := f.ipt.ChainExists("filter", hook)
			if err != nil {
				return fmt.Errorf("ip%stables look up chain %s: %w", v6tag(f.v), hook, err)
			}
			switch {
			case want && !exists:
				// Only DOCKER-USER can be missing: docker is not running, or
				// runs without IPv6. A restart after docker adds the jump.
				continue
			case want:
				if err := f.ipt.InsertUnique("filter", hook, 1, "-j", chain); err != nil {
					return fmt.Errorf("ip%stables insert jump in %s: %w", v6tag(f.v), hook, err)
				}
			case exists:
				if err := f.ipt.DeleteIfExists("filter", hook, "-j", chain); err != nil {
					return fmt.Errorf("ip%stables remove jump from %s: %w", v6tag(f.v), hook, err)
				}
			}
		}
	}
	return nil
}

func v6tag(v int) string {
	if v == 6 {
		return "6"
	}
	return ""
}

func (e *Enforcer) familyOf(p netip.Prefix) (*family, error) {
	v := 4
	if p.Addr().Is6() {
		v = 6
	}
	for _, f := range e.fams {
		if f.v == v {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%s: IPv6 is not enabled in the iptables backend", p)
}

// timeoutSecs converts an expiry to an ipset timeout (0: none); ok is false
// when the expiry has passed.
func timeoutSecs(until, now time.Time) (uint32, bool) {
	if until.IsZero() {
		return 0, true
	}
	d := until.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return uint32(min(math.Ceil(d.Seconds()), MaxTimeout.Seconds())), true
}

func gone(until, now time.Time) bool {
	return !until.IsZero() && until.Before(now.Add(expiryMargin))
}

func entryOf(p netip.Prefix, secs uint32) *netlink.IPSetEntry {
	return &netlink.IPSetEntry{
		IP: net.IP(p.Addr().AsSlice()), CIDR: uint8(p.Bits()), Timeout: &secs, Replace: true,
	}
}

func isNotThere(err error) bool {
	return errors.Is(err, nl.IPSetError(nl.IPSET_ERR_EXIST)) || errors.Is(err, unix.ENOENT)
}

// addAll installs (or refreshes) the entries of want in set, recording
// each one in f.installed once the kernel took it when set is the live set.
func (e *Enforcer) addAll(f *family, set string, want map[netip.Prefix]time.Time, now time.Time) error {
	items := make([]ipsetAdd, 0, len(want))
	for p, until := range want {
		secs, _ := timeoutSecs(until, now)
		items = append(items, ipsetAdd{p, secs})
	}
	done, err := e.batch.add(set, items)
	if set == f.live {
		for _, it := range items[:done] {
			f.installed[it.p] = instOf(want[it.p], now)
		}
	}
	return err
}

// del removes p from the live set; an entry the kernel already expired is
// not an error.
func (e *Enforcer) del(f *family, p netip.Prefix, in inst, now time.Time) error {
	if gone(in.expires, now) {
		return nil
	}
	if err := e.h.IpsetDel(f.live, entryOf(p, 0)); err != nil && !isNotThere(err) {
		return fmt.Errorf("ipset del %s %s: %w", f.live, p, err)
	}
	return nil
}

// Apply adds and deletes entries. An add whose expiry has passed counts as
// a delete; an add of a present entry refreshes its timeout. ipset has no
// transactions: on an error, the changes before it stay applied and are
// recorded, so a retry of the same batch finishes the job.
func (e *Enforcer) Apply(ctx context.Context, b enforcer.Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("iptables apply: %w", enforcer.ErrClosed)
	}
	if err := enforcer.CheckBatch(b); err != nil {
		return fmt.Errorf("iptables apply: %w", err)
	}
	now := time.Now()
	for _, p := range b.Delete {
		p = enforcer.MustCanonical(p)
		f, err := e.familyOf(p)
		if err != nil {
			continue // nothing of that family is installed
		}
		in, ok := f.installed[p]
		if !ok && e.synced {
			continue
		}
		// Before the first Reconcile the set holds what a previous run
		// left, unknown here: delete blindly (absence is tolerated).
		if err := e.del(f, p, in, now); err != nil {
			e.synced = false
			return err
		}
		delete(f.installed, p)
	}
	adds := map[*family]map[netip.Prefix]time.Time{}
	for _, en := range b.Add {
		p := enforcer.MustCanonical(en.Prefix)
		f, err := e.familyOf(p)
		if err != nil {
			return err
		}
		old, had := f.installed[p]
		if _, live := timeoutSecs(en.Until, now); !live {
			delete(adds[f], p)
			if had {
				if err := e.del(f, p, old, now); err != nil {
					e.synced = false
					return err
				}
				delete(f.installed, p)
			}
			continue
		}
		if had && old.current(en.Until, now) {
			continue
		}
		if adds[f] == nil {
			adds[f] = map[netip.Prefix]time.Time{}
		}
		adds[f][p] = en.Until
	}
	for _, f := range e.fams {
		if len(adds[f]) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.addAll(f, f.live, adds[f], now); err != nil {
			e.synced = false
			return err
		}
	}
	return nil
}

// Reconcile makes the sets hold exactly entries: the difference against
// the in-memory copy when that is known to match the kernel, otherwise a
// full load of a twin set swapped in atomically.
func (e *Enforcer) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("iptables reconcile: %w", enforcer.ErrClosed)
	}
	if err := enforcer.CheckEntries(entries); err != nil {
		return fmt.Errorf("iptables reconcile: %w", err)
	}
	now := time.Now()
	want := map[*family]map[netip.Prefix]time.Time{}
	for _, f := range e.fams {
		want[f] = map[netip.Prefix]time.Time{}
	}
	for _, en := range entries {
		if _, live := timeoutSecs(en.Until, now); !live {
			continue
		}
		p := enforcer.MustCanonical(en.Prefix)
		f, err := e.familyOf(p)
		if err != nil {
			return err
		}
		if old, ok := want[f][p]; ok && (old.IsZero() || old.After(en.Until)) {
			continue
		}
		want[f][p] = en.Until
	}
	if !e.synced {
		for _, f := range e.fams {
			if err := e.reload(ctx, f, want[f], now); err != nil {
				return err
			}
		}
		e.synced = true
		return nil
	}
	for _, f := range e.fams {
		for p, in := range f.installed {
			if _, keep := want[f][p]; keep {
				continue
			}
			if err := e.del(f, p, in, now); err != nil {
				e.synced = false
				return err
			}
			delete(f.installed, p)
		}
		adds := map[netip.Prefix]time.Time{}
		for p, until := range want[f] {
			old, had := f.installed[p]
			if had && old.current(until, now) {
				continue
			}
			adds[p] = until
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.addAll(f, f.live, adds, now); err != nil {
			e.synced = false
			return err
		}
	}
	return nil
}

// reload fills the twin set with want and swaps it with the live one.
func (e *Enforcer) reload(ctx context.Context, f *family, want map[netip.Prefix]time.Time, now time.Time) error {
	if err := e.createSet(f.tmp, f.v); err != nil {
		return err
	}
	// The twin may hold a load interrupted by a crash.
	if err := e.h.IpsetFlush(f.tmp); err != nil {
		return fmt.Errorf("ipset flush %s: %w", f.tmp, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.addAll(f, f.tmp, want, now); err != nil {
		return err
	}
	if err := e.h.IpsetSwap(f.live, f.tmp); err != nil {
		return fmt.Errorf("ipset swap %s %s: %w", f.live, f.tmp, err)
	}
	if err := e.h.IpsetDestroy(f.tmp); err != nil {
		return fmt.Errorf("ipset destroy %s: %w", f.tmp, err)
	}
	f.installed = make(map[netip.Prefix]inst, len(want))
	for p, until := range want {
		f.installed[p] = instOf(until, now)
	}
	return nil
}

// List reads the live sets back from the kernel; meant for tests and
// diagnostics, as it dumps every entry.
func (e *Enforcer) List(ctx context.Context) ([]enforcer.Entry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("iptables list: %w", enforcer.ErrClosed)
	}
	now := time.Now()
	var out []enforcer.Entry
	for _, f := range e.fams {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := e.h.IpsetList(f.live)
		if err != nil {
			return nil, fmt.Errorf("ipset list %s: %w", f.live, err)
		}
		for _, en := range res.Entries {
			a, ok := netip.AddrFromSlice(en.IP)
			if !ok {
				return nil, fmt.Errorf("ipset %s: entry address of %d bytes", f.live, len(en.IP))
			}
			if f.v == 4 {
				a = a.Unmap()
			}
			bits := int(en.CIDR)
			if bits == 0 {
				bits = a.BitLen()
			}
			var until time.Time
			if en.Timeout != nil && *en.Timeout > 0 {
				until = now.Add(time.Duration(*en.Timeout) * time.Second)
			}
			out = append(out, enforcer.Entry{Prefix: netip.PrefixFrom(a, bits), Until: until})
		}
	}
	return out, nil
}

// Counters reports packets and bytes denied per family, keyed "ipset-v4"
// and "ipset-v6", from the counters of the deny rules.
func (e *Enforcer) Counters() (enforcer.Counters, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return enforcer.Counters{}, fmt.Errorf("iptables counters: %w", enforcer.ErrClosed)
	}
	out := enforcer.Counters{ByReason: map[string]enforcer.Count{}}
	err := inNS(e.ns, func() error {
		for _, f := range e.fams {
			stats, err := f.ipt.StructuredStats("filter", e.cfg.chain())
			if err != nil {
				return fmt.Errorf("ip%stables stats of %s: %w", v6tag(f.v), e.cfg.chain(), err)
			}
			var c enforcer.Count
			for _, s := range stats {
				if s.Target == "DROP" || s.Target == "REJECT" {
					c.Packets += s.Packets
					c.Bytes += s.Bytes
				}
			}
			out.ByReason[fmt.Sprintf("ipset-v%d", f.v)] = c
		}
		return nil
	})
	return out, err
}

// Close releases the netlink socket and namespace handle. The chain, the
// jumps and the sets stay, enforced and expiring on their own, until
// Cleanup.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.release()
	return nil
}

// Cleanup removes the jumps, the chain and the ipsets cfg names, from every
// iptables flavor installed (a previous run may have used another one).
// What is already absent is not an error; nothing else is touched.
func Cleanup(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iptables config: %w", err)
	}
	ns, h, err := handles(cfg)
	if err != nil {
		return err
	}
	defer func() {
		h.Close()
		if ns.IsOpen() {
			_ = ns.Close()
		}
	}()
	chain := cfg.chain()
	var bins []struct {
		path  string
		proto goipt.Protocol
	}
	for _, b := range []string{"iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft"} {
		if _, err := exec.LookPath(b); err != nil {
			continue
		}
		proto := goipt.ProtocolIPv4
		if strings.HasPrefix(b, "ip6") {
			proto = goipt.ProtocolIPv6
		}
		bins = append(bins, struct {
			path  string
			proto goipt.Protocol
		}{b, proto})
	}
	if len(bins) == 0 {
		// Only the plain names may exist (a distribution without alternatives).
		v4, v6 := DefaultConfig().binaries()
		bins = append(bins, struct {
			path  string
			proto goipt.Protocol
		}{v4, goipt.ProtocolIPv4}, struct {
			path  string
			proto goipt.Protocol
		}{v6, goipt.ProtocolIPv6})
	}
	err = inNS(ns, func() error {
		for _, b := range bins {
			ipt, err := newIPT(b.path, b.proto)
			if err != nil {
				continue // that flavor is not usable here, so holds nothing of ours
			}
			if err := removeChain(ipt, chain); err != nil {
				return fmt.Errorf("%s: %w", b.path, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range []int{4, 6} {
		for _, tmp := range []bool{false, true} {
			name := cfg.setName(v, tmp)
			if err := h.IpsetDestroy(name); err != nil && !isNotThere(err) {
				return fmt.Errorf("ipset destroy %s: %w", name, err)
			}
		}
	}
	return nil
}

func removeChain(ipt *goipt.IPTables, chain string) error {
	exists, err := ipt.ChainExists("filter", chain)
	if err != nil {
		return fmt.Errorf("look up chain %s: %w", chain, err)
	}
	if !exists {
		// iptables refuses a jump to a missing chain, so none can remain.
		return nil
	}
	for _, hook := range knownHooks {
		exists, err := ipt.ChainExists("filter", hook)
		if err != nil {
			return fmt.Errorf("look up chain %s: %w", hook, err)
		}
		if !exists {
			continue
		}
		// DeleteIfExists removes one copy; remove every copy.
		for {
			ok, err := ipt.Exists("filter", hook, "-j", chain)
			if err != nil {
				return fmt.Errorf("look up jump in %s: %w", hook, err)
			}
			if !ok {
				break
			}
			if err := ipt.Delete("filter", hook, "-j", chain); err != nil {
				return fmt.Errorf("remove jump from %s: %w", hook, err)
			}
		}
	}
	if err := ipt.ClearAndDeleteChain("filter", chain); err != nil {
		return fmt.Errorf("delete chain %s: %w", chain, err)
	}
	return nil
}
