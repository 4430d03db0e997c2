package nftables

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// loaderEnv makes the test binary a loader child for TestKillMidLoad.
const loaderEnv = "PORTCULLIS_NFT_LOADER_NETNS"

func TestMain(m *testing.M) { enforcertest.Main(m, loaderEnv, runLoader) }

// runLoader starts loading a big snapshot in small transactions and kills
// itself with SIGKILL once the new generation's IPv4 set holds a thousand
// elements: a crash in the middle of a start-up reconcile.
func runLoader(ns string) int {
	cfg := DefaultConfig()
	cfg.NetNS = ns
	cfg.ChunkSize = 100
	e, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	probe, fd, err := dial(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = unix.Close(fd) }()
	big := enforcertest.LoaderSnapshot(time.Now().Add(time.Hour))
	next := e.newSet(kindAddr4, e.gen+1)
	go func() {
		for {
			if els, err := probe.GetSetElements(next); err == nil && len(els) >= 1000 {
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
	path, ns := enforcertest.NetNS(t)
	enforcertest.Run(t, ns, "ip", "link", "add", "pc0", "type", "veth", "peer", "name", "pc1")
	enforcertest.Run(t, ns, "ip", "link", "set", "pc0", "up")
	cfg := DefaultConfig()
	cfg.NetNS = path
	cfg.Forward = true
	cfg.Ingress = []string{"pc0"}
	cfg.DenyAction = "reject"
	cfg.Log.Enabled = true
	open := func() (enforcer.Enforcer, error) { return New(cfg) }
	cleanup := func() error { return Cleanup(cfg) }
	enforcertest.TestForeignState(t, ns, open, cleanup, func(restarted bool) {
		t.Helper()
		if !restarted {
			own := enforcertest.Run(t, ns, "nft", "list", "table", "inet", "portcullis")
			for _, want := range []string{
				"hook input priority -200", "hook forward priority -200", `hook ingress device "pc0" priority -500`,
				"reject with icmpx admin-prohibited", `log prefix "portcullis drop: "`, "limit rate 10/second burst 20 packets",
				"gc-interval 1h",
			} {
				if !strings.Contains(own, want) {
					t.Errorf("own table lacks %q:\n%s", want, own)
				}
			}
			return
		}
		// The same table is adopted, nothing is duplicated.
		input := enforcertest.Run(t, ns, "nft", "list", "chain", "inet", "portcullis", "input")
		if r, l := strings.Count(input, "reject with"), strings.Count(input, "log prefix"); r != numKinds || l != numKinds {
			t.Errorf("input chain has %d reject and %d log rules after restart, want %d of each:\n%s", r, l, numKinds, input)
		}
	})
}

func TestKillMidLoad(t *testing.T) {
	path, ns := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	enforcertest.TestKillMidLoad(t, loaderEnv, path,
		func() (enforcer.Enforcer, error) { return New(cfg) },
		func() int {
			return strings.Count(enforcertest.Run(t, ns, "nft", "list", "set", "inet", "portcullis", "addr4-3"), "expires")
		},
		func() {
			// Only the four live sets are left: the killed run's sets are gone.
			names := enforcertest.Run(t, ns, "nft", "-t", "list", "sets", "inet")
			if n := strings.Count(names, "\tset "); n != numKinds {
				t.Fatalf("%d sets left after restart, want %d:\n%s", n, numKinds, names)
			}
		})
}
