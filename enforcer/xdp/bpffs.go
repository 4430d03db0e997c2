//go:build linux

package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// volatilePins reports why pins under pinPath will not outlive the
// process, or "" when they will. Under `ip netns exec` the process gets a
// private mount namespace with a fresh /sys; a bpffs mounted there (by
// ensureBPFFS) goes away, with every pin and link in it, when the process
// ends. So it walks up the process's ancestors to the first one in another
// mount namespace (the one the process was started from) and requires the
// pin directory to be the very same there. When every ancestor it may
// inspect shares the process's mount namespace (PID 1's is often not
// readable in a container or sandbox), that namespace outlives the process.
func volatilePins(pinPath string) (string, error) {
	self, err := mountNS("self")
	if err != nil {
		return "", err
	}
	pid := os.Getppid()
	for pid > 0 {
		ns, err := mountNS(strconv.Itoa(pid))
		if err != nil {
			return "", nil // cannot see further up
		}
		if ns != self {
			return samePinDir(pinPath, fmt.Sprintf("/proc/%d/root", pid))
		}
		if pid == 1 {
			break
		}
		if pid, err = parentOf(pid); err != nil {
			return "", nil
		}
	}
	return "", nil
}

// mountNS returns the inode of a process's mount namespace.
func mountNS(pid string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/mnt", &st); err != nil {
		return 0, fmt.Errorf("mount namespace of process %s: %w", pid, err)
	}
	return st.Ino, nil
}

// parentOf reads a process's parent from /proc/PID/stat.
func parentOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: fields start
	// after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("read process %d: malformed stat", pid)
	}
	return strconv.Atoi(f[1])
}

// samePinDir reports why pinPath is not the very same directory (device
// and inode) when looked up from root, the root of another mount
// namespace, or "" when it is.
func samePinDir(pinPath, root string) (string, error) {
	var ours, host unix.Stat_t
	if err := unix.Stat(pinPath, &ours); err != nil {
		return "", fmt.Errorf("stat pin directory: %w", err)
	}
	err := unix.Stat(filepath.Join(root, pinPath), &host)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "it is on a bpffs of a private mount namespace (as ip netns exec makes), absent from the namespace fw-bouncer was started from", nil
	case errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission):
		return "", fmt.Errorf("compare pin directory with %s: %w", root, err)
	case err != nil:
		return "", fmt.Errorf("stat pin directory under %s: %w", root, err)
	}
	if ours.Dev != host.Dev || ours.Ino != host.Ino {
		return "it is on another bpffs than the namespace fw-bouncer was started from sees there (a private mount namespace, as ip netns exec makes)", nil
	}
	return "", nil
}
