//go:build linux

// Package demo is the single-host Portcullis demo behind `make demo` and
// its CI test: three network namespaces (server, attacker, bystander)
// joined by veth pairs with documentation addresses; inside the server
// namespace the embedded broker, a real nginx logging to a file, the
// engine tailing that log and fw-bouncer with XDP on the server's
// interfaces; the attacker runs a short attack (a bad user agent, a
// WordPress brute force, a CVE-2021-41773 probe), each step from its own
// address, while the bystander browses. It reports the alerts, the
// decisions, the moment each attacker address starts being dropped and
// the detect-to-drop latency, then removes everything it made.
//
// Every process of the demo runs inside one of its namespaces (started
// with nsenter, which switches only the network namespace, so the
// host's bpffs stays visible to fw-bouncer); the host's own interfaces,
// addresses and tables are never touched. Outside the namespaces the demo
// creates only a temporary directory and one bpffs pin directory, both
// removed at the end.
package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/xdp"
)

// Topology addresses (RFC 5737 documentation ranges).
const (
	ServerAttackerSide  = "198.51.100.1"
	ServerAttackerSide6 = "2001:db8:a::1"
	ServerBystanderSide = "192.0.2.1"
	Bystander           = "192.0.2.20"
	brokerAddr          = "127.0.0.1:9092"
	metricsAddr         = "127.0.0.1:9101"
)

// FWBouncerCaps is the capability set of fw-bouncer's systemd unit, in
// setpriv(1) syntax; the demo runs fw-bouncer with exactly these.
const FWBouncerCaps = "+net_admin,+bpf,+sys_admin"

// Attackers are the attacker's source addresses, one per attack step: three
// IPv4 ones and an IPv6 one.
var Attackers = []string{"198.51.100.10", "198.51.100.11", "198.51.100.12", "2001:db8:a::10"}

// Expected maps each attacker address to its step and the scenario that
// step must fire.
var Expected = map[string]struct{ Step, Scenario string }{
	"198.51.100.10":  {StepBadUA, "crowdsecurity/http-bad-user-agent"},
	"198.51.100.11":  {StepWordPress, "crowdsecurity/http-bf-wordpress_bf"},
	"198.51.100.12":  {StepCVE, "crowdsecurity/http-cve-2021-41773"},
	"2001:db8:a::10": {StepBadUA6, "crowdsecurity/http-bad-user-agent"},
}

// Config is where the demo finds its programs and where it reports.
type Config struct {
	// BinDir holds portcullis and fw-bouncer.
	BinDir string
	// Self is the demo binary, re-executed for the role processes.
	Self string
	// Out receives the human-readable report.
	Out io.Writer
	// Timeout bounds the whole run (default 100s).
	Timeout time.Duration
}

// Block is what happened to one attacker address.
type Block struct {
	Src, Step string
	// Requests is the number of attack requests answered; the first one
	// answered at FirstRequest.
	Requests     int
	FirstRequest time.Time
	LastRequest  time.Time
	// Scenarios are the alerts raised on the address, in order.
	Scenarios []string
	AlertAt   time.Time // first alert seen on the topic
	DecideAt  time.Time // first ban decision seen on the topic
	// DropAt is the start of the first TCP connect from the address that
	// got no answer; zero if it was never blocked.
	DropAt time.Time
}

// Result is what the demo observed.
type Result struct {
	// Tag names everything the run created: namespaces Tag-srv, Tag-atk,
	// Tag-bys and the pin directory PinPath (/sys/fs/bpf/portcullis-Tag).
	Tag     string
	PinPath string
	// TmpDir held the logs and configurations; removed at the end.
	TmpDir string
	Blocks map[string]*Block
	// BystanderOK and BystanderFailed count the bystander's requests
	// answered 200 and not.
	BystanderOK, BystanderFailed int
	// Drops is fw-bouncer's dropped-packets counter at the end, and
	// FirstDropAt when the watcher first saw it above zero.
	Drops       float64
	FirstDropAt time.Time
}

// Namespaces are the namespace names of a run.
func (r *Result) Namespaces() []string {
	return []string{r.Tag + "-srv", r.Tag + "-atk", r.Tag + "-bys"}
}

// run is one demo run's state.
type run struct {
	cfg     Config
	res     *Result
	tmp     string
	start   time.Time
	procs   []*proc
	cleanup []func() error
	outMu   sync.Mutex
}

// proc is a process started inside a namespace.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   string
	done  chan struct{}
	// role processes stop when their standard input closes; daemons on
	// SIGTERM.
	role bool
}

// Run runs the demo once. The returned Result is filled as far as the run
// went, also on error; cleanup has happened when Run returns.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 100 * time.Second
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("demo: needs root (network namespaces, XDP)")
	}
	for _, c := range []string{"ip", "nsenter", "setpriv", "nginx"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("demo: %s not found on PATH (scripts/deps.sh demo installs it)", c)
		}
	}
	for _, b := range []string{"portcullis", "fw-bouncer"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("demo: %w (make build)", err)
		}
	}
	removeStale()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	tag := fmt.Sprintf("pcdemo-%d", os.Getpid())
	r := &run{cfg: cfg, start: time.Now(), res: &Result{
		Tag: tag, PinPath: "/sys/fs/bpf/portcullis-" + tag, Blocks: map[string]*Block{},
	}}
	for _, a := range Attackers {
		r.res.Blocks[a] = &Block{Src: a, Step: Expected[a].Step}
	}
	defer func() {
		if cerr := r.teardown(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := r.setup(ctx); err != nil {
		return r.res, err
	}
	return r.res, r.play(ctx)
}

func (r *run) say(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	_, _ = fmt.Fprintf(r.cfg.Out, "[%6.2fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *run) step(title string) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	_, _ = fmt.Fprintf(r.cfg.Out, "\n== %s\n", title)
}

func (r *run) ns(role string) string { return r.res.Tag + "-" + role }

// sh runs a command in the host namespace, for ip(8) calls that name the
// namespace they change.
func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *run) setup(ctx context.Context) error {
	var err error
	if r.tmp, err = os.MkdirTemp("", "portcullis-demo-"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	r.res.TmpDir = r.tmp
	r.cleanup = append(r.cleanup, func() error { return os.RemoveAll(r.tmp) })
	// nginx's workers run as nobody and must reach the document root.
	if err := os.Chmod(r.tmp, 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	r.step("network: namespaces " + strings.Join(r.res.Namespaces(), ", "))
	srv, atk, bys := r.ns("srv"), r.ns("atk"), r.ns("bys")
	for _, n := range []string{srv, atk, bys} {
		if err := sh("ip", "netns", "add", n); err != nil {
			return err
		}
		r.cleanup = append(r.cleanup, func() error { return sh("ip", "netns", "del", n) })
		if err := sh("ip", "-n", n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// The veth pairs are created inside the server namespace with their
	// peer moved straight into the other one: nothing appears in the host's.
	cmds := [][]string{
		{"-n", srv, "link", "add", "eth-atk", "type", "veth", "peer", "name", "eth0", "netns", atk},
		{"-n", srv, "link", "add", "eth-bys", "type", "veth", "peer", "name", "eth0", "netns", bys},
		{"-n", srv, "addr", "add", ServerAttackerSide + "/24", "dev", "eth-atk"},
		{"-n", srv, "addr", "add", ServerAttackerSide6 + "/64", "dev", "eth-atk", "nodad"},
		{"-n", srv, "addr", "add", ServerBystanderSide + "/24", "dev", "eth-bys"},
		{"-n", bys, "addr", "add", Bystander + "/24", "dev", "eth0"},
		{"-n", srv, "link", "set", "eth-atk", "up"},
		{"-n", srv, "link", "set", "eth-bys", "up"},
		{"-n", atk, "link", "set", "eth0", "up"},
		{"-n", bys, "link", "set", "eth0", "up"},
	}
	for _, a := range Attackers {
		if strings.Contains(a, ":") {
			cmds = append(cmds, []string{"-n", atk, "addr", "add", a + "/64", "dev", "eth0", "nodad"})
			continue
		}
		cmds = append(cmds, []string{"-n", atk, "addr", "add", a + "/24", "dev", "eth0"})
	}
	for _, c := range cmds {
		if err := sh("ip", c...); err != nil {
			return err
		}
	}
	r.say("server   %s: eth-atk %s/24 %s/64, eth-bys %s/24", srv, ServerAttackerSide, ServerAttackerSide6, ServerBystanderSide)
	r.say("attacker %s: eth0 %s (one address per attack step)", atk, strings.Join(Attackers, ", "))
	r.say("bystander %s: eth0 %s", bys, Bystander)

	r.step("server: broker, nginx, engine, fw-bouncer (all inside " + srv + ")")
	if err := r.writeFiles(); err != nil {
		return err
	}
	bin := func(n string) string { return filepath.Join(r.cfg.BinDir, n) }
	if _, err := r.spawn("broker", "srv", bin("portcullis"), "broker", "--listen", brokerAddr,
		"--data-dir", filepath.Join(r.tmp, "broker")); err != nil {
		return err
	}
	if err := r.waitLog(ctx, "broker", "broker listening", 20*time.Second); err != nil {
		return err
	}
	r.say("broker listening on %s", brokerAddr)
	if _, err := r.spawn("nginx", "srv", "nginx", "-p", r.tmp+"/", "-e", filepath.Join(r.tmp, "nginx-error.log"),
		"-c", filepath.Join(r.tmp, "nginx.conf"), "-g", "daemon off;"); err != nil {
		return err
	}
	r.say("nginx %s serving %s/www, access log %s", nginxVersion(), r.tmp, filepath.Join(r.tmp, "access.log"))
	if _, err := r.spawn("engine", "srv", bin("portcullis"), "engine", "--config", filepath.Join(r.tmp, "engine.yaml"),
		"--brokers", brokerAddr); err != nil {
		return err
	}
	if err := r.waitLog(ctx, "engine", "engine running", 20*time.Second); err != nil {
		return err
	}
	r.say("engine tailing the access log (shipped scenarios and profiles; whitelist 127.0.0.0/8, ::1 and the server's own addresses)")
	fwcfg := filepath.Join(r.tmp, "fw-bouncer.yaml")
	r.cleanup = append(r.cleanup, func() error {
		// Pins live in the host's bpffs: remove them through fw-bouncer's
		// own cleanup, then the directory if anything is left.
		out, cerr := exec.Command("nsenter", "--net=/run/netns/"+srv, bin("fw-bouncer"), "cleanup", "--mode", "xdp", "--config", fwcfg).CombinedOutput()
		if cerr != nil {
			cerr = fmt.Errorf("fw-bouncer cleanup: %w: %s", cerr, strings.TrimSpace(string(out)))
		}
		if err := os.RemoveAll(r.res.PinPath); err != nil {
			cerr = errors.Join(cerr, err)
		}
		return cerr
	})
	// fw-bouncer runs with no more capabilities than its systemd unit
	// grants (packaging/systemd/fw-bouncer.service), so the demo checks
	// that set is enough.
	caps := os.Getenv("PORTCULLIS_DEMO_FW_CAPS")
	if caps == "" {
		caps = FWBouncerCaps
	}
	if _, err := r.spawn("fw-bouncer", "srv", "setpriv", "--bounding-set=-all,"+caps, "--inh-caps=-all,"+caps,
		"--ambient-caps=-all,"+caps, "--", bin("fw-bouncer"), "--config", fwcfg); err != nil {
		return err
	}
	if err := r.waitLog(ctx, "fw-bouncer", "reconciled to the feed's snapshot", 30*time.Second); err != nil {
		return err
	}
	r.say("fw-bouncer: XDP on eth-atk and eth-bys, pins in %s, metrics on %s", r.res.PinPath, metricsAddr)
	return nil
}

func nginxVersion() string {
	out, _ := exec.Command("nginx", "-v").CombinedOutput()
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}

// writeFiles writes the site, nginx's, the engine's and fw-bouncer's
// configuration into the temporary directory.
func (r *run) writeFiles() error {
	t := r.tmp
	files := map[string]string{
		"www/index.html":      "<!doctype html><title>Portcullis demo</title><h1>It works</h1>\n",
		"www/about.html":      "<!doctype html><title>About</title><p>A small site.</p>\n",
		"www/blog/hello.html": "<!doctype html><title>Hello</title><p>First post.</p>\n",
		"www/style.css":       "body { font-family: sans-serif; }\n",
		"www/logo.png":        "\x89PNG\r\n\x1a\n",
		"access.log":          "",
		"nginx.conf": fmt.Sprintf(`# nginx of the Portcullis demo, in the server namespace.
worker_processes 1;
pid %[1]s/nginx.pid;
user nobody nogroup;
events { worker_connections 256; }
http {
    access_log %[1]s/access.log combined;
    client_body_temp_path %[1]s/nginx-tmp/body;
    proxy_temp_path %[1]s/nginx-tmp/proxy;
    fastcgi_temp_path %[1]s/nginx-tmp/fastcgi;
    uwsgi_temp_path %[1]s/nginx-tmp/uwsgi;
    scgi_temp_path %[1]s/nginx-tmp/scgi;
    types { text/html html; text/css css; image/png png; }
    server {
        listen 80;
        listen [::]:80;
        root %[1]s/www;
        # A WordPress login that never succeeds: the form again, 200.
        location = /wp-login.php { return 200 "<form method=post>login</form>\n"; }
    }
    # The probe port: connects only, not logged, so probes are no traffic
    # for the engine.
    server {
        listen 81;
        listen [::]:81;
        access_log off;
        return 204;
    }
}
`, t),
		"acquis.yaml": fmt.Sprintf("filenames:\n  - %s/access.log\nlabels:\n  type: nginx\n", t),
		"engine.yaml": fmt.Sprintf("acquis: acquis.yaml\nbrokers: [%s]\nhost: demo-server\n", brokerAddr),
		"fw-bouncer.yaml": fmt.Sprintf(`mode: xdp
brokers: [%s]
group: portcullis-fw-bouncer-demo
metrics_listen: %s
coalesce: 1ms
xdp:
  interfaces: [eth-atk, eth-bys]
  mode: auto
  pin_path: %s
`, brokerAddr, metricsAddr, r.res.PinPath),
	}
	for name, body := range files {
		p := filepath.Join(t, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(t, "nginx-tmp"), 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

// start runs a program inside the role's namespace; its standard error
// (and standard output, unless events are read from it) goes to a log
// file in the temporary directory.
func (r *run) spawn(name, role, prog string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(r.tmp, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	// The child holds its own descriptor of the log from Start on.
	defer func() { _ = f.Close() }()
	p.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + r.ns(role), prog}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("demo: %s: %w", name, err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	return p, nil
}

// startRole runs a role of this binary in a namespace and passes each of
// its events to handle, in order, from one goroutine.
func (r *run) startRole(role, nsRole string, handle func(Event), args ...string) (*proc, <-chan struct{}, error) {
	p := &proc{name: role, log: filepath.Join(r.tmp, role+".log"), done: make(chan struct{}), role: true}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, nil, fmt.Errorf("demo: %w", err)
	}
	p.cmd = exec.Command("nsenter", append([]string{"--net=/run/netns/" + r.ns(nsRole), r.cfg.Self, "role", role}, args...)...)
	p.cmd.Stderr = f
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("demo: %s: %w", role, err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("demo: %s: %w", role, err)
	}
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("demo: start %s: %w", role, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				r.say("%s: unreadable event %q: %v", role, sc.Text(), err)
				continue
			}
			handle(ev)
		}
	}()
	go func() { <-read; _ = p.cmd.Wait(); _ = f.Close(); close(p.done) }()
	r.procs = append(r.procs, p)
	return p, read, nil
}

// waitLog waits until a process's log holds substr.
func (r *run) waitLog(ctx context.Context, name, substr string, timeout time.Duration) error {
	var p *proc
	for _, q := range r.procs {
		if q.name == name {
			p = q
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), substr) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("demo: %s exited before logging %q; its log:\n%s", name, substr, b)
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for %s to log %q: %w", name, substr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %s did not log %q within %s; its log:\n%s", name, substr, timeout, b)
		}
	}
}

// stop ends a process: a role's standard input is closed (roles stop on
// that), a daemon gets SIGTERM at once; SIGKILL after 10s.
func (p *proc) stop() {
	_ = p.stdin.Close()
	if p.role {
		select {
		case <-p.done:
			return
		case <-time.After(2 * time.Second):
		}
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// teardown stops the processes (newest first), then undoes the setup in
// reverse order.
func (r *run) teardown() error {
	r.step("cleanup")
	for _, p := range slices.Backward(r.procs) {
		p.stop()
	}
	var errs []error
	for _, c := range slices.Backward(r.cleanup) {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	left := leftovers(r.res)
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("demo: left behind: %s", strings.Join(left, ", ")))
	}
	if err := errors.Join(errs...); err != nil {
		r.say("cleanup: %v", err)
		return err
	}
	r.say("removed namespaces %s, pins %s and %s", strings.Join(r.res.Namespaces(), ", "), r.res.PinPath, r.tmp)
	return nil
}

// leftovers lists the namespaces and pins of a run that still exist.
func leftovers(res *Result) []string {
	var left []string
	for _, n := range res.Namespaces() {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			left = append(left, "namespace "+n)
		}
	}
	if _, err := os.Stat(res.PinPath); err == nil {
		left = append(left, "pin directory "+res.PinPath)
	}
	if res.TmpDir != "" {
		if _, err := os.Stat(res.TmpDir); err == nil {
			left = append(left, "directory "+res.TmpDir)
		}
	}
	return left
}

// Leftovers lists the namespaces and pins of a run that still exist; the
// CI test asserts it is empty.
func Leftovers(res *Result) []string { return leftovers(res) }

// removeStale removes the namespaces and pins of earlier demo runs whose
// process is gone (killed before its cleanup ran); nothing else.
func removeStale() {
	seen := map[string]bool{}
	for _, dir := range []string{"/run/netns", "/sys/fs/bpf"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			rest, ok := strings.CutPrefix(strings.TrimPrefix(e.Name(), "portcullis-"), "pcdemo-")
			if !ok {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid == os.Getpid() {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				continue // still running
			}
			if dir == "/run/netns" {
				_ = sh("ip", "netns", "del", e.Name())
			} else if !seen[e.Name()] {
				_ = xdp.Cleanup(filepath.Join(dir, e.Name()))
			}
			seen[e.Name()] = true
		}
	}
}

// play runs the watcher, the bystander and the attack, and reports.
func (r *run) play(ctx context.Context) error {
	var mu sync.Mutex // guards r.res against the role readers
	res := r.res
	r.step("watching the alerts and decisions topics and fw-bouncer's drop counter")
	watchP, watchRead, err := r.startRole("watch", "srv", func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Kind {
		case "alert":
			remedy := "no decision"
			if ev.Type != "" {
				remedy = ev.Type + " " + ev.Duration
			}
			r.say("ALERT     %-15s %-40s -> %s", ev.IP, ev.Scenario, remedy)
			if b := res.Blocks[ev.IP]; b != nil {
				b.Scenarios = append(b.Scenarios, ev.Scenario)
				if b.AlertAt.IsZero() {
					b.AlertAt = ev.At
				}
			}
		case "decision":
			r.say("DECISION  %s %s %s for %s (%s)", ev.Op, ev.Type, ev.IP, ev.Duration, ev.Scenario)
			if b := res.Blocks[ev.IP]; b != nil && b.DecideAt.IsZero() && ev.Op == "add" && ev.Type == "ban" {
				b.DecideAt = ev.At
			}
		case "drops":
			if res.FirstDropAt.IsZero() && ev.Value > 0 {
				res.FirstDropAt = ev.At
				r.say("XDP       fw-bouncer dropped_packets_total went from 0 to %.0f", ev.Value)
			}
			res.Drops = ev.Value
		case "invalid":
			r.say("watch: %s", ev.Err)
		}
	}, "--brokers", brokerAddr, "--metrics", "http://"+metricsAddr+"/metrics")
	if err != nil {
		return err
	}

	r.step("bystander " + Bystander + " browses the site during the whole attack")
	bysP, bysRead, err := r.startRole("bystander", "bys", func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		if ev.OK {
			res.BystanderOK++
			if res.BystanderOK == 1 {
				r.say("BYSTANDER GET %s -> %d (and so on every 150ms; only failures are printed)", ev.What, ev.Status)
			}
			return
		}
		res.BystanderFailed++
		r.say("BYSTANDER GET %s FAILED: status %d %s", ev.What, ev.Status, ev.Err)
	}, "--target", ServerBystanderSide, "--src", Bystander)
	if err != nil {
		return err
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return fmt.Errorf("demo: %w", ctx.Err())
	}

	r.step("attack from " + r.ns("atk") + ": each step from its own address; TCP connects to port 81 probe every source")
	_, atkRead, err := r.startRole("attacker", "atk", func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		b := res.Blocks[ev.Src]
		if b == nil {
			return
		}
		switch ev.Kind {
		case "request":
			if !ev.OK {
				r.say("ATTACK    %-15s %-16s no answer (%s)", ev.Src, ev.What, ev.Err)
				return
			}
			b.Requests++
			if b.FirstRequest.IsZero() {
				b.FirstRequest = ev.At
			}
			b.LastRequest = ev.At
			r.say("ATTACK    %-15s %-16s -> %d", ev.Src, ev.What, ev.Status)
		case "probe":
			if ev.OK {
				r.say("PROBE     %-15s TCP connect to :81 answered", ev.Src)
				return
			}
			if b.DropAt.IsZero() {
				b.DropAt = ev.At
				r.say("DROPPED   %-15s first unanswered TCP connect (started %s): %s", ev.Src, ev.At.Format("15:04:05.000"), latencyLine(b))
			}
		}
	}, "--target", ServerAttackerSide, "--target6", ServerAttackerSide6, "--src", strings.Join(Attackers, ","))
	if err != nil {
		return err
	}
	select {
	case <-atkRead:
	case <-ctx.Done():
		return fmt.Errorf("demo: attack: %w", ctx.Err())
	}
	// Keep browsing a moment after the last ban, then let the watcher
	// catch up with the counter.
	time.Sleep(time.Second)
	bysP.stop()
	<-bysRead
	time.Sleep(300 * time.Millisecond)
	watchP.stop()
	<-watchRead

	r.step("the live decisions, as every bouncer rebuilds them from the topic")
	out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+r.ns("srv"),
		filepath.Join(r.cfg.BinDir, "portcullis"), "decisions", "list", "--brokers", brokerAddr, "--log-level", "warn").CombinedOutput()
	r.outMu.Lock()
	_, _ = r.cfg.Out.Write(out)
	r.outMu.Unlock()
	if err != nil {
		return fmt.Errorf("demo: portcullis decisions list: %w", err)
	}
	r.summary()
	return nil
}

// latencyLine is the detect-to-drop summary of one attacker address.
func latencyLine(b *Block) string {
	var parts []string
	detect := b.Detected()
	if !detect.IsZero() {
		parts = append(parts, fmt.Sprintf("detect->drop %s", ms(b.DropAt.Sub(detect))))
	}
	if t := b.Trigger(); !t.IsZero() {
		parts = append(parts, fmt.Sprintf("request->drop %s", ms(b.DropAt.Sub(t))))
	}
	if len(parts) == 0 {
		return "no alert seen yet"
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// Detected is when the watcher first saw the address's alert or ban
// decision on the topics, whichever came first.
func (b *Block) Detected() time.Time {
	switch {
	case b.AlertAt.IsZero():
		return b.DecideAt
	case b.DecideAt.IsZero() || b.AlertAt.Before(b.DecideAt):
		return b.AlertAt
	}
	return b.DecideAt
}

// Trigger is the answered request that made the alert: the last one
// answered before the detection (the attacker keeps sending while the ban
// travels), or the last one if none was detected.
func (b *Block) Trigger() time.Time {
	if b.Requests == 0 {
		return time.Time{}
	}
	if d := b.Detected(); !d.IsZero() && b.LastRequest.After(d) {
		// Requests answered after detection: the trigger was earlier,
		// bounded by the first request.
		return b.FirstRequest
	}
	return b.LastRequest
}

// Check reports what the demo must show and did not: every attacker
// address blocked after firing its scenario, and a bystander that was
// served every time.
func (res *Result) Check() error {
	var errs []error
	for _, a := range Attackers {
		b := res.Blocks[a]
		want := Expected[a].Scenario
		if !slices.Contains(b.Scenarios, want) {
			errs = append(errs, fmt.Errorf("%s (%s): no %s alert (alerts: %v)", a, b.Step, want, b.Scenarios))
		}
		if b.DropAt.IsZero() {
			errs = append(errs, fmt.Errorf("%s (%s): never blocked", a, b.Step))
		}
	}
	if res.BystanderFailed > 0 || res.BystanderOK == 0 {
		errs = append(errs, fmt.Errorf("bystander: %d requests answered 200, %d not", res.BystanderOK, res.BystanderFailed))
	}
	if res.Drops == 0 {
		errs = append(errs, errors.New("fw-bouncer dropped no packet"))
	}
	return errors.Join(errs...)
}

func (r *run) summary() {
	res := r.res
	r.step("summary")
	for _, a := range Attackers {
		b := res.Blocks[a]
		state := "NOT BLOCKED"
		if !b.DropAt.IsZero() {
			state = "blocked: " + latencyLine(b)
		}
		r.say("attacker  %-15s %-16s %2d answered request(s), alerts %v, %s", a, b.Step, b.Requests, b.Scenarios, state)
	}
	hurt := "never hurt"
	if res.BystanderFailed > 0 {
		hurt = "HURT"
	}
	r.say("bystander %-15s %d requests answered 200, %d failed: %s", Bystander, res.BystanderOK, res.BystanderFailed, hurt)
	r.say("fw-bouncer XDP dropped %.0f packets", res.Drops)
}
