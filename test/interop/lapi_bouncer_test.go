package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/crowdsec"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
	"github.com/portcullis-ips/portcullis/internal/testenv"
	"github.com/portcullis-ips/portcullis/test/netns"
)

// lapiKey is the bouncer API key of these tests.
const lapiKey = "interop-bouncer-key-0123456789"

// lapiProc is a running `portcullis lapi`.
type lapiProc struct {
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan error
}

// startLAPI starts `portcullis lapi` on addr with a state directory.
func startLAPI(t *testing.T, brokers []string, topic, addr, stateDir string) *lapiProc {
	t.Helper()
	p := &lapiProc{done: make(chan error, 1)}
	p.cmd = exec.Command(portcullisBin, "lapi", "--listen", addr, "--state-dir", stateDir,
		"--brokers", strings.Join(brokers, ","), "--topic", topic, "--log-level", "warn")
	p.cmd.Env = append(os.Environ(), "PORTCULLIS_LAPI_KEY="+lapiKey)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends lapi with SIGTERM, as an operator's restart does.
func (p *lapiProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may have exited already; Wait tells
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("lapi exited with %v:\n%s", err, p.out.String())
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		if err := <-p.done; err != nil {
			t.Logf("lapi killed: %v", err)
		}
		t.Errorf("lapi did not stop within 20s of SIGTERM:\n%s", p.out.String())
	}
}

// streamLog records every stream answer a bouncer received, by phase.
type streamLog struct {
	mu      sync.Mutex
	phase   int
	answers map[int][]crowdsec.Stream
}

func (l *streamLog) setPhase(p int) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

// values returns the values sent as new and as deleted in phase p.
func (l *streamLog) values(p int) (added, deleted []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, st := range l.answers[p] {
		for _, d := range st.New {
			added = append(added, d.Value)
		}
		for _, d := range st.Deleted {
			deleted = append(deleted, d.Value)
		}
	}
	slices.Sort(added)
	slices.Sort(deleted)
	return added, deleted
}

// serveRecordingProxy serves on ln a reverse proxy to the LAPI at target
// that records the stream answers, so the test sees exactly what the real
// bouncer was sent.
func serveRecordingProxy(t *testing.T, ln net.Listener, target string) *streamLog {
	t.Helper()
	log := &streamLog{answers: map[int][]crowdsec.Stream{}}
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	// lapi is down on purpose for a while: a 502 is the answer, no log line.
	rp.ErrorLog = stdlog.New(io.Discard, "", 0)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.StatusCode != http.StatusOK || !strings.HasSuffix(r.Request.URL.Path, "/decisions/stream") {
			return nil
		}
		b, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return err
		}
		var st crowdsec.Stream
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("stream answer: %w", err)
		}
		log.mu.Lock()
		log.answers[log.phase] = append(log.answers[log.phase], st)
		log.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Close below
	t.Cleanup(func() { _ = srv.Close() })
	return log
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitUntil polls cond every 100 ms until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", within, what, diag())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restartScenario is the restart of issue 11: with a real bouncer
// streaming, lapi stops, X is deleted and Y added, lapi starts again. It
// returns after the restart, once enforced(Y) && !enforced(X).
type restartScenario struct {
	x, y, z string
}

func (sc restartScenario) run(t *testing.T, brokers []string, topic, lapiAddr, stateDir string, log *streamLog,
	startBouncer func(), enforced func(ip string) bool, diag func() string) {
	t.Helper()
	lapi := startLAPI(t, brokers, topic, lapiAddr, stateDir)
	// The bouncers give up when their first call fails: start them once
	// lapi answers (a query, which leaves the bouncers' cursors alone).
	waitUntil(t, 30*time.Second, "lapi to load the feed", func() bool { return lapiReady(lapiAddr) }, lapi.out.String)
	startBouncer()
	waitUntil(t, 60*time.Second, "the bouncer to enforce X and Z", func() bool { return enforced(sc.x) && enforced(sc.z) }, diag)

	log.setPhase(1)
	lapi.stop(t)
	portcullis(t, brokers, "delete", "--ip", sc.x, "--topic", topic)
	portcullis(t, brokers, "add", "--ip", sc.y, "--duration", "4h", "--scenario", "manual/restart", "--topic", topic)
	time.Sleep(2 * time.Second) // the bouncer polls the stopped lapi and fails
	startLAPI(t, brokers, topic, lapiAddr, stateDir)
	waitUntil(t, 60*time.Second, "the bouncer to drop X and enforce Y", func() bool { return enforced(sc.y) && !enforced(sc.x) }, diag)
	time.Sleep(2 * time.Second) // a few more polls: nothing else may come

	added, deleted := log.values(1)
	if fmt.Sprint(added) != fmt.Sprint([]string{sc.y}) || fmt.Sprint(deleted) != fmt.Sprint([]string{sc.x}) {
		t.Fatalf("after the restart the bouncer was sent new %v and deleted %v, want new [%s] and deleted [%s]", added, deleted, sc.y, sc.x)
	}
	if !enforced(sc.z) {
		t.Fatalf("Z is no longer enforced after the restart\n%s", diag())
	}
}

// lapiReady reports whether lapi at addr answers queries.
func lapiReady(addr string) bool {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/decisions?ip=192.0.2.1", nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-Api-Key", lapiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestLAPIRestartCustomBouncer streams to Debian's crowdsec-custom-bouncer,
// whose script records every add and del it is told.
func TestLAPIRestartCustomBouncer(t *testing.T) {
	requireTool(t, "crowdsec-custom-bouncer", "-version")
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	sc := restartScenario{x: "203.0.113.7", y: "198.51.100.8", z: "203.0.113.9"}
	portcullis(t, brokers, "add", "--ip", sc.z, "--duration", "4h", "--scenario", "manual/keep", "--topic", topic)
	portcullis(t, brokers, "add", "--ip", sc.x, "--duration", "4h", "--scenario", "manual/lift", "--topic", topic)

	dir := t.TempDir()
	calls := filepath.Join(dir, "calls.log")
	script := filepath.Join(dir, "record.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $2\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	lapiAddr := freeAddr(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := serveRecordingProxy(t, ln, lapiAddr)
	cfg := filepath.Join(dir, "custom-bouncer.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`bin_path: %s
feed_via_stdin: false
total_retries: 0
scenarios_containing: []
scenarios_not_containing: []
origins: []
piddir: %s
update_frequency: 500ms
cache_retention_duration: 1s
daemonize: false
log_mode: file
log_dir: %s
log_level: info
api_url: http://%s/
api_key: %s
prometheus:
  enabled: false
  listen_addr: 127.0.0.1
  listen_port: 0
`, script, dir, dir, ln.Addr(), lapiKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	bouncer := exec.Command("crowdsec-custom-bouncer", "-c", cfg)
	var bout syncbuf.Buffer
	bouncer.Stdout, bouncer.Stderr = &bout, &bout
	start := func() {
		if err := bouncer.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = bouncer.Process.Kill()
			_ = bouncer.Wait() // killed: its exit status says so
		})
	}
	lines := func() []string {
		b, _ := os.ReadFile(calls) // absent until the first call
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	state := map[string]bool{}
	enforced := func(ip string) bool {
		clear(state)
		for _, l := range lines() {
			op, v, _ := strings.Cut(l, " ")
			state[v] = op == "add"
		}
		return state[ip]
	}
	diag := func() string {
		blog, _ := os.ReadFile(filepath.Join(dir, "crowdsec-custom-bouncer.log"))
		return fmt.Sprintf("calls:\n%s\nbouncer output:\n%s%s", strings.Join(lines(), "\n"), bout.String(), blog)
	}
	sc.run(t, brokers, topic, lapiAddr, t.TempDir(), log, start, enforced, diag)
	if n := slices.Index(lines(), "add "+sc.z); n < 0 || slices.Contains(lines()[n+1:], "add "+sc.z) {
		t.Fatalf("Z added %d times, want once:\n%s", strings.Count(strings.Join(lines(), "\n"), "add "+sc.z), diag())
	}
}

// TestLAPIRestartFirewallBouncer streams to Debian's
// crowdsec-firewall-bouncer in nftables mode inside a network namespace
// and looks at its nft set.
func TestLAPIRestartFirewallBouncer(t *testing.T) {
	testenv.RequireRoot(t)
	requireTool(t, "crowdsec-firewall-bouncer", "-V")
	requireTool(t, "nft", "--version")
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	sc := restartScenario{x: "203.0.113.17", y: "198.51.100.18", z: "203.0.113.19"}
	portcullis(t, brokers, "add", "--ip", sc.z, "--duration", "4h", "--scenario", "manual/keep", "--topic", topic)
	portcullis(t, brokers, "add", "--ip", sc.x, "--duration", "4h", "--scenario", "manual/lift", "--topic", topic)

	ns := netns.New(t, "csfw")
	// The bouncer's LAPI address lives in the namespace: a proxy listening
	// there forwards (from this process, outside it) to lapi on loopback.
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lapiAddr := freeAddr(t)
	log := serveRecordingProxy(t, ln, lapiAddr)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "firewall-bouncer.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`mode: nftables
pid_dir: %s
update_frequency: 500ms
daemonize: false
log_mode: file
log_dir: %s
log_level: info
api_url: http://%s/
api_key: %s
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types:
  - ban
blacklists_ipv4: crowdsec-blacklists
blacklists_ipv6: crowdsec6-blacklists
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: crowdsec
    chain: crowdsec-chain
  ipv6:
    enabled: true
    set-only: false
    table: crowdsec6
    chain: crowdsec6-chain
prometheus:
  enabled: false
  listen_addr: 127.0.0.1
  listen_port: 0
`, dir, dir, ln.Addr(), lapiKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	bouncer := exec.Command("crowdsec-firewall-bouncer", "-c", cfg)
	var bout syncbuf.Buffer
	bouncer.Stdout, bouncer.Stderr = &bout, &bout
	start := func() {
		if err := ns.Start(bouncer); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = bouncer.Process.Kill()
			_ = bouncer.Wait() // killed: its exit status says so
		})
	}
	set := func() string {
		out, _ := ns.Run("nft", "list", "set", "ip", "crowdsec", "crowdsec-blacklists") // absent at first
		return out
	}
	enforced := func(ip string) bool { return strings.Contains(set(), ip+" ") || strings.Contains(set(), ip+",") }
	diag := func() string {
		blog, _ := os.ReadFile(filepath.Join(dir, "crowdsec-firewall-bouncer.log"))
		return fmt.Sprintf("nft set:\n%s\nbouncer output:\n%s%s", set(), bout.String(), blog)
	}
	sc.run(t, brokers, topic, lapiAddr, t.TempDir(), log, start, enforced, diag)
}
