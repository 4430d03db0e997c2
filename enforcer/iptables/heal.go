package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
)

var _ enforcer.Healer = (*Enforcer)(nil)

// CheckInterval is how often Watch compares the kernel with what the
// backend installed. iptables and ipset send no events (iptables-legacy
// has none at all), so this is a poll: one iptables-save per family and one
// ipset test per set, a few milliseconds of CPU per round.
const CheckInterval = 250 * time.Millisecond

// Restore recreates the ipsets, the chain, its rules and the jumps, and
// loads entries into a twin set swapped in atomically, trusting nothing it
// remembers of the kernel.
func (e *Enforcer) Restore(ctx context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errors.New("iptables enforcer: restore after close")
	}
	e.synced = false
	for _, f := range e.fams {
		if err := e.createSet(f.live, f.v); err != nil {
			e.mu.Unlock()
			return err
		}
	}
	err := inNS(e.ns, e.installChains)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.Reconcile(ctx, entries)
}

// Watch polls every CheckInterval until ctx ends and reports a missing
// ipset ("set_removed"), a missing rule of our chain or the chain itself
// ("rule_removed") and a missing jump from a configured hook
// ("jump_removed"). It does not read set entries back (a million of them
// take seconds to list): an entry deleted by hand stays deleted until the
// next restore or Reconcile.
func (e *Enforcer) Watch(ctx context.Context, w enforcer.WatchHooks) error {
	t := time.NewTicker(CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cause, err := e.check()
		if err != nil {
			return err
		}
		if cause != "" {
			w.Drift(cause)
		}
	}
}

// check compares the kernel with what the backend installed; see Watch.
func (e *Enforcer) check() (string, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return "", nil
	}
	for _, f := range e.fams {
		probe := &netlink.IPSetEntry{IP: net.IPv4(192, 0, 2, 255).To4(), CIDR: 32, Replace: true}
		if f.v == 6 {
			probe = &netlink.IPSetEntry{IP: net.ParseIP("2001:db8::ffff"), CIDR: 128, Replace: true}
		}
		if _, err := e.h.IpsetTest(f.live, probe); err != nil {
			e.mu.Unlock()
			if errors.Is(err, unix.ENOENT) {
				return "set_removed", nil
			}
			return "", fmt.Errorf("ipset test %s: %w", f.live, err)
		}
	}
	fams := e.fams
	e.mu.Unlock()

	chain := e.cfg.chain()
	v4, v6 := e.cfg.binaries()
	for _, f := range fams {
		bin := v4
		if f.v == 6 {
			bin = v6
		}
		var out []byte
		err := inNS(e.ns, func() error {
			var err error
			out, err = exec.Command(bin+"-save", "-t", "filter").Output()
			return err
		})
		if err != nil {
			return "", fmt.Errorf("%s-save: %w", bin, err)
		}
		if cause := missing(out, chain, f.live, len(e.rules(f)), e.cfg.Hooks); cause != "" {
			return cause, nil
		}
	}
	return "", nil
}

// missing reads an iptables-save dump of the filter table and names what
// is missing of our chain: its rules matching set (want of them) and the
// jumps from hooks, each checked only where the hook chain exists
// (DOCKER-USER comes and goes with docker).
func missing(save []byte, chain, set string, want int, hooks []string) string {
	chains := map[string]bool{}
	jumps := map[string]bool{}
	rules := 0
	for _, l := range bytes.Split(save, []byte("\n")) {
		s := string(l)
		switch {
		case strings.HasPrefix(s, ":"):
			name, _, _ := strings.Cut(s[1:], " ")
			chains[name] = true
		case strings.HasPrefix(s, "-A "+chain+" ") && strings.Contains(s, "--match-set "+set+" src"):
			rules++
		case strings.HasPrefix(s, "-A ") && strings.HasSuffix(s, " -j "+chain):
			hook, _, _ := strings.Cut(s[3:], " ")
			jumps[hook] = true
		}
	}
	if !chains[chain] || rules < want {
		return "rule_removed"
	}
	for _, h := range hooks {
		if chains[h] && !jumps[h] {
			return "jump_removed"
		}
	}
	return ""
}
