package cli

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

func parsed(t *testing.T, args ...string) *Common {
	t.Helper()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var c Common
	c.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c
}

// Brokers: flag > environment > file > default (DESIGN.md).
func TestResolveBrokers(t *testing.T) {
	file := []string{"file:9092"}
	t.Setenv(EnvBrokers, "")
	if got := parsed(t).ResolveBrokers(nil); strings.Join(got, ",") != DefaultBrokers {
		t.Errorf("default: %v", got)
	}
	if got := parsed(t).ResolveBrokers(file); strings.Join(got, ",") != "file:9092" {
		t.Errorf("file over default: %v", got)
	}
	t.Setenv(EnvBrokers, " env-1:9092, env-2:9092 ,")
	if got := parsed(t).ResolveBrokers(file); strings.Join(got, ",") != "env-1:9092,env-2:9092" {
		t.Errorf("environment over file: %v", got)
	}
	if got := parsed(t, "--brokers", "flag:9092").ResolveBrokers(file); strings.Join(got, ",") != "flag:9092" {
		t.Errorf("flag over environment: %v", got)
	}
	if got := parsed(t).BrokerList(); strings.Join(got, ",") != "env-1:9092,env-2:9092" {
		t.Errorf("BrokerList: %v", got)
	}
}

// KafkaSecurity overlays the flags on the file's section, refuses bad
// settings before any connection, and lets an unreachable broker pass.
func TestKafkaSecurity(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	c := parsed(t, "--kafka-sasl-mechanism", "SCRAM-SHA-1")
	if _, err := c.KafkaSecurity(ctx, kafkaconn.Config{SASLUsername: "u", SASLPassword: "p"}, []string{"127.0.0.1:1"}, log); err == nil ||
		!strings.Contains(err.Error(), "--kafka-sasl-mechanism") {
		t.Errorf("unknown mechanism: %v", err)
	}
	c = parsed(t, "--kafka-sasl-username", "flag-user")
	sec, err := c.KafkaSecurity(ctx, kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "file-user", SASLPassword: "p"}, []string{"127.0.0.1:1"}, log)
	if err != nil {
		t.Fatalf("unreachable broker must not fail the start: %v", err)
	}
	if got := sec.Config().SASLUsername; got != "flag-user" {
		t.Errorf("user %q, want the flag's", got)
	}
}

// insecure_skip_verify is logged as a warning at every start.
func TestInsecureSkipVerifyIsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if _, err := parsed(t, "--kafka-tls-insecure-skip-verify").KafkaSecurity(context.Background(), kafkaconn.Config{}, []string{"127.0.0.1:1"}, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "NOT verified") {
		t.Fatalf("no warning:\n%s", buf.String())
	}
}
