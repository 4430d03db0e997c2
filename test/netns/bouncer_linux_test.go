package netns_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/enforcer/xdp"
	"github.com/portcullis-ips/portcullis/test/netns"
)

// binDir holds the binaries the end-to-end tests run, built once.
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	removeStalePins()
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// removeStalePins removes the bpffs pins of earlier test processes that
// died before their cleanup ran: portcullis-e2e-<pid>-<n> and
// portcullis-bench-<pid>-<ns> whose pid is gone.
func removeStalePins() {
	if os.Geteuid() != 0 {
		return
	}
	ps, _ := filepath.Glob("/sys/fs/bpf/portcullis-e2e-*")
	bs, _ := filepath.Glob("/sys/fs/bpf/portcullis-bench-*")
	for _, p := range append(ps, bs...) {
		f := strings.SplitN(filepath.Base(p), "-", 4)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		if err := xdp.Cleanup(p); err != nil {
			fmt.Fprintf(os.Stderr, "remove stale pins %s: %v\n", p, err)
		}
	}
}

// bin returns the path of a freshly built command of this module.
func bin(t testing.TB, name string) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "portcullis-e2e-")
		if binErr != nil {
			return
		}
		for _, c := range []string{"fw-bouncer", "portcullis"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, c),
				"github.com/portcullis-ips/portcullis/cmd/"+c).CombinedOutput()
			if err != nil {
				binErr = fmt.Errorf("go build %s: %w\n%s", c, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, name)
}

// modeSpec is one row of the suite's table: a fw-bouncer backend, its
// config section and how to tell it left nothing behind.
type modeSpec struct {
	name string
	// section returns the backend's YAML section for a test's topology.
	section func(e *env) string
	// leftovers reports what the backend left behind after cleanup.
	leftovers func(e *env) error
}

var modes = []modeSpec{
	{
		name: "xdp",
		section: func(e *env) string {
			return fmt.Sprintf("xdp:\n  interfaces: [%s]\n  mode: auto\n  pin_path: %s\n",
				strings.Join(e.top.VictimIfaces, ", "), e.pinPath)
		},
		leftovers: func(e *env) error {
			if _, err := os.Stat(e.pinPath); err == nil {
				return fmt.Errorf("pin directory %s still there", e.pinPath)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("stat pin directory %s: %w", e.pinPath, err)
			}
			for _, ifname := range e.top.VictimIfaces {
				out, err := e.top.Victim.Run("ip", "-d", "link", "show", ifname)
				if err != nil {
					return err
				}
				if strings.Contains(out, "prog/xdp") {
					return fmt.Errorf("%s still has an XDP program:\n%s", ifname, out)
				}
			}
			return nil
		},
	},
	{
		name: "nftables",
		section: func(e *env) string {
			return "nftables:\n  table: portcullis\n  deny_action: drop\n"
		},
		leftovers: func(e *env) error {
			out, err := e.top.Victim.Run("nft", "list", "tables")
			if err != nil {
				return err
			}
			if strings.Contains(out, "portcullis") {
				return fmt.Errorf("nft tables left: %s", out)
			}
			return nil
		},
	},
	{
		name: "iptables",
		section: func(e *env) string {
			return "iptables:\n  name: portcullis\n  hooks: [INPUT]\n  ipv6: true\n"
		},
		leftovers: func(e *env) error {
			for _, c := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"ipset", "list", "-n"}} {
				out, err := e.top.Victim.Run(c[0], c[1:]...)
				if err != nil {
					return err
				}
				if strings.Contains(strings.ToLower(out), "portcullis") {
					return fmt.Errorf("%s still shows portcullis objects:\n%s", c[0], out)
				}
			}
			return nil
		},
	},
}

// env is one mode's world: a topology, a topic, a publisher and the
// fw-bouncer configuration.
type env struct {
	// t is the running step's test; root is the mode's, which owns the
	// processes that outlive a step.
	t, root testing.TB
	mode    modeSpec
	top     *netns.Topology
	srv     netns.Servers
	brokers []string
	topic   string
	pub     *decisionfeed.Publisher
	cfgPath string
	pinPath string
}

var envSeq int

func newEnv(t testing.TB, m modeSpec) *env {
	return newEnvCoalesce(t, m, 2*time.Millisecond)
}

// newEnvCoalesce is newEnv with fw-bouncer's coalescing delay set.
func newEnvCoalesce(t testing.TB, m modeSpec, coalesce time.Duration) *env {
	t.Helper()
	top := netns.NewTopology(t)
	envSeq++
	e := &env{
		t:       t,
		root:    t,
		mode:    m,
		top:     top,
		srv:     top.Victim.Serve(t),
		brokers: feedtest.Brokers(t),
		topic:   feedtest.CompactedTopic(t, decisionfeed.PartitionsDecisions),
		pinPath: fmt.Sprintf("/sys/fs/bpf/portcullis-e2e-%d-%d", os.Getpid(), envSeq),
	}
	for _, b := range e.brokers {
		top.Victim.Forward(t, b)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: e.brokers, Topic: e.topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	e.pub = pub
	cfg := fmt.Sprintf(`mode: %s
brokers: [%s]
topic: %s
group: portcullis-fw-bouncer-e2e
whitelist: [%s]
coalesce: %s
metrics_listen: 127.0.0.1:9101
%s`, m.name, strings.Join(e.brokers, ", "), e.topic, top.Bystander6, coalesce, m.section(e))
	e.cfgPath = filepath.Join(t.TempDir(), "fw-bouncer.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the backend's state is removed; the namespaces
	// take their interfaces with them, but pins live in the host's bpffs.
	t.Cleanup(func() {
		_, _ = top.Victim.Run(bin(t, "fw-bouncer"), "cleanup", "--mode", m.name, "--config", e.cfgPath)
		_ = os.RemoveAll(e.pinPath)
	})
	return e
}

// publish sends decisions through the Go publisher.
func (e *env) publish(ds ...decisionfeed.Decision) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.pub.Publish(ctx, ds...); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
}

func ban(p netip.Prefix, dur time.Duration) decisionfeed.Decision {
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, dur, "e2e", time.Now())
	d.Scenario = "e2e/test"
	return d
}

func unban(p netip.Prefix) decisionfeed.Decision {
	return decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, p, 0, "e2e", time.Now())
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// cli runs `portcullis ARGS --brokers B --topic T` from the host namespace.
func (e *env) cli(args ...string) string {
	e.t.Helper()
	args = append(args, "--brokers", strings.Join(e.brokers, ","), "--topic", e.topic)
	out, err := exec.Command(bin(e.t, "portcullis"), args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("portcullis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// metrics scrapes fw-bouncer's Prometheus endpoint on the victim's own
// loopback and returns the samples, one "name{labels} value" a line.
func (e *env) metrics() string {
	e.t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.top.Victim.DialContext}}
	resp, err := c.Get("http://127.0.0.1:9101/metrics")
	if err != nil {
		e.t.Fatalf("scrape fw-bouncer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		e.t.Fatalf("scrape fw-bouncer: %v", err)
	}
	return string(b)
}

// metricValue returns the value of the sample with exactly this name and
// labels, and whether there is one.
func metricValue(metrics, series string) (float64, bool) {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// metricSum adds up every series of a metric.
func metricSum(metrics, name string) float64 {
	var sum float64
	for _, l := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			if f, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
				sum += f
			}
		}
	}
	return sum
}

// bouncer is a running fw-bouncer process inside the victim namespace.
type bouncer struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	log  []string
	more chan struct{}
}

func (e *env) startBouncer(extra ...string) *bouncer {
	e.t.Helper()
	args := append([]string{"--config", e.cfgPath, "--log-level", "debug"}, extra...)
	cmd := exec.Command(bin(e.t, "fw-bouncer"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	b := &bouncer{cmd: cmd, done: make(chan struct{}), more: make(chan struct{}, 1)}
	if err := e.top.Victim.Start(cmd); err != nil {
		e.t.Fatalf("start fw-bouncer: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			b.mu.Lock()
			b.log = append(b.log, sc.Text())
			b.mu.Unlock()
			select {
			case b.more <- struct{}{}:
			default:
			}
		}
		_ = cmd.Wait()
		close(b.done)
		select {
		case b.more <- struct{}{}:
		default:
		}
	}()
	t := e.root
	t.Cleanup(func() {
		if b.running() {
			_ = cmd.Process.Kill()
			<-b.done
		}
		if t.Failed() {
			t.Logf("fw-bouncer log:\n%s", b.logText())
		}
	})
	return b
}

func (b *bouncer) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

func (b *bouncer) logText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.log, "\n")
}

// mark returns the number of log lines so far, for waitLog.
func (b *bouncer) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.log)
}

// waitLog waits for a log line after mark containing every substring.
func (b *bouncer) waitLog(t testing.TB, mark int, timeout time.Duration, substrs ...string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		for ; mark < len(b.log); mark++ {
			ok := true
			for _, s := range substrs {
				ok = ok && strings.Contains(b.log[mark], s)
			}
			if ok {
				l := b.log[mark]
				b.mu.Unlock()
				return l
			}
		}
		b.mu.Unlock()
		if !b.running() {
			t.Fatalf("fw-bouncer exited (%v) before logging %q", b.cmd.ProcessState, substrs)
		}
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("fw-bouncer did not log %q within %s", substrs, timeout)
		}
	}
}

// stop sends SIGTERM and requires a clean exit.
func (b *bouncer) stop(t testing.TB) {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		t.Fatal("fw-bouncer did not stop within 15s of SIGTERM")
	}
	if !b.cmd.ProcessState.Success() {
		t.Fatalf("fw-bouncer exited with %v after SIGTERM", b.cmd.ProcessState)
	}
}

const probeTimeout = 250 * time.Millisecond

// peer is a source of probes: a namespace and one of its addresses.
type peer struct {
	ns  *netns.NS
	src netip.Addr
}

func (e *env) attacker(i int, v int) peer {
	if v == 4 {
		return peer{e.top.Attacker, e.top.Attacker4[i]}
	}
	return peer{e.top.Attacker, e.top.Attacker6[i]}
}

func (e *env) bystander(v int) peer {
	if v == 4 {
		return peer{e.top.Bystander, e.top.Bystander4}
	}
	return peer{e.top.Bystander, e.top.Bystander6}
}

func (e *env) probe(p peer, proto netns.Proto) error {
	dst, err := e.top.VictimFor(p.src)
	if err != nil {
		e.t.Fatal(err)
	}
	return p.ns.Probe(proto, p.src, dst, e.srv, probeTimeout)
}

// waitState polls p with ICMP until it is answered (reachable) or not,
// and returns how long that took.
func (e *env) waitState(p peer, reachable bool, timeout time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for {
		err := e.probe(p, netns.ICMP)
		if (err == nil) == reachable {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			e.t.Fatalf("%s: still reachable=%v after %s (last probe: %v)", p.src, !reachable, timeout, err)
		}
		if err != nil {
			continue // a failed probe already waited probeTimeout
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireAll checks every probe of p: all answered, or none.
func (e *env) requireAll(p peer, reachable bool) {
	e.t.Helper()
	for _, proto := range netns.Protos {
		err := e.probe(p, proto)
		if reachable && err != nil {
			e.t.Errorf("%s from %s: no answer, want one: %v", proto, p.src, err)
		}
		if !reachable && err == nil {
			e.t.Errorf("%s from %s: answered, want no answer (banned)", proto, p.src)
		}
	}
}
