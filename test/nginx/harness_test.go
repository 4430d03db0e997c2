package nginx

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bouncerBin is the nginx-bouncer binary built once by TestMain.
var bouncerBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "portcullis-nginx-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bouncerBin = filepath.Join(dir, "nginx-bouncer")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", bouncerBin, "github.com/portcullis-ips/portcullis/cmd/nginx-bouncer")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build nginx-bouncer:", err)
		return 1
	}
	return m.Run()
}

// requireNginx returns the nginx binary, skipping the test when there is
// none, except under CI=true where it must be installed.
func requireNginx(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("nginx")
	if err != nil {
		for _, c := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, serr := os.Stat(c); serr == nil {
				return c
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs nginx (apt-get install nginx-light): %v", err)
		}
		t.Skipf("needs nginx (apt-get install nginx-light): %v", err)
	}
	return p
}

var (
	portsMu sync.Mutex
	ports   = map[string]bool{}
)

// freePort returns a loopback address that was free a moment ago and that
// no other call of this test binary returned, so that addresses handed to
// processes that have not bound them yet cannot collide.
func freePort(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if !ports[addr] {
			ports[addr] = true
			return addr
		}
	}
	t.Fatal("no unused loopback port found")
	return ""
}

// process is a child process stopped at cleanup.
type process struct {
	cmd    *exec.Cmd
	output *bytes.Buffer
	done   chan struct{}
}

func startProcess(t testing.TB, name string, stopSig syscall.Signal, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), output: new(bytes.Buffer), done: make(chan struct{})}
	p.cmd.Stdout = p.output
	p.cmd.Stderr = p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(stopSig)
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.output)
		}
	})
	return p
}

// stop signals the process and waits for it, killing it after 5s.
func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rssBytes reads the resident set size of the process from /proc.
func (p *process) rssBytes(t testing.TB) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// bouncer is a running nginx-bouncer.
type bouncer struct {
	*process
	addr, metrics string
}

// startBouncer runs the binary with the given extra flags and waits until
// it accepts connections.
func startBouncer(t testing.TB, brokers, topic string, extra ...string) *bouncer {
	t.Helper()
	b := &bouncer{addr: freePort(t), metrics: freePort(t)}
	args := append([]string{"--listen", b.addr, "--metrics-listen", b.metrics, "--brokers", brokers,
		"--topic", topic, "--group", "-", "--log-level", "warn"}, extra...)
	b.process = startProcess(t, bouncerBin, syscall.SIGTERM, args...)
	waitUntil(t, 10*time.Second, "bouncer listening", func() bool {
		c, err := net.DialTimeout("tcp", b.addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return b
}

// waitReady waits for GET /ready to answer 200.
func (b *bouncer) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, "bouncer ready", func() bool {
		resp, err := http.Get("http://" + b.addr + "/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// metric returns the value of one sample of the bouncer's /metrics.
func (b *bouncer) metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + b.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", series)
	return 0
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// snippetDir is contrib/nginx/portcullis, relative to this package.
const snippetDir = "../../contrib/nginx/portcullis"

// site is one server block of the generated nginx.conf.
type site struct {
	listen   string
	realIP   bool   // set_real_ip_from 127.0.0.1 + real_ip_header X-Forwarded-For
	check    string // "check.conf", "check-cached.conf" or "lua-server.conf"; "" for no check at all
	failMode string // "fail-open.conf" or "fail-closed.conf"; "lua-fail-open.conf" or "lua-fail-closed.conf"
	content  string // the protected location's content directives
}

// luaModules are Debian's libnginx-mod-http-lua and the NDK it needs.
var luaModules = []string{"/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so"}

// requireLua skips the test when Debian's Lua module for nginx is not
// installed, except under CI=true where it must be.
func requireLua(t testing.TB) {
	t.Helper()
	for _, m := range luaModules {
		if _, err := os.Stat(m); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("needs nginx's Lua module (apt-get install libnginx-mod-http-lua): %v", err)
			}
			t.Skipf("needs nginx's Lua module (apt-get install libnginx-mod-http-lua): %v", err)
		}
	}
}

// luaStaleAfter is the heartbeat age after which the tests' Lua check
// counts the bouncer as down (the shipped default is 5 s).
const luaStaleAfter = "3"

// banFile is where nginxConf points the Lua check: the bouncer of a Lua
// site runs with --ban-file banFile(dir).
func banFile(dir string) string { return filepath.Join(dir, "bans") }

// nginxConf generates nginx.conf in dir around the shipped snippets, which
// are copied unchanged except for the bouncer's address and the cache path.
func nginxConf(t testing.TB, dir, bouncerAddr string, workers int, sites []site) string {
	t.Helper()
	conf := filepath.Join(dir, "conf")
	if err := os.MkdirAll(filepath.Join(conf, "portcullis"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(snippetDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(snippetDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		switch e.Name() {
		case "upstream.conf":
			s = mustReplace(t, s, "server 127.0.0.1:8090;", "server "+bouncerAddr+";")
		case "cache-zone.conf":
			s = mustReplace(t, s, "/dev/shm/nginx-portcullis", filepath.Join(dir, "cache"))
		case "lua-http.conf":
			s = mustReplace(t, s, "/etc/nginx/portcullis/?.lua", filepath.Join(conf, "portcullis", "?.lua"))
			s = mustReplace(t, s, "/dev/shm/portcullis-nginx.bans", banFile(dir))
			s = mustReplace(t, s, "stale_after = 5", "stale_after = "+luaStaleAfter)
		}
		if err := os.WriteFile(filepath.Join(conf, "portcullis", e.Name()), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var w strings.Builder
	lua := false
	for _, s := range sites {
		lua = lua || s.check == "lua-server.conf"
	}
	if lua {
		for _, m := range luaModules {
			fmt.Fprintf(&w, "load_module %s;\n", m)
		}
	}
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody, unable to use the test's
		// temporary directories.
		w.WriteString("user root;\n")
	}
	fmt.Fprintf(&w, `worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path %[2]s/tmp/proxy;
    fastcgi_temp_path %[2]s/tmp/fastcgi;
    uwsgi_temp_path %[2]s/tmp/uwsgi;
    scgi_temp_path %[2]s/tmp/scgi;
    keepalive_requests 100000;
    include portcullis/upstream.conf;
    include portcullis/cache-zone.conf;
`, workers, dir)
	if lua {
		w.WriteString("    include portcullis/lua-http.conf;\n")
	}
	for _, s := range sites {
		fmt.Fprintf(&w, "    server {\n        listen %s;\n", s.listen)
		if s.realIP {
			w.WriteString("        set_real_ip_from 127.0.0.1;\n        real_ip_header X-Forwarded-For;\n")
		}
		switch s.check {
		case "":
		case "lua-server.conf":
			fmt.Fprintf(&w, "        include portcullis/%s;\n        include portcullis/%s;\n", s.check, s.failMode)
		default:
			fmt.Fprintf(&w, "        include portcullis/server.conf;\n        include portcullis/%s;\n        include portcullis/%s;\n", s.check, s.failMode)
		}
		fmt.Fprintf(&w, "        location / {\n            %s\n        }\n    }\n", s.content)
	}
	w.WriteString("}\n")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(conf, "nginx.conf")
	if err := os.WriteFile(path, []byte(w.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustReplace(t testing.TB, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("shipped snippet lacks %q", old)
	}
	return strings.ReplaceAll(s, old, new)
}

// startNginx runs nginx in the foreground on the generated configuration
// and waits until every site accepts connections.
func startNginx(t testing.TB, dir, confPath string, sites []site) *process {
	t.Helper()
	bin := requireNginx(t)
	out, err := exec.Command(bin, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath).CombinedOutput()
	if err != nil {
		cfg, _ := os.ReadFile(confPath)
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, cfg)
	}
	p := startProcess(t, bin, syscall.SIGQUIT, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath, "-g", "daemon off;")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	for _, s := range sites {
		waitUntil(t, 10*time.Second, "nginx on "+s.listen, func() bool {
			c, err := net.DialTimeout("tcp", s.listen, 100*time.Millisecond)
			if err == nil {
				_ = c.Close()
			}
			return err == nil
		})
	}
	return p
}

// client sends requests from a given loopback source address.
type client struct {
	http *http.Client
}

func newClient(source string) *client {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	return &client{http: &http.Client{
		Transport: tr,
		Timeout:   5 * time.Second,
		// The captcha route answers with a redirect in some setups; see it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is what a test looks at.
type response struct {
	status int
	body   string
	header http.Header
}

func (c *client) get(t testing.TB, ctx context.Context, method, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header.Add(name, value)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, body: string(body), header: resp.Header}
}

func replaceInFile(t testing.TB, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(mustReplace(t, string(b), old, new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// workerPIDs returns the children of nginx's master process.
func workerPIDs(t testing.TB, master int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatal("nginx has no workers")
	}
	return pids
}

// smapsRollup returns one field of /proc/PID/smaps_rollup, in bytes.
func smapsRollup(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("smaps_rollup %s: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/smaps_rollup", field, pid)
	return 0
}
