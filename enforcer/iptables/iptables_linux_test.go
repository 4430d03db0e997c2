package iptables

import (
	"testing"

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
