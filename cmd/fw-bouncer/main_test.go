package main

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

// TestMain lets a test run this binary's main in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("FW_BOUNCER_TEST_MAIN") == "1" {
		os.Args = append([]string{"fw-bouncer"}, strings.Fields(os.Getenv("FW_BOUNCER_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// logLines collects a child's stderr and lets a test wait for a line.
type logLines struct {
	lines chan string
	all   strings.Builder
}

func (l *logLines) waitFor(t *testing.T, substrs ...string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatalf("log ended before a line with %q:\n%s", substrs, l.all.String())
			}
			l.all.WriteString(line + "\n")
			match := true
			for _, s := range substrs {
				match = match && strings.Contains(line, s)
			}
			if match {
				return line
			}
		case <-deadline:
			t.Fatalf("no log line with %q in time:\n%s", substrs, l.all.String())
		}
	}
}

func TestDryRunLogsAndTouchesNothing(t *testing.T) {
	brokers, topic, pub := bouncertest.Feed(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	ban := func(p string, dur time.Duration) decisionfeed.Decision {
		return decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), dur, "cli", now)
	}
	fromList := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.50/32"), time.Hour, "blocklist", now)
	loop := ban("127.0.0.1/32", time.Hour)
	if err := pub.Publish(ctx, ban("192.0.2.7/32", time.Hour), ban("198.51.100.0/24", time.Hour), fromList, loop); err != nil {
		t.Fatal(err)
	}

	// The interface does not exist: a dry run that tried to attach would
	// fail at start.
	args := "--dry-run --mode xdp --iface portcullis-none --xdp-mode generic --log-level debug --whitelist 198.51.100.9 --origins engine,cli" +
		" --brokers " + strings.Join(brokers, ",") + " --topic " + topic
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FW_BOUNCER_TEST_MAIN=1", "FW_BOUNCER_TEST_ARGS="+args)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	l := &logLines{lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()

	// The brokers, as resolved, are protected like the host's addresses.
	l.waitFor(t, "fw-bouncer started", `protected_dependencies="`+brokers[0]+"=")
	l.waitFor(t, "dry run: would reconcile", "bans=1")
	// The refusals come before, in the feed's order; the blocklist's ban is
	// outside --origins and only counted.
	for _, want := range []string{`key=range:198.51.100.0/24@cli prefix=198.51.100.0/24 reason=whitelist`, `key=ip:127.0.0.1@cli prefix=127.0.0.1/32 reason=loopback`} {
		if !strings.Contains(l.all.String(), want) {
			t.Fatalf("no refusal log with %q:\n%s", want, l.all.String())
		}
	}
	l.waitFor(t, "dry run: would hold", "prefix=192.0.2.7/32", "reason=cli", "origin=cli")
	l.waitFor(t, "reconciled to the feed's snapshot", "live=3", "bans=1")

	del := decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.7/32"), 0, "cli", time.Now())
	if err := pub.Publish(ctx, ban("2001:db8:7::/64", time.Hour), del); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, "dry run: would add", "prefix=2001:db8:7::/64")
	l.waitFor(t, "dry run: would delete", "prefix=192.0.2.7/32")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, "fw-bouncer stopped", "bans=1")
	for range l.lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fw-bouncer exited with %v after SIGTERM", err)
	}
}
