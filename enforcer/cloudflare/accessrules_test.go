package cloudflare

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
)

func TestAccessValue(t *testing.T) {
	cases := []struct{ in, value, target, err string }{
		{in: "203.0.113.7/32", value: "203.0.113.7", target: "ip"},
		{in: "198.51.100.0/24", value: "198.51.100.0/24", target: "ip_range"},
		{in: "198.51.0.0/16", value: "198.51.0.0/16", target: "ip_range"},
		{in: "2001:db8::1/128", value: "2001:db8::1", target: "ip6"},
		{in: "2001:db8::/48", value: "2001:db8::/48", target: "ip_range"},
		{in: "2001:db8::1:0/112", value: "2001:db8::/64", target: "ip_range"},
		{in: "::ffff:203.0.113.7/128", value: "203.0.113.7", target: "ip"},
		{in: "198.51.100.0/25", err: "198.51.100.0/25: IP Access Rules take single addresses and ranges of IPv4 /16, /24 and IPv6 /32, /48, /64 only"},
		{in: "2001:db8::/40", err: "2001:db8::/40: IP Access Rules take single addresses and ranges of IPv4 /16, /24 and IPv6 /32, /48, /64 only"},
	}
	for _, tc := range cases {
		v, _, err := accessValue(netip.MustParsePrefix(tc.in))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: err = %v", tc.in, err)
			}
			continue
		}
		if err != nil || v != tc.value || accessTarget(v) != tc.target {
			t.Errorf("%s = %q (%s), %v; want %q (%s)", tc.in, v, accessTarget(v), err, tc.value, tc.target)
		}
	}
}

func TestAccessRulesMode(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.AddAccessRule(testAccount, "ip", "192.0.2.200", "whitelist", "office")
	cfg := testConfig(fake.URL)
	cfg.Mode = ModeAccessRules
	cfg.PageSize = 5 // several pages
	c := newClient(t, cfg)
	now := time.Now()
	items := []Item{
		{Prefix: netip.MustParsePrefix("203.0.113.7/32"), Until: now.Add(time.Hour), Scenario: "s"},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Until: now.Add(time.Hour), Scenario: "s"},
		{Prefix: netip.MustParsePrefix("2001:db8::1/128"), Until: now.Add(time.Hour), Scenario: "s", Action: Challenge},
		{Prefix: netip.MustParsePrefix("198.51.100.0/25"), Until: now.Add(time.Hour), Scenario: "s"}, // refused
	}
	for i := range 8 {
		items = append(items, Item{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}), 32), Until: now.Add(time.Hour), Scenario: "s"})
	}
	sum, err := c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Adds != 11 || sum.Refused != 1 || sum.Items != 11 {
		t.Fatalf("summary = %+v", sum)
	}
	rules := fake.AccessRules(testAccount)
	if len(rules) != 12 || !slices.Contains(rules, "192.0.2.200 whitelist office") ||
		!slices.Contains(rules, "2001:db8::1 managed_challenge portcullis s") || !slices.Contains(rules, "198.51.100.0/24 block portcullis s") {
		t.Fatalf("rules = %q", rules)
	}
	// No change: no request at all (the rule ids are known).
	fake.ResetCalls()
	if _, err := c.Sync(context.Background(), items); err != nil || len(fake.Calls()) != 0 {
		t.Fatalf("second sync: %v, calls %v", err, fake.Calls())
	}
	// A restart reads the rules (3 pages of 5 and the empty page that ends
	// them), then removes 2 and re-modes 1 with one request each.
	c = newClient(t, cfg)
	items[2].Action = Block
	fake.ResetCalls()
	sum, err = c.Sync(context.Background(), slices.Concat(items[:4], items[6:]))
	if err != nil {
		t.Fatal(err)
	}
	calls := fake.Calls()
	if calls["GET /accounts/{account_id}/firewall/access_rules/rules"] != 4 || calls["DELETE /accounts/{account_id}/firewall/access_rules/rules/{rule_id}"] != 3 ||
		calls["POST /accounts/{account_id}/firewall/access_rules/rules"] != 1 || sum.Items != 9 {
		t.Fatalf("calls %v, summary %+v", calls, sum)
	}
	if rules := fake.AccessRules(testAccount); len(rules) != 10 || !slices.Contains(rules, "2001:db8::1 block portcullis s") {
		t.Fatalf("rules = %q", rules)
	}
	rm, err := c.Remove(context.Background())
	if err != nil || rm.AccessRules != 9 {
		t.Fatalf("remove = %+v, %v", rm, err)
	}
	if rules := fake.AccessRules(testAccount); !slices.Equal(rules, []string{"192.0.2.200 whitelist office"}) {
		t.Fatalf("rules after remove = %q", rules)
	}
}
