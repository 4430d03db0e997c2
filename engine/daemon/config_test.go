package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/acquire"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("/etc/portcullis/engine.yaml", []byte(`acquis: acquis.yaml
scenarios: /opt/scenarios
brokers: [k1:9092, "[::1]:9093"]
timezone: Europe/Berlin
topics: {decisions: d, alerts: a}
rekey: true
drain_timeout: 3s
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.path(c.Acquis) != "/etc/portcullis/acquis.yaml" || c.path(c.Scenarios) != "/opt/scenarios" || c.Profiles != "" {
		t.Errorf("paths: %q %q %q", c.path(c.Acquis), c.path(c.Scenarios), c.Profiles)
	}
	if c.Topics != (Topics{Decisions: "d", Alerts: "a", Events: DefaultEventsTopic}) {
		t.Errorf("topics: %+v", c.Topics)
	}
	if !c.Rekey || c.RekeyGroup != DefaultDetectGroup || c.EventsPartitions != DefaultEventsPartitions || c.DrainTimeout != 3*time.Second {
		t.Errorf("config: %+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"acquis: a.yaml\nrekeyy: true\n", "e.yaml:2: field rekeyy not found in type daemon.Config"},
		{"scenarios: s\n", "e.yaml:1: acquis: missing (the acquis.yaml file of sources)"},
		{"acquis: a.yaml\nbrokers: [kafka-01]\n", `e.yaml:2: brokers: "kafka-01" is not host:port`},
		{"acquis: a.yaml\ntimezone: Mars/Olympus\n", "e.yaml:2: timezone: unknown time zone Mars/Olympus"},
		{"acquis: a.yaml\ntopics:\n  alerts: bad topic\n", `e.yaml:3: topics: alerts: "bad topic" is not a Kafka topic name`},
		{"acquis: a.yaml\nevents_partitions: 0\n", "e.yaml:2: events_partitions: 0 is not between 1 and 1024"},
		{"acquis: a.yaml\ndrain_timeout: 1h\n", "e.yaml:2: drain_timeout: 1h0m0s is not between 0 and 10m"},
		{"acquis: a.yaml\nrekey: maybe\n", "e.yaml:2: cannot unmarshal !!str `maybe` into bool"},
		{"acquis: a.yaml\nhost: two words\n", `e.yaml:2: host: "two words" is not a host name`},
		{"acquis: a.yaml\nprune_group: \"a b\"\n", `e.yaml:2: prune_group: "a b" is not a group name`},
		{"acquis: a.yaml\nprune_interval: soon\n", "e.yaml:2: cannot unmarshal !!str `soon` into time.Duration"},
	} {
		_, err := ParseConfig("e.yaml", []byte(tc.doc))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.doc, err, tc.want)
		}
	}
}

// The example files shipped in config/ load as they are.
func TestShippedExamples(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "..", "config", "engine.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := acquire.LoadConfig(c.path(c.Acquis))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, s := range srcs {
		kinds = append(kinds, s.Kind+":"+s.Type())
	}
	if got := strings.Join(kinds, " "); got != "file:nginx file:syslog kafka:nginx syslog:syslog" {
		t.Fatalf("sources %s", got)
	}
	for _, p := range []string{c.path(c.Scenarios), c.path(c.Profiles)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// A bad acquis.yaml stops the daemon before it starts, naming file and line.
func TestNewBadAcquis(t *testing.T) {
	dir := t.TempDir()
	ap := filepath.Join(dir, "acquis.yaml")
	if err := os.WriteFile(ap, []byte("filenames: [/var/log/x.log]\nlabels: {type: nginx}\n---\nsource: kafka\ntopic: server-logs\nlabels: {type: nginx}\nbrokers: [k:9092]\ngroup_id: g\npoll: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Acquis = ap
	_, err := New(cfg, Options{Brokers: []string{"127.0.0.1:1"}})
	if want := ap + `:9: unknown key "poll"`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
	cfg.Acquis = filepath.Join(dir, "missing.yaml")
	if _, err := New(cfg, Options{Brokers: []string{"127.0.0.1:1"}}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing acquis: %v", err)
	}
	cfg.Acquis = ap
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "no Kafka brokers") {
		t.Fatalf("no brokers: %v", err)
	}
}

// A source that cannot run (its listener taken away) stops the daemon
// with an error naming it, after the rest has drained.
func TestRunStopsOnSourceFailure(t *testing.T) {
	cfg, _ := testTopics(t)
	dir := t.TempDir()
	ap := filepath.Join(dir, "acquis.yaml")
	if err := os.WriteFile(ap, []byte("source: syslog\nlisten_addr: 127.0.0.1:0\nprotocol: tcp\nlabels: {type: syslog}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Acquis = ap
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// Close the listener under the running source: accept fails.
	src := d.Sources()[0].(*acquire.SyslogSource)
	time.Sleep(100 * time.Millisecond)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		want := "source syslog:tcp:127.0.0.1:0: stopped"
		if err == nil || err.Error() != want {
			t.Fatalf("run: %v, want %s", err, want)
		}
	case <-ctx.Done():
		t.Fatal("daemon kept running")
	}
}

func FuzzEngineConfig(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "engine.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("acquis: a.yaml\nrekey: true\nevents_partitions: 12\n"))
	f.Add([]byte("acquis: a.yaml\ntopics: {decisions: '..'}\n"))
	f.Add([]byte("acquis: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("f.yaml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if c.Acquis == "" || !validTopic(c.Topics.Decisions) || !validTopic(c.Topics.Alerts) || !validTopic(c.Topics.Events) ||
			c.EventsPartitions < 1 || c.DrainTimeout < 0 {
			t.Fatalf("accepted %+v", c)
		}
	})
}

// The engine starts only when every scenario loads, unless
// skip_bad_scenarios is set: then it starts with the good ones and counts
// the bad.
func TestNewBadScenarios(t *testing.T) {
	dir := t.TempDir()
	ap := filepath.Join(dir, "acquis.yaml")
	sdir := filepath.Join(dir, "scenarios")
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"acquis.yaml":            "filenames: [" + filepath.Join(dir, "x.log") + "]\nlabels: {type: nginx}\n",
		"scenarios/good.yaml":    "type: trigger\nname: t/good\nfilter: \"evt.Meta.log_type == 'http_access-log'\"\nlabels: {remediation: true}\n",
		"scenarios/bad.yaml":     "type: trigger\nname: t/bad\nfilter: \"evt.Meta.log_type == 'http_access-log' && Frob(evt.Meta.http_path)\"\n",
		"scenarios/missing.yaml": "type: trigger\nname: t/data\nfilter: \"evt.Meta.log_type == 'x'\"\ndata:\n  - dest_file: nope.txt\n    type: string\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Acquis, cfg.Scenarios, cfg.DataDir = ap, sdir, dir
	_, err := New(cfg, Options{Brokers: []string{"127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3: scenario t/bad: filter: unknown helper Frob") {
		t.Fatalf("bad scenario: %v", err)
	}
	cfg.SkipBadScenarios = true
	reg := prometheus.NewRegistry()
	d, err := New(cfg, Options{Brokers: []string{"127.0.0.1:1"}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.scs) != 1 || d.scs[0].Name != "t/good" {
		t.Fatalf("loaded %d scenarios", len(d.scs))
	}
	if n := testutil.ToFloat64(d.met.scenariosSkipped); n != 2 {
		t.Errorf("scenarios_skipped_total = %v, want 2", n)
	}
}

// Reload (SIGHUP) loads the scenarios again; a bad edit is refused and
// changes nothing; a good one is swapped in by the detect stage, keeping
// the buckets of the unchanged scenarios.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	sdir := filepath.Join(dir, "scenarios")
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("acquis.yaml", "filenames: ["+filepath.Join(dir, "x.log")+"]\nlabels: {type: nginx}\n")
	a := "name: t/a\ntype: window\nfilter: Type == \"ssh_failed_auth\"\ncount: 5\nwindow: 1m\nlabels: {remediation: true}\n"
	write("scenarios/a.yaml", a)
	write("scenarios/b.yaml", strings.Replace(a, "t/a", "t/b", 1))
	cfg := DefaultConfig()
	cfg.Acquis, cfg.Scenarios = filepath.Join(dir, "acquis.yaml"), sdir
	reg := prometheus.NewRegistry()
	d, err := New(cfg, Options{Brokers: []string{"127.0.0.1:1"}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	eng, err := d.newEngine(nopSink{})
	if err != nil {
		t.Fatal(err)
	}
	write("scenarios/b.yaml", "name: t/b\ntype: window\nfilter: Nope == 1\n")
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "b.yaml") {
		t.Fatalf("bad reload: %v", err)
	}
	d.applyReload(eng)
	if len(d.scs) != 2 {
		t.Fatalf("a refused reload changed the scenarios")
	}
	write("scenarios/b.yaml", strings.Replace(strings.Replace(a, "t/a", "t/b", 1), "count: 5", "count: 3", 1))
	write("scenarios/c.yaml", strings.Replace(a, "t/a", "t/c", 1))
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	d.applyReload(eng)
	if len(d.scs) != 3 || eng.Stats().Scenarios.Kept != 1 {
		t.Fatalf("reload: %d scenarios, kept %d, want 3 and 1 (t/a unchanged)", len(d.scs), eng.Stats().Scenarios.Kept)
	}
	if ok, bad := testutil.ToFloat64(d.met.reloads.WithLabelValues("ok")), testutil.ToFloat64(d.met.reloads.WithLabelValues("error")); ok != 1 || bad != 1 {
		t.Errorf("reloads_total ok=%v error=%v", ok, bad)
	}
}

type nopSink struct{}

func (nopSink) Alert(engine.Alert)             {}
func (nopSink) Decision(decisionfeed.Decision) {}
