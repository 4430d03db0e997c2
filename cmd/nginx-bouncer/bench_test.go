package main

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
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
