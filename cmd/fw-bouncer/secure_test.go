package main

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// The daemon follows a TLS+SASL broker with the bouncer's credential from
// the environment and its heartbeat reports the ban it holds; its log
// holds no password.
func TestDryRunOverTLSAndSASL(t *testing.T) {
	s := feedtest.StartSecureBroker(t, broker.Config{Topics: broker.DefaultTopics()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{s.Addr()},
		Security: s.Security(t, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA512)})
	if err != nil {
		t.Fatal(err)
	}
	defer feedtest.Close(t, pub)
	if err := pub.Publish(ctx, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan,
		netip.MustParsePrefix("192.0.2.7/32"), time.Hour, "cli", time.Now())); err != nil {
		t.Fatal(err)
	}

	args := "--dry-run --mode nftables --log-level debug --heartbeat-interval 100ms --brokers " + s.Addr()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	var logs strings.Builder
	cmd.Stderr = &logs
	cmd.Env = append(os.Environ(), "FW_BOUNCER_TEST_MAIN=1", "FW_BOUNCER_TEST_ARGS="+args,
		"PORTCULLIS_KAFKA_TLS_CA="+s.CAFile, "PORTCULLIS_KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
		"PORTCULLIS_KAFKA_SASL_USERNAME="+feedtest.UserBouncer, "PORTCULLIS_KAFKA_SASL_PASSWORD="+s.Passwords[feedtest.UserBouncer])
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{s.Addr()}, Topic: heartbeat.Topic, Partition: 0, MaxWait: 100 * time.Millisecond,
		Dialer: s.Security(t, feedtest.UserAdmin, kafkaconn.MechanismPlain).Dialer(&kafka.Dialer{Timeout: 10 * time.Second})})
	defer func() { _ = r.Close() }()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no heartbeat with the ban over TLS+SASL: %v", err)
		}
		b, err := heartbeat.Decode(m.Value)
		if err != nil {
			t.Fatalf("heartbeat %s: %v", m.Value, err)
		}
		if b.Decisions == 1 {
			break
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !strings.Contains(logs.String(), "fw-bouncer started") {
		t.Fatalf("log not captured:\n%s", logs.String())
	}
	for _, pw := range s.Passwords {
		if strings.Contains(logs.String(), pw) {
			t.Fatal("a password is in the log")
		}
	}
}
