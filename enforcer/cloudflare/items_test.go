package cloudflare

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		in, ip, note, err string
	}{
		{in: "203.0.113.7/32", ip: "203.0.113.7"},
		{in: "198.51.100.0/24", ip: "198.51.100.0/24"},
		{in: "198.51.100.9/24", ip: "198.51.100.0/24"},
		{in: "10.0.0.0/8", ip: "10.0.0.0/8"},
		{in: "8.0.0.0/7", err: "8.0.0.0/7: IPv4 prefixes shorter than /8 are not accepted by Cloudflare lists"},
		{in: "::ffff:203.0.113.7/128", ip: "203.0.113.7"},
		{in: "::ffff:198.51.100.0/120", ip: "198.51.100.0/24"},
		{in: "::ffff:0.0.0.0/95", ip: "::/64", note: "widened from ::fffe:0:0/95 to its /64 (Cloudflare lists hold IPv6 up to /64)"},
		{in: "2001:db8::1/128", ip: "2001:db8::/64", note: "widened from 2001:db8::1/128 to its /64 (Cloudflare lists hold IPv6 up to /64)"},
		{in: "2001:db8:0:1:2::/80", ip: "2001:db8:0:1::/64", note: "widened from 2001:db8:0:1:2::/80 to its /64 (Cloudflare lists hold IPv6 up to /64)"},
		{in: "2001:db8::/64", ip: "2001:db8::/64"},
		{in: "2001:db8::/32", ip: "2001:db8::/32"},
		{in: "2000::/12", ip: "2000::/12"},
		{in: "2000::/11", err: "2000::/11: IPv6 prefixes shorter than /12 are not accepted by Cloudflare lists"},
	}
	for _, tc := range cases {
		ip, note, err := normalize(netip.MustParsePrefix(tc.in))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: err = %v, want %s", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || ip != tc.ip || note != tc.note {
			t.Errorf("%s = %q, %q, %v; want %q, %q", tc.in, ip, note, err, tc.ip, tc.note)
		}
	}
	if _, _, err := normalize(netip.Prefix{}); err == nil {
		t.Error("the zero prefix was accepted")
	}
}

func TestSelectItems(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	p := netip.MustParsePrefix
	items := []Item{
		{Prefix: p("192.0.2.1/32"), Until: now.Add(time.Hour), Scenario: "a"},
		{Prefix: p("192.0.2.2/32"), Until: now.Add(-time.Second), Scenario: "a"},     // expired: dropped, not counted
		{Prefix: p("2001:db8::1/128"), Until: now.Add(time.Hour), Action: Challenge}, // same /64 as the next
		{Prefix: p("2001:db8::2/128"), Until: now.Add(2 * time.Hour), Scenario: "b"}, // blocks: block wins, lives longer
		{Prefix: p("0.0.0.0/0"), Until: now.Add(time.Hour)},                          // refused
		{Prefix: p("192.0.2.3/32"), Until: now.Add(time.Hour), Action: Challenge},
		{Prefix: p("192.0.2.4/32"), Scenario: "a"}, // no expiry: most valuable
		{Prefix: p("192.0.2.5/32"), Until: now.Add(time.Hour), Scenario: "c"},
	}
	prio := map[string]int{"c": 5}
	sel := selectItems(items, now, 4, prio, true, normalize)
	block := slices.Sorted(mapKeys(sel.byAction[Block]))
	challenge := slices.Sorted(mapKeys(sel.byAction[Challenge]))
	// Ranked: 192.0.2.4 (no expiry), 2001:db8::/64 (2h), then the 1h ones:
	// 192.0.2.5 (priority 5), then 192.0.2.1 before 192.0.2.3 by address.
	if !slices.Equal(block, []string{"192.0.2.1", "192.0.2.4", "192.0.2.5", "2001:db8::/64"}) || len(challenge) != 0 {
		t.Fatalf("block %v challenge %v", block, challenge)
	}
	if sel.leftOut != 1 || sel.refused != 1 || sel.unsupported != 0 {
		t.Fatalf("left out %d refused %d unsupported %d", sel.leftOut, sel.refused, sel.unsupported)
	}
	if got := sel.byAction[Block]["2001:db8::/64"]; !got.until.Equal(now.Add(2*time.Hour)) || !strings.HasPrefix(got.comment, "portcullis b;") {
		t.Fatalf("merged item = %+v", got)
	}

	sel = selectItems(items, now, 100, nil, false, normalize)
	if sel.unsupported != 2 || len(sel.byAction[Challenge]) != 0 {
		t.Fatalf("without a captcha list: unsupported %d, challenge %v", sel.unsupported, sel.byAction[Challenge])
	}
}

func mapKeys(m map[string]listItem) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	if d, ok := retryAfter("7"); !ok || d != 7*time.Second {
		t.Errorf("7 = %v %v", d, ok)
	}
	if _, ok := retryAfter("soon"); ok {
		t.Error("soon parsed")
	}
	if _, ok := retryAfter(""); ok {
		t.Error("empty parsed")
	}
	if d, ok := retryAfter(time.Now().Add(-time.Hour).UTC().Format(http1123)); !ok || d != 0 {
		t.Errorf("past date = %v %v", d, ok)
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestBucketSpacesRequests(t *testing.T) {
	// 10 requests per second, burst 2: the 3rd and 4th wait ~100ms each.
	b := newBucket(10, time.Second, 2)
	start := time.Now()
	for range 4 {
		if err := b.wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("4 requests in %s, want at least ~200ms", el)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.AccountID = "abc"
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"account_id: empty":            func(c *Config) { c.AccountID = "" },
		`zone_ids[1]: "z" given twice`: func(c *Config) { c.ZoneIDs = []string{"z", "z"} },
		`ban_list: "Bad-Name" is not a list name (a-z, 0-9, _; at most 50)`: func(c *Config) { c.BanList = "Bad-Name" },
		`captcha_list: "portcullis_ban" is also the ban list`:               func(c *Config) { c.CaptchaList = c.BanList },
		`api_base: "ftp://x" is not an http(s) URL`:                         func(c *Config) { c.APIBase = "ftp://x" },
		"burst: 2000 is outside 1..requests_per_window":                     func(c *Config) { c.Burst = 2000 },
		"page_size: 501 is outside 1..500":                                  func(c *Config) { c.PageSize = 501 },
	}
	for want, mut := range cases {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
	}
}
