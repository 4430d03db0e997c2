package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

func decision(op decisionfeed.Op, typ decisionfeed.Type, prefix string, dur time.Duration) decisionfeed.Decision {
	d := decisionfeed.NewDecision(op, typ, netip.MustParsePrefix(prefix), dur, "test", time.Now())
	d.Scenario = "scenario/" + string(typ)
	return d
}

func entriesOf(t *testing.T, s *prefixset.Set) []string {
	t.Helper()
	es, err := s.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s %s %s", e.Prefix, e.Remedy, e.Reason))
	}
	return out
}

// waitEntries waits until the set holds want; the runner applies changes
// a millisecond after they arrive.
func waitEntries(t *testing.T, s *prefixset.Set, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := entriesOf(t, s)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("set holds\n%v\nwant\n%v", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startFeed returns a feed handler over the runner newRunner builds for
// cfg, driving set, and runs the runner until the test ends.
func startFeed(t *testing.T, cfg *Config, set *prefixset.Set) (*feedHandler, *atomic.Bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r, _, err := newRunner(ctx, cfg, set, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var ready atomic.Bool
	return &feedHandler{r: r, ready: &ready, logger: slog.New(slog.DiscardHandler)}, &ready
}

func TestFeedHandler(t *testing.T) {
	ctx := context.Background()
	set := prefixset.New()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:9092"}
	h, ready := startFeed(t, &cfg, set)

	err := h.Snapshot(ctx, []decisionfeed.Decision{
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.1/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.51.100.0/24", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeThrottle, "192.0.2.1/32", time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !ready.Load() {
		t.Fatal("not ready after the snapshot")
	}
	want := []string{"198.51.100.0/24 captcha scenario/captcha", "203.0.113.1/32 ban scenario/ban"}
	if got := entriesOf(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after snapshot: %v, want %v", got, want)
	}

	expired := decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "2001:db8::/48", time.Hour)
	expired.CreatedAt = time.Now().Add(-2 * time.Hour)
	expired.Until = time.Now().Add(-time.Hour)
	err = h.Changes(ctx, []decisionfeed.Decision{
		// add then delete in one batch: gone
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.2/32", time.Hour),
		decision(decisionfeed.OpDelete, decisionfeed.TypeBan, "203.0.113.2/32", 0),
		// delete then add: present
		decision(decisionfeed.OpDelete, decisionfeed.TypeBan, "203.0.113.3/32", 0),
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.3/32", time.Hour),
		// a throttle add supersedes the key's ban
		decision(decisionfeed.OpAdd, decisionfeed.TypeThrottle, "203.0.113.1/32", time.Hour),
		// a ban replaces the captcha of the same key
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.0/24", time.Hour),
		// an add that arrives expired is not enforced
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "2001:db8:1::/48", time.Hour),
		expired,
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "2001:db8::7/128", time.Hour),
		// loopback is never banned
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "127.0.0.1/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "::1/128", time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"198.51.100.0/24 ban scenario/ban",
		"203.0.113.3/32 ban scenario/ban",
		"2001:db8::7/128 captcha scenario/captcha",
		"2001:db8:1::/48 ban scenario/ban",
	}
	waitEntries(t, set, want)
	// Applying a delete of an absent key changes nothing.
	if err := h.Changes(ctx, []decisionfeed.Decision{decision(decisionfeed.OpDelete, decisionfeed.TypeCaptcha, "192.0.2.0/24", 0)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	waitEntries(t, set, want)
}

// TestFeedHandlerPolicy: nginx-bouncer takes the same whitelist and
// filters as every bouncer: captchas only here, and never the office.
func TestFeedHandlerPolicy(t *testing.T) {
	ctx := context.Background()
	set := prefixset.New()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"192.0.2.200:9092"}
	cfg.Policy.Types = []decisionfeed.Type{decisionfeed.TypeCaptcha}
	cfg.Policy.Whitelist = policy.Prefixes{netip.MustParsePrefix("198.51.100.0/24")}
	h, _ := startFeed(t, &cfg, set)
	err := h.Snapshot(ctx, []decisionfeed.Decision{
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.1/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "203.0.113.2/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.51.100.7/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "192.0.2.0/24", time.Hour), // covers the broker
	})
	if err != nil {
		t.Fatal(err)
	}
	waitEntries(t, set, []string{"203.0.113.2/32 captcha scenario/captcha"})
}
