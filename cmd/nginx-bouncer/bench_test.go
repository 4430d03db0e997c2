package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// BenchmarkCheck1M measures the whole /check handler (client address from
// X-Real-IP, lookup, metrics, answer) with one million bans loaded, for an
// allowed and a banned client. The request and writer are reused, so the
// figure is the bouncer's own cost without HTTP parsing.
func BenchmarkCheck1M(b *testing.B) {
	f := newFixture(b, nil)
	rng := rand.New(rand.NewPCG(5, 5))
	until := time.Now().Add(time.Hour)
	es := make([]prefixset.Entry, 0, 1_000_000)
	var banned []netip.Addr
	for len(es) < cap(es) {
		v := rng.Uint32() | 1<<31 // 128.0.0.0/1: the allowed clients below are in 10/8
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		es = append(es, prefixset.Entry{Entry: enforcer.Entry{Prefix: netip.PrefixFrom(a, 32), Until: until, Reason: "bench/ban", Origin: "bench"}, Remedy: prefixset.RemedyBan})
		if len(banned) < 4096 {
			banned = append(banned, a)
		}
	}
	if err := f.set.ReconcileRemedies(context.Background(), es); err != nil {
		b.Fatal(err)
	}
	allowed := make([]netip.Addr, 4096)
	for i := range allowed {
		allowed[i] = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
	}
	for _, bc := range []struct {
		name   string
		ips    []netip.Addr
		status int
	}{{"allow", allowed, 204}, {"ban", banned, 403}} {
		b.Run(bc.name, func(b *testing.B) {
			values := make([]string, len(bc.ips))
			for i, a := range bc.ips {
				values[i] = a.String()
			}
			r := httptest.NewRequest(http.MethodGet, "/check", nil)
			r.RemoteAddr = "127.0.0.1:40000"
			hdr := []string{""}
			r.Header["X-Real-Ip"] = hdr
			w := &statusWriter{h: http.Header{}}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			i := 0
			cpu0 := testenv.ThreadCPU(b)
			for b.Loop() {
				hdr[0] = values[i&4095]
				clear(w.h)
				f.h.ServeHTTP(w, r)
				i++
			}
			b.ReportMetric(float64(testenv.ThreadCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			if w.status != bc.status {
				b.Fatalf("status %d, want %d", w.status, bc.status)
			}
		})
	}
}

type statusWriter struct {
	h      http.Header
	status int
}

func (s *statusWriter) Header() http.Header         { return s.h }
func (s *statusWriter) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusWriter) WriteHeader(code int)        { s.status = code }

// threadCPU returns the CPU time the calling OS thread has used. Benchmarks
// lock their goroutine to its thread and report CPU nanoseconds per
// operation beside the wall-clock figure, which on a shared, oversubscribed
// machine measures the scheduler more than the code.
func threadCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCheckPolicy is the policy's cost per /check: the same 100 000
// bans loaded straight into the set ("direct", no policy) and through the
// runner with a whitelist ("policy"; the 1 000 bans in the office range
// 10.0.0.0/16 are refused there, so office clients are allowed). The policy
// runs once per decision, at ingestion, so a check costs one lookup either
// way; the figures show it.
func BenchmarkCheckPolicy(b *testing.B) {
	const n = 100_000
	rng := rand.New(rand.NewPCG(7, 7))
	now := time.Now()
	until := now.Add(time.Hour)
	ds := make([]decisionfeed.Decision, 0, n)
	es := make([]prefixset.Entry, 0, n)
	var office []netip.Addr
	for i := range n {
		var a netip.Addr
		if i < 1000 {
			a = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			office = append(office, a)
		} else {
			v := rng.Uint32() | 1<<31
			a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), time.Hour, "engine", now)
		ds = append(ds, d)
		es = append(es, prefixset.Entry{Entry: enforcer.Entry{Prefix: netip.PrefixFrom(a, 32), Until: until, Reason: "engine", Origin: "engine"}, Remedy: prefixset.RemedyBan})
	}
	allowed := make([]netip.Addr, 1000)
	for i := range allowed {
		allowed[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	direct := newFixture(b, nil)
	if err := direct.set.ReconcileRemedies(context.Background(), es); err != nil {
		b.Fatal(err)
	}
	withPolicy := newFixture(b, nil)
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:9092"}
	cfg.Policy.Whitelist = policy.Prefixes{netip.MustParsePrefix("10.0.0.0/16")}
	r, _, err := newRunner(context.Background(), &cfg, withPolicy.set, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Snapshot(context.Background(), slices.Values(ds)); err != nil {
		b.Fatal(err)
	}
	if r.Len() != n-1000 {
		b.Fatalf("runner holds %d bans, want %d", r.Len(), n-1000)
	}
	for _, bc := range []struct {
		name string
		f    *fixture
		ips  []netip.Addr
		want int
	}{
		{"direct/allow", direct, allowed, 204},
		{"policy/allow", withPolicy, allowed, 204},
		{"direct/office", direct, office, 403},
		{"policy/office", withPolicy, office, 204},
	} {
		b.Run(bc.name, func(b *testing.B) {
			values := make([]string, len(bc.ips))
			for i, a := range bc.ips {
				values[i] = a.String()
			}
			r := httptest.NewRequest(http.MethodGet, "/check", nil)
			r.RemoteAddr = "127.0.0.1:40000"
			hdr := []string{""}
			r.Header["X-Real-Ip"] = hdr
			w := &statusWriter{h: http.Header{}}
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			i := 0
			cpu0 := threadCPU(b)
			for b.Loop() {
				hdr[0] = values[i%len(values)]
				clear(w.h)
				bc.f.h.ServeHTTP(w, r)
				i++
			}
			b.ReportMetric(float64(threadCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			if w.status != bc.want {
				b.Fatalf("status %d, want %d", w.status, bc.want)
			}
		})
	}
}
