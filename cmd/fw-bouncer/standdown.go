package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// markerDir holds the cleanup markers. /run is a tmpfs: a marker never
// outlives a reboot.
var markerDir = "/run/portcullis"

// cleanupMarker is the file `fw-bouncer cleanup` creates before it removes
// a mode's state, so that a daemon still running in the same network
// namespace takes the removal as deliberate: it stops instead of restoring
// what cleanup removed. A daemon removes the marker when it starts.
func cleanupMarker(mode string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("network namespace of the process: %w", err)
	}
	return filepath.Join(markerDir, fmt.Sprintf("cleanup-%s-netns%d", mode, st.Ino)), nil
}

// markCleanup creates the mode's cleanup marker.
func markCleanup(mode string) error {
	path, err := cleanupMarker(mode)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(markerDir, 0o700); err != nil {
		return fmt.Errorf("cleanup marker: %w", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return fmt.Errorf("cleanup marker: %w", err)
	}
	return nil
}

// cleanupMarked reports whether cleanup ran since the daemon started.
func cleanupMarked(mode string) bool {
	path, err := cleanupMarker(mode)
	if err != nil {
		return false
	}
	_, err = os.Stat(path)
	return err == nil
}

// clearCleanupMark removes the mode's marker: a daemon that starts means
// to enforce.
func clearCleanupMark(mode string) error {
	path, err := cleanupMarker(mode)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cleanup marker: %w", err)
	}
	return nil
}
