package runner

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
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
