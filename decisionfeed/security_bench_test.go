package decisionfeed_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// securityPath is one publisher and one following subscriber on one broker.
type securityPath struct {
	pub *decisionfeed.Publisher
	h   *arrival
	lat []time.Duration
}

func newSecurityPath(b *testing.B, addr string, pubSec, subSec *kafkaconn.Security) *securityPath {
	b.Helper()
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: []string{addr}, Group: "-", Security: subSec})
	if err != nil {
		b.Fatal(err)
	}
	h := &arrival{ready: make(chan struct{}), ids: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, h) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("subscriber: %v", err)
		}
	})
	select {
	case <-h.ready:
	case err := <-done:
		b.Fatalf("subscriber stopped before its snapshot: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("no snapshot in 30s")
	}
	// Not feedtest.Publisher: nil pubSec means plaintext here, whatever
	// the environment says about external brokers.
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{addr}, Security: pubSec})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { feedtest.Close(b, pub) })
	return &securityPath{pub: pub, h: h}
}

func (p *securityPath) once(b *testing.B, i int) {
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, benchAddr(i), time.Hour, "bench", time.Now())
	start := time.Now()
	if err := p.pub.Publish(context.Background(), d); err != nil {
		b.Fatal(err)
	}
	if id := <-p.h.ids; id != d.ID {
		b.Fatalf("got %s, want %s", id, d.ID)
	}
	p.lat = append(p.lat, time.Since(start))
}

func quantileMS(lat []time.Duration, q float64) float64 {
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[min(len(s)-1, int(float64(len(s))*q))].Microseconds()) / 1000
}

// BenchmarkPublishToCallbackTLSSASL measures publish → subscriber callback
// over TLS with SCRAM-SHA-512 and over plaintext, on two embedded brokers
// in the same run, alternating one decision on each so that the machine's
// load weighs on both alike; it reports both p50 and p99 and their ratio
// (secure ÷ plaintext). Connections are reused, as in the daemons: the
// handshake cost is paid once, the figure is the per-message cost.
func BenchmarkPublishToCallbackTLSSASL(b *testing.B) {
	plainB, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Topics: broker.DefaultTopics()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(plainB.Close)
	s := feedtest.StartSecureBroker(b, broker.Config{Topics: broker.DefaultTopics()})
	plain := newSecurityPath(b, plainB.Addr(), nil, nil)
	secure := newSecurityPath(b, s.Addr(),
		s.Security(b, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA512), s.Security(b, feedtest.UserBouncer, kafkaconn.MechanismSCRAMSHA512))
	// Warm both paths (metadata, connections, handshakes) outside the figures.
	for i := range 20 {
		plain.once(b, 1<<20+i)
		secure.once(b, 1<<20+i)
	}
	plain.lat, secure.lat = nil, nil
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		plain.once(b, i)
		secure.once(b, i)
		i++
	}
	pp50, pp99 := quantileMS(plain.lat, 0.5), quantileMS(plain.lat, 0.99)
	sp50, sp99 := quantileMS(secure.lat, 0.5), quantileMS(secure.lat, 0.99)
	b.ReportMetric(pp50, "plain-p50-ms")
	b.ReportMetric(pp99, "plain-p99-ms")
	b.ReportMetric(sp50, "tls-sasl-p50-ms")
	b.ReportMetric(sp99, "tls-sasl-p99-ms")
	if pp99 > 0 {
		b.ReportMetric(sp99/pp99, "p99-ratio")
	}
	if pp50 > 0 {
		b.ReportMetric(sp50/pp50, "p50-ratio")
	}
}
