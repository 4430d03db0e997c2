package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/engine"
)

const replayLog = `185.220.101.5 - - [25/Nov/2026:10:00:05 +0000] "GET /cgi-bin/.%2e/.%2e/etc/passwd HTTP/1.1" 400 0 "-" "curl/8.0"
2001:db8::66 - - [25/Nov/2026:10:05:30 +0000] "GET / HTTP/1.1" 200 10 "-" "sqlmap/1.5"
this line is not a log line
198.51.100.1 - - [25/Nov/2026:10:06:00 +0000] "GET / HTTP/1.1" 200 10 "-" "Mozilla/5.0"
`

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReplayOperatorView(t *testing.T) {
	log := writeTemp(t, "access.log", replayLog)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--type", "nginx", log}, &out); err != nil {
		t.Fatal(err)
	}
	want := `=== Alerts ===
 [ban 48h] 185.220.101.5
 Scenario: crowdsecurity/http-cve-2021-41773 | Time: 2026-11-25 10:00:05 | Events: 1
 [ban 24h] 2001:db8::66
 Scenario: crowdsecurity/http-bad-user-agent | Time: 2026-11-25 10:05:30 | Events: 1

=== Summary ===
 lines: 4 (malformed 1) | events: 3 (whitelisted 0) | alerts: 2 | decisions: 2
`
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestReplayJSON(t *testing.T) {
	log := writeTemp(t, "access.log", replayLog)
	prof := writeTemp(t, "profiles.yaml", "scenarios:\n  crowdsecurity/http-bad-user-agent: {duration: 2h, simulated: true}\nwhitelist: [185.220.101.0/24]\n")
	var out bytes.Buffer
	// Flags after the file are accepted too.
	if err := run(context.Background(), []string{"replay", log, "--json", "--type=nginx", "--profiles", prof}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("output lines = %q", lines)
	}
	var a engine.Alert
	if err := json.Unmarshal([]byte(lines[0]), &a); err != nil {
		t.Fatal(err)
	}
	if a.IP != "2001:db8::66" || a.Scenario != "crowdsecurity/http-bad-user-agent" || !a.Simulated ||
		a.Decision == nil || a.Decision.Duration != "2h0m0s" || a.Events != 1 || a.V != 1 {
		t.Errorf("alert = %+v", a)
	}
	for _, key := range []string{`"v":1`, `"ip":`, `"scenario":`, `"country":`, `"events":`, `"first_seen":`, `"last_seen":`, `"decision":`, `"simulated":true`} {
		if !strings.Contains(lines[0], key) {
			t.Errorf("alert JSON lacks %s: %s", key, lines[0])
		}
	}
}

func TestReplayUsageErrors(t *testing.T) {
	log := writeTemp(t, "access.log", replayLog)
	for _, args := range [][]string{
		{"replay", log},
		{"replay", "--type", "iis", log},
		{"replay", "--type", "nginx"},
		{"replay", "--type", "nginx", "--reference-time", "yesterday", log},
	} {
		err := run(context.Background(), args, &bytes.Buffer{})
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	err := run(context.Background(), []string{"replay", "--type", "nginx", filepath.Join(t.TempDir(), "missing.log")}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "missing.log") {
		t.Errorf("missing file: err = %v", err)
	}
	bad := writeTemp(t, "p.yaml", "whitelist: [nope]\n")
	err = run(context.Background(), []string{"replay", "--type", "nginx", "--profiles", bad, log}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `p.yaml:1: whitelist: "nope" is neither an address nor a CIDR range`) {
		t.Errorf("bad profiles: err = %v", err)
	}
}

// replay --profiles shows what the new profiles would change.
func TestReplayProfileChanges(t *testing.T) {
	log := writeTemp(t, "access.log", replayLog)
	prof := writeTemp(t, "profiles.yaml", `scenarios:
  crowdsecurity/http-cve-2021-41773: {duration: 96h}
  crowdsecurity/http-bad-user-agent: {simulated: true}
`)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--type", "nginx", "--profiles", prof, log}, &out); err != nil {
		t.Fatal(err)
	}
	want := `
=== Changes against the shipped profiles ===
 ~ changed 185.220.101.5 (crowdsecurity/http-cve-2021-41773): ban 48h0m0s -> ban 96h0m0s
 - removed 2001:db8::66 (crowdsecurity/http-bad-user-agent): ban 24h0m0s
`
	if !strings.HasSuffix(out.String(), want) {
		t.Errorf("output:\n%s\nwant it to end with:%s", out.String(), want)
	}
	out.Reset()
	if err := run(context.Background(), []string{"replay", "--type", "nginx", "--profiles", prof, "--current-profiles", prof, log}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), " no decision changes\n") {
		t.Errorf("same profiles:\n%s", out.String())
	}
}

// Suricata eve.json (written from Suricata's documented format): alerts of
// severity 1-2 ban their source, lower ones and other records do not.
func TestReplaySuricata(t *testing.T) {
	log := writeTemp(t, "eve.json", `{"timestamp":"2026-11-25T10:00:05.000001+0000","flow_id":1,"event_type":"alert","src_ip":"203.0.113.7","src_port":4444,"dest_ip":"198.51.100.10","dest_port":80,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2024897,"rev":3,"signature":"ET EXPLOIT probe","category":"Attempted Administrator Privilege Gain","severity":1},"http":{"hostname":"x"}}
{"timestamp":"2026-11-25T10:00:06.000000+0000","event_type":"alert","src_ip":"2001:db8::99","proto":"UDP","alert":{"action":"allowed","signature_id":1,"signature":"low","category":"Misc activity","severity":3}}
{"timestamp":"2026-11-25T10:00:07.000000+0000","event_type":"flow","src_ip":"203.0.113.8","dest_ip":"198.51.100.10","proto":"TCP","flow":{}}
{"timestamp":"2026-11-25T10:00:08.000000+0000","event_type":"stats","stats":{"uptime":1}}
`)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--type", "suricata", "--json", log}, &out); err != nil {
		t.Fatal(err)
	}
	var alerts []engine.Alert
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var a engine.Alert
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		alerts = append(alerts, a)
	}
	if len(alerts) != 1 || alerts[0].IP != "203.0.113.7" || alerts[0].Scenario != "portcullis/suricata-alerts" || alerts[0].Decision == nil {
		t.Fatalf("alerts: %+v", alerts)
	}
}
