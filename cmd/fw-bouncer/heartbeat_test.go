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
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

// TestDryRunHeartbeats: the daemon beats with its mode and the bans it holds.
func TestDryRunHeartbeats(t *testing.T) {
	if feedtest.External() {
		t.Skip("beats on the shared " + heartbeat.Topic + " topic; embedded broker only")
	}
	var bans []decisionfeed.Decision
	for _, p := range []string{"192.0.2.7/32", "198.51.100.0/24", "2001:db8::/64"} {
		bans = append(bans, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), time.Hour, "cli", time.Now()))
	}
	brokers, topic, _ := bouncertest.Feed(t, bans...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := "--dry-run --mode nftables --log-level error --heartbeat-interval 100ms --brokers " + strings.Join(brokers, ",") + " --topic " + topic
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FW_BOUNCER_TEST_MAIN=1", "FW_BOUNCER_TEST_ARGS="+args)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	host, _ := os.Hostname()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: heartbeat.Topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no heartbeat with 3 bans: %v", err)
		}
		b, err := heartbeat.Decode(m.Value)
		if err != nil {
			t.Fatalf("heartbeat %s: %v", m.Value, err)
		}
		if b.Key() != "fw-bouncer@"+host || b.Mode != "nftables" || b.Interval != "100ms" {
			t.Fatalf("heartbeat %+v", b)
		}
		if b.Decisions == 3 {
			return
		}
	}
}
