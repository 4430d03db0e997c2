package xdp

import (
	"testing"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// TestConformance runs the shared backend suite on an enforcer attached to
// a veth in a namespace of its own with pinned, preallocated maps, as the
// daemon runs it.
func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		ns := newTestNS(t, "pcf0", "pcf1")
		cfg := testConfig(t)
		cfg.Interfaces = []string{"pcf0"}
		cfg.Mode = ModeGeneric
		var e *Enforcer
		if err := ns.do(func() (err error) { e, err = New(cfg); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			closeOK(t, e)
			cleanupOK(t, cfg.PinPath)
		})
		return e
	})
}

// TestConformanceGrowingMaps runs the suite on unpinned maps that are not
// preallocated.
func TestConformanceGrowingMaps(t *testing.T) {
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		cfg := testConfig(t)
		cfg.Prealloc = false
		return openUnpinned(t, cfg)
	})
}
