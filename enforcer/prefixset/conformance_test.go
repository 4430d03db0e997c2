package prefixset

import (
	"testing"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

func TestConformance(t *testing.T) {
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		s := New()
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
