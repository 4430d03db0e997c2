package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

// TestRunHeartbeats: the daemon beats on the heartbeat topic with the
// number of prefixes it holds.
func TestRunHeartbeats(t *testing.T) {
	if feedtest.External() {
		t.Skip("beats on the shared " + heartbeat.Topic + " topic; embedded broker only")
	}
	var bans []decisionfeed.Decision
	for _, p := range []string{"203.0.113.0/24", "192.0.2.1/32"} {
		bans = append(bans, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), time.Hour, "test", time.Now()))
	}
	brokers, topic, _ := bouncertest.Feed(t, bans...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--listen", bouncertest.FreeAddr(t), "--brokers", brokers[0], "--topic", topic, "--group", "-",
			"--heartbeat-interval", "100ms", "--log-level", "error"}, io.Discard)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	host, _ := os.Hostname()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: heartbeat.Topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no heartbeat with 2 decisions: %v", err)
		}
		b, err := heartbeat.Decode(m.Value)
		if err != nil {
			t.Fatalf("heartbeat %s: %v", m.Value, err)
		}
		if b.Name != "nginx-bouncer" || b.Host != host || b.Mode != "auth_request" || b.Interval != "100ms" || string(m.Key) != b.Key() {
			t.Fatalf("heartbeat %+v key %q", b, m.Key)
		}
		if b.Decisions == 2 {
			return
		}
	}
}
