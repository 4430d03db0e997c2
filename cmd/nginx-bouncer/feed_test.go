package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
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

func TestFeedHandler(t *testing.T) {
	ctx := context.Background()
	set := prefixset.New()
	var ready atomic.Bool
	h := &feedHandler{set: set, ready: &ready, logger: slog.New(slog.DiscardHandler)}

	err := h.Snapshot(ctx, slices.Values([]decisionfeed.Decision{
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.1/32", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.51.100.0/24", time.Hour),
		decision(decisionfeed.OpAdd, decisionfeed.TypeThrottle, "192.0.2.1/32", time.Hour),
	}))
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
	if got := entriesOf(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after changes:\n%v\nwant\n%v", got, want)
	}
	// Applying the same changes again (a retry) changes nothing.
	if err := h.Changes(ctx, []decisionfeed.Decision{decision(decisionfeed.OpDelete, decisionfeed.TypeCaptcha, "192.0.2.0/24", 0)}); err != nil {
		t.Fatal(err)
	}
	if got := entriesOf(t, set); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a delete of an absent key: %v", got)
	}
}
