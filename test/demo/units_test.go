//go:build linux

package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnits checks packaging/systemd with systemd-analyze: every
// unit parses without a warning, each service's exposure score stays
// under its bound, and fw-bouncer.service grants exactly the capabilities
// the demo runs fw-bouncer with (FWBouncerCaps).
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not installed (scripts/deps.sh installs systemd)")
		}
		t.Skip("systemd-analyze not installed")
	}
	src := "../../packaging/systemd"
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the ExecStart programs to exist: point them at stand-ins.
	dir := t.TempDir()
	binDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"portcullis", "fw-bouncer", "nginx-bouncer", "cf-bouncer"} {
		if err := os.WriteFile(filepath.Join(binDir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var units []string
	for _, e := range ents {
		body, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(body), "/usr/local/bin/", binDir+"/")
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, e.Name())
	}
	for _, want := range []string{"portcullis-broker.service", "portcullis-engine.service", "fw-bouncer.service",
		"nginx-bouncer.service", "cf-bouncer.service"} {
		if !slices.Contains(units, want) {
			t.Errorf("packaging/systemd lacks %s", want)
		}
	}
	cmd := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Exposure bounds, 0 (locked down) to 10: fw-bouncer is root with
	// three capabilities, the others hold none.
	bound := map[string]float64{"fw-bouncer.service": 3.0}
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		out, _ := exec.Command(sa, "security", "--offline=true", "--no-pager", filepath.Join(dir, u)).CombinedOutput()
		m := score.FindSubmatch(out)
		if m == nil {
			t.Errorf("systemd-analyze security %s: no score in\n%s", u, out)
			continue
		}
		got, _ := strconv.ParseFloat(string(m[1]), 64)
		max, ok := bound[u]
		if !ok {
			max = 2.0
		}
		if got > max {
			t.Errorf("%s: exposure %.1f, want at most %.1f", u, got, max)
		}
	}

	body, err := os.ReadFile(filepath.Join(src, "fw-bouncer.service"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range strings.Split(FWBouncerCaps, ",") {
		want = append(want, "CAP_"+strings.ToUpper(strings.TrimPrefix(c, "+")))
	}
	for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindSubmatch(body)
		if m == nil {
			t.Errorf("fw-bouncer.service: no %s", key)
			continue
		}
		if got := strings.Fields(string(m[1])); !slices.Equal(got, want) {
			t.Errorf("fw-bouncer.service %s = %v, want %v (the set the demo runs fw-bouncer with)", key, got, want)
		}
	}
}
