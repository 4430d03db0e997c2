package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestScenariosList(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"scenarios", "list"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^crowdsecurity/ssh-bf\s+window\s+5 in 1m0s\s+ban\s+4h\s+ssh-bf.yaml$`,
		`(?m)^portcullis/http-l7-flood\s+window\s+1000 in 10s\s+ban\s+12h\s+http-l7-flood.yaml$`,
		`(?m)^portcullis/ssh-time-based-bf\s+conditional\s+.*ssh-time-based-bf.yaml$`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("list lacks %s:\n%s", re, out.String())
		}
	}
}

// A directory of hub-format scenarios (with a data file) lists, inspects
// and replays; profiles give the remedy.
func TestScenariosHubDirAndReplay(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "shells.txt"), []byte("c99.php\nr57.php\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const hub = `type: trigger
name: me/shells
description: "web shells"
filter: "evt.Meta.log_type == 'http_access-log' && any(File('shells.txt'), { evt.Parsed.file_name == #})"
groupby: evt.Meta.source_ip
data:
  - dest_file: shells.txt
    type: string
labels:
  remediation: true
  classification:
    - attack.T1505
---
type: leaky
name: me/alerts-only
description: "x"
filter: "evt.Meta.log_type == 'http_access-log'"
groupby: evt.Meta.source_ip
capacity: 5
leakspeed: 1s
labels:
  remediation: false
`
	if err := os.WriteFile(filepath.Join(dir, "mine.yaml"), []byte(hub), 0o644); err != nil {
		t.Fatal(err)
	}
	prof := writeTemp(t, "profiles.yaml", "scenarios:\n  me/shells: {duration: 48h}\n")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"scenarios", "inspect", "me/shells", "--scenarios", dir, "--data-dir", data,
		"--profiles", prof, "-o", "json"}, &out); err != nil {
		t.Fatal(err)
	}
	var v scenarioView
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Format != "crowdsec-hub" || v.Remedy != "ban" || v.Duration != "48h" || v.File != filepath.Join(dir, "mine.yaml") {
		t.Errorf("inspect: %+v", v)
	}
	out.Reset()
	if err := run(context.Background(), []string{"scenarios", "list", "--scenarios", dir, "--data-dir", data}, &out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^me/alerts-only\s+leaky\s+capacity 5, leakspeed 1s\s+alert\s+-`).MatchString(out.String()) {
		t.Errorf("list:\n%s", out.String())
	}
	log := writeTemp(t, "access.log", `203.0.113.7 - - [25/Nov/2026:10:00:05 +0000] "GET /up/c99.php?x=1 HTTP/1.1" 404 0 "-" "curl/8.0"
192.168.1.9 - - [25/Nov/2026:10:00:06 +0000] "GET /up/r57.php HTTP/1.1" 404 0 "-" "curl/8.0"
`)
	out.Reset()
	if err := run(context.Background(), []string{"replay", "--type", "nginx", "--scenarios", dir, "--data-dir", data,
		"--profiles", prof, log}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "[ban 48h] 203.0.113.7\n Scenario: me/shells") || strings.Contains(out.String(), "192.168.1.9") {
		t.Errorf("replay (the private address is whitelisted by default):\n%s", out.String())
	}
	// A missing data file is a load error naming the file and line.
	err := run(context.Background(), []string{"scenarios", "list", "--scenarios", dir, "--data-dir", t.TempDir()}, &out)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "mine.yaml")+":7: scenario me/shells: data: read data file") {
		t.Errorf("missing data file: %v", err)
	}
	if err := run(context.Background(), []string{"scenarios", "inspect", "nope"}, &out); err == nil || !strings.Contains(err.Error(), `no scenario "nope"`) {
		t.Errorf("unknown scenario: %v", err)
	}
}
