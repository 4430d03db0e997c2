package runner

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
)

// nopBackend accepts everything and keeps nothing, so a benchmark times
// the runner alone.
type nopBackend struct{}

func (nopBackend) Apply(context.Context, enforcer.Batch) error       { return nil }
func (nopBackend) Reconcile(context.Context, []enforcer.Entry) error { return nil }
func (nopBackend) Close() error                                      { return nil }

// BenchmarkSnapshot1M times the runner's share of a start-up with a
// million live bans: conversion, whitelist and host checks, sorting and
// state, with a backend that does nothing.
func BenchmarkSnapshot1M(b *testing.B) {
	const n = 1_000_000
	now := time.Now()
	live := make([]decisionfeed.Decision, n)
	for i := range n {
		v := uint32(0x64400000) + uint32(i) + 1 // 100.64.0.0/10
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		live[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), time.Hour, "blocklist", now)
	}
	cfg := DefaultConfig()
	cfg.Policy = testPolicy(func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil })
	r, err := New(cfg, nopBackend{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Snapshot(context.Background(), live); err != nil {
			b.Fatal(err)
		}
	}
	if got := r.Len(); got != n {
		b.Fatalf("active = %d, want %d", got, n)
	}
}

// BenchmarkChanges times one decision through Changes (conversion, policy,
// queueing), with the minimal policy a nil Config.Policy gives (loopback
// only) and with a busy edge policy (64 whitelisted ranges, host addresses,
// three brokers, origin and scenario filters), for the ratio of the two.
func BenchmarkChanges(b *testing.B) {
	now := time.Now()
	ds := make([]decisionfeed.Decision, 4096)
	for i := range ds {
		a := netip.AddrFrom4([4]byte{100, byte(64 + i>>10), byte(i >> 2), byte(i<<6 | 1)})
		ds[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), time.Hour, "engine", now)
		ds[i].Scenario = "crowdsecurity/ssh-bf"
	}
	edge := policy.DefaultConfig()
	for i := range 64 {
		edge.Whitelist = append(edge.Whitelist, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24))
	}
	edge.Origins = []string{"engine", "cli"}
	edge.Scenarios = []string{"crowdsecurity/*"}
	edgePol, err := policy.New(context.Background(), edge, policy.Options{
		HostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1")}, nil
		},
		Dependencies: []string{"192.0.2.10:9092", "192.0.2.11:9092", "192.0.2.12:9092"},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		pol  *policy.Policy
	}{{"minimal", nil}, {"edge", edgePol}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Policy = bc.pol
			r, err := New(cfg, nopBackend{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Changes(context.Background(), ds[i&4095:i&4095+1])
				i++
			}
			if r.Pending() != 4096 {
				b.Fatalf("pending %d, want 4096", r.Pending())
			}
		})
	}
}
