package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/internal/enginetest"
	"github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

const testHost = "engine-test"

// recorder is an engine.Sink that keeps what it is given.
type recorder struct {
	alerts    []engine.Alert
	decisions []decisionfeed.Decision
}

func (r *recorder) Alert(a engine.Alert)             { r.alerts = append(r.alerts, a) }
func (r *recorder) Decision(d decisionfeed.Decision) { r.decisions = append(r.decisions, d) }
func (r *recorder) verdicts() map[string]string      { return verdictsOf(r.decisions) }
func verdictsOf(ds []decisionfeed.Decision) map[string]string {
	out := map[string]string{}
	for _, d := range ds {
		out[d.Value] += d.Scenario + ";"
	}
	for k, v := range out {
		out[k] = strings.TrimSuffix(v, ";")
	}
	return out
}

// replay runs the files through the engine offline, the way portcullis
// replay does, and returns what it found.
func replay(t *testing.T, files map[string][]string) *recorder {
	t.Helper()
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.New(profile.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prof.Close() }()
	rec := &recorder{}
	eng, err := engine.New(engine.Config{Scenarios: scs, Profiles: prof, Sink: rec, Host: testHost})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range slices.Sorted(mapsKeys(files)) {
		p := &engine.Pipeline{Parser: parse.New(parse.Config{Reference: time.Now()}), Engine: eng}
		content := strings.Join(files[typ], "\n") + "\n"
		if _, err := engine.Feed(strings.NewReader(content), typ, "replay", p, nil); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// instance is one running daemon.
type instance struct {
	d      *Daemon
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startDaemon writes acquis (an acquis.yaml) next to an engine.yaml built
// from cfg and runs the daemon until the test ends.
func startDaemon(t testing.TB, cfg Config, acquis string) *instance {
	t.Helper()
	dir := t.TempDir()
	ap := filepath.Join(dir, "acquis.yaml")
	if err := os.WriteFile(ap, []byte(acquis), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Acquis = ap
	if cfg.Host == "" {
		cfg.Host = testHost
	}
	reg := prometheus.NewRegistry()
	d, err := New(cfg, Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{d: d, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- d.Run(ctx) }()
	t.Cleanup(func() { in.stop(t) })
	return in
}

// stop cancels the daemon and waits for it to drain and return.
func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.cancel()
	if in.done == nil {
		return
	}
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("daemon did not stop within 30s")
	}
	in.done = nil
}

// metric returns the sum of a metric family's samples.
func (in *instance) metric(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := in.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

// waitMetric waits until a metric reaches want.
func waitMetric(t *testing.T, ins []*instance, name string, want float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got float64
		for _, in := range ins {
			got += in.metric(t, name)
		}
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readTopic reads a topic from its start until it has n messages, then for
// another settle period to catch any extra, and returns the values.
func readTopic(t *testing.T, brokers []string, topic string, n int, settle time.Duration) [][]byte {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: "reader-" + topic + fmt.Sprint(time.Now().UnixNano()),
		StartOffset: kafka.FirstOffset, MaxWait: 50 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out [][]byte
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: got %d of %d messages: %v\n%s", topic, len(out), n, err, bytes.Join(out, []byte("\n")))
		}
		out = append(out, m.Value)
	}
	sctx, scancel := context.WithTimeout(context.Background(), settle)
	defer scancel()
	for {
		m, err := r.ReadMessage(sctx)
		if err != nil {
			return out
		}
		out = append(out, m.Value)
	}
}

func decodeAlerts(t *testing.T, vs [][]byte) []engine.Alert {
	t.Helper()
	out := make([]engine.Alert, len(vs))
	for i, v := range vs {
		dec := json.NewDecoder(strings.NewReader(string(v)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out[i]); err != nil {
			t.Fatalf("alert %s: %v", v, err)
		}
	}
	return out
}

func decodeDecisions(t *testing.T, vs [][]byte) []decisionfeed.Decision {
	t.Helper()
	out := make([]decisionfeed.Decision, len(vs))
	for i, v := range vs {
		d, err := decisionfeed.Decode(v, decisionfeed.DefaultLimits())
		if err != nil {
			t.Fatalf("decision %s: %v", v, err)
		}
		out[i] = d
	}
	return out
}

// sortAlerts orders alerts by address, then scenario, for comparison.
func sortAlerts(as []engine.Alert) []engine.Alert {
	as = slices.Clone(as)
	slices.SortFunc(as, func(a, b engine.Alert) int {
		if c := strings.Compare(a.IP, b.IP); c != 0 {
			return c
		}
		return strings.Compare(a.Scenario, b.Scenario)
	})
	for i := range as {
		as[i].FirstSeen, as[i].LastSeen = as[i].FirstSeen.UTC(), as[i].LastSeen.UTC()
	}
	return as
}

func alertsText(as []engine.Alert) string {
	var b strings.Builder
	for _, a := range as {
		j, _ := json.Marshal(a)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// testTopics creates the output topics of one test and returns a config using them.
func testTopics(t *testing.T) (Config, []string) {
	t.Helper()
	brokers := feedtest.Brokers(t)
	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.DrainTimeout = 5 * time.Second
	cfg.Topics.Decisions = feedtest.CompactedTopic(t, decisionfeed.PartitionsDecisions)
	cfg.Topics.Alerts = feedtest.Topic(t, decisionfeed.PartitionsAlerts)
	// A group per test: on a shared Kafka the tests must not prune together.
	cfg.PruneGroup = "prune-" + cfg.Topics.Decisions
	return cfg, brokers
}

// checkVerdicts asserts that every attacker was banned once, by its
// scenario, and nobody else.
func checkVerdicts(t *testing.T, what string, got map[string]string, c corpus) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(c.attackers) {
		t.Fatalf("%s: banned\n%v\nwant\n%v", what, got, c.attackers)
	}
}

func TestReplayOfCorpus(t *testing.T) {
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	rec := replay(t, map[string][]string{"nginx": c.nginx, "syslog": c.auth})
	checkVerdicts(t, "replay", rec.verdicts(), c)
	if len(rec.alerts) != len(c.attackers) {
		t.Fatalf("replay: %d alerts, want %d:\n%s", len(rec.alerts), len(c.attackers), alertsText(rec.alerts))
	}
}

func TestFileTailMatchesReplay(t *testing.T) {
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	want := replay(t, map[string][]string{"nginx": c.nginx, "syslog": c.auth})
	cfg, brokers := testTopics(t)
	logs := t.TempDir()
	access, auth := filepath.Join(logs, "access.log"), filepath.Join(logs, "auth.log")
	// Content present at start is not read: the follower starts at the end.
	writeFile(t, access, "198.51.100.99 - - [25/Nov/2026:10:00:00 +0000] \"GET /wp-login.php HTTP/1.1\" 200 1 \"-\" \"sqlmap\"\npartial old line without newline")
	writeFile(t, auth, "")
	in := startDaemon(t, cfg, fmt.Sprintf(`filenames: [%q]
labels: {type: nginx}
---
filenames: [%q]
labels: {type: syslog}
`, filepath.Join(logs, "access.log"), auth))

	// Wait until the follower has the files open: whitelisted lines, read
	// once it follows, are counted and otherwise change nothing.
	warm := `127.0.0.1 - - [` + time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700") + `] "GET /warmup HTTP/1.1" 200 1 "-" "probe"`
	for deadline := time.Now().Add(10 * time.Second); in.metric(t, "portcullis_acquire_lines_total") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("follower never read the warm-up line")
		}
		enginetest.AppendFile(t, access, "\n"+warm+"\n") // the leading newline ends the old partial line, skipped
		time.Sleep(50 * time.Millisecond)
	}
	// Warm-up lines appended before the follower opened the file are not
	// read: count the ones that were, once no more are on their way.
	time.Sleep(200 * time.Millisecond)
	warmRead := in.metric(t, "portcullis_acquire_lines_total")
	enginetest.AppendFile(t, auth, "\n") // blank lines are skipped, so the auth.log follower state is known too

	// Write the corpus over time, in uneven pieces that split lines,
	// rotating access.log by rename+create and auth.log by copytruncate.
	writeOverTime(t, access, c.nginx, len(c.nginx)/2, func() {
		if err := os.Rename(access, access+".1"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, access, "")
	})
	writeOverTime(t, auth, c.auth, len(c.auth)/2, func() {
		// copytruncate loses what the follower has not read yet, so wait
		// for it; and a file that regrows past the old size before the
		// truncation is noticed looks merely appended to, so wait for that too.
		waitMetric(t, []*instance{in}, "portcullis_acquire_lines_total", warmRead+float64(len(c.nginx)+len(c.auth)/2), 30*time.Second)
		if err := os.Truncate(auth, 0); err != nil {
			t.Fatal(err)
		}
		waitMetric(t, []*instance{in}, "portcullis_acquire_file_rotations_total", 2, 30*time.Second) // the rename, then this
	})
	total := float64(len(c.nginx)+len(c.auth)) + warmRead
	waitMetric(t, []*instance{in}, "portcullis_acquire_lines_total", total, 30*time.Second)
	got := decodeAlerts(t, readTopic(t, brokers, cfg.Topics.Alerts, len(want.alerts), time.Second))
	if g, w := alertsText(sortAlerts(got)), alertsText(sortAlerts(want.alerts)); g != w {
		t.Fatalf("live alerts\n%s\nreplay alerts\n%s", g, w)
	}
	ds := decodeDecisions(t, readTopic(t, brokers, cfg.Topics.Decisions, len(want.decisions), 500*time.Millisecond))
	checkVerdicts(t, "live", verdictsOf(ds), c)
	for _, d := range ds {
		if d.Host != testHost || d.Origin != engine.Origin || d.Type != decisionfeed.TypeBan {
			t.Errorf("decision %+v", d)
		}
	}
	in.stop(t)
	if n := in.metric(t, "portcullis_engine_alerts_total"); n != float64(len(want.alerts)) {
		t.Errorf("alerts_total = %v, want %d", n, len(want.alerts))
	}
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeOverTime appends lines in pieces of varying size that cut lines in
// two, pausing between pieces. Before line rotateAt it completes the line
// in progress and calls rotate, as logrotate acts between two writes.
func writeOverTime(t *testing.T, path string, lines []string, rotateAt int, rotate func()) {
	t.Helper()
	var pending strings.Builder
	flush := func(s string) {
		enginetest.AppendFile(t, path, s)
		time.Sleep(5 * time.Millisecond)
	}
	for i, l := range lines {
		if i == rotateAt {
			flush(pending.String())
			pending.Reset()
			rotate()
		}
		pending.WriteString(l + "\n")
		if i%37 == 36 {
			s := pending.String()
			cut := len(s) - len(l)/2 - 1 // leave half of the last line for the next write
			flush(s[:cut])
			pending.Reset()
			pending.WriteString(s[cut:])
		}
	}
	flush(pending.String())
}

// Stopping drains: the lines already read are detected and their decisions
// published before Run returns.
func TestStopDrains(t *testing.T) {
	cfg, brokers := testTopics(t)
	logs := t.TempDir()
	access := filepath.Join(logs, "access.log")
	writeFile(t, access, "")
	before := runtime.NumGoroutine()
	in := startDaemon(t, cfg, fmt.Sprintf("filenames: [%q]\nlabels: {type: nginx}\n", access))
	now := time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700")
	var lines strings.Builder
	const n = 200
	for i := range n {
		fmt.Fprintf(&lines, "203.0.113.%d - - [%s] \"GET / HTTP/1.1\" 200 1 \"-\" \"Nikto/2.5.0\"\n", i%250+1, now)
	}
	// The follower may not have the file open yet: keep appending until it reads.
	for in.metric(t, "portcullis_acquire_lines_total") == 0 {
		enginetest.AppendFile(t, access, lines.String())
		time.Sleep(20 * time.Millisecond)
	}
	in.stop(t)
	// Nothing the daemon started outlives Run.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Run, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if read := in.metric(t, "portcullis_acquire_lines_total"); read < n {
		t.Fatalf("read %v lines, want at least one whole append of %d", read, n)
	}
	ds := decodeDecisions(t, readTopic(t, brokers, cfg.Topics.Decisions, n, 500*time.Millisecond))
	if len(ds) != n {
		t.Fatalf("%d decisions after the stop, want %d (one per address)", len(ds), n)
	}
	if p := in.metric(t, "portcullis_engine_published_total"); p != 2*n {
		t.Fatalf("published %v alerts and decisions, want %d", p, 2*n)
	}
}

// auth.log lines sent over syslog TCP (RFC 3164 and RFC 5424) find what
// replaying the file finds.
func TestSyslogMatchesReplay(t *testing.T) {
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	want := replay(t, map[string][]string{"syslog": c.auth})
	cfg, brokers := testTopics(t)
	in := startDaemon(t, cfg, "source: syslog\nlisten_addr: 127.0.0.1:0\nprotocol: tcp\nlabels: {type: syslog}\n")
	addr := in.d.Sources()[0].(*acquire.SyslogSource).Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for i, l := range c.auth {
		msg := "<38>" + l
		if i%2 == 1 {
			// The same line as RFC 5424: "Nov 25 10:00:05 bastion sshd[7]: text".
			f := strings.SplitN(l, " ", 6)
			if len(f) == 6 && strings.HasPrefix(f[4], "sshd[") {
				ts, err := time.Parse(time.Stamp, strings.Join(f[:3], " "))
				if err != nil {
					t.Fatal(err)
				}
				ts = ts.AddDate(time.Now().UTC().Year(), 0, 0)
				pid := strings.TrimSuffix(strings.TrimPrefix(f[4], "sshd["), "]:")
				msg = fmt.Sprintf("<38>1 %s %s sshd %s - - %s", ts.Format(time.RFC3339), f[3], pid, f[5])
			}
		}
		if _, err := fmt.Fprintf(conn, "%d %s", len(msg), msg); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, []*instance{in}, "portcullis_acquire_lines_total", float64(len(c.auth)), 10*time.Second)
	got := decodeAlerts(t, readTopic(t, brokers, cfg.Topics.Alerts, len(want.alerts), time.Second))
	if g, w := alertsText(sortAlerts(got)), alertsText(sortAlerts(want.alerts)); g != w {
		t.Fatalf("syslog alerts\n%s\nreplay alerts\n%s", g, w)
	}
}

// The in-process replay the tests compare with is the one operators run:
// `portcullis replay --json` finds the same alerts in the same files.
func TestReplayHelperMatchesCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/portcullis")
	}
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	dir := t.TempDir()
	bin := filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", bin, "github.com/portcullis-ips/portcullis/cmd/portcullis")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var fromCmd []engine.Alert
	for typ, lines := range map[string][]string{"nginx": c.nginx, "syslog": c.auth} {
		f := filepath.Join(dir, typ+".log")
		writeFile(t, f, strings.Join(lines, "\n")+"\n")
		cmd := exec.Command(bin, "replay", "--type", typ, "--json", "--reference-time", time.Now().UTC().Format(time.RFC3339), f)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("replay %s: %v\n%s", typ, err, stderr.String())
		}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fromCmd = append(fromCmd, decodeAlerts(t, [][]byte{[]byte(l)})...)
		}
	}
	want := replay(t, map[string][]string{"nginx": c.nginx, "syslog": c.auth}).alerts
	for i := range want {
		want[i].Host = "" // replay names no engine host
	}
	if g, w := alertsText(sortAlerts(fromCmd)), alertsText(sortAlerts(want)); g != w {
		t.Fatalf("portcullis replay\n%s\nhelper\n%s", g, w)
	}
}
