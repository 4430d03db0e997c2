package nginx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// wrkScript sends every request with one of 1000 client addresses in
// 10.1.0.0/22, none of them banned, through X-Forwarded-For: a site sees
// several requests per client, which is what allow caching relies on.
const wrkScript = `
local n = 0
request = function()
  n = n + 1
  local i = n % 1000
  return wrk.format("GET", nil, {["X-Forwarded-For"] = "10.1." .. math.floor(i / 256) .. "." .. (i % 256)})
end
`

// wrkDirectScript asks the bouncer itself, as nginx would, about 1000
// client addresses.
const wrkDirectScript = `
local n = 0
request = function()
  n = n + 1
  local i = n % 1000
  return wrk.format("GET", nil, {["X-Real-IP"] = "10.1." .. math.floor(i / 256) .. "." .. (i % 256)})
end
`

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99 = regexp.MustCompile(`\n\s+99%\s+([0-9.]+)(us|ms|s)`)
)

// TestWrkBenchmark measures requests/s and p99 latency with wrk on
// loopback: nginx alone, nginx + auth_request to nginx-bouncer holding one
// million bans, and the same with allow answers cached. It runs only with
// PORTCULLIS_NGINX_BENCH=1 (it takes a few minutes) and logs the figures
// for bench/nginx.md.
func TestWrkBenchmark(t *testing.T) {
	if os.Getenv("PORTCULLIS_NGINX_BENCH") != "1" {
		t.Skip("set PORTCULLIS_NGINX_BENCH=1 to run the wrk benchmark")
	}
	requireNginx(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("needs wrk (apt-get install wrk)")
	}
	duration := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("PORTCULLIS_NGINX_BENCH_DURATION")); err == nil {
		duration = d
	}
	const bans = 1_000_000

	fd := newFeed(t)
	start := time.Now()
	publishBans(t, fd, bans)
	t.Logf("published %d bans in %s", bans, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	b := startBouncer(t, fd.brokers, fd.topic, "--trusted-proxy", "127.0.0.1")
	b.waitReady(t, 5*time.Minute)
	t.Logf("bouncer loaded the snapshot of %v prefixes in %s; RSS %d MiB",
		b.metric(t, "portcullis_nginx_bouncer_prefixes"), time.Since(start).Round(time.Millisecond), b.rssBytes(t)>>20)

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "html"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "html", "index.html"), []byte("<!DOCTYPE html><title>ok</title><p>hello</p>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "clients.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		t.Fatal(err)
	}
	directScript := filepath.Join(dir, "direct.lua")
	if err := os.WriteFile(directScript, []byte(wrkDirectScript), 0o644); err != nil {
		t.Fatal(err)
	}
	static := fmt.Sprintf("root %s;", filepath.Join(dir, "html"))
	plain := site{listen: freePort(t), realIP: true, content: static}
	auth := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-open.conf", content: static}
	cached := site{listen: freePort(t), realIP: true, check: "check-cached.conf", failMode: "fail-open.conf", content: static}
	sites := []site{plain, auth, cached}
	conf := nginxConf(t, dir, b.addr, 1, sites)
	replaceInFile(t, conf, "        include portcullis/server.conf;",
		"        location @portcullis_captcha { auth_request off; return 302 /captcha; }\n        include portcullis/server.conf;")
	// The allow cache on tmpfs, as README recommends: file cache hits on a
	// disk file system stall the worker.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "portcullis-nginx-cache-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(shm) })
		replaceInFile(t, filepath.Join(dir, "conf", "portcullis", "cache-zone.conf"), filepath.Join(dir, "cache"), shm)
	}
	startNginx(t, dir, conf, sites)

	type result struct {
		name     string
		rps      float64
		p99      time.Duration
		cpuCheck time.Duration // bouncer CPU per check it answered
	}
	configs := []struct {
		name, url, script string
		check             bool
	}{
		{"nginx alone", "http://" + plain.listen + "/index.html", script, false},
		{"nginx + auth_request (1M bans)", "http://" + auth.listen + "/index.html", script, true},
		{"nginx + auth_request, allow cached", "http://" + cached.listen + "/index.html", script, true},
		{"nginx-bouncer /check alone (1M bans)", "http://" + b.addr + "/check", directScript, true},
	}
	// Two rounds, interleaved, so that a change in the machine's load
	// shows as a difference between rounds rather than between configs.
	for round := 1; round <= 2; round++ {
		var results []result
		for _, s := range configs {
			allow0 := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="allow"}`)
			cpu0 := b.metric(t, "process_cpu_seconds_total")
			out, err := exec.Command(wrk, "-t2", "-c32", "-d"+duration.String(), "--latency", "-s", s.script, s.url).CombinedOutput()
			if err != nil {
				t.Fatalf("wrk: %v\n%s", err, out)
			}
			m := wrkRPS.FindSubmatch(out)
			p := wrkP99.FindSubmatch(out)
			if m == nil || p == nil {
				t.Fatalf("wrk output not understood:\n%s", out)
			}
			rps, _ := strconv.ParseFloat(string(m[1]), 64)
			v, _ := strconv.ParseFloat(string(p[1]), 64)
			unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(p[2])]
			checks := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="allow"}`) - allow0
			r := result{name: s.name, rps: rps, p99: time.Duration(v * float64(unit))}
			if checks > 0 {
				r.cpuCheck = time.Duration((b.metric(t, "process_cpu_seconds_total") - cpu0) / checks * float64(time.Second))
			}
			results = append(results, r)
			t.Logf("round %d, %s: %.0f requests/s, p99 %s, bouncer checks %v\n%s", round, s.name, rps, r.p99, checks, out)
			if s.check && checks == 0 {
				t.Errorf("%s: the bouncer was never asked", s.name)
			}
		}
		base := results[0]
		t.Logf("round %d: | config | requests/s | ratio to nginx alone | p99 | ratio | bouncer CPU per check |", round)
		for _, r := range results {
			t.Logf("round %d: | %s | %.0f | %.2f | %s | %.2f | %s |", round, r.name, r.rps, r.rps/base.rps, r.p99,
				float64(r.p99)/float64(base.p99), r.cpuCheck)
		}
	}
	t.Logf("bouncer RSS after the runs: %d MiB; lookups %v", b.rssBytes(t)>>20,
		b.metric(t, "portcullis_nginx_bouncer_lookup_duration_seconds_count"))
}

// publishBans publishes n ban decisions for random IPv4 addresses outside
// 10.0.0.0/8, in batches, and returns the addresses.
func publishBans(t *testing.T, fd *feed, n int) []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(11, 11))
	now := time.Now()
	const batch = 5000
	ds := make([]decisionfeed.Decision, 0, batch)
	addrs := make([]netip.Addr, 0, n)
	for i := 0; i < n; {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if a.As4()[0] == 10 || a.As4()[0] == 0 || a.As4()[0] == 127 {
			continue
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), 4*time.Hour, "bench", now)
		d.Scenario = "bench/ban"
		ds = append(ds, d)
		addrs = append(addrs, a)
		i++
		if len(ds) == batch || i == n {
			if err := fd.pub.Publish(ctx, ds...); err != nil {
				t.Fatalf("publish: %v", err)
			}
			ds = ds[:0]
		}
	}
	return addrs
}
