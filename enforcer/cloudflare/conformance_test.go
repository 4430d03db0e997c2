package cloudflare

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

// newTestEnforcer returns an Enforcer against a fresh fake account, with
// short delays so the suite's expiry checks fall within its tolerance.
func newTestEnforcer(t *testing.T) (*Enforcer, *cffake.Server) {
	t.Helper()
	fake := cffake.New(testToken, testAccount, testZone)
	t.Cleanup(fake.Close)
	e := NewEnforcer(newClient(t, testConfig(fake.URL, testZone)), EnforcerOptions{
		Debounce: 5 * time.Millisecond, RetryMin: 10 * time.Millisecond, ExpirySlack: 100 * time.Millisecond,
	})
	t.Cleanup(func() { _ = e.Close() })
	return e, fake
}

// TestConformance runs the shared suite in lists mode: the Lister reports
// every entry whose list item Cloudflare holds, so IPv6 hosts widened to
// their /64 are found, and expiry is the sync the Enforcer runs just after it.
func TestConformance(t *testing.T) {
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		e, _ := newTestEnforcer(t)
		return e
	})
}

// TestEnforcerApplyIsDebounced: a burst of Apply calls becomes one sync,
// which holds every change; Reconcile syncs before it returns.
func TestEnforcerApplyIsDebounced(t *testing.T) {
	e, fake := newTestEnforcer(t)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	if err := e.Reconcile(ctx, []enforcer.Entry{{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Until: until}}); err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls()[banCalls]; got != 1 {
		t.Fatalf("Reconcile made %d add calls, want 1 before it returned", got)
	}
	fake.ResetCalls()
	for i := range 20 {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})
		b := enforcer.Batch{Add: []enforcer.Entry{{Prefix: netip.PrefixFrom(a, 32), Until: until, Remedy: enforcer.Remedy(i % 2)}}}
		if err := e.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for fake.Calls()[banCalls] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no sync after the burst: %v", fake.Calls())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	// One bulk add per list (ban and captcha), not one per Apply.
	if got := fake.Calls()[banCalls]; got != 2 {
		t.Fatalf("%d add calls for a burst of 20 applies, want 2 (one per list)", got)
	}
	got, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	captchas := 0
	for _, en := range got {
		if en.Remedy == enforcer.RemedyCaptcha {
			captchas++
		}
	}
	if len(got) != 21 || captchas != 10 {
		t.Fatalf("List = %d entries, %d captchas; want 21 and 10", len(got), captchas)
	}
}
