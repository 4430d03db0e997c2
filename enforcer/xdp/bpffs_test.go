//go:build linux

package xdp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSamePinDir(t *testing.T) {
	pin := t.TempDir()
	// Seen from "/", the directory is itself: the pins outlive us.
	if why, err := samePinDir(pin, "/"); err != nil || why != "" {
		t.Fatalf("samePinDir(%s, /) = %q, %v; want \"\", nil", pin, why, err)
	}
	// Another root where the path is missing: a private mount.
	other := t.TempDir()
	if why, err := samePinDir(pin, other); err != nil || !strings.Contains(why, "private mount namespace") {
		t.Fatalf("volatilePins with the path missing from root = %q, %v", why, err)
	}
	// Another root where the path is another directory.
	if err := os.MkdirAll(filepath.Join(other, pin), 0o700); err != nil {
		t.Fatal(err)
	}
	if why, err := samePinDir(pin, other); err != nil || !strings.Contains(why, "another") {
		t.Fatalf("volatilePins with another directory at the path = %q, %v", why, err)
	}
	if _, err := samePinDir(filepath.Join(pin, "missing"), "/"); err == nil {
		t.Fatal("volatilePins of a missing pin directory: no error")
	}
}

func TestVolatilePinsHere(t *testing.T) {
	// The test runs in the mount namespace it was started from.
	if why, err := volatilePins(t.TempDir()); err != nil || why != "" {
		t.Fatalf("volatilePins = %q, %v; want \"\", nil", why, err)
	}
	if p, err := parentOf(os.Getpid()); err != nil || p != os.Getppid() {
		t.Fatalf("parentOf(self) = %d, %v; want %d", p, err, os.Getppid())
	}
}
