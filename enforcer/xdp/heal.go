//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/portcullis-ips/portcullis/bpf"
	"github.com/portcullis-ips/portcullis/enforcer"
)

var _ enforcer.Healer = (*Enforcer)(nil)

// LinkCheckInterval is how often Watch checks each interface's attachment
// besides the link events it subscribes to (detaching a bpf_link sends no
// event).
const LinkCheckInterval = 250 * time.Millisecond

// mapCheckShare bounds the CPU the map count takes: the next count comes
// no sooner than this many times the last one's duration (and no sooner
// than LinkCheckInterval), so about 5% of a core at most.
const mapCheckShare = 20

// Restore re-attaches the program where it is no longer attached (a
// detached link, an interface deleted and created again) and makes the
// maps hold exactly entries.
func (e *Enforcer) Restore(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return enforcer.ErrClosed
	}
	for i, name := range e.cfg.Interfaces {
		if cause, err := e.linkCause(name); err != nil {
			e.mu.Unlock()
			return err
		} else if cause == "" {
			continue
		}
		if err := e.reattach(i, name); err != nil {
			e.mu.Unlock()
			return fmt.Errorf("re-attach to %s: %w", name, err)
		}
	}
	e.mu.Unlock()
	return e.Reconcile(ctx, entries)
}

// reattach replaces the attachment of interface i. Called with e.mu held.
func (e *Enforcer) reattach(i int, name string) error {
	pin := filepath.Join(e.cfg.PinPath, linkPrefix+name)
	if err := removeLinkPin(pin); err != nil {
		// A link whose interface is gone may refuse to detach; unpinning
		// drops it all the same.
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return errors.Join(err, rerr)
		}
	}
	if i < len(e.links) && e.links[i] != nil {
		_ = e.links[i].Close()
	}
	ifc, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface: %w", err)
	}
	a := Attachment{Interface: name}
	l, err := e.attachNew(ifc.Attrs().Index, &a)
	if err != nil {
		return err
	}
	if err := l.Pin(pin); err != nil {
		return errors.Join(fmt.Errorf("pin link to %s: %w", pin, err), l.Close())
	}
	if i < len(e.links) {
		e.links[i], e.attach[i] = l, a
	}
	return nil
}

// linkCause checks the attachment on one interface: "" when our program is
// attached, "link_detached" when another or none is, "interface_missing"
// when there is no such interface. Called with e.mu held.
func (e *Enforcer) linkCause(name string) (string, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "interface_missing", nil
		}
		return "", fmt.Errorf("read interface %s: %w", name, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId != e.progID {
		return "link_detached", nil
	}
	return "", nil
}

// Watch reports, until ctx ends: the program missing from an interface
// ("link_detached", from link events and a check every
// LinkCheckInterval), and a ban missing from the maps ("entry_removed"):
// the maps send no events, so the live entries are counted against the
// runner's count, as often as mapCheckShare allows (every 250 ms for
// thousands of bans, every few seconds for a million). An interface that
// is gone is reported when it comes back.
func (e *Enforcer) Watch(ctx context.Context, w enforcer.WatchHooks) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{}); err != nil {
		return fmt.Errorf("subscribe to link events: %w", err)
	}
	tick := time.NewTicker(LinkCheckInterval)
	defer tick.Stop()
	nextCount := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-updates:
			if !ok {
				return errors.New("link event subscription ended")
			}
		case <-tick.C:
		}
		if cause, err := e.checkLinks(); err != nil {
			return err
		} else if cause != "" {
			w.Drift(cause)
			continue
		}
		if w.Expect == nil || time.Now().Before(nextCount) {
			continue
		}
		start := time.Now()
		var short bool
		err := w.Expect(func(live int, at time.Time) error {
			n, err := e.countLive(at)
			short = n < live
			return err
		})
		if err != nil {
			return err
		}
		nextCount = time.Now().Add(max(LinkCheckInterval, mapCheckShare*time.Since(start)))
		if short {
			w.Drift("entry_removed")
		}
	}
}

func (e *Enforcer) checkLinks() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", nil
	}
	for _, name := range e.cfg.Interfaces {
		cause, err := e.linkCause(name)
		if err != nil {
			return "", err
		}
		switch cause {
		case "interface_missing":
			// Nothing to attach to until it comes back.
		case "":
		default:
			return cause, nil
		}
	}
	return "", nil
}

// countLive counts the bans in the four maps still in force at the given
// wall-clock time.
func (e *Enforcer) countLive(at time.Time) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, enforcer.ErrClosed
	}
	clk, err := readClock()
	if err != nil {
		return 0, err
	}
	limit := clk.toBoot(at)
	m := &e.objs.XdpMaps
	total := 0
	for _, c := range []func() (int, error){
		func() (int, error) { return countTable[[4]byte](m.PortcullisIp4, "portcullis_ip4", limit) },
		func() (int, error) { return countTable[[16]byte](m.PortcullisIp6, "portcullis_ip6", limit) },
		func() (int, error) { return countTable[bpf.XdpLpmKey4](m.PortcullisNet4, "portcullis_net4", limit) },
		func() (int, error) { return countTable[bpf.XdpLpmKey6](m.PortcullisNet6, "portcullis_net6", limit) },
	} {
		n, err := c()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// countTable counts the entries of m expiring after limit, reading it in
// batches without keeping it.
func countTable[K comparable](m *ebpf.Map, name string, limit uint64) (int, error) {
	keys := make([]K, 4096)
	vals := make([]bpf.XdpBan, len(keys))
	var cursor ebpf.MapBatchCursor
	n := 0
	for {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range got {
			if vals[i].Expires > limit {
				n++
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return n, nil
		case errors.Is(err, ebpf.ErrNotSupported):
			all, err := iterate[K](m, name)
			if err != nil {
				return 0, err
			}
			n = 0
			for _, v := range all {
				if v.Expires > limit {
					n++
				}
			}
			return n, nil
		case err != nil:
			return 0, fmt.Errorf("read %s: %w", name, err)
		}
	}
}
