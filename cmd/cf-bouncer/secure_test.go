package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
)

// The "kafka:" section of the config file takes the bouncer to a TLS+SASL
// broker; a wrong password in it is a one-line error at start.
func TestOnceOverTLSAndSASLFromTheConfigFile(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	s := feedtest.StartSecureBroker(t, broker.Config{Topics: broker.DefaultTopics()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{s.Addr()},
		Security: s.Security(t, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA256)})
	if err != nil {
		t.Fatal(err)
	}
	defer feedtest.Close(t, pub)
	if err := pub.Publish(ctx, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32")); err != nil {
		t.Fatal(err)
	}
	config := func(pwFile string) string {
		p := filepath.Join(t.TempDir(), "cf-bouncer.yaml")
		y := fmt.Sprintf("retry_min: 1ms\nretry_max: 5ms\npoll_min: 1ms\npoll_max: 5ms\nsnapshot_timeout: 30s\nbrokers: [%q]\n"+
			"kafka:\n  tls_ca: %q\n  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: %s\n  sasl_password_file: %q\n",
			s.Addr(), s.CAFile, feedtest.UserBouncer, pwFile)
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer
	args := []string{"--once", "--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--log-level", "debug"}
	if err := run(ctx, append([]string{"--config", config(s.PasswordFiles[feedtest.UserBouncer])}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if got := fake.Items(account, "portcullis_ban"); !slices.Equal(got, []string{"203.0.113.7"}) {
		t.Fatalf("ban list = %v", got)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, append([]string{"--config", config(wrong)}, args...), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `authentication failed for user "bouncer"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("wrong password: %v", err)
	}
	for _, pw := range s.Passwords {
		if strings.Contains(stderr.String()+stdout.String(), pw) {
			t.Fatal("a password is in the output")
		}
	}
}
