// Package testenv is the one place tests check what they need from the
// machine (root, commands on PATH) and read the CPU time they used. A
// missing privilege or tool skips a test on a developer's machine and
// fails it under CI=true, where scripts/deps.sh installed everything and
// .ci/run runs as root: a skip there would pass off as coverage.
package testenv

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CI reports whether the tests run under CI=true.
func CI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips the test unless it runs as root, or fails it under
// CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if CI() {
		t.Fatal("needs root: network namespaces, firewall state or BPF programs (CI=true)")
	}
	t.Skip("needs root: network namespaces, firewall state or BPF programs")
}

// RequireTool skips the test when one of the commands is not on PATH, or
// fails it under CI=true.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		if CI() {
			t.Fatalf("needs %s on PATH (CI=true; scripts/deps.sh installs it)", name)
		}
		t.Skipf("needs %s on PATH (scripts/deps.sh installs it)", name)
	}
}

// ProcessCPU returns the user plus system CPU time the process has used:
// on a shared machine a better measure of a load's cost than wall time.
func ProcessCPU(t testing.TB) time.Duration {
	t.Helper()
	return rusage(t, unix.RUSAGE_SELF)
}

// ThreadCPU returns the CPU time the calling OS thread has used; the
// caller locks its goroutine to the thread.
func ThreadCPU(t testing.TB) time.Duration {
	t.Helper()
	return rusage(t, unix.RUSAGE_THREAD)
}

// MaxRSS returns the process's peak resident set size in bytes.
func MaxRSS(t testing.TB) int64 {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return ru.Maxrss * 1024
}

func rusage(t testing.TB, who int) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
