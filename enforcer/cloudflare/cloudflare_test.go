package cloudflare

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
)

const (
	testToken   = "test-token-5f0c2a9e"
	testAccount = "0123456789abcdef0123456789abcdef"
	testZone    = "fedcba9876543210fedcba9876543210"
	banCalls    = "POST /accounts/{account_id}/rules/lists/{list_id}/items"
	delCalls    = "DELETE /accounts/{account_id}/rules/lists/{list_id}/items"
	readItems   = "GET /accounts/{account_id}/rules/lists/{list_id}/items"
	readLists   = "GET /accounts/{account_id}/rules/lists"
	pollCalls   = "GET /accounts/{account_id}/rules/lists/bulk_operations/{operation_id}"
)

func testConfig(url string, zones ...string) Config {
	cfg := DefaultConfig()
	cfg.APIBase = url
	cfg.AccountID = testAccount
	cfg.ZoneIDs = zones
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	cfg.PollMin, cfg.PollMax = time.Millisecond, 5*time.Millisecond
	cfg.RequestsPerWindow, cfg.Burst = 100000, 10000
	return cfg
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg, testToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bans returns n single-address IPv4 bans from 10.0.0.0 on, each lasting
// one second longer than the one before.
func bans(n int, now time.Time) []Item {
	out := make([]Item, n)
	a := netip.MustParseAddr("10.0.0.0")
	for i := range out {
		a = a.Next()
		out[i] = Item{Prefix: netip.PrefixFrom(a, 32), Until: now.Add(time.Hour + time.Duration(i)*time.Second), Scenario: "test/bf"}
	}
	return out
}

func ips(items []Item) []string {
	var out []string
	for _, it := range items {
		ip, _, err := normalize(it.Prefix)
		if err != nil {
			panic(err)
		}
		out = append(out, ip)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestColdSyncTenThousandThenNoChange(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	defer fake.Close()
	fake.SetOpPolls(2)
	fake.SetRules(testZone, `{"id":"op1","action":"log","expression":"http.host eq \"x\"","ref":"op1"}`)
	c := newClient(t, testConfig(fake.URL, testZone))
	items := bans(10000, time.Now())

	sum, err := c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		readLists: 2, // before, and after the writes for the new modified_on
		"POST /accounts/{account_id}/rules/lists":                 1,
		"GET /zones/{zone_id}/rulesets/phases/{phase}/entrypoint": 1,
		"POST /zones/{zone_id}/rulesets/{ruleset_id}/rules":       1,
		banCalls:  2, // 10,000 items in chunks of 5,000
		pollCalls: 6, // pending, running, completed for each
	}
	if got := fake.Calls(); !mapsEqual(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	if sum.Adds != 10000 || sum.Deletes != 0 || sum.Items != 10000 || sum.Writes != 4 || sum.Calls != 13 {
		t.Fatalf("summary = %+v", sum)
	}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, ips(items)) {
		t.Fatalf("list holds %d items, want the 10000 bans", len(got))
	}
	if got := fake.Comment(testAccount, DefaultBanList, "10.0.0.1"); got != "portcullis test/bf" {
		t.Fatalf("comment = %q", got)
	}

	fake.ResetCalls()
	sum, err = c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls(); !mapsEqual(got, map[string]int{readLists: 1}) {
		t.Fatalf("second sync calls = %v, want only the list read", got)
	}
	if sum.Adds != 0 || sum.Deletes != 0 || sum.Writes != 0 || sum.Items != 10000 {
		t.Fatalf("second summary = %+v", sum)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestDeletesAndExpiriesRemoved(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	c := newClient(t, testConfig(fake.URL))
	now := time.Now()
	c.now = func() time.Time { return now }
	items := bans(20, now)
	items[3].Until = now.Add(time.Minute) // expires before the next sync
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Items(testAccount, DefaultBanList)); n != 20 {
		t.Fatalf("after first sync: %d items", n)
	}
	now = now.Add(2 * time.Minute)
	kept := slices.Concat(items[:3], items[4:10]) // items[10:] deleted by the feed
	fake.ResetCalls()
	sum, err := c.Sync(context.Background(), items[:10])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Items(testAccount, DefaultBanList), ips(kept); !slices.Equal(got, want) {
		t.Fatalf("list = %v, want %v", got, want)
	}
	if sum.Deletes != 11 || sum.Adds != 0 || sum.Items != 9 {
		t.Fatalf("summary = %+v", sum)
	}
	// The ids of items it added were unknown: one read, then one bulk delete.
	calls := fake.Calls()
	if calls[readItems] != 1 || calls[delCalls] != 1 || fake.Writes() != 1 {
		t.Fatalf("calls = %v", calls)
	}
}

func TestRateLimitsAndServerErrorsSurvived(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.Inject(cffake.Fault{Method: "POST", PathContains: "/items", Status: 429, Code: 10429, Message: "rate limited", RetryAfter: "0", Count: 2})
	fake.Inject(cffake.Fault{Method: "GET", PathContains: "/bulk_operations/", Status: 502, Code: 0, Message: "bad gateway", Count: 1})
	fake.Inject(cffake.Fault{Method: "GET", PathContains: "/rules/lists", Status: 400, Code: 971, Message: "Please wait and consider throttling your request speed", Count: 1})
	c := newClient(t, testConfig(fake.URL))
	items := bans(50, time.Now())
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, ips(items)) {
		t.Fatalf("list = %v", got)
	}
	st := c.Stats()
	if st.Retries != 4 || st.RateLimited != 3 || st.Errors != 4 {
		t.Fatalf("stats = %+v, want 4 retries, 3 rate limited, 4 errors", st)
	}
}

func TestRetriesExhaustedIsOneLineError(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.Inject(cffake.Fault{Status: 503, Code: 0, Message: "unavailable\nsecond line", Count: 100})
	cfg := testConfig(fake.URL)
	cfg.MaxRetries = 2
	c := newClient(t, cfg)
	_, err := c.Sync(context.Background(), bans(1, time.Now()))
	want := "read lists of account " + testAccount + ": HTTP 503: unavailable second line (code 0) - Cloudflare kept refusing after the retries"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	if got := fake.Calls()[readLists]; got != 3 {
		t.Fatalf("%d list reads, want 3 (1 + 2 retries)", got)
	}
}

func TestForeignEditConverged(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	c := newClient(t, testConfig(fake.URL))
	items := bans(30, time.Now())
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	// Someone removes two of ours and adds one of theirs (and a duplicate
	// of ours written as a /32): the count changes.
	fake.Edit(testAccount, DefaultBanList, []string{"198.51.100.7", "10.0.0.5/32"}, []string{"10.0.0.1", "10.0.0.2"})
	sum, err := c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, ips(items)) {
		t.Fatalf("list = %v, want %v", got, ips(items))
	}
	if sum.Adds != 2 || sum.Deletes != 2 {
		t.Fatalf("summary = %+v, want 2 adds (ours back) and 2 deletes (theirs, the duplicate)", sum)
	}
}

func TestOperatorRulesPreservedAndRulesAdopted(t *testing.T) {
	const zone2 = "22222222222222222222222222222222"
	fake := cffake.New(testToken, testAccount, testZone, zone2)
	defer fake.Close()
	op1 := `{"id":"aaa","action":"skip","action_parameters":{"ruleset":"current"},"expression":"ip.src eq 192.0.2.1","ref":"office","enabled":true,"version":"3","last_updated":"2026-01-02T03:04:05Z","description":"office  bypass"}`
	op2 := `{"id":"bbb","action":"block","expression":"http.request.uri.path contains \"/wp-login\"","ref":"wp","enabled":false,"version":"1","last_updated":"2026-01-02T03:04:05Z"}`
	fake.SetRules(testZone, op1, op2)
	c := newClient(t, testConfig(fake.URL, testZone, zone2))
	now := time.Now()
	items := append(bans(5, now), Item{Prefix: netip.MustParsePrefix("2001:db8::1/128"), Until: now.Add(time.Hour), Scenario: "test/crawl", Action: Challenge})
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	rs := fake.Rules(testZone)
	if len(rs) != 4 || string(rs[0]) != op1 || string(rs[1]) != op2 {
		t.Fatalf("zone rules = %s", rs)
	}
	checkRule(t, rs[2], "portcullis_ban", "block", "ip.src in $portcullis_ban")
	checkRule(t, rs[3], "portcullis_captcha", "managed_challenge", "ip.src in $portcullis_captcha")
	rs2 := fake.Rules(zone2)
	if len(rs2) != 2 {
		t.Fatalf("zone2 rules = %s", rs2)
	}
	checkRule(t, rs2[0], "portcullis_ban", "block", "ip.src in $portcullis_ban")
	if got := fake.Items(testAccount, DefaultCaptchaList); !slices.Equal(got, []string{"2001:db8::/64"}) {
		t.Fatalf("captcha list = %v", got)
	}
	if got := fake.Comment(testAccount, DefaultCaptchaList, "2001:db8::/64"); got != "portcullis test/crawl; widened from 2001:db8::1/128 to its /64 (Cloudflare lists hold IPv6 up to /64)" {
		t.Fatalf("comment = %q", got)
	}

	// Someone disables our rule; a new process adopts lists and rules,
	// re-enables the rule with one PATCH and leaves the rest alone.
	fake.SetRules(testZone, op1, op2, strings.Replace(string(rs[2]), `"enabled":true`, `"enabled":false`, 1), string(rs[3]))
	fake.ResetCalls()
	c2 := newClient(t, testConfig(fake.URL, testZone, zone2))
	if _, err := c2.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	calls := fake.Calls()
	if fake.Writes() != 1 || calls["PATCH /zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}"] != 1 {
		t.Fatalf("adopting run calls = %v", calls)
	}
	rs = fake.Rules(testZone)
	if len(rs) != 4 || string(rs[0]) != op1 || string(rs[1]) != op2 {
		t.Fatalf("zone rules after adoption = %s", rs)
	}
	checkRule(t, rs[2], "portcullis_ban", "block", "ip.src in $portcullis_ban")
}

func checkRule(t *testing.T, raw json.RawMessage, ref, action, expr string) {
	t.Helper()
	var r struct {
		Ref, Action, Expression string
		Enabled                 bool
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.Ref != ref || r.Action != action || r.Expression != expr || !r.Enabled {
		t.Fatalf("rule = %s, want ref %s action %s expression %q enabled", raw, ref, action, expr)
	}
}

func TestClearOneLineErrors(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	defer fake.Close()
	cases := []struct {
		name  string
		setup func(cfg *Config) string // returns the token
		want  string
	}{
		{"bad token", func(*Config) string { return "wrong-token-123" },
			"read lists of account " + testAccount + ": HTTP 403: Authentication error (code 10000) - check the API token: it must be valid and allowed to edit account filter lists and zone WAF"},
		{"missing account", func(cfg *Config) string { cfg.AccountID = "nosuchaccount"; return testToken },
			"read lists of account nosuchaccount: HTTP 404: Could not route to /accounts/nosuchaccount/rules/lists, perhaps your object identifier is invalid? (code 7003) - check the account and zone ids"},
		{"missing zone", func(cfg *Config) string { cfg.ZoneIDs = []string{"nosuchzone"}; return testToken },
			"read custom rules of zone nosuchzone: HTTP 404: Could not route to /zones/nosuchzone/rulesets, perhaps your object identifier is invalid? (code 7003) - check the account and zone ids"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(fake.URL)
			token := tc.setup(&cfg)
			c, err := New(cfg, token)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Sync(context.Background(), bans(3, time.Now()))
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v\nwant  %s", err, tc.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatal("the token is in the error")
			}
		})
	}
}

func TestListAtItsLimit(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.SetItemLimit(testAccount, 100) // the account's real limit is below the configured one
	c := newClient(t, testConfig(fake.URL))
	_, err := c.Sync(context.Background(), bans(150, time.Now()))
	if err == nil || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "add 150 items to list portcullis_ban: bulk operation ") ||
		!strings.HasSuffix(err.Error(), " failed: adding 150 items would exceed the account's limit of 100 list items (0 in use)") {
		t.Fatalf("err = %v", err)
	}
	// With the right limit configured it keeps the longest-lived 100.
	cfg := testConfig(fake.URL)
	cfg.ItemLimit = 100
	c = newClient(t, cfg)
	items := bans(150, time.Now())
	sum, err := c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	if sum.LeftOut != 50 || sum.Items != 100 {
		t.Fatalf("summary = %+v", sum)
	}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, ips(items[50:])) {
		t.Fatalf("kept %v, want the 100 longest-lived", got)
	}
}

func TestBudgetCountsOtherListsAndPriority(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.CreateList(testAccount, "operator_allow", "ip", "192.0.2.1", "192.0.2.2")
	cfg := testConfig(fake.URL)
	cfg.ItemLimit = 5
	cfg.ScenarioPriority = map[string]int{"test/cve": 10}
	c := newClient(t, cfg)
	until := time.Now().Add(time.Hour)
	var items []Item
	for i, sc := range []string{"test/bf", "test/cve", "test/bf", "test/cve", "test/bf"} {
		items = append(items, Item{Prefix: netip.MustParsePrefix(fmt.Sprintf("203.0.113.%d/32", i+1)), Until: until, Scenario: sc})
	}
	items = append(items, Item{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Until: until.Add(time.Minute), Scenario: "test/bf"})
	sum, err := c.Sync(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	// Budget 3: the longest-lived range, then the two CVE addresses.
	want := []string{"198.51.100.0/24", "203.0.113.2", "203.0.113.4"}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, want) {
		t.Fatalf("list = %v, want %v", got, want)
	}
	if sum.LeftOut != 3 {
		t.Fatalf("left out %d, want 3", sum.LeftOut)
	}
}

func TestPendingOperationConflictWaited(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.Inject(cffake.Fault{Method: "POST", PathContains: "/items", Status: 409, Code: 10027, Message: "there is a pending bulk operation", Count: 2})
	c := newClient(t, testConfig(fake.URL))
	items := bans(10, time.Now())
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if got := fake.Calls()[banCalls]; got != 3 {
		t.Fatalf("%d item posts, want 3", got)
	}
	if got := fake.Items(testAccount, DefaultBanList); !slices.Equal(got, ips(items)) {
		t.Fatalf("list = %v", got)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	defer fake.Close()
	c := newClient(t, testConfig(fake.URL, testZone))
	p, err := c.DryRun(context.Background(), bans(7, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if fake.Writes() != 0 {
		t.Fatalf("dry run wrote: %v", fake.Calls())
	}
	if len(p.Lists) != 1 || !p.Lists[0].Create || len(p.Lists[0].Add) != 7 {
		t.Fatalf("plan lists = %+v", p.Lists)
	}
	if len(p.Rules) != 1 || p.Rules[0].Kind != "create-entrypoint" {
		t.Fatalf("plan rules = %+v", p.Rules)
	}
}

func TestRemoveTakesOnlyWhatItMade(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	defer fake.Close()
	op := `{"id":"aaa","action":"block","expression":"ip.src in $operator_list","ref":"mine"}`
	fake.CreateList(testAccount, "operator_list", "ip", "192.0.2.1")
	fake.SetRules(testZone, op)
	c := newClient(t, testConfig(fake.URL, testZone))
	now := time.Now()
	items := append(bans(3, now), Item{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Until: now.Add(time.Hour), Action: Challenge})
	if _, err := c.Sync(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Rules(testZone)); n != 3 {
		t.Fatalf("%d rules after sync, want 3", n)
	}
	got, err := c.Remove(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got != (Removal{Rules: 2, Lists: 2}) {
		t.Fatalf("removed %+v", got)
	}
	if rs := fake.Rules(testZone); len(rs) != 1 || string(rs[0]) != op {
		t.Fatalf("rules left = %s", rs)
	}
	if fake.Items(testAccount, DefaultBanList) != nil || fake.Items(testAccount, DefaultCaptchaList) != nil {
		t.Fatal("a portcullis list is left")
	}
	if got := fake.Items(testAccount, "operator_list"); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("operator list = %v", got)
	}
	// Nothing left to remove: a second run deletes nothing.
	if got, err := c.Remove(context.Background()); err != nil || got != (Removal{}) {
		t.Fatalf("second remove = %+v, %v", got, err)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	fake := cffake.New(testToken, testAccount)
	defer fake.Close()
	fake.Inject(cffake.Fault{Method: "GET", PathContains: "/rules/lists", Status: 429, Code: 971, Message: "slow down", RetryAfter: "1", Count: 1})
	c := newClient(t, testConfig(fake.URL))
	start := time.Now()
	if _, err := c.Sync(context.Background(), bans(1, start)); err != nil {
		t.Fatal(err)
	}
	// The backoff alone is at most 5ms here: only Retry-After explains a
	// wait of a second (a lower bound, so no flakiness on a slow machine).
	if el := time.Since(start); el < time.Second {
		t.Fatalf("retried after %s, before Retry-After's 1s", el)
	}
	if st := c.Stats(); st.Retries != 1 || st.RateLimited != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestZoneRulesReadOncePerResyncInterval(t *testing.T) {
	fake := cffake.New(testToken, testAccount, testZone)
	defer fake.Close()
	fake.SetRules(testZone)
	c := newClient(t, testConfig(fake.URL, testZone))
	now := time.Now()
	c.now = func() time.Time { return now }
	items := bans(2, now)
	const entry = "GET /zones/{zone_id}/rulesets/phases/{phase}/entrypoint"
	for i, step := range []struct {
		advance time.Duration
		reads   int
	}{{0, 1}, {time.Minute, 1}, {time.Hour, 2}, {time.Minute, 2}, {time.Minute, 2}} {
		now = now.Add(step.advance)
		if _, err := c.Sync(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		if got := fake.Calls()[entry]; got != step.reads {
			t.Fatalf("sync %d: %d entrypoint reads, want %d", i, got, step.reads)
		}
	}
}

func TestGarbageAnswerIsOneLineError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{\"success\":true,\n\"result\": [{\"id\": 7,\n"))
	}))
	defer srv.Close()
	c := newClient(t, testConfig(srv.URL))
	_, err := c.Sync(context.Background(), bans(1, time.Now()))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "read lists of account "+testAccount+": ") {
		t.Fatalf("err = %q", err)
	}
}
