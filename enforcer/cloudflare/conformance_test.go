package cloudflare

import (
	"context"
	"errors"
	"net/netip"
	"sync"
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

// TestEnforcerRetriesAFailedSync: Apply does not fail when Cloudflare does;
// the sync is retried with backoff until it goes through, and OnSync sees
// both outcomes. After Close, writes fail with enforcer.ErrClosed.
func TestEnforcerRetriesAFailedSync(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	t.Cleanup(fake.Close)
	var mu sync.Mutex
	var fails, oks int
	e := NewEnforcer(newClient(t, testConfig(fake.URL, testZone)), EnforcerOptions{
		Debounce: 5 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond,
		OnSync: func(_ Summary, err error, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails++
			} else {
				oks++
			}
		},
	})
	defer func() { _ = e.Close() }()
	ctx := context.Background()
	if err := e.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// 400 (not retried by the client): the sync fails as a whole, twice.
	fake.Inject(cffake.Fault{Method: "POST", PathContains: "/items", Status: 400, Code: 10001, Message: "invalid", Count: 2})
	until := time.Now().Add(time.Hour)
	if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{{Prefix: netip.MustParsePrefix("192.0.2.5/32"), Until: until}}}); err != nil {
		t.Fatalf("Apply = %v, want nil: a failed sync is retried, not reported to the runner", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	synced := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return oks >= 2 // Reconcile's and the retried one
	}
	for {
		if items := fake.Items(testAccount, "portcullis_ban"); len(items) == 1 && items[0] == "192.0.2.5" && synced() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ban never reached Cloudflare: %v", fake.Items(testAccount, "portcullis_ban"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	if fails < 1 {
		t.Errorf("OnSync saw %d failures, want at least 1", fails)
	}
	mu.Unlock()
	_ = e.Close()
	if err := e.Apply(ctx, enforcer.Batch{}); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Apply after Close = %v", err)
	}
	if _, err := e.List(ctx); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("List after Close = %v", err)
	}
}
