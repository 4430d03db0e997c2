//go:build linux

package demo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestShippedConfigs starts each bouncer with its example file from
// config/ (touching nothing: fw-bouncer in dry-run, nowhere to reach the
// brokers or Cloudflare) and checks that it was accepted: the daemon is
// still running after a second, and nothing it printed names the file,
// as every config error does. The same file with an unknown key must be
// refused with its file and line, so the check can fail.
func TestShippedConfigs(t *testing.T) {
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/fw-bouncer", "./cmd/nginx-bouncer", "./cmd/cf-bouncer")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("not-a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	offline := []string{"--brokers", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:0"}
	cases := []struct {
		prog, file string
		args       []string
	}{
		{"fw-bouncer", "fw-bouncer.yaml", []string{"--dry-run"}},
		{"nginx-bouncer", "nginx-bouncer.yaml", []string{"--listen", "127.0.0.1:0"}},
		{"cf-bouncer", "cf-bouncer.yaml", []string{"--token-file", token, "--api-base", "http://127.0.0.1:1"}},
	}
	for _, c := range cases {
		t.Run(c.prog, func(t *testing.T) {
			shipped, err := filepath.Abs(filepath.Join("../../config", c.file))
			if err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{"--config", shipped}, c.args...), offline...)
			exited, out := runFor(t, filepath.Join(bin, c.prog), time.Second, args...)
			if exited || strings.Contains(out, shipped) {
				t.Fatalf("%s refused %s (exited %v):\n%s", c.prog, shipped, exited, out)
			}

			body, err := os.ReadFile(shipped)
			if err != nil {
				t.Fatal(err)
			}
			broken := filepath.Join(t.TempDir(), c.file)
			if err := os.WriteFile(broken, append(body, []byte("no_such_key: 1\n")...), 0o644); err != nil {
				t.Fatal(err)
			}
			lines := bytes.Count(body, []byte("\n")) + 1
			args[1] = broken
			exited, out = runFor(t, filepath.Join(bin, c.prog), 5*time.Second, args...)
			if want := broken + ": line " + strconv.Itoa(lines) + ": field no_such_key"; !exited || !strings.Contains(out, want) {
				t.Fatalf("%s with an unknown key: exited %v, want an error containing %q; output:\n%s", c.prog, exited, want, out)
			}
		})
	}
}

// runFor runs a daemon for at most d and reports whether it exited on
// its own before that, with its combined output.
func runFor(t *testing.T, prog string, d time.Duration, args ...string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return false, out.String()
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", prog, err)
	}
	return true, out.String()
}
