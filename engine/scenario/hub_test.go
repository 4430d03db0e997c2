package scenario_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

// hubFile is written for these tests in CrowdSec's hub format: several
// documents, every bucket type, and the keys we accept without acting on.
const hubFile = `# leaky, grouped by address, distinct paths
type: leaky
format: 2.0
debug: false
name: test/scan-404
description: "many distinct 404s"
filter: "evt.Meta.service == 'http' && evt.Meta.log_type in ['http_access-log', 'http_error-log'] && evt.Meta.http_status in ['404', '403']"
groupby: "evt.Meta.source_ip"
distinct: "evt.Meta.http_path"
capacity: 3
leakspeed: "10s"
blackhole: 1m
references:
  - https://example.org/scan
labels:
  service: http
  confidence: 1
  spoofable: 0
  classification:
    - attack.T1595
  behavior: "http:scan"
  label: "404 scan"
  remediation: true
---
type: trigger
name: test/backdoor
description: "backdoor probe"
filter: "evt.Meta.log_type in ['http_access-log'] && any(File('backdoors.txt'), { evt.Parsed.file_name == #})"
groupby: evt.Meta.source_ip
blackhole: 2m
data:
  - source_url: https://example.org/backdoors.txt
    dest_file: backdoors.txt
    type: string
    strategy: LRU
    size: 40
    ttl: 10s
labels:
  classification: attack.T1190
  remediation: true
---
type: trigger
name: test/bad-ua
description: "bad user agent by regexp file"
filter: "evt.Meta.log_type == 'http_access-log' && RegexpInFile(evt.Parsed.http_user_agent, 'ua.regex')"
groupby: evt.Meta.source_ip
data:
  - dest_file: ua.regex
    type: regexp
labels:
  remediation: true
---
type: leaky
name: test/ssh-bf
description: "ssh bf, cancelled by nothing"
filter: "evt.Meta.log_type == 'ssh_failed-auth'"
groupby: evt.Meta.source_ip
capacity: 2
leakspeed: 10s
reprocess: true
labels:
  remediation: true
---
type: trigger
name: test/after-ssh-bf
description: "reprocessed overflow"
filter: "evt.Overflow.Alert.Scenario == 'test/ssh-bf'"
groupby: evt.Meta.source_ip
labels:
  remediation: false
---
type: conditional
name: test/ssh-slow
description: "slow ssh brute force over a long time"
filter: "evt.Meta.log_type == 'ssh_failed-auth'"
groupby: evt.Meta.source_ip
capacity: -1
leakspeed: 30m
condition: "len(queue.Queue) >= 6 && MedianInterval(queue) > duration('1m') && queue.Queue[0].Time.Before(evt.Time)"
labels:
  remediation: true
---
type: counter
name: test/counter
description: "count 5xx per host"
filter: "evt.Meta.log_type == 'http_access-log' && evt.Meta.http_status startsWith '5'"
capacity: -1
duration: 1m
labels:
  remediation: false
`

func hubData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must("backdoors.txt", "c99.php\nr57.php\n\nshell.php\n")
	must("ua.regex", "(?i)sqlmap\n^nikto\n")
	return dir
}

func loadHub(t *testing.T, files map[string]string) []*scenario.Scenario {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(body)}
	}
	scs, err := scenario.LoadFSWith(fsys, ".", scenario.LoadOptions{DataDir: hubData(t)})
	if err != nil {
		t.Fatal(err)
	}
	return scs
}

func httpEv(ip string, at time.Duration, method, path string, status int, ua string) *event.Event {
	return &event.Event{Time: w0.Add(at), Source: netip.MustParseAddr(ip), Type: event.TypeHTTPAccess, Parser: "nginx",
		Method: method, Path: path, Proto: "HTTP/1.1", Status: status, UserAgent: ua}
}

func sshEv(ip string, at time.Duration) *event.Event {
	return &event.Event{Time: w0.Add(at), Source: netip.MustParseAddr(ip), Type: event.TypeSSHFailedAuth, Parser: "sshd", User: "root"}
}

func names(out []scenario.Overflow) []string {
	var s []string
	for _, o := range out {
		s = append(s, o.Scenario.Name+"@"+o.Source.String())
	}
	return s
}

func TestHubLoad(t *testing.T) {
	scs := loadHub(t, map[string]string{"hub.yaml": hubFile})
	if len(scs) != 7 {
		t.Fatalf("loaded %d scenarios, want 7", len(scs))
	}
	for _, s := range scs {
		if !s.Hub || s.File != "hub.yaml" {
			t.Errorf("%s: hub=%v file=%s", s.Name, s.Hub, s.File)
		}
	}
	byName := map[string]*scenario.Scenario{}
	for _, s := range scs {
		byName[s.Name] = s
	}
	if l := byName["test/scan-404"].Labels; !l.Remediation || len(l.Classification) != 1 || l.Behavior != "http:scan" {
		t.Errorf("labels with a list: %+v", l)
	}
	if l := byName["test/backdoor"].Labels; len(l.Classification) != 1 || l.Classification[0] != "attack.T1190" {
		t.Errorf("labels with a scalar classification: %+v", l)
	}
}

func TestHubLeakyDistinctBlackhole(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	var out []scenario.Overflow
	// Three distinct 404s fill the bucket; a repeat does not count; the
	// fourth distinct overflows it (capacity 3 → the 4th event).
	for i, p := range []string{"/a", "/b", "/a", "/c"} {
		out = set.Event(httpEv("192.0.2.10", time.Duration(i)*time.Second, "GET", p, 404, "x"), out)
	}
	if len(out) != 0 {
		t.Fatalf("3 distinct 404s: %v", names(out))
	}
	out = set.Event(httpEv("192.0.2.10", 4*time.Second, "GET", "/d", 404, "x"), out)
	if len(out) != 1 || out[0].Scenario.Name != "test/scan-404" || out[0].Events != 4 {
		t.Fatalf("4th distinct 404: %v", names(out))
	}
	// Blackholed for a minute: a new bucket fills and overflows silently.
	out = out[:0]
	for i, p := range []string{"/e", "/f", "/g", "/h"} {
		out = set.Event(httpEv("192.0.2.10", time.Duration(5+i)*time.Second, "GET", p, 404, "x"), out)
	}
	if len(out) != 0 {
		t.Fatalf("inside the blackhole: %v", names(out))
	}
	if st := set.Stats(); st.Silenced != 1 {
		t.Errorf("silenced = %d, want 1", st.Silenced)
	}
	// After it, and after the bucket expired, four more overflow again.
	for i, p := range []string{"/i", "/j", "/k", "/l"} {
		out = set.Event(httpEv("192.0.2.10", 2*time.Minute+time.Duration(i)*time.Second, "GET", p, 404, "x"), out)
	}
	if len(out) != 1 {
		t.Fatalf("after the blackhole: %v", names(out))
	}
	// Other statuses never match.
	out = out[:0]
	for i := range 20 {
		out = set.Event(httpEv("192.0.2.11", time.Duration(i)*time.Millisecond, "GET", fmt.Sprint("/", i), 200, "x"), out)
	}
	if len(out) != 0 {
		t.Fatalf("200s: %v", names(out))
	}
}

func TestHubLeakyDrains(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	var out []scenario.Overflow
	// One distinct 404 every 10 s (the leak speed) never overflows a
	// bucket of 3.
	for i := range 30 {
		out = set.Event(httpEv("192.0.2.12", time.Duration(i)*10*time.Second, "GET", fmt.Sprint("/", i), 404, "x"), out)
	}
	if len(out) != 0 {
		t.Fatalf("steady at the leak rate: %v", names(out))
	}
}

func TestHubTriggerData(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	out := set.Event(httpEv("192.0.2.20", 0, "GET", "/uploads/c99.php?cmd=id", 404, "x"), nil)
	if got := names(out); len(got) != 2 || !strings.Contains(strings.Join(got, " "), "test/backdoor@192.0.2.20") {
		// test/scan-404 does not fire on one 404; the counter does not match.
		if len(got) != 1 || got[0] != "test/backdoor@192.0.2.20" {
			t.Fatalf("backdoor probe: %v", got)
		}
	}
	// Blackhole 2m: a second probe is silent, one after it fires.
	if out := set.Event(httpEv("192.0.2.20", time.Minute, "GET", "/shell.php", 200, "x"), nil); len(out) != 0 {
		t.Fatalf("inside blackhole: %v", names(out))
	}
	if out := set.Event(httpEv("192.0.2.20", 3*time.Minute, "GET", "/r57.php", 200, "x"), nil); len(out) != 1 {
		t.Fatalf("after blackhole: %v", names(out))
	}
	if out := set.Event(httpEv("192.0.2.21", 0, "GET", "/index.php", 200, "Mozilla/5.0"), nil); len(out) != 0 {
		t.Fatalf("benign: %v", names(out))
	}
	if out := set.Event(httpEv("192.0.2.22", 0, "GET", "/", 200, "sqlmap/1.7"), nil); len(out) != 1 || out[0].Scenario.Name != "test/bad-ua" {
		t.Fatalf("regexp data file: %v", names(out))
	}
}

func TestHubReprocess(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	var out []scenario.Overflow
	for i := range 3 {
		out = set.Event(sshEv("198.51.100.7", time.Duration(i)*time.Second), out)
	}
	got := strings.Join(names(out), " ")
	if got != "test/ssh-bf@198.51.100.7 test/after-ssh-bf@198.51.100.7" {
		t.Fatalf("overflow then its reprocessing: %q", got)
	}
}

// The conditional scenario fires on a slow, regular brute force (one try
// every 2–15 minutes) and not on a user mistyping a few times a day.
func TestHubConditionalSlow(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	var out []scenario.Overflow
	at := time.Duration(0)
	for i := range 6 {
		at += time.Duration(2+(i*5)%13) * time.Minute
		out = set.Event(sshEv("198.51.100.8", at), out)
	}
	if len(out) != 1 || out[0].Scenario.Name != "test/ssh-slow" {
		t.Fatalf("slow brute force: %v", names(out))
	}
	out = out[:0]
	for day := range 5 {
		for try := range 2 {
			out = set.Event(sshEv("198.51.100.9", time.Duration(day)*24*time.Hour+time.Duration(try)*20*time.Second), out)
		}
	}
	if len(out) != 0 {
		t.Fatalf("a user mistyping twice a day: %v", names(out))
	}
}

func TestHubCounter(t *testing.T) {
	set := scenario.NewSet(loadHub(t, map[string]string{"hub.yaml": hubFile}), scenario.Options{})
	var out []scenario.Overflow
	for i := range 5 {
		out = set.Event(httpEv("192.0.2.30", time.Duration(i)*time.Second, "GET", "/", 502, "x"), out)
	}
	if len(out) != 0 {
		t.Fatalf("counter before its duration: %v", names(out))
	}
	out = set.Event(httpEv("192.0.2.31", 2*time.Minute, "GET", "/", 500, "x"), out)
	if len(out) != 1 || out[0].Scenario.Name != "test/counter" || out[0].Events != 5 {
		t.Fatalf("counter after its duration: %+v", out)
	}
}

func TestHubCancelOn(t *testing.T) {
	const y = `type: leaky
name: test/cancel
description: "login failures, cancelled by a success"
filter: "evt.Meta.log_type == 'http_access-log' && evt.Parsed.request == '/login'"
cancel_on: "evt.Meta.http_status == '302'"
groupby: evt.Meta.source_ip
capacity: 2
leakspeed: 1m
labels:
  remediation: true
`
	set := scenario.NewSet(loadHub(t, map[string]string{"c.yaml": y}), scenario.Options{})
	var out []scenario.Overflow
	out = set.Event(httpEv("192.0.2.40", 0, "POST", "/login", 200, "x"), out)
	out = set.Event(httpEv("192.0.2.40", time.Second, "POST", "/login", 200, "x"), out)
	out = set.Event(httpEv("192.0.2.40", 2*time.Second, "POST", "/login", 302, "x"), out)
	out = set.Event(httpEv("192.0.2.40", 3*time.Second, "POST", "/login", 200, "x"), out)
	out = set.Event(httpEv("192.0.2.40", 4*time.Second, "POST", "/login", 200, "x"), out)
	if len(out) != 0 {
		t.Fatalf("the success cancelled the bucket: %v", names(out))
	}
	out = set.Event(httpEv("192.0.2.40", 5*time.Second, "POST", "/login", 200, "x"), out)
	if len(out) != 1 {
		t.Fatalf("third failure after the cancel: %v", names(out))
	}
}

// Without groupby, one bucket holds every matching event, as in CrowdSec.
func TestHubNoGroupBy(t *testing.T) {
	const y = `type: leaky
name: test/global
description: "global"
filter: "evt.Meta.log_type == 'http_access-log'"
capacity: 2
leakspeed: 1m
labels:
  remediation: false
`
	set := scenario.NewSet(loadHub(t, map[string]string{"g.yaml": y}), scenario.Options{})
	var out []scenario.Overflow
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		out = set.Event(httpEv(ip, time.Duration(i)*time.Second, "GET", "/", 200, "x"), out)
	}
	if len(out) != 3 {
		t.Fatalf("one shared bucket overflowing reports each source: %v", names(out))
	}
}

func TestHubErrors(t *testing.T) {
	base := "name: t/x\ndescription: d\nfilter: \"evt.Meta.log_type == 'x'\"\n"
	for _, c := range []struct{ y, want string }{
		{"type: bucket\n" + base, "h.yaml:1: scenario t/x: type: \"bucket\" is not leaky, trigger, counter or conditional"},
		{"type: leaky\n" + base + "capacity: 3\n", "h.yaml:1: scenario t/x: leakspeed: required, > 0"},
		{"type: trigger\nname: t/x\nfilter: \"evt.Meta.log_type == \"\n", "h.yaml:3: scenario t/x: filter: unexpected token EOF"},
		{"type: trigger\nname: t/x\nfilter: \"evt.Meta.nope == 'a'\"\n", "h.yaml:3: scenario t/x: filter: type scenario.HubMeta has no field nope"},
		{"type: trigger\nname: t/x\nfilter: \"Frobnicate(evt.Meta.log_type)\"\n", "h.yaml:3: scenario t/x: filter: unknown helper Frobnicate (supported: " + strings.Join(scenario.HubHelpers, ", ") + ")"},
		{"type: trigger\n" + base + "data:\n  - dest_file: missing.txt\n    type: string\n", "h.yaml:6: scenario t/x: data: read data file: open "},
		{"type: trigger\n" + base + "bogus: 1\n", "h.yaml:5: field bogus not found in type scenario.hubSpec"},
		{"type: conditional\n" + base + "capacity: -1\nleakspeed: 1m\n", "h.yaml:1: scenario t/x: condition: required"},
		{"type: counter\n" + base + "capacity: 5\nduration: 1m\n", "h.yaml:5: scenario t/x: capacity: 5, a counter needs -1"},
	} {
		_, err := scenario.ParseFile("h.yaml", []byte(c.y), scenario.LoadOptions{DataDir: t.TempDir()})
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.y, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error is not one line: %q", c.y, err)
		}
	}
	// Duplicate names across files, and skipping bad ones.
	fsys := fstest.MapFS{
		"a.yaml":   {Data: []byte("type: trigger\n" + base)},
		"b.yaml":   {Data: []byte("type: trigger\n" + base)},
		"bad.yaml": {Data: []byte("type: leaky\n" + base)},
	}
	_, err := scenario.LoadFSWith(fsys, ".", scenario.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "t/x") {
		t.Fatalf("duplicate/bad: %v", err)
	}
	var skipped []string
	scs, err := scenario.LoadFSWith(fsys, ".", scenario.LoadOptions{SkipBad: true, OnSkip: func(err error) { skipped = append(skipped, err.Error()) }})
	if err != nil || len(scs) != 1 || len(skipped) != 2 {
		t.Fatalf("skip bad: %d loaded, skipped %q, err %v", len(scs), skipped, err)
	}
}
