//go:build linux

// Package netns builds throw-away network topologies for privileged tests:
// named network namespaces joined by veth pairs, with IPv4 and IPv6
// documentation addresses, helpers to run code and commands inside a
// namespace, servers and probes (TCP connect, UDP echo, ICMP echo) with
// short timeouts, and teardown registered with t.Cleanup that runs even
// when a test fails or panics. Nothing is changed in the caller's own
// namespace.
//
// Code runs inside a namespace on a fresh goroutine locked to its OS thread
// (the pattern of cilium/ebpf's NetNS.Do); the thread is returned to the
// scheduler only when it was switched back successfully, otherwise it dies
// with the goroutine. Sockets keep the namespace they were created in, so a
// listener or connection made inside Do can be used from any goroutine
// afterwards; likewise a process started inside Do lives in the namespace.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
)

// RequireRoot skips the test when it does not run as root, or fails it
// when CI=true, where a missing privilege is a broken setup.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root: network namespaces, veth pairs and firewall changes (CI=true)")
	}
	t.Skip("needs root: network namespaces, veth pairs and firewall changes")
}

// RequireTool skips the test when a command it runs is not on PATH, or
// fails it when CI=true, where every tool the tests need is installed
// (scripts/deps.sh).
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs %s on PATH (CI=true; scripts/deps.sh installs it)", name)
		}
		t.Skipf("needs %s on PATH (scripts/deps.sh installs it)", name)
	}
}

// NS is a named network namespace created for one test.
type NS struct {
	// Name is the name under /run/netns, usable with `ip netns exec`.
	Name   string
	handle vns.NsHandle
}

var (
	nsSeq     atomic.Uint64
	staleOnce sync.Once
)

// RemoveStale deletes the namespaces that earlier test processes created
// and could not remove because they died (a test binary killed by its
// timeout runs no cleanup): those named pc-<role>-<pid>-<n> whose pid is
// no longer running. It touches no other namespace. New calls it once per
// process.
func RemoveStale() error {
	ents, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, e := range ents {
		pid, ok := stalePid(e.Name())
		if !ok || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		if err := vns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("delete stale netns %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// netnsDir is where named namespaces are bind-mounted.
const netnsDir = "/run/netns"

// stalePid returns the pid in a name of the form pc-<role>-<pid>-<n>.
func stalePid(name string) (int, bool) {
	f := strings.Split(name, "-")
	if len(f) != 4 || f[0] != "pc" {
		return 0, false
	}
	pid, err := strconv.Atoi(f[2])
	if err != nil || pid <= 0 {
		return 0, false
	}
	if _, err := strconv.Atoi(f[3]); err != nil {
		return 0, false
	}
	return pid, true
}

// New creates a namespace named "pc-<role>-<pid>-<n>" (role without "-")
// with its loopback up, and registers its removal with t.Cleanup. A
// process still running in it keeps the namespace alive until it exits, so
// a test must end the processes it started there.
func New(t testing.TB, role string) *NS {
	t.Helper()
	if role == "" || strings.Contains(role, "-") {
		t.Fatalf("netns: role %q must be non-empty and without \"-\"", role)
	}
	staleOnce.Do(func() {
		if err := RemoveStale(); err != nil {
			t.Logf("netns: %v", err)
		}
	})
	name := fmt.Sprintf("pc-%s-%d-%d", role, os.Getpid(), nsSeq.Add(1))
	var h vns.NsHandle
	err := onLockedThread(func() error {
		orig, err := vns.Get()
		if err != nil {
			return fmt.Errorf("get current netns: %w", err)
		}
		// A handle only read from: closing it cannot lose anything.
		defer func() { _ = orig.Close() }()
		h, err = vns.NewNamed(name)
		if serr := vns.Set(orig); serr != nil {
			return errors.Join(err, fmt.Errorf("restore netns: %w", serr), errThreadTainted)
		}
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("netns: %v", err)
	}
	n := &NS{Name: name, handle: h}
	t.Cleanup(func() {
		if err := n.handle.Close(); err != nil {
			t.Errorf("close netns %s: %v", name, err)
		}
		if err := vns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	nl := n.Netlink(t)
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("netns %s: set lo up: %v", name, err)
	}
	return n
}

// errThreadTainted marks a failure after which the OS thread may still be
// in another namespace; onLockedThread then keeps it locked so it exits.
var errThreadTainted = errors.New("thread left in a foreign namespace")

// onLockedThread runs fn on a fresh goroutine locked to its OS thread.
// The thread is unlocked afterwards unless fn reports errThreadTainted (or
// panics), in which case the runtime destroys it when the goroutine ends.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tainted := true
		defer func() {
			if !tainted {
				runtime.UnlockOSThread()
			}
			if p := recover(); p != nil {
				errc <- fmt.Errorf("panic in namespace: %v", p)
			}
		}()
		err := fn()
		tainted = errors.Is(err, errThreadTainted)
		errc <- err
	}()
	return <-errc
}

// Do runs fn with the calling thread inside n, then switches back.
func (n *NS) Do(fn func() error) error {
	return onLockedThread(func() error {
		orig, err := vns.Get()
		if err != nil {
			return fmt.Errorf("get current netns: %w", err)
		}
		// A handle only read from: closing it cannot lose anything.
		defer func() { _ = orig.Close() }()
		if err := vns.Set(n.handle); err != nil {
			return fmt.Errorf("enter netns %s: %w", n.Name, err)
		}
		ferr := fn()
		if err := vns.Set(orig); err != nil {
			return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.Name, err), errThreadTainted)
		}
		return ferr
	})
}

// Netlink returns a netlink handle bound to n, closed at cleanup.
func (n *NS) Netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Start starts cmd inside n: the child inherits the namespace of the
// thread that forks it. Unlike `ip netns exec`, the child keeps the
// caller's mount namespace, so /sys/fs/bpf pins are shared with the test.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Run runs a command inside n and returns its combined output; the error
// includes the output.
func (n *NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out []byte
	err := n.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
