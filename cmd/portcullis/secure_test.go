package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/testpki"
)

// captureStderr sends os.Stderr, where the commands log, to a file until
// the returned function is called; that returns what was written.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = f
	return func() string {
		os.Stderr = old
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		return string(b)
	}
}

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

// Every subcommand works against "portcullis broker" with a TLS listener
// and SASL users; strangers and wrong passwords get a one-line error; no
// password ever shows in output, errors, logs or --help.
func TestCommandsOverTLSAndSASL(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "portcullis-test")
	srv := ca.Server(t)
	const (
		adminPW  = "admin-Pw-7f3a9c"
		enginePW = "engine-Pw-1b2c3d"
		bouncePW = "bouncer-Pw-4e5f6a"
	)
	secrets := []string{adminPW, enginePW, bouncePW}
	users := filepath.Join(dir, "users")
	write := func(p, s string) string {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write(users, "admin:"+adminPW+"\nengine:"+enginePW+"\nbouncer:"+bouncePW+"\n")
	enginePWFile := write(filepath.Join(dir, "engine.pw"), enginePW+"\n")
	wrongPWFile := write(filepath.Join(dir, "wrong.pw"), "not-it\n")

	logs := captureStderr(t)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	brokerDone := make(chan error, 1)
	go func() {
		brokerDone <- run(ctx, []string{"broker", "--listen", addr, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile,
			"--sasl-users", users, "--log-level", "debug"}, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-brokerDone; err != nil {
			t.Errorf("broker: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	engine := []string{"--brokers", addr, "--kafka-tls-ca", ca.CertFile, "--kafka-sasl-mechanism", "SCRAM-SHA-512",
		"--kafka-sasl-username", "engine", "--kafka-sasl-password-file", enginePWFile, "--log-level", "debug"}
	out, err := portcullis(t, append([]string{"decisions", "add", "--ip", "203.0.113.9", "--duration", "1h", "--reason", "tls"}, engine...)...)
	if err != nil || !strings.HasPrefix(out, "added ban 203.0.113.9") {
		t.Fatalf("decisions add over TLS+SASL: %q %v", out, err)
	}
	if out, err := portcullis(t, append([]string{"blocklist", "import", write(filepath.Join(dir, "list"), "198.51.100.1\n"), "--name", "t", "--duration", "1h"}, engine...)...); err != nil {
		t.Fatalf("blocklist import over TLS+SASL: %q %v", out, err)
	}

	// The bouncer's credential from the environment alone, PLAIN this time.
	t.Setenv("PORTCULLIS_BROKERS", addr)
	t.Setenv("PORTCULLIS_KAFKA_TLS_CA", ca.CertFile)
	t.Setenv("PORTCULLIS_KAFKA_SASL_MECHANISM", "PLAIN")
	t.Setenv("PORTCULLIS_KAFKA_SASL_USERNAME", "bouncer")
	t.Setenv("PORTCULLIS_KAFKA_SASL_PASSWORD", bouncePW)
	out, err = portcullis(t, "decisions", "list", "-o", "json")
	if err != nil {
		t.Fatalf("decisions list with the environment's credentials: %v", err)
	}
	var live []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	values := map[string]bool{}
	for _, d := range live {
		values[d.Value] = true
	}
	if !values["203.0.113.9"] || !values["198.51.100.1"] {
		t.Fatalf("live set %s", out)
	}
	for _, args := range [][]string{
		{"alerts", "list"}, {"bouncers", "list"}, {"metrics", "--interval", "100ms"}, {"decisions", "prune", "--dry-run"},
	} {
		if out, err := portcullis(t, args...); err != nil {
			t.Errorf("%v over TLS+SASL: %v\n%s", args, err, out)
		}
	}

	// lapi serves the feed read with the bouncer's credential; crowdsec-pull
	// republishes it with the engine's.
	lapiAddr := freeAddr(t)
	lctx, lstop := context.WithCancel(context.Background())
	lapiDone := make(chan error, 1)
	go func() {
		lapiDone <- run(lctx, []string{"lapi", "--listen", lapiAddr, "--api-key", "k1", "--log-level", "debug"}, io.Discard)
	}()
	deadline = time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+lapiAddr+"/v1/decisions/stream?startup=true", nil)
		req.Header.Set("X-Api-Key", "k1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "203.0.113.9") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lapi over TLS+SASL did not serve the decision: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err = portcullis(t, append([]string{"crowdsec-pull", "--once", "--lapi-url", "http://" + lapiAddr, "--api-key", "k1"}, engine...)...)
	if err != nil || !strings.HasPrefix(out, "published ") {
		t.Fatalf("crowdsec-pull over TLS+SASL: %q %v", out, err)
	}
	lstop()
	if err := <-lapiDone; err != nil {
		t.Fatalf("lapi: %v", err)
	}

	// Refusals: each one line, naming the setting, without a password.
	refusals := []struct {
		args []string
		want string
	}{
		{[]string{"decisions", "add", "--ip", "203.0.113.10", "--kafka-sasl-password-file", wrongPWFile}, "authentication failed for user \"bouncer\""},
		{[]string{"decisions", "list", "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", "mallory"}, "authentication failed for user \"mallory\""},
		{[]string{"decisions", "list", "--kafka-sasl-mechanism", "GSSAPI"}, "unknown mechanism \"GSSAPI\""},
		{[]string{"decisions", "list", "--kafka-tls-ca", testpki.NewCA(t, "other").CertFile}, "kafka tls_ca (--kafka-tls-ca) broker " + addr + ": its certificate is not signed by"},
		{[]string{"decisions", "list", "--kafka-tls-ca", filepath.Join(dir, "none.pem")}, "no such file"},
	}
	for _, r := range refusals {
		_, err := portcullis(t, r.args...)
		if err == nil || !strings.Contains(err.Error(), r.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line with %q", r.args, err, r.want)
		}
	}
	for _, k := range []string{"PORTCULLIS_KAFKA_TLS_CA", "PORTCULLIS_KAFKA_SASL_MECHANISM", "PORTCULLIS_KAFKA_SASL_USERNAME", "PORTCULLIS_KAFKA_SASL_PASSWORD"} {
		t.Setenv(k, "")
	}
	_, err = portcullis(t, "decisions", "list")
	if err == nil || !strings.Contains(err.Error(), "requires TLS or SASL") {
		t.Errorf("plaintext anonymous client: %v", err)
	}

	// --help never shows a password, even one in the environment.
	t.Setenv("PORTCULLIS_KAFKA_SASL_PASSWORD", bouncePW)
	var help bytes.Buffer
	helpOut = &help
	for _, c := range commands {
		args := []string{c.name, "--help"}
		if c.name == "decisions" || c.name == "blocklist" {
			args = []string{c.name, map[string]string{"decisions": "add", "blocklist": "import"}[c.name], "--help"}
		}
		if c.name == "alerts" || c.name == "bouncers" {
			args = []string{c.name, "list", "--help"}
		}
		if _, err := portcullis(t, args...); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: %v", args, err)
		}
	}
	helpOut = os.Stdout
	if !strings.Contains(help.String(), "-kafka-sasl-password-file") || !strings.Contains(help.String(), "-tls-cert") {
		t.Errorf("--help lacks the kafka flags")
	}
	all := logs() + help.String() + out
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Fatalf("a password is in the output or logs")
		}
	}
	if !strings.Contains(all, "broker listening") {
		t.Fatalf("logs not captured:\n%s", all)
	}
}

// The broker refuses the clients' --kafka-* flags instead of starting in
// plaintext under the impression of TLS.
func TestBrokerRefusesClientFlags(t *testing.T) {
	_, err := portcullis(t, "broker", "--listen", "127.0.0.1:0", "--kafka-tls-cert", "/x.pem")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--kafka-tls-cert configures clients") {
		t.Fatalf("broker --kafka-tls-cert: %v", err)
	}
}
