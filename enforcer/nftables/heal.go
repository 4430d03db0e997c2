package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
)

var _ enforcer.Healer = (*Enforcer)(nil)

// monitorRcvBuf is the receive buffer forced on the monitor socket, so a
// burst of events (someone flushing a big set) fits while Watch reads.
const monitorRcvBuf = 16 << 20

// Restore recreates whatever of the table is missing (the table, its
// counters, sets, chains and rules) and loads entries into a fresh
// generation of sets, as the first Reconcile after New does. It trusts
// nothing it remembers of the kernel.
func (e *Enforcer) Restore(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("nftables enforcer: restore after close")
	}
	e.synced = false
	if err := e.install(); err != nil {
		return err
	}
	now := time.Now()
	addrs, ranges := desired(entries, now)
	return e.swap(ctx, addrs, ranges, now)
}

// Watch subscribes to the kernel's nftables events (NFNLGRP_NFTABLES) and
// reports every transaction of another process that deletes the table, a
// chain, rule, set or counter of ours, or a set element this backend holds.
// It has no polling: each event is seen as the kernel commits it. While
// the backend loads a new generation of sets itself (start, restore) the
// subscription is closed, sparing the kernel a notification per element,
// and reopened afterwards with a check of the table's structure, which
// covers that window. A lost event (socket overrun) ends Watch with an
// error, which the runner answers with a restore.
func (e *Enforcer) Watch(ctx context.Context, w enforcer.WatchHooks) error {
	pid := uint32(os.Getpid())
	for {
		mon, events, err := e.openMonitor()
		if err != nil {
			return err
		}
		// What happened while no monitor listened.
		if cause, err := e.checkStructure(); err != nil {
			_ = mon.Close()
			return err
		} else if cause != "" {
			w.Drift(cause)
		}
		closed := false
		for !closed {
			select {
			case <-ctx.Done():
				_ = mon.Close()
				for range events { //nolint:revive // drained so the monitor goroutine ends
				}
				return nil
			case gen, ok := <-events:
				if !ok {
					closed = true
					break
				}
				if gen.GeneratedBy != nil && gen.GeneratedBy.Type == nft.MonitorEventTypeOOB {
					_ = mon.Close()
					for range events { //nolint:revive // drained so the monitor goroutine ends
					}
					if gen.GeneratedBy.Error != nil && e.monitorPaused() {
						closed = true // our own pause closed the socket
						break
					}
					return fmt.Errorf("nftables monitor: %w", gen.GeneratedBy.Error)
				}
				if m, ok := genOf(gen); ok && m.ProcPID == pid {
					continue // our own transaction
				}
				if cause := e.foreignCause(gen.Changes); cause != "" {
					w.Drift(cause)
				}
			}
		}
		// The backend closed the monitor for a load of its own: wait for
		// the load to end (it holds the lock), then listen again.
		if err := e.waitLoaded(ctx); err != nil {
			return nil
		}
	}
}

func genOf(g *nft.MonitorEvents) (*nft.GenMsg, bool) {
	if g.GeneratedBy == nil {
		return nil, false
	}
	m, ok := g.GeneratedBy.Data.(*nft.GenMsg)
	return m, ok && m != nil
}

// openMonitor subscribes to nftables events on a socket of its own in the
// backend's namespace.
func (e *Enforcer) openMonitor() (*nft.Monitor, chan *nft.MonitorEvents, error) {
	opts := []nft.ConnOption{nft.WithSockOptions(forceRecvBuffer)}
	if e.nsFd >= 0 {
		opts = append(opts, nft.WithNetNSFd(e.nsFd))
	}
	c, err := nft.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("open nftables monitor socket: %w", err)
	}
	mon := nft.NewMonitor(nft.WithMonitorEventBuffer(256))
	events, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to nftables events: %w", err)
	}
	e.mu.Lock()
	e.monitor = mon
	e.paused = false
	e.mu.Unlock()
	return mon, events, nil
}

func forceRecvBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink raw conn: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, monitorRcvBuf)
	}); err != nil {
		return fmt.Errorf("netlink socket control: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set SO_RCVBUFFORCE: %w", serr)
	}
	return nil
}

// pauseMonitor closes the event subscription before a load of our own;
// Watch reopens it once the lock is released. Called with e.mu held.
func (e *Enforcer) pauseMonitor() {
	if e.monitor != nil {
		e.paused = true
		_ = e.monitor.Close()
		e.monitor = nil
	}
}

func (e *Enforcer) monitorPaused() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.paused || e.monitor == nil
}

// waitLoaded returns once no load of ours holds the lock.
func (e *Enforcer) waitLoaded(ctx context.Context) error {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock() //nolint:staticcheck // taking the lock is the wait
	if closed {
		return errors.New("closed")
	}
	return ctx.Err()
}

// foreignCause returns the restore cause for a transaction of another
// process, or "" when it touched nothing of ours. A transaction that
// removes several things (nft flush ruleset deletes rules, chains, sets,
// then the table) is named by the biggest.
func (e *Enforcer) foreignCause(changes []*nft.MonitorEvent) string {
	ours := func(t *nft.Table) bool { return t != nil && t.Name == e.table.Name && t.Family == nft.TableFamilyINet }
	const (
		none = iota
		rule
		chain
		set
		table
	)
	worst := none
	var elems []nft.SetElement
	for _, ev := range changes {
		switch d := ev.Data.(type) {
		case *nft.Table:
			if ev.Type == nft.MonitorEventTypeDelTable && ours(d) {
				worst = max(worst, table)
			}
		case *nft.Chain:
			if ev.Type == nft.MonitorEventTypeDelChain && ours(d.Table) {
				worst = max(worst, chain)
			}
		case *nft.Rule:
			if ev.Type == nft.MonitorEventTypeDelRule && ours(d.Table) {
				worst = max(worst, rule)
			}
		case *nft.Set:
			if ev.Type == nft.MonitorEventTypeDelSet && ours(d.Table) {
				worst = max(worst, set)
			}
		case []nft.SetElement:
			if ev.Type == nft.MonitorEventTypeDelSetElem {
				elems = append(elems, d...)
			}
		}
	}
	switch worst {
	case table:
		return "table_removed"
	case set:
		return "set_removed"
	case chain:
		return "chain_removed"
	case rule:
		return "rule_removed"
	}
	if len(elems) > 0 && e.holdsAny(elems) {
		return "element_removed"
	}
	return ""
}

// holdsAny reports whether one of the deleted elements is a live ban of
// ours (an address, or the start of a range piece). The event does not
// name the set, so an element deleted from someone else's set with the
// same key also matches; the restore that follows is then merely spare.
func (e *Enforcer) holdsAny(elems []nft.SetElement) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	for _, el := range elems {
		a, ok := netip.AddrFromSlice(el.Key)
		if !ok || el.IntervalEnd {
			continue
		}
		for k := range numKinds {
			if isRange(k) {
				for p, until := range e.pieces[k] {
					if p.lo == a && !gone(until, now) {
						return true
					}
				}
				continue
			}
			if until, ok := e.addrs[k][a]; ok && !gone(until, now) {
				return true
			}
		}
	}
	return false
}

// checkStructure compares the table with what the backend installed: the
// table, its current sets and every chain with its rules looking them up.
// It reads no set element, so it stays cheap with a million bans.
func (e *Enforcer) checkStructure() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", nil
	}
	if _, err := e.conn.ListTableOfFamily(e.table.Name, e.table.Family); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return "table_removed", nil
		}
		return "", fmt.Errorf("look up table %s: %w", e.table.Name, err)
	}
	sets, err := e.conn.GetSets(e.table)
	if err != nil {
		return "", fmt.Errorf("list sets of table %s: %w", e.table.Name, err)
	}
	for k := range numKinds {
		if !slices.ContainsFunc(sets, func(s *nft.Set) bool { return s.Name == e.sets[k].Name }) {
			return "set_removed", nil
		}
	}
	perChain := numKinds
	if e.cfg.Log.Enabled {
		perChain *= 2
	}
	for _, s := range e.chainSpecs() {
		rules, err := e.conn.GetRules(e.table, &nft.Chain{Name: s.name, Table: e.table})
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
				return "chain_removed", nil
			}
			return "", fmt.Errorf("list rules of chain %s: %w", s.name, err)
		}
		n := 0
		for _, r := range rules {
			if slices.ContainsFunc(r.Exprs, func(x expr.Any) bool {
				l, ok := x.(*expr.Lookup)
				return ok && slices.ContainsFunc(e.sets[:], func(s *nft.Set) bool { return s.Name == l.SetName })
			}) {
				n++
			}
		}
		if n < perChain {
			return "rule_removed", nil
		}
	}
	return "", nil
}
