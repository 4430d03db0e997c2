package nginx

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchManyScript sends each request with one of 65536 client addresses
// drawn at random from the whole IPv4 unicast space (so lookups are spread
// over the ban table, cache-cold) in X-Forwarded-For; benchOneScript with
// one address (every lookup cache-hot). The requests are built once, in
// init: wrk.format needs wrk.host for the Host header, unknown before.
const benchManyScript = `
local reqs = {}
local n = 0
function init(args)
  math.randomseed(42)
  for i = 1, 65536 do
    local a
    repeat a = math.random(1, 223) until a ~= 10 and a ~= 127
    local ip = a .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255)
    reqs[i] = wrk.format("GET", "/index.html", {["X-Forwarded-For"] = ip})
  end
end
function request()
  n = n + 1
  return reqs[n % 65536 + 1]
end
`

const benchOneScript = `
local req
function init(args)
  req = wrk.format("GET", "/index.html", {["X-Forwarded-For"] = "192.0.2.1"})
end
function request() return req end
`

// refInit fills the reference shared dict (CrowdSec's Lua bouncer keeps
// its stream-mode decisions the same way: one key per address) from a
// file of addresses, once, in the first worker.
const refInit = `
    lua_shared_dict portcullis_ref 256m;
    init_worker_by_lua_block {
        local d = ngx.shared.portcullis_ref
        if ngx.worker.id() ~= 0 or d:get("__loaded") then return end
        for ip in io.lines(%q) do d:set(ip, 1) end
        d:set("__loaded", true)
    }
`

// TestNginxBench is make bench-nginx: nginx alone, the in-nginx Lua check
// over the ban file, auth_request to nginx-bouncer over a unix socket (with
// and without the allow cache) and the reference Lua shared-dict check,
// each holding the same one million bans, under wrk in one run, with
// requests from one client address and from 65536. It prints one line per
// mode ending in ratio=N.NN (requests/s ÷ nginx alone's, the mean of a run
// before and one after the others). PORTCULLIS_NGINX_BENCH=1 turns it on;
// PORTCULLIS_NGINX_BENCH_DURATION sets each run's length (default 5s).
func TestNginxBench(t *testing.T) {
	if os.Getenv("PORTCULLIS_NGINX_BENCH") != "1" {
		t.Skip("set PORTCULLIS_NGINX_BENCH=1 to run the nginx benchmark (make bench-nginx)")
	}
	requireNginx(t)
	requireLua(t)
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("needs wrk (apt-get install wrk)")
	}
	duration := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("PORTCULLIS_NGINX_BENCH_DURATION")); err == nil {
		duration = d
	}
	const bans = 1_000_000
	dir := t.TempDir()
	fmt.Printf("bench-nginx: %s, nproc %s, %s\n", time.Now().UTC().Format(time.RFC3339), nproc(), loadAvg())

	fd := newFeed(t)
	start := time.Now()
	addrs := publishBans(t, fd, bans)
	list, err := os.Create(filepath.Join(dir, "ref-bans.txt"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(list)
	for _, a := range addrs {
		_, _ = fmt.Fprintln(w, a)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = list.Close()
	t.Logf("published %d bans in %s", bans, time.Since(start).Round(time.Millisecond))

	sock := filepath.Join(dir, "bouncer.sock")
	start = time.Now()
	b := &bouncer{addr: "unix:" + sock, metrics: freePort(t)}
	b.process = startProcess(t, bouncerBin, 15, "--listen", b.addr, "--metrics-listen", b.metrics, "--brokers", fd.brokers,
		"--topic", fd.topic, "--group", "-", "--log-level", "warn", "--ban-file", banFile(dir))
	waitUntil(t, 5*time.Minute, "bouncer loaded the snapshot", func() bool {
		_, err := os.Stat(banFile(dir))
		return err == nil
	})
	fileSize := fileBytes(t, banFile(dir))
	t.Logf("bouncer loaded the snapshot and wrote the ban file (%d KiB) in %s", fileSize>>10, time.Since(start).Round(time.Millisecond))

	if err := os.MkdirAll(filepath.Join(dir, "html"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "html", "index.html"), []byte("<!DOCTYPE html><title>ok</title><p>hello</p>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	static := fmt.Sprintf("root %s;", filepath.Join(dir, "html"))
	refCheck := static + "\n            access_by_lua_block { if ngx.shared.portcullis_ref:get(ngx.var.remote_addr) then return ngx.exit(403) end }"
	plain := site{listen: freePort(t), realIP: true, content: static}
	lua := site{listen: freePort(t), realIP: true, check: "lua-server.conf", failMode: "lua-fail-open.conf", content: static}
	auth := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-open.conf", content: static}
	cached := site{listen: freePort(t), realIP: true, check: "check-cached.conf", failMode: "fail-open.conf", content: static}
	ref := site{listen: freePort(t), realIP: true, content: refCheck}
	sites := []site{plain, lua, auth, cached, ref}
	conf := nginxConf(t, dir, "unix:"+sock, 1, sites)
	replaceInFile(t, conf, "    include portcullis/lua-http.conf;\n", "    include portcullis/lua-http.conf;\n"+fmt.Sprintf(refInit, filepath.Join(dir, "ref-bans.txt")))
	replaceInFile(t, conf, "        include portcullis/server.conf;",
		"        location @portcullis_captcha { auth_request off; return 302 /captcha; }\n        include portcullis/server.conf;")
	replaceInFile(t, conf, "        include portcullis/lua-server.conf;",
		"        location @portcullis_captcha { return 302 /captcha; }\n        include portcullis/lua-server.conf;")
	shm, err := os.MkdirTemp("/dev/shm", "portcullis-nginx-cache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	replaceInFile(t, filepath.Join(dir, "conf", "portcullis", "cache-zone.conf"), filepath.Join(dir, "cache"), shm)
	ngx := startNginx(t, dir, conf, sites)
	c := newClient("127.0.0.1")
	banned := "X-Forwarded-For: " + addrs[len(addrs)/2].String()
	// Every protected mode must refuse a banned address before it is timed.
	// The worker is busy filling the dict at first: probes time out.
	waitUntil(t, 3*time.Minute, "reference dict loaded", func() bool {
		req, _ := http.NewRequest("GET", "http://"+ref.listen+"/index.html", nil)
		req.Header.Set("X-Forwarded-For", addrs[len(addrs)/2].String())
		resp, err := c.http.Do(req)
		if err != nil {
			return false
		}
		drain(resp)
		return resp.StatusCode == 403
	})
	for _, s := range []site{lua, auth, cached} {
		if r := c.get(t, t.Context(), "GET", "http://"+s.listen+"/index.html", banned); r.status != 403 {
			t.Fatalf("%s: banned address answered %d, want 403", s.check, r.status)
		}
	}
	if r := c.get(t, t.Context(), "GET", "http://"+plain.listen+"/index.html", banned); r.status != 200 {
		t.Fatalf("plain nginx answered %d", r.status)
	}

	scripts := map[string]string{}
	for name, src := range map[string]string{"one": benchOneScript, "many": benchManyScript} {
		scripts[name] = filepath.Join(dir, name+".lua")
		if err := os.WriteFile(scripts[name], []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	workers := workerPIDs(t, ngx.cmd.Process.Pid)
	type result struct {
		rps float64
		// nginxCPU and bouncerCPU are the CPU time nginx's processes and
		// the bouncer spent per request: what a request costs the machine,
		// which a busy machine does not inflate the way it does wall time.
		nginxCPU, bouncerCPU time.Duration
	}
	run := func(s site, sources string) result {
		t.Helper()
		n0, b0 := cpuTime(t, workers...), cpuTime(t, b.cmd.Process.Pid)
		out, err := exec.Command(wrk, "-t1", "-c32", "-d"+duration.String(), "-s", scripts[sources], "http://"+s.listen+"/index.html").CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		m := wrkRPS.FindSubmatch(out)
		if m == nil {
			t.Fatalf("wrk output not understood:\n%s", out)
		}
		// One source is clean; of 65536 random ones a few dozen may be
		// among the million banned (403), so allow 0.5 %.
		if bad := wrkNon2xx.FindSubmatch(out); bad != nil {
			n, _ := strconv.Atoi(string(bad[1]))
			total := wrkTotal.FindSubmatch(out)
			all, _ := strconv.Atoi(string(total[1]))
			if sources == "one" || float64(n) > 0.005*float64(all) {
				t.Errorf("%d non-2xx answers of %d:\n%s", n, all, out)
			}
		}
		n1, b1 := cpuTime(t, workers...), cpuTime(t, b.cmd.Process.Pid)
		rps, _ := strconv.ParseFloat(string(m[1]), 64)
		reqs, _ := strconv.ParseFloat(string(wrkTotal.FindSubmatch(out)[1]), 64)
		r := result{rps: rps, nginxCPU: time.Duration(float64(n1-n0) / reqs), bouncerCPU: time.Duration(float64(b1-b0) / reqs)}
		t.Logf("%s, %s source(s): %.0f requests/s, nginx CPU %s/request, bouncer CPU %s/request\n%s", s.listen, sources, rps, r.nginxCPU, r.bouncerCPU, out)
		return r
	}
	modes := []struct {
		name string
		s    site
	}{
		{"lua-banfile", lua},
		{"auth_request-unix", auth},
		{"auth_request-unix-cached", cached},
		{"reference lua_shared_dict", ref},
	}
	for _, sources := range []string{"one", "many"} {
		before := run(plain, sources)
		got := make([]result, len(modes))
		for i, m := range modes {
			got[i] = run(m.s, sources)
		}
		after := run(plain, sources)
		base := (before.rps + after.rps) / 2
		baseCPU := (before.nginxCPU + after.nginxCPU) / 2
		fmt.Printf("plain nginx sources=%s rps=%.0f (%.0f before, %.0f after) nginx-cpu=%s/req %s\n",
			sources, base, before.rps, after.rps, baseCPU.Round(10*time.Nanosecond), loadAvg())
		for i, m := range modes {
			r := got[i]
			// cpu-ratio: plain nginx's CPU per request over the mode's
			// (nginx + bouncer): the throughput ratio a CPU-bound machine
			// would show, read from CPU time rather than the clock.
			cpuRatio := float64(baseCPU) / float64(r.nginxCPU+r.bouncerCPU)
			fmt.Printf("mode=%s bans=%d sources=%s rps=%.0f plain=%.0f nginx-cpu=%s/req bouncer-cpu=%s/req cpu-ratio=%.2f ratio=%.2f\n",
				m.name, bans, sources, r.rps, base, r.nginxCPU.Round(10*time.Nanosecond), r.bouncerCPU.Round(10*time.Nanosecond), cpuRatio, r.rps/base)
		}
	}
	var rss, pss int64
	for _, pid := range workerPIDs(t, ngx.cmd.Process.Pid) {
		rss += smapsRollup(t, pid, "Rss:")
		pss += smapsRollup(t, pid, "Pss:")
	}
	fmt.Printf("memory: ban file %d MiB (mapped shared by the workers); reference dict zone 256 MiB reserved; nginx processes RSS %d MiB, PSS %d MiB; bouncer RSS %d MiB\n",
		fileSize>>20, rss>>20, pss>>20, b.rssBytes(t)>>20)
	fmt.Printf("bench-nginx: done, %s\n", loadAvg())
}

var (
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkTotal  = regexp.MustCompile(`(\d+) requests in`)
)

// cpuTime returns the CPU time the processes have run, every thread of
// each, from /proc/PID/task/TID/schedstat (nanoseconds, unlike the
// tick-grained stat). A process that exited (nginx's cache loader) counts
// for nothing.
func cpuTime(t testing.TB, pids ...int) time.Duration {
	t.Helper()
	var total time.Duration
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, path := range tasks {
			b, err := os.ReadFile(path)
			if err != nil {
				continue // the thread ended
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				continue
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", path, b)
			}
			total += time.Duration(ns)
		}
	}
	return total
}

func fileBytes(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load average unknown"
	}
	f := strings.Fields(string(b))
	return "load average " + strings.Join(f[:3], " ")
}

func nproc() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
