//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/bpf"
	"github.com/portcullis-ips/portcullis/enforcer"
)

// ErrMapFull is returned (wrapped) when a ban map has no room left.
var ErrMapFull = errors.New("ban map full")

const (
	// batchSize bounds the elements of one batch syscall.
	batchSize = 1 << 14
	// expiryTolerance is how far a stored expiry may be from the wanted one
	// before Reconcile rewrites it. Converting wall time to boot time twice
	// gives results a few microseconds apart; rewriting a million entries
	// for that would make every reconcile a full reload.
	expiryTolerance = 10 * time.Millisecond
)

// tableWrites is what is to be written to one ban map, in order: dels
// first, then keys and vals, where a later element overrides an earlier one
// of the same key, as the kernel applies a batch.
type tableWrites[K comparable] struct {
	keys []K
	vals []bpf.XdpBan
	dels []K
	// delAfter records, for a key deleted after adds were queued, how many
	// adds preceded the delete; finish drops those earlier adds.
	delAfter map[K]int
}

func (t *tableWrites[K]) add(k K, v bpf.XdpBan) {
	t.keys = append(t.keys, k)
	t.vals = append(t.vals, v)
}

func (t *tableWrites[K]) del(k K) {
	t.dels = append(t.dels, k)
	if len(t.keys) > 0 {
		if t.delAfter == nil {
			t.delAfter = make(map[K]int)
		}
		t.delAfter[k] = len(t.keys)
	}
}

// finish drops the adds that a later delete cancelled.
func (t *tableWrites[K]) finish() {
	if t.delAfter == nil {
		return
	}
	n := 0
	for i, k := range t.keys {
		if at, ok := t.delAfter[k]; ok && i < at {
			continue
		}
		t.keys[n], t.vals[n] = k, t.vals[i]
		n++
	}
	t.keys, t.vals = t.keys[:n], t.vals[:n]
	t.delAfter = nil
}

// writes is what is to be written to the four ban maps.
type writes struct {
	ip4  tableWrites[[4]byte]
	ip6  tableWrites[[16]byte]
	net4 tableWrites[bpf.XdpLpmKey4]
	net6 tableWrites[bpf.XdpLpmKey6]
}

// presize reserves room for entries, so that a bulk load does not spend
// its time growing slices. The counts are hints: invalid prefixes are
// rejected later.
func (w *writes) presize(entries []enforcer.Entry) {
	var ip4, ip6, net4, net6 int
	for i := range entries {
		p := entries[i].Prefix
		switch v4 := p.Addr().Unmap().Is4(); {
		case v4 && p.IsSingleIP():
			ip4++
		case v4:
			net4++
		case p.IsSingleIP():
			ip6++
		default:
			net6++
		}
	}
	presize(&w.ip4, ip4)
	presize(&w.ip6, ip6)
	presize(&w.net4, net4)
	presize(&w.net6, net6)
}

func presize[K comparable](t *tableWrites[K], n int) {
	t.keys = slices.Grow(t.keys, n)
	t.vals = slices.Grow(t.vals, n)
}

func (w *writes) finish() {
	w.ip4.finish()
	w.ip6.finish()
	w.net4.finish()
	w.net6.finish()
}

func (w *writes) add(p netip.Prefix, v bpf.XdpBan) {
	a := p.Addr()
	switch {
	case a.Is4() && p.IsSingleIP():
		w.ip4.add(a.As4(), v)
	case a.Is4():
		w.net4.add(lpmKey4(p), v)
	case p.IsSingleIP():
		w.ip6.add(a.As16(), v)
	default:
		w.net6.add(lpmKey6(p), v)
	}
}

func (w *writes) del(p netip.Prefix) {
	a := p.Addr()
	switch {
	case a.Is4() && p.IsSingleIP():
		w.ip4.del(a.As4())
	case a.Is4():
		w.net4.del(lpmKey4(p))
	case p.IsSingleIP():
		w.ip6.del(a.As16())
	default:
		w.net6.del(lpmKey6(p))
	}
}

func lpmKey4(p netip.Prefix) bpf.XdpLpmKey4 {
	return bpf.XdpLpmKey4{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func lpmKey6(p netip.Prefix) bpf.XdpLpmKey6 {
	return bpf.XdpLpmKey6{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

// write applies w: per map, deletes first, then adds. The range tries'
// presence flags are raised before ranges are added and lowered only after
// a trie is found empty, so a range is never in a trie the program skips.
func (e *Enforcer) write(ctx context.Context, w *writes) error {
	m := &e.objs.XdpMaps
	if err := e.raiseRangeFlags(len(w.net4.keys) > 0, len(w.net6.keys) > 0); err != nil {
		return err
	}
	if err := writeTable(ctx, m.PortcullisIp4, "portcullis_ip4", &w.ip4); err != nil {
		return err
	}
	if err := writeTable(ctx, m.PortcullisIp6, "portcullis_ip6", &w.ip6); err != nil {
		return err
	}
	if err := writeTable(ctx, m.PortcullisNet4, "portcullis_net4", &w.net4); err != nil {
		return err
	}
	if err := writeTable(ctx, m.PortcullisNet6, "portcullis_net6", &w.net6); err != nil {
		return err
	}
	return e.lowerRangeFlags()
}

func writeTable[K comparable](ctx context.Context, m *ebpf.Map, name string, t *tableWrites[K]) error {
	if err := remove(ctx, m, name, t.dels); err != nil {
		return err
	}
	return update(ctx, m, name, t.keys, t.vals)
}

// update writes keys and values in batches, one element at a time on
// kernels without batch operations.
func update[K any](ctx context.Context, m *ebpf.Map, name string, keys []K, vals []bpf.XdpBan) error {
	for start := 0; start < len(keys); start += batchSize {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
		end := min(start+batchSize, len(keys))
		_, err := m.BatchUpdate(keys[start:end], vals[start:end], nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			err = nil
			for i := start; i < end && err == nil; i++ {
				err = m.Update(&keys[i], &vals[i], ebpf.UpdateAny)
			}
		}
		// A full hash map answers E2BIG, a full trie ENOSPC.
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("update %s: %w (%d entries)", name, ErrMapFull, m.MaxEntries())
		}
		if err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	return nil
}

// remove deletes keys in batches; absent keys are skipped.
func remove[K any](ctx context.Context, m *ebpf.Map, name string, keys []K) error {
	for len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("delete from %s: %w", name, err)
		}
		chunk := keys[:min(batchSize, len(keys))]
		n, err := m.BatchDelete(chunk, nil)
		switch {
		case err == nil:
			keys = keys[len(chunk):]
		case errors.Is(err, ebpf.ErrKeyNotExist):
			// The kernel stops at the first absent key and reports how
			// many it deleted before it; skip that key and go on.
			keys = keys[n+1:]
		case errors.Is(err, ebpf.ErrNotSupported):
			for i := range chunk {
				if err := m.Delete(&chunk[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("delete from %s: %w", name, err)
				}
			}
			keys = keys[len(chunk):]
		default:
			return fmt.Errorf("delete from %s: %w", name, err)
		}
	}
	return nil
}

// dump reads a whole ban map, in batches where the kernel can.
func dump[K comparable](m *ebpf.Map, name string) (map[K]bpf.XdpBan, error) {
	out := make(map[K]bpf.XdpBan)
	keys := make([]K, 4096)
	vals := make([]bpf.XdpBan, len(keys))
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out[keys[i]] = vals[i]
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return out, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			return iterate[K](m, name)
		case err != nil:
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
	}
}

func iterate[K comparable](m *ebpf.Map, name string) (map[K]bpf.XdpBan, error) {
	out := make(map[K]bpf.XdpBan)
	var k K
	var v bpf.XdpBan
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

// raiseRangeFlags marks the tries that are about to receive ranges.
func (e *Enforcer) raiseRangeFlags(v4, v6 bool) error {
	if !v4 && !v6 {
		return nil
	}
	var cfg bpf.XdpConfig
	if err := e.objs.PortcullisCfg.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read portcullis_cfg: %w", err)
	}
	want := cfg
	if v4 {
		want.RangesV4 = 1
	}
	if v6 {
		want.RangesV6 = 1
	}
	if want == cfg {
		return nil
	}
	if err := e.objs.PortcullisCfg.Update(uint32(0), &want, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write portcullis_cfg: %w", err)
	}
	return nil
}

// lowerRangeFlags clears the flag of each trie that is empty.
func (e *Enforcer) lowerRangeFlags() error {
	var cfg bpf.XdpConfig
	if err := e.objs.PortcullisCfg.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read portcullis_cfg: %w", err)
	}
	want := cfg
	for _, t := range []struct {
		m    *ebpf.Map
		flag *uint32
	}{{e.objs.PortcullisNet4, &want.RangesV4}, {e.objs.PortcullisNet6, &want.RangesV6}} {
		if *t.flag == 0 {
			continue
		}
		k, err := t.m.NextKeyBytes(nil)
		if err != nil {
			return fmt.Errorf("probe range trie: %w", err)
		}
		if k == nil {
			*t.flag = 0
		}
	}
	if want == cfg {
		return nil
	}
	if err := e.objs.PortcullisCfg.Update(uint32(0), &want, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write portcullis_cfg: %w", err)
	}
	return nil
}

// Reconcile makes the maps hold exactly entries (less those already
// expired): it reads each map, deletes what is not wanted and writes what
// is missing or differs in reason or expiry.
func (e *Enforcer) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("reconcile: %w", enforcer.ErrClosed)
	}
	clk, err := readClock()
	if err != nil {
		return err
	}
	var w writes
	if err := e.planAdds(entries, clk, &w); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	m := &e.objs.XdpMaps
	if err := e.raiseRangeFlags(len(w.net4.keys) > 0, len(w.net6.keys) > 0); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := reconcileTable(ctx, m.PortcullisIp4, "portcullis_ip4", &w.ip4); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := reconcileTable(ctx, m.PortcullisIp6, "portcullis_ip6", &w.ip6); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := reconcileTable(ctx, m.PortcullisNet4, "portcullis_net4", &w.net4); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := reconcileTable(ctx, m.PortcullisNet6, "portcullis_net6", &w.net6); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := e.lowerRangeFlags(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return nil
}

// reconcileTable makes m hold exactly the adds of t. It reads m once into a
// Go map and walks the wanted entries against it: what matches is left
// alone, what differs or is missing is written, and what is left over in the
// map is deleted. Starting from an empty map, this is one batched load.
func reconcileTable[K comparable](ctx context.Context, m *ebpf.Map, name string, t *tableWrites[K]) error {
	cur, err := dump[K](m, name)
	if err != nil {
		return err
	}
	if len(cur) == 0 {
		return update(ctx, m, name, t.keys, t.vals)
	}
	n := 0
	for i, k := range t.keys {
		c, ok := cur[k]
		if ok {
			// Seen: what remains in cur afterwards is unwanted. A later
			// duplicate of k no longer finds it and is written, so the
			// last one wins as with Apply.
			delete(cur, k)
			if sameBan(c, t.vals[i]) {
				continue
			}
		}
		t.keys[n], t.vals[n] = k, t.vals[i]
		n++
	}
	dels := make([]K, 0, len(cur))
	for k := range cur {
		dels = append(dels, k)
	}
	if err := remove(ctx, m, name, dels); err != nil {
		return err
	}
	return update(ctx, m, name, t.keys[:n], t.vals[:n])
}

func sameBan(a, b bpf.XdpBan) bool {
	d := int64(a.Expires - b.Expires)
	return a.Reason == b.Reason && d <= int64(expiryTolerance) && d >= -int64(expiryTolerance)
}

// GC deletes expired bans from the maps and returns how many it deleted.
// The program already ignores expired bans; GC only frees their room. Apply
// runs it by itself when a map is full, so calling it periodically only
// keeps memory and Apply latency down.
func (e *Enforcer) GC(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, fmt.Errorf("gc: %w", enforcer.ErrClosed)
	}
	clk, err := readClock()
	if err != nil {
		return 0, err
	}
	return e.gc(ctx, clk)
}

func (e *Enforcer) gc(ctx context.Context, clk clock) (int, error) {
	m := &e.objs.XdpMaps
	total := 0
	for _, f := range []func() (int, error){
		func() (int, error) { return gcTable[[4]byte](ctx, m.PortcullisIp4, "portcullis_ip4", clk) },
		func() (int, error) { return gcTable[[16]byte](ctx, m.PortcullisIp6, "portcullis_ip6", clk) },
		func() (int, error) { return gcTable[bpf.XdpLpmKey4](ctx, m.PortcullisNet4, "portcullis_net4", clk) },
		func() (int, error) { return gcTable[bpf.XdpLpmKey6](ctx, m.PortcullisNet6, "portcullis_net6", clk) },
	} {
		n, err := f()
		total += n
		if err != nil {
			return total, fmt.Errorf("gc: %w", err)
		}
	}
	if err := e.lowerRangeFlags(); err != nil {
		return total, fmt.Errorf("gc: %w", err)
	}
	return total, nil
}

func gcTable[K comparable](ctx context.Context, m *ebpf.Map, name string, clk clock) (int, error) {
	cur, err := dump[K](m, name)
	if err != nil {
		return 0, err
	}
	var dels []K
	for k, v := range cur {
		if !clk.live(v.Expires) {
			dels = append(dels, k)
		}
	}
	if err := remove(ctx, m, name, dels); err != nil {
		return 0, err
	}
	return len(dels), nil
}

// List returns the bans in force, read back from the maps. Reading a map of
// a million entries takes a fraction of a second; it is meant for tests,
// the operator CLI and small sets.
func (e *Enforcer) List(ctx context.Context) ([]enforcer.Entry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("list: %w", enforcer.ErrClosed)
	}
	clk, err := readClock()
	if err != nil {
		return nil, err
	}
	m := &e.objs.XdpMaps
	var out []enforcer.Entry
	emit := func(p netip.Prefix, v bpf.XdpBan) {
		if !clk.live(v.Expires) {
			return
		}
		r := e.reasons.name(v.Reason)
		out = append(out, enforcer.Entry{Prefix: p, Until: clk.toWall(v.Expires), Reason: r.reason, Origin: r.origin})
	}
	ip4, err := dump[[4]byte](m.PortcullisIp4, "portcullis_ip4")
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	for k, v := range ip4 {
		emit(netip.PrefixFrom(netip.AddrFrom4(k), 32), v)
	}
	ip6, err := dump[[16]byte](m.PortcullisIp6, "portcullis_ip6")
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	for k, v := range ip6 {
		emit(netip.PrefixFrom(netip.AddrFrom16(k), 128), v)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	net4, err := dump[bpf.XdpLpmKey4](m.PortcullisNet4, "portcullis_net4")
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	for k, v := range net4 {
		emit(netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)), v)
	}
	net6, err := dump[bpf.XdpLpmKey6](m.PortcullisNet6, "portcullis_net6")
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	for k, v := range net6 {
		emit(netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)), v)
	}
	return out, nil
}

// Counters returns the packets and bytes dropped per reason since the maps
// were created, summed over CPUs. Bans whose (reason, origin) pair found no
// free counter are reported under OverflowReason.
func (e *Enforcer) Counters() (enforcer.Counters, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return enforcer.Counters{}, fmt.Errorf("counters: %w", enforcer.ErrClosed)
	}
	out := enforcer.Counters{ByReason: make(map[string]enforcer.Count)}
	var perCPU []bpf.XdpDropCount
	for id := range e.reasons.len() {
		if err := e.objs.PortcullisDrop.Lookup(id, &perCPU); err != nil {
			return enforcer.Counters{}, fmt.Errorf("read portcullis_drop[%d]: %w", id, err)
		}
		var c enforcer.Count
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		name := e.reasons.name(id).reason
		if id == 0 {
			if c.Packets == 0 {
				continue
			}
			name = OverflowReason
		}
		sum := out.ByReason[name]
		sum.Packets += c.Packets
		sum.Bytes += c.Bytes
		out.ByReason[name] = sum
	}
	return out, nil
}

// clock pairs a wall-clock reading with a CLOCK_BOOTTIME one, to convert
// absolute expiries between the two.
type clock struct {
	wall time.Time
	boot int64
}

func readClock() (clock, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return clock{}, fmt.Errorf("read boot clock: %w", err)
	}
	return clock{wall: time.Now(), boot: ts.Nano()}, nil
}

// toBoot converts a wall-clock time after c.wall to boot-clock nanoseconds,
// saturating far in the future.
func (c clock) toBoot(t time.Time) uint64 {
	d := t.Sub(c.wall)
	if d > time.Duration(math.MaxInt64-c.boot) {
		return math.MaxInt64
	}
	return uint64(c.boot + int64(d))
}

// toWall converts boot-clock nanoseconds to wall-clock time.
func (c clock) toWall(ns uint64) time.Time {
	if ns > math.MaxInt64 {
		ns = math.MaxInt64
	}
	return c.wall.Add(time.Duration(int64(ns) - c.boot))
}

// live reports whether a ban expiring at ns is in force, as the program
// decides it.
func (c clock) live(ns uint64) bool { return ns > uint64(c.boot) }
