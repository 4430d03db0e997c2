//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/bpf"
)

// Attachment describes the program's attachment to one interface.
type Attachment struct {
	// Interface is the interface name.
	Interface string
	// Mode is the mode in force: ModeNative or ModeGeneric.
	Mode Mode
	// Fallback is why native mode failed when ModeAuto fell back to
	// generic; nil otherwise. A daemon should log it as a warning.
	Fallback error
	// Reused is true when the link pinned by an earlier run was kept, so
	// enforcement never stopped.
	Reused bool
	// Replaced is true when that link ran another build of the program and
	// the program was swapped atomically.
	Replaced bool
}

// linkPrefix starts the name of each pinned link in the pin directory.
const linkPrefix = "link_"

// IFLA_XDP_ATTACHED values (uapi if_link.h).
const (
	xdpAttachedDriver  = 1
	xdpAttachedGeneric = 2
)

// attachTo attaches the program to the named interface, re-using a pinned
// link from an earlier run when it still points at that interface in the
// wanted mode.
func (e *Enforcer) attachTo(name string) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("find interface: %w", err)
	}
	pin := filepath.Join(e.cfg.PinPath, linkPrefix+name)
	a := Attachment{Interface: name}
	l, err := e.reusePinned(pin, ifc.Index, &a)
	if err != nil {
		return err
	}
	if l == nil {
		l, err = e.attachNew(ifc.Index, &a)
		if err != nil {
			return err
		}
		if err := l.Pin(pin); err != nil {
			// Closing the unpinned link detaches it again.
			return errors.Join(fmt.Errorf("pin link to %s: %w", pin, err), l.Close())
		}
	}
	e.links = append(e.links, l)
	e.attach = append(e.attach, a)
	return nil
}

// reusePinned returns the link pinned at pin if it is attached to ifindex in
// a mode the configuration accepts, with the program replaced when it is
// another build. It returns nil (having removed the pin, which detaches the
// old link) when the link must be made anew, and nil without error when there
// is no pin.
func (e *Enforcer) reusePinned(pin string, ifindex int, a *Attachment) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	keep, err := e.checkPinned(l, ifindex, a)
	if err != nil {
		// The pin still holds the link: closing our descriptor detaches
		// nothing.
		return nil, errors.Join(err, l.Close())
	}
	if !keep {
		if err := discard(l); err != nil {
			return nil, fmt.Errorf("stale link %s: %w", pin, err)
		}
		return nil, nil
	}
	a.Reused = true
	return l, nil
}

func (e *Enforcer) checkPinned(l link.Link, ifindex int, a *Attachment) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("pinned link info: %w", err)
	}
	xi := info.XDP()
	if xi == nil || int(xi.Ifindex) != ifindex {
		// The interface was deleted (and maybe re-created): the link is
		// defunct.
		return false, nil
	}
	mode, err := attachedMode(ifindex)
	if err != nil {
		return false, err
	}
	if mode == "" || (e.cfg.Mode != ModeAuto && mode != e.cfg.Mode) {
		return false, nil
	}
	a.Mode = mode
	same, err := sameProgram(info.Program, e.objs.PortcullisXdp)
	if err != nil {
		return false, err
	}
	if !same {
		if err := l.Update(e.objs.PortcullisXdp); err != nil {
			return false, fmt.Errorf("replace program in pinned link: %w", err)
		}
		a.Replaced = true
	}
	return true, nil
}

// attachedMode reads the mode of the XDP program attached to ifindex, or ""
// when none is.
func attachedMode(ifindex int) (Mode, error) {
	nl, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("read interface %d: %w", ifindex, err)
	}
	x := nl.Attrs().Xdp
	if x == nil || !x.Attached {
		return "", nil
	}
	switch x.AttachMode {
	case xdpAttachedDriver:
		return ModeNative, nil
	case xdpAttachedGeneric:
		return ModeGeneric, nil
	}
	return "", nil
}

// sameProgram reports whether the program with the given id has the same
// instructions (kernel tag) as prog.
func sameProgram(id ebpf.ProgramID, prog *ebpf.Program) (bool, error) {
	old, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false, fmt.Errorf("open program %d: %w", id, err)
	}
	oldInfo, err := old.Info()
	if cerr := old.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("program %d info: %w", id, err)
	}
	newInfo, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("program info: %w", err)
	}
	return oldInfo.Tag == newInfo.Tag, nil
}

func (e *Enforcer) attachNew(ifindex int, a *Attachment) (link.Link, error) {
	try := func(m Mode) (link.Link, error) {
		flags := link.XDPGenericMode
		if m == ModeNative {
			flags = link.XDPDriverMode
		}
		return link.AttachXDP(link.XDPOptions{Program: e.objs.PortcullisXdp, Interface: ifindex, Flags: flags})
	}
	switch e.cfg.Mode {
	case ModeNative, ModeGeneric:
		l, err := try(e.cfg.Mode)
		if err != nil {
			return nil, fmt.Errorf("attach xdp in %s mode: %w", e.cfg.Mode, err)
		}
		a.Mode = e.cfg.Mode
		return l, nil
	}
	l, nerr := try(ModeNative)
	if nerr == nil {
		a.Mode = ModeNative
		return l, nil
	}
	l, gerr := try(ModeGeneric)
	if gerr != nil {
		return nil, fmt.Errorf("attach xdp: native mode: %w; generic mode: %w", nerr, gerr)
	}
	a.Mode = ModeGeneric
	a.Fallback = nerr
	return l, nil
}

// discard detaches l, removes its pin and closes it. Dropping the last
// reference would detach it too, but the kernel does that from a work queue;
// detaching first makes the interface free for a new link at once.
func discard(l link.Link) error {
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return errors.Join(err, l.Close())
	}
	if err := l.Unpin(); err != nil {
		return errors.Join(fmt.Errorf("unpin link: %w", err), l.Close())
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("close link: %w", err)
	}
	return nil
}

// removeLinkPin detaches and unpins the link pinned at path.
func removeLinkPin(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned link %s: %w", path, err)
	}
	if err := discard(l); err != nil {
		return fmt.Errorf("remove link %s: %w", path, err)
	}
	return nil
}

// detachUnlisted removes the pinned links of interfaces not in ifaces.
func detachUnlisted(pinPath string, ifaces []string) error {
	ents, err := os.ReadDir(pinPath)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	listed := make(map[string]bool, len(ifaces))
	for _, n := range ifaces {
		listed[linkPrefix+n] = true
	}
	for _, ent := range ents {
		n := ent.Name()
		if strings.HasPrefix(n, linkPrefix) && !listed[n] {
			if err := removeLinkPin(filepath.Join(pinPath, n)); err != nil {
				return fmt.Errorf("detach unlisted interface: %w", err)
			}
		}
	}
	return nil
}

// ensureBPFFS mounts the BPF file system on /sys/fs/bpf unless it is there.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(BPFFSRoot, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", BPFFSRoot, err)
	}
	if err := unix.Mount("bpffs", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", BPFFSRoot, err)
	}
	return nil
}

// pinnedMaps are the names under which the maps are pinned.
var pinnedMaps = []string{
	bpf.XdpMapPortcullisIp4, bpf.XdpMapPortcullisIp6,
	bpf.XdpMapPortcullisNet4, bpf.XdpMapPortcullisNet6,
	bpf.XdpMapPortcullisCfg, bpf.XdpMapPortcullisDrop, bpf.XdpMapPortcullisRsn,
}

// Cleanup removes what New installed under pinPath: it detaches and unpins
// every link, then unpins the maps, which frees them once no enforcer has
// them open, then removes the directory. Files it did not create are left alone and
// reported. A missing directory is not an error.
func Cleanup(pinPath string) error {
	if err := ValidatePinPath(pinPath); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	ents, err := os.ReadDir(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	ours := make(map[string]bool, len(pinnedMaps))
	for _, n := range pinnedMaps {
		ours[n] = true
	}
	var foreign []string
	for _, ent := range ents {
		n := ent.Name()
		if !ours[n] && !strings.HasPrefix(n, linkPrefix) {
			foreign = append(foreign, n)
			continue
		}
		if strings.HasPrefix(n, linkPrefix) {
			if err := removeLinkPin(filepath.Join(pinPath, n)); err != nil {
				return fmt.Errorf("cleanup: %w", err)
			}
			continue
		}
		// A pin holds one reference; a map goes when no descriptor,
		// pin or program refers to it any more.
		if err := os.Remove(filepath.Join(pinPath, n)); err != nil {
			return fmt.Errorf("cleanup: unpin %s: %w", n, err)
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("cleanup: %s holds files portcullis did not create: %s", pinPath, strings.Join(foreign, ", "))
	}
	if err := os.Remove(pinPath); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}
