package crowdsec

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// BenchmarkStream measures a bouncer's startup pull of the full set and
// its next delta pull (100 changes), with n live decisions.
func BenchmarkStream(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		c := &clock{now: t0}
		s, err := NewServer(ServerConfig{APIKeys: []string{"k"}, Now: c.Now})
		if err != nil {
			b.Fatal(err)
		}
		live := make([]decisionfeed.Decision, n)
		for i := range n {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
			live[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, 4*time.Hour, "engine", t0)
			live[i].Scenario = "crowdsecurity/ssh-bf"
		}
		if err := s.Snapshot(context.Background(), slices.Values(live)); err != nil {
			b.Fatal(err)
		}
		req := func(q string) int {
			r := httptest.NewRequest(http.MethodGet, "/v1/decisions/stream?"+q, nil)
			r.Header.Set("X-Api-Key", "k")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
			return w.Body.Len()
		}
		b.Run(fmt.Sprintf("startup/live=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.SetBytes(int64(req("startup=true")))
			}
		})
		b.Run(fmt.Sprintf("delta100/live=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			req("startup=true")
			for b.Loop() {
				b.StopTimer()
				changes := make([]decisionfeed.Decision, 100)
				for i := range changes {
					p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32)
					changes[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, time.Hour, "engine", t0)
				}
				if err := s.Changes(context.Background(), changes); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				req("startup=false")
			}
		})
	}
}

// BenchmarkStateSave measures one write of the lapi state file with n live
// decisions and two bouncers, what a stream call that hands out a new
// decision costs on top of its answer.
func BenchmarkStateSave(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("live=%d", n), func(b *testing.B) {
			file := filepath.Join(b.TempDir(), "lapi-state.json")
			s, err := NewServer(ServerConfig{APIKeys: []string{"k1", "k2"}, StateFile: file})
			if err != nil {
				b.Fatal(err)
			}
			live := make([]decisionfeed.Decision, n)
			for i := range n {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
				live[i] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, 4*time.Hour, "engine", time.Now())
				live[i].Scenario = "crowdsecurity/ssh-bf"
			}
			if err := s.Snapshot(context.Background(), slices.Values(live)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Save(); err != nil {
					b.Fatal(err)
				}
			}
			if fi, err := os.Stat(file); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<20), "MiB/file")
			}
		})
	}
}
