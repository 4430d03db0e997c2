package iptables

import (
	"testing"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

func newInNS(t testing.TB, mod func(*Config)) (*Enforcer, Config, string) {
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
	testenv.RequireRoot(t)
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
			t.Cleanup(func() {
				// Closes e only after a failure midway: TestTraffic closes it.
				if err := e.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			enforcertest.TestTraffic(t, l, e, "ipset-v4", "ipset-v6")
		})
	}
}

func TestDeleteBeforeReconcile(t *testing.T) {
	path, _ := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	enforcertest.TestDeleteBeforeReconcile(t, func() (enforcer.Enforcer, error) { return New(cfg) })
}
