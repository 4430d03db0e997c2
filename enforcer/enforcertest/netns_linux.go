package enforcertest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root, and fails it instead
// under CI=true, where the privileged tests must run.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root: privileged netfilter test under CI=true")
	}
	t.Skip("needs root: creates network namespaces and firewall state")
}

var nsSeq atomic.Uint64

// NetNS creates a named network namespace for the test, with loopback up,
// and returns its path (/run/netns/NAME) and name. It is deleted when the
// test ends. The calling goroutine's namespace is not changed: the
// namespace is made on a locked thread that is restored before unlocking.
func NetNS(t testing.TB) (path, name string) {
	t.Helper()
	RequireRoot(t)
	name = fmt.Sprintf("portcullis-test-%d-%d", os.Getpid(), nsSeq.Add(1))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			runtime.UnlockOSThread()
			return
		}
		defer origin.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have switched before failing: restore.
			if serr := netns.Set(origin); serr != nil {
				errc <- fmt.Errorf("create netns %s: %w (and restore failed, thread left locked: %v)", name, err, serr)
				return
			}
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		ns.Close()
		if err := netns.Set(origin); err != nil {
			// Leave the thread locked: it dies with the goroutine.
			errc <- fmt.Errorf("restore netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return "/run/netns/" + name, name
}

// Run runs a command inside the named namespace and returns its output,
// failing the test when it fails.
func Run(t testing.TB, ns string, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in netns %s: %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}
