package engine_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/internal/cputime"
	"github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
	"github.com/portcullis-ips/portcullis/test/corpus"
)

type countSink struct{ alerts, decisions int }

func (s *countSink) Alert(engine.Alert)             { s.alerts++ }
func (s *countSink) Decision(decisionfeed.Decision) { s.decisions++ }

func newBenchEngine(b *testing.B, sink engine.Sink) *engine.Engine {
	b.Helper()
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		b.Fatal(err)
	}
	cfg := profile.DefaultConfig()
	cfg.Whitelist = append(cfg.Whitelist, corpus.OperatorIP)
	prof, err := profile.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(engine.Config{Scenarios: scs, Profiles: prof, Sink: sink})
	if err != nil {
		b.Fatal(err)
	}
	return eng
}

// corpusFile generates the corpus once per benchmark and returns one log.
func corpusFile(b *testing.B, nginx, auth int, name string) ([]byte, corpus.Manifest) {
	b.Helper()
	dir := b.TempDir()
	opt := corpus.DefaultOptions()
	opt.NginxLines, opt.AuthLines = nginx, auth
	m, err := corpus.Write(dir, opt)
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		b.Fatal(err)
	}
	return data, m
}

// benchFeed replays data through a fresh parser and engine per iteration
// and reports lines/s (wall), lines per CPU-second (per core on a shared
// machine) and allocations per line.
func benchFeed(b *testing.B, data []byte, typ string, m corpus.Manifest, wantAlerts int) {
	var lines uint64
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cpu0 := cputime.Used()
	b.ResetTimer()
	for b.Loop() {
		sink := &countSink{}
		eng := newBenchEngine(b, sink)
		p := &engine.Pipeline{Parser: parse.New(parse.Config{Reference: m.End}), Engine: eng}
		st, err := engine.Feed(bytes.NewReader(data), typ, "bench", p, nil)
		if err != nil {
			b.Fatal(err)
		}
		lines += st.Lines
		if sink.alerts != wantAlerts {
			b.Fatalf("alerts = %d, want %d", sink.alerts, wantAlerts)
		}
	}
	b.StopTimer()
	cpu := cputime.Used() - cpu0
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(lines)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(lines)/(float64(cpu)/1e9), "lines/cpu-s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(lines), "allocs/line")
}

func countAlerts(m corpus.Manifest, auth bool) int {
	n := 0
	for _, a := range m.Expected {
		isSSH := a.Scenario == "crowdsecurity/ssh-bf" || a.Scenario == "crowdsecurity/ssh-slow-bf"
		if isSSH == auth {
			n++
		}
	}
	return n
}

// BenchmarkPipelineNginx1M: parse + scenarios over a generated 1M-line access log.
func BenchmarkPipelineNginx1M(b *testing.B) {
	data, m := corpusFile(b, 1_000_000, 10, "access.log")
	benchFeed(b, data, "nginx", m, countAlerts(m, false))
}

// BenchmarkPipelineAuth200k: parse + scenarios over a generated 200k-line auth.log.
func BenchmarkPipelineAuth200k(b *testing.B) {
	data, m := corpusFile(b, 10, 200_000, "auth.log")
	benchFeed(b, data, "sshd", m, countAlerts(m, true))
}

// BenchmarkDetect measures the detect stage alone on one benign request.
func BenchmarkDetect(b *testing.B) {
	eng := newBenchEngine(b, &countSink{})
	ev := event.Event{Time: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Source: netip.MustParseAddr("198.18.0.7"),
		Type: event.TypeHTTPAccess, Parser: "nginx", Method: "GET", Path: "/blog/post-42?ref=home", Proto: "HTTP/1.1",
		Status: 200, Bytes: 5123, Referer: "https://www.google.com/",
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}
	b.ReportAllocs()
	cpu0 := cputime.Used()
	for b.Loop() {
		ev.Time = ev.Time.Add(time.Second) // one request a second: no overflow
		eng.Event(&ev)
	}
	b.ReportMetric(float64(cputime.Used()-cpu0)/float64(b.N), "cpu-ns/event")
}

// BenchmarkMemory100kIPs feeds 100k distinct sources (three non-static
// requests each, so crawl, flood and probing hold a bucket per source) and
// reports the live heap per tracked source after a GC.
func BenchmarkMemory100kIPs(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		eng := newBenchEngine(b, &countSink{})
		t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
		const n = 100_000
		paths := [3]string{"/a", "/b", "/missing"}
		for i := range n {
			a := netip.AddrFrom4([4]byte{44, byte(i >> 16), byte(i >> 8), byte(i)}) // public: private ranges are whitelisted
			for j, p := range paths {
				st := 200
				if j == 2 {
					st = 404
				}
				eng.Event(&event.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Source: a, Type: event.TypeHTTPAccess, Method: "GET", Path: p, Status: st})
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := eng.Stats()
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/ip")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(st.Scenarios.Buckets), "buckets")
		b.ReportMetric(float64(cputime.MaxRSS())/(1<<20), "maxrss-MiB")
		runtime.KeepAlive(eng)
	}
}

// The detect stage's memory stays bounded however many sources pass.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("feeds 600k events")
	}
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.New(profile.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{Scenarios: scs, Profiles: prof, Sink: &countSink{}, MaxBuckets: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 300_000 {
		a := netip.AddrFrom4([4]byte{44, byte(i >> 16), byte(i >> 8), byte(i)}) // public: private ranges are whitelisted
		for _, p := range []string{"/x", "/y"} {
			// All within one second: no bucket drains, so only eviction bounds them.
			eng.Event(&event.Event{Time: t0, Source: a, Type: event.TypeHTTPAccess, Path: p, Status: 200})
		}
	}
	st := eng.Stats().Scenarios
	// Two scenarios (flood, crawl) see these events, each capped at 50k.
	if st.Buckets != 100_000 || st.Evicted != 2*(300_000-50_000) {
		t.Fatalf("buckets %d evicted %d, want 100000 and %d", st.Buckets, st.Evicted, 2*(300_000-50_000))
	}
	fmt.Fprint(os.Stderr)
}
