package realkafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
)

// buildPrograms builds the named commands of cmd/ into a temporary
// directory and returns it.
func buildPrograms(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "github.com/portcullis-ips/portcullis/cmd/"+n)
	}
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// daemon is a program running in the background for one test.
type daemon struct {
	name     string
	cmd      *exec.Cmd
	output   syncbuf.Buffer // stdout and stderr
	done     chan error
	stopOnce sync.Once
}

// startDaemon starts bin with args and the extra environment env; it is
// stopped with SIGTERM when the test ends and must then exit cleanly.
func startDaemon(t *testing.T, bin string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: filepath.Base(bin), cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = &d.output, &d.output
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGTERM and waits for a clean exit (once).
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.stopOnce.Do(func() { d.terminate(t) })
}

func (d *daemon) terminate(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stop %s: %v", d.name, err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("%s exited: %v\n%s", d.name, err, d.output.String())
		}
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill() // it ignored SIGTERM: the test fails anyway
		t.Errorf("%s did not stop within 20 s of SIGTERM\n%s", d.name, d.output.String())
	}
}

// waitFor polls cond every 50 ms until it holds, or fails the test after
// timeout with what.
func waitFor(t *testing.T, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// check asks nginx-bouncer at addr about ip and returns the status (0
// when it did not answer).
func check(addr, ip string) int {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/check", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("X-Real-IP", ip)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// lapiServes reports whether portcullis lapi at addr answers a CrowdSec
// bouncer's query for ip with a decision.
func lapiServes(addr, key, ip string) bool {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/decisions?ip="+ip, nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-Api-Key", key)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"value":"`+ip+`"`)
}

// TestProgramsOverSASLSSL runs the real programs against the SASL_SSL
// node, each with its role's credential and nothing more than the
// README's ACLs: nginx-bouncer (credential from the environment) and
// fw-bouncer in dry run (from flags) follow the feed as "bouncer" and
// announce themselves, and cf-bouncer --once syncs the feed to a fake
// Cloudflare API as "bouncer" too; "operator" adds, lists, deletes and
// prunes decisions and lists the bouncers and the alerts; portcullis lapi
// serves the feed as "lapi" and crowdsec-pull feeds it as "crowdsec-pull";
// the engine, as "engine", detects a CVE probe in a log file, and its ban
// and alert arrive and it prunes. No password shows in any output.
func TestProgramsOverSASLSSL(t *testing.T) {
	n := secure(t)
	bin := buildPrograms(t, "portcullis", "nginx-bouncer", "fw-bouncer", "cf-bouncer")
	portcullis := func(user, mechanism string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "portcullis"), append(args, n.flags(user, mechanism)...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("portcullis %s as %s: %w\n%s", strings.Join(args, " "), user, err, out)
		}
		return string(out), nil
	}

	const banned, attacker, bystander = "198.51.100.77", "198.51.100.12", "192.0.2.200"
	// A node that ran this test before still holds its bans: withdraw them,
	// so that what the bouncers enforce below is this run's doing.
	for _, ip := range []string{banned, attacker, "203.0.113.45"} {
		if out, err := portcullis("operator", kafkaconn.MechanismSCRAMSHA512, "decisions", "delete", "--ip", ip); err != nil {
			t.Fatalf("decisions delete: %v\n%s", err, out)
		}
	}
	listen := freeAddr(t)
	nginx := startDaemon(t, filepath.Join(bin, "nginx-bouncer"), n.env(t, "bouncer", kafkaconn.MechanismSCRAMSHA256),
		"--listen", listen, "--group", "portcullis-nginx-bouncer-realkafka", "--heartbeat-interval", "200ms",
		"--fail-mode", "closed", "--log-level", "info")
	waitFor(t, time.Minute, func() string { return "nginx-bouncer not serving:\n" + nginx.output.String() },
		func() bool { return check(listen, bystander) == http.StatusNoContent })
	if got := check(listen, attacker); got != http.StatusNoContent {
		t.Fatalf("/check of %s before the attack: %d, want 204", attacker, got)
	}
	fw := startDaemon(t, filepath.Join(bin, "fw-bouncer"), nil, append([]string{"--dry-run", "--iface", "lo",
		"--heartbeat-interval", "200ms", "--log-level", "info"},
		n.flags("bouncer", kafkaconn.MechanismPlain)...)...)

	out, err := portcullis("operator", kafkaconn.MechanismSCRAMSHA512, "decisions", "add", "--ip", banned, "--duration", "1h", "--reason", "realkafka")
	if err != nil || !strings.HasPrefix(out, "added ban "+banned) {
		t.Fatalf("decisions add: %q %v", out, err)
	}
	waitFor(t, 30*time.Second, func() string { return "nginx-bouncer does not ban " + banned + ":\n" + nginx.output.String() },
		func() bool { return check(listen, banned) == http.StatusForbidden })
	waitFor(t, 30*time.Second, func() string { return "fw-bouncer would not ban " + banned + ":\n" + fw.output.String() },
		func() bool { return strings.Contains(fw.output.String(), banned) })
	if out, err := portcullis("operator", kafkaconn.MechanismPlain, "decisions", "list", "-o", "json"); err != nil || !strings.Contains(out, `"`+banned+`"`) {
		t.Fatalf("decisions list lacks %s: %v\n%s", banned, err, out)
	}
	waitFor(t, 30*time.Second, func() string {
		out, err := portcullis("operator", "PLAIN", "bouncers", "list")
		return fmt.Sprintf("bouncers: %v\n%s", err, out)
	},
		func() bool {
			out, err := portcullis("operator", kafkaconn.MechanismSCRAMSHA256, "bouncers", "list")
			return err == nil && strings.Contains(out, "nginx-bouncer") && strings.Contains(out, "fw-bouncer")
		})

	// cf-bouncer, as "bouncer", run once as from cron against a fake
	// Cloudflare API, puts the ban in the account's list.
	const cfToken, cfAccount, cfZone = "cf-token-realkafka", "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	cf := cffake.New(cfToken, cfAccount, cfZone)
	defer cf.Close()
	cfConfig := filepath.Join(t.TempDir(), "cf-bouncer.yaml")
	if err := os.WriteFile(cfConfig, []byte("retry_min: 1ms\nretry_max: 5ms\npoll_min: 1ms\npoll_max: 5ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfCmd := exec.Command(filepath.Join(bin, "cf-bouncer"), append([]string{"--once", "--config", cfConfig,
		"--group", "portcullis-cf-bouncer-realkafka", "--account-id", cfAccount, "--zone-id", cfZone, "--api-base", cf.URL},
		n.flags("bouncer", kafkaconn.MechanismSCRAMSHA512)...)...)
	cfCmd.Env = append(os.Environ(), "CLOUDFLARE_API_TOKEN="+cfToken)
	if out, err := cfCmd.CombinedOutput(); err != nil || !slices.Contains(cf.Items(cfAccount, "portcullis_ban"), banned) {
		t.Fatalf("cf-bouncer --once: %v, ban list %v\n%s", err, cf.Items(cfAccount, "portcullis_ban"), out)
	}

	// portcullis lapi, as "lapi", serves the decision to CrowdSec's bouncers.
	lapiAddr := freeAddr(t)
	lapi := startDaemon(t, filepath.Join(bin, "portcullis"), n.env(t, "lapi", kafkaconn.MechanismSCRAMSHA512),
		"lapi", "--listen", lapiAddr, "--api-key", "realkafka-bouncer-key", "--log-level", "info")
	waitFor(t, 30*time.Second, func() string { return "lapi does not serve " + banned + ":\n" + lapi.output.String() },
		func() bool { return lapiServes(lapiAddr, "realkafka-bouncer-key", banned) })

	// portcullis crowdsec-pull, as "crowdsec-pull", republishes a CrowdSec
	// LAPI's decision (a stand-in answering the bouncer stream), and the
	// bouncers enforce it.
	const pulled = "203.0.113.45"
	crowdsecLAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/decisions/stream" || r.Header.Get("X-Api-Key") != "realkafka-pull-key" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"new":[{"id":1,"origin":"crowdsec","type":"ban","scope":"Ip","value":%q,"duration":"1h","scenario":"crowdsecurity/ssh-bf"}],"deleted":null}`, pulled)
	}))
	defer crowdsecLAPI.Close()
	if out, err := portcullis("crowdsec-pull", kafkaconn.MechanismSCRAMSHA256, "crowdsec-pull", "--once",
		"--lapi-url", crowdsecLAPI.URL, "--api-key", "realkafka-pull-key"); err != nil {
		t.Fatalf("crowdsec-pull --once: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, func() string { return "nginx-bouncer does not ban the pulled " + pulled },
		func() bool { return check(listen, pulled) == http.StatusForbidden })

	// The engine, tailing a log file: a CVE-2021-41773 probe is banned at
	// once, and the ban and the alert travel over SASL_SSL.
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("access.log", "")
	write("acquis.yaml", "filenames:\n  - "+logFile+"\nlabels:\n  type: nginx\n")
	cfg := write("engine.yaml", "acquis: "+filepath.Join(dir, "acquis.yaml")+"\nhost: realkafka\n")
	engine := startDaemon(t, filepath.Join(bin, "portcullis"), n.env(t, "engine", kafkaconn.MechanismSCRAMSHA512),
		"engine", "--config", cfg, "--log-level", "info")
	waitFor(t, time.Minute, func() string { return "engine not running:\n" + engine.output.String() },
		func() bool { return strings.Contains(engine.output.String(), "engine running") })
	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("%s - - [%s] \"GET /cgi-bin/.%%2e/.%%2e/.%%2e/.%%2e/etc/passwd HTTP/1.1\" 400 157 \"-\" \"curl/7.88.1\"\n",
		attacker, time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700"))
	if _, err := f.WriteString(line); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() string {
		return "nginx-bouncer does not ban the engine's attacker:\nengine:\n" + engine.output.String() + "\nnginx-bouncer:\n" + nginx.output.String()
	}, func() bool { return check(listen, attacker) == http.StatusForbidden })
	waitFor(t, 30*time.Second, func() string {
		out, err := portcullis("operator", "PLAIN", "alerts", "list")
		return fmt.Sprintf("alerts: %v\n%s", err, out)
	},
		func() bool {
			out, err := portcullis("operator", kafkaconn.MechanismSCRAMSHA512, "alerts", "list")
			return err == nil && strings.Contains(out, attacker) && strings.Contains(out, "cve-2021-41773")
		})

	if out, err := portcullis("operator", kafkaconn.MechanismSCRAMSHA512, "decisions", "delete", "--ip", banned); err != nil {
		t.Fatalf("decisions delete: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, func() string { return "nginx-bouncer still bans " + banned },
		func() bool { return check(listen, banned) == http.StatusNoContent })
	// Pruning reads and writes the topic: once by hand, continuously in the engine.
	out, err = portcullis("operator", kafkaconn.MechanismSCRAMSHA256, "decisions", "prune", "-o", "json")
	if err != nil || !strings.Contains(out, `"deleted"`) {
		t.Fatalf("decisions prune: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, func() string { return "the engine's prune group got no partitions:\n" + engine.output.String() },
		func() bool { return strings.Contains(engine.output.String(), "pruning partitions") })

	// Refusals at the command line: one line each, at once.
	wrong := write("wrong.password", "not-the-password\n")
	refusals := []struct {
		args []string
		want string
	}{
		{[]string{"decisions", "list", "--brokers", n.addr}, "requires TLS or SASL"},
		{append(append([]string{"decisions", "list"}, n.flags("operator", kafkaconn.MechanismSCRAMSHA512)...), "--kafka-sasl-password-file", wrong),
			`authentication failed for user "operator"`},
		{append([]string{"decisions", "add", "--ip", "192.0.2.99", "--duration", "1h"}, n.flags("bouncer", kafkaconn.MechanismSCRAMSHA256)...),
			"Topic Authorization Failed"},
	}
	for _, r := range refusals {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "portcullis"), r.args...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		msg := strings.TrimSpace(string(out))
		if err == nil || timedOut || strings.Contains(msg, "\n") || !strings.Contains(msg, r.want) {
			t.Errorf("portcullis %s: %v, output %q; want a prompt one-line refusal with %q", r.args[:2], err, msg, r.want)
		}
		t.Logf("portcullis %s refused: %s", strings.Join(r.args[:2], " "), msg)
	}

	engine.stop(t)
	lapi.stop(t)
	fw.stop(t)
	nginx.stop(t)
	all := engine.output.String() + lapi.output.String() + fw.output.String() + nginx.output.String()
	for _, pw := range passwords(t, n) {
		if strings.Contains(all, pw) {
			t.Fatal("a password is in a program's output")
		}
	}
	for _, d := range []*daemon{engine, lapi, fw, nginx} {
		if s := d.output.String(); strings.Contains(s, "Authorization Failed") {
			t.Errorf("%s was refused something its role needs:\n%s", d.name, s)
		}
	}
}
