//go:build linux

package xdp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/bpf"
	"github.com/portcullis-ips/portcullis/enforcer"
)

// Interface checks.
var (
	_ enforcer.Enforcer      = (*Enforcer)(nil)
	_ enforcer.CounterReader = (*Enforcer)(nil)
	_ enforcer.Lister        = (*Enforcer)(nil)
)

// Enforcer holds the loaded program, its maps and the interface links.
// Its methods are safe for concurrent use.
type Enforcer struct {
	mu      sync.Mutex
	cfg     Config
	objs    bpf.XdpObjects
	links   []link.Link
	attach  []Attachment
	reasons *reasonTable
	closed  bool
	// progID is the kernel's id of the loaded program, to recognise it on
	// an interface.
	progID uint32
	// volatile is why the pins will not outlive the process ("": they do).
	volatile string
}

// New validates cfg, mounts bpffs if needed, loads the program with its maps
// pinned under cfg.PinPath (re-using maps pinned by an earlier run) and
// attaches it to every interface in cfg.Interfaces through a pinned link.
// Links pinned by an earlier run for interfaces no longer configured are
// removed, which detaches them.
//
// New must run in the network namespace of the interfaces.
func New(cfg Config) (*Enforcer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("xdp config: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	if err := ensureBPFFS(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.PinPath, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	volatile, err := volatilePins(cfg.PinPath)
	if err != nil {
		return nil, err
	}
	if volatile != "" && !cfg.AllowVolatilePins {
		return nil, fmt.Errorf("pin_path %s: %s, so the program would detach when fw-bouncer stops; "+
			"run it in the host's mount namespace (nsenter --net=/run/netns/NAME rather than ip netns exec), "+
			"or set xdp.allow_volatile_pins to accept that", cfg.PinPath, volatile)
	}
	e, err := open(cfg, cfg.PinPath)
	if err != nil {
		return nil, err
	}
	e.volatile = volatile
	for _, name := range cfg.Interfaces {
		if err := e.attachTo(name); err != nil {
			return nil, errors.Join(fmt.Errorf("attach to %s: %w", name, err), e.Close())
		}
	}
	if err := detachUnlisted(cfg.PinPath, cfg.Interfaces); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return e, nil
}

// open loads the program and maps, pinned under pinPath when it is not empty.
// It attaches nothing.
func open(cfg Config, pinPath string) (*Enforcer, error) {
	if err := cfg.validateMaps(); err != nil {
		return nil, fmt.Errorf("xdp config: %w", err)
	}
	spec, err := bpf.LoadXdp()
	if err != nil {
		return nil, fmt.Errorf("load xdp spec: %w", err)
	}
	sizes := map[string]uint32{
		bpf.XdpMapPortcullisIp4:  cfg.MaxExactV4,
		bpf.XdpMapPortcullisIp6:  cfg.MaxExactV6,
		bpf.XdpMapPortcullisNet4: cfg.MaxRangesV4,
		bpf.XdpMapPortcullisNet6: cfg.MaxRangesV6,
		bpf.XdpMapPortcullisDrop: cfg.MaxReasons,
		bpf.XdpMapPortcullisRsn:  cfg.MaxReasons,
	}
	for name, ms := range spec.Maps {
		if n, ok := sizes[name]; ok {
			ms.MaxEntries = n
		}
		if !cfg.Prealloc && (name == bpf.XdpMapPortcullisIp4 || name == bpf.XdpMapPortcullisIp6) {
			ms.Flags |= unix.BPF_F_NO_PREALLOC
		}
		if pinPath != "" {
			ms.Pinning = ebpf.PinByName
		}
	}
	e := &Enforcer{cfg: cfg}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinPath}}
	if err := spec.LoadAndAssign(&e.objs, opts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load xdp objects: pinned maps in %s differ from this build or config (run cleanup to start afresh): %w", pinPath, err)
		}
		return nil, fmt.Errorf("load xdp objects: %w", err)
	}
	e.reasons, err = loadReasons(e.objs.PortcullisRsn, cfg.MaxReasons)
	if err != nil {
		return nil, errors.Join(err, e.objs.Close())
	}
	info, err := e.objs.PortcullisXdp.Info()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("xdp program info: %w", err), e.objs.Close())
	}
	id, ok := info.ID()
	if !ok {
		return nil, errors.Join(errors.New("xdp program info: kernel reports no program id"), e.objs.Close())
	}
	e.progID = uint32(id)
	return e, nil
}

// VolatilePins returns why the pins will not outlive the process, or ""
// when they do (the bans then stay enforced after the process ends).
func (e *Enforcer) VolatilePins() string { return e.volatile }

// Attachments reports how the program is attached to each interface.
func (e *Enforcer) Attachments() []Attachment {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Attachment(nil), e.attach...)
}

// Close releases the enforcer's file descriptors. It detaches nothing: the
// pinned link and maps keep enforcing. Calling Close twice is harmless.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	for _, l := range e.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link: %w", err))
		}
	}
	e.links = nil
	if err := e.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close xdp objects: %w", err))
	}
	return errors.Join(errs...)
}

// Apply adds and deletes bans. Deletes are applied before adds; adding a
// present prefix refreshes its expiry and reason, deleting an absent one is
// not an error, and an add whose Until has passed deletes the prefix.
func (e *Enforcer) Apply(ctx context.Context, b enforcer.Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("apply: %w", enforcer.ErrClosed)
	}
	clk, err := readClock()
	if err != nil {
		return err
	}
	var w writes
	for i, p := range b.Delete {
		np, err := enforcer.Canonical(p)
		if err != nil {
			return fmt.Errorf("apply: delete %d: %w", i, err)
		}
		w.del(np)
	}
	if err := e.planAdds(b.Add, clk, &w); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	err = e.write(ctx, &w)
	if errors.Is(err, ErrMapFull) {
		// Expired bans may hold the room: collect them and write again,
		// which is harmless for what was already written.
		n, gcErr := e.gc(ctx, clk)
		if gcErr != nil {
			return fmt.Errorf("apply: %w", errors.Join(err, gcErr))
		}
		if n > 0 {
			err = e.write(ctx, &w)
		}
	}
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

// planAdds validates entries and queues them (or, when expired, their
// deletion) into w. It allocates reason ids as needed.
func (e *Enforcer) planAdds(entries []enforcer.Entry, clk clock, w *writes) error {
	w.presize(entries)
	// Bulk loads repeat one reason many times; remembering the last one
	// saves hashing both strings per entry.
	var (
		last   reasonName
		lastID uint32
		known  bool
	)
	for i := range entries {
		en := &entries[i]
		p, err := enforcer.Canonical(en.Prefix)
		if err != nil {
			return fmt.Errorf("add %d: %w", i, err)
		}
		if en.Until.IsZero() {
			return fmt.Errorf("add %d (%s): no expiry", i, p)
		}
		if !en.Until.After(clk.wall) {
			w.del(p)
			continue
		}
		if !known || en.Reason != last.reason || en.Origin != last.origin {
			id, err := e.reasons.id(en.Reason, en.Origin)
			if err != nil {
				return fmt.Errorf("add %d (%s): %w", i, p, err)
			}
			last, lastID, known = reasonName{en.Reason, en.Origin}, id, true
		}
		w.add(p, bpf.XdpBan{Expires: clk.toBoot(en.Until), Reason: lastID})
	}
	w.finish()
	return nil
}
