package iptables

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

func newInNS(t *testing.T, mod func(*Config)) (*Enforcer, Config, string) {
	t.Helper()
	path, name := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e, cfg, name
}

func TestConformance(t *testing.T) {
	enforcertest.RequireRoot(t)
	for _, flavor := range []string{"legacy", "nft"} {
		t.Run(flavor, func(t *testing.T) {
			enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
				e, _, _ := newInNS(t, func(c *Config) { c.Flavor = flavor })
				return e
			})
		})
	}
}

func TestTraffic(t *testing.T) {
	for _, v := range []struct {
		name string
		mod  func(*Config)
	}{
		{"legacy drop", func(c *Config) { c.Flavor = "legacy" }},
		{"nft drop", func(c *Config) { c.Flavor = "nft" }},
		{"nft reject with log", func(c *Config) { c.Flavor = "nft"; c.DenyAction = "reject"; c.Log.Enabled = true }},
	} {
		t.Run(v.name, func(t *testing.T) {
			l := enforcertest.NewLink(t)
			cfg := DefaultConfig()
			cfg.NetNS = l.HostPath
			v.mod(&cfg)
			e, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			enforcertest.TestTraffic(t, l, e, func() {
				c, err := e.Counters()
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range []string{"ipset-v4", "ipset-v6"} {
					if c.ByReason[k].Packets == 0 {
						t.Errorf("counter %s = %+v, want packets", k, c.ByReason[k])
					}
				}
			})
		})
	}
}

// TestDeleteBeforeReconcile: after a restart, a delete that arrives before
// the first Reconcile still removes what the previous run installed.
func TestDeleteBeforeReconcile(t *testing.T) {
	e, cfg, _ := newInNS(t, nil)
	ctx := context.Background()
	bans := []enforcer.Entry{
		{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Until: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("2001:db8::9/128"), Until: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Until: time.Now().Add(time.Hour)},
	}
	if err := e.Reconcile(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Apply(ctx, enforcer.Batch{Delete: []netip.Prefix{bans[0].Prefix, bans[1].Prefix, bans[2].Prefix, netip.MustParsePrefix("192.0.2.10/32")}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got, err := e2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("after deleting everything before Reconcile: %v", got)
	}
}
