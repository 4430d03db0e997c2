package main

import (
	"context"
	"iter"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
)

// recordFeed keeps what reaches the LAPI server.
type recordFeed struct {
	snapshot []string
	changes  []string
}

func (r *recordFeed) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	for d := range live {
		r.snapshot = append(r.snapshot, string(d.Op)+" "+d.Key())
	}
	return nil
}

func (r *recordFeed) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	for _, d := range cs {
		r.changes = append(r.changes, string(d.Op)+" "+d.Key())
	}
	return nil
}

// TestLAPIWithholdsProtected: the LAPI does not hand CrowdSec bouncers a
// ban on the whitelist, loopback or its brokers; a later such add
// withdraws what the key held.
func TestLAPIWithholdsProtected(t *testing.T) {
	pc := policy.DefaultConfig()
	pc.Whitelist = policy.Prefixes{netip.MustParsePrefix("198.51.100.0/24")}
	pol, err := policy.New(context.Background(), pc, policy.Options{
		Supported:    []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle},
		Dependencies: []string{"192.0.2.10:9092", ":8080"},
		HostAddrs:    func() ([]netip.Addr, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordFeed{}
	f := newPolicyFeed(rec, pol)
	add := func(p string) decisionfeed.Decision {
		return decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), time.Hour, "engine", time.Now())
	}
	if err := f.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{add("203.0.113.7/32"), add("198.51.100.7/32"), add("192.0.2.0/24")})); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.snapshot, []string{"add ip:203.0.113.7@engine"}) {
		t.Fatalf("snapshot served %v", rec.snapshot)
	}
	if err := f.Changes(context.Background(), []decisionfeed.Decision{add("127.0.0.1/32"), add("203.0.113.8/32")}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec.changes, []string{"delete ip:127.0.0.1@engine", "add ip:203.0.113.8@engine"}) {
		t.Fatalf("changes served %v", rec.changes)
	}
	for reason, want := range map[string]float64{"whitelist": 1, "dependency": 1, "loopback": 1} {
		if got := testutil.ToFloat64(f.refused.WithLabelValues(reason)); got != want {
			t.Errorf("refused{%s} = %v, want %v", reason, got, want)
		}
	}
}
