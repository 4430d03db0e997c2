package iptables

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// loaderEnv makes the test binary a loader child for TestKillMidLoad.
const loaderEnv = "PORTCULLIS_IPT_LOADER_NETNS"

func TestMain(m *testing.M) { enforcertest.Main(m, loaderEnv, runLoader) }

// runLoader starts loading a big snapshot and kills itself with SIGKILL
// once the loading twin set holds a thousand entries: a crash in the
// middle of a start-up reconcile.
func runLoader(ns string) int {
	cfg := DefaultConfig()
	cfg.NetNS = ns
	e, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, probe, err := handles(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	big := enforcertest.LoaderSnapshot(time.Now().Add(time.Hour))
	go func() {
		for {
			if r, err := probe.IpsetList(cfg.setName(4, true)); err == nil && len(r.Entries) >= 1000 {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if err := e.Reconcile(context.Background(), big); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

func TestForeignStateUntouched(t *testing.T) {
	for _, flavor := range []string{"legacy", "nft"} {
		t.Run(flavor, func(t *testing.T) {
			path, ns := enforcertest.NetNS(t)
			cfg := DefaultConfig()
			cfg.NetNS = path
			cfg.Flavor = flavor
			cfg.Hooks = []string{"INPUT", "FORWARD", "DOCKER-USER"}
			cfg.DenyAction = "reject"
			cfg.Log.Enabled = true
			open := func() (enforcer.Enforcer, error) { return New(cfg) }
			cleanup := func() error { return Cleanup(cfg) }
			enforcertest.TestForeignState(t, ns, open, cleanup, func(restarted bool) {
				t.Helper()
				own := enforcertest.Run(t, ns, "iptables-"+flavor+"-save")
				if !restarted {
					for _, want := range []string{
						"-A INPUT -j PORTCULLIS", "-A FORWARD -j PORTCULLIS", "-A DOCKER-USER -j PORTCULLIS",
						"--match-set portcullis-v4 src -j REJECT --reject-with icmp-admin-prohibited",
						`--match-set portcullis-v4 src -m limit --limit 10/sec --limit-burst 20 -j LOG --log-prefix "portcullis drop: "`,
					} {
						if !strings.Contains(own, want) {
							t.Errorf("iptables-%s-save lacks %q:\n%s", flavor, want, own)
						}
					}
					return
				}
				// Jumps are not duplicated, the chain is rebuilt once.
				for _, hook := range []string{"INPUT", "FORWARD", "DOCKER-USER"} {
					if n := strings.Count(own, "-A "+hook+" -j PORTCULLIS\n"); n != 1 {
						t.Errorf("%d jumps from %s after restart, want 1", n, hook)
					}
				}
				if n := strings.Count(own, "-A PORTCULLIS "); n != 2 {
					t.Errorf("%d rules in PORTCULLIS after restart, want 2 (log and reject)", n)
				}
			})
		})
	}
}

func TestKillMidLoad(t *testing.T) {
	path, ns := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	enforcertest.TestKillMidLoad(t, loaderEnv, path,
		func() (enforcer.Enforcer, error) { return New(cfg) },
		func() int {
			return strings.Count(enforcertest.Run(t, ns, "ipset", "list", cfg.setName(4, true)), "timeout") - 1
		},
		func() {
			// The loading twin is gone; only the live sets remain.
			if names := enforcertest.Run(t, ns, "ipset", "list", "-n"); names != "portcullis-v4\nportcullis-v6\n" {
				t.Fatalf("ipsets after restart: %q", names)
			}
		})
}
