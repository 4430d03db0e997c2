package enforcer

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

func TestFromDecision(t *testing.T) {
	until := time.Date(2026, 11, 25, 14, 0, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		d    decisionfeed.Decision
		want Entry
	}{
		{"ipv4 with scenario",
			decisionfeed.Decision{Scope: decisionfeed.ScopeIP, Value: "203.0.113.7", Until: until, Scenario: "crowdsecurity/ssh-bf", Origin: "engine"},
			Entry{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Until: until, Reason: "crowdsecurity/ssh-bf", Origin: "engine"}},
		{"ipv6 range without scenario takes the origin as reason",
			decisionfeed.Decision{Scope: decisionfeed.ScopeRange, Value: "2001:db8::/48", Until: until, Origin: "cli"},
			Entry{Prefix: netip.MustParsePrefix("2001:db8::/48"), Until: until, Reason: "cli", Origin: "cli"}},
		{"captcha keeps its remedy",
			decisionfeed.Decision{Type: decisionfeed.TypeCaptcha, Scope: decisionfeed.ScopeIP, Value: "192.0.2.9", Until: until, Origin: "cli"},
			Entry{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Until: until, Reason: "cli", Origin: "cli", Remedy: RemedyCaptcha}},
		{"throttle is a ban entry; the policy filters it",
			decisionfeed.Decision{Type: decisionfeed.TypeThrottle, Scope: decisionfeed.ScopeIP, Value: "192.0.2.9", Until: until, Origin: "cli"},
			Entry{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Until: until, Reason: "cli", Origin: "cli"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromDecision(&tc.d)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	bad := decisionfeed.Decision{Scope: "host", Value: "x"}
	if _, err := FromDecision(&bad); err == nil || err.Error() != `decision host:x@: unknown scope "host"` {
		t.Errorf("bad scope: err = %v", err)
	}
}

func TestBatchLen(t *testing.T) {
	b := Batch{Add: make([]Entry, 2), Delete: make([]netip.Prefix, 3)}
	if b.Len() != 5 {
		t.Errorf("Len = %d, want 5", b.Len())
	}
}
