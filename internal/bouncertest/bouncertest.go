// Package bouncertest holds the test fixtures the bouncer commands share: a
// decision feed on a fresh topic, a free local address and a config file.
package bouncertest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// Feed creates a compacted decisions topic on the test brokers
// (feedtest.Brokers) and a publisher on it, closed when the test ends, and
// publishes ds. It returns the brokers, the topic and the publisher for
// the decisions that follow.
func Feed(t testing.TB, ds ...decisionfeed.Decision) (brokers []string, topic string, pub *decisionfeed.Publisher) {
	t.Helper()
	brokers = feedtest.Brokers(t)
	topic = feedtest.CompactedTopic(t, decisionfeed.PartitionsDecisions)
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic, Security: feedtest.Security(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Errorf("close the feed's publisher: %v", err)
		}
	})
	if len(ds) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pub.Publish(ctx, ds...); err != nil {
			t.Fatal(err)
		}
	}
	return brokers, topic, pub
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
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

// WriteFile writes body to a file called name in a fresh temporary
// directory and returns its path.
func WriteFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
