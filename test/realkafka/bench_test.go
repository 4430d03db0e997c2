package realkafka

import (
	"context"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// arrivals hands every decision id a subscriber delivers to a channel.
type arrivals struct {
	ready chan struct{}
	ids   chan string
}

func (a *arrivals) Snapshot(context.Context, iter.Seq[decisionfeed.Decision]) error {
	close(a.ready)
	return nil
}

func (a *arrivals) Changes(ctx context.Context, ds []decisionfeed.Decision) error {
	for i := range ds {
		select {
		case a.ids <- ds[i].ID:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// pipe is a publisher and a subscriber on one topic of one listener.
type pipe struct {
	pub *decisionfeed.Publisher
	in  *arrivals
	lat []time.Duration
}

// newPipe creates a decisions-shaped topic (three partitions, compacted)
// on broker and starts a subscriber on it; both connect with sec.
func newPipe(b *testing.B, broker, topic string, sec *kafkaconn.Security) *pipe {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(broker), Transport: tr}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: decisionfeed.PartitionsDecisions, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
	}}})
	if err != nil || res.Errors[topic] != nil {
		b.Fatalf("create topic %s on %s: %v %v", topic, broker, err, res)
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: []string{broker}, Topic: topic,
		Group: "-", DLQTopic: "-", Security: sec})
	if err != nil {
		b.Fatal(err)
	}
	p := &pipe{in: &arrivals{ready: make(chan struct{}), ids: make(chan string, 1)}}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(runCtx, p.in) }()
	b.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("subscriber: %v", err)
		}
	})
	select {
	case <-p.in.ready:
	case <-ctx.Done():
		b.Fatalf("subscriber on %s not ready", broker)
	}
	p.pub, err = decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{broker}, Topic: topic, Security: sec})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := p.pub.Close(); err != nil {
			b.Errorf("close publisher: %v", err)
		}
	})
	return p
}

// sample publishes decision i and records how long it took to come out
// of the subscriber.
func (p *pipe) sample(b *testing.B, i int) {
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), time.Hour, "bench", time.Now())
	start := time.Now()
	if err := p.pub.Publish(context.Background(), d); err != nil {
		b.Fatal(err)
	}
	if id := <-p.in.ids; id != d.ID {
		b.Fatalf("got %s, want %s", id, d.ID)
	}
	p.lat = append(p.lat, time.Since(start))
}

// quantile returns the q-quantile of the recorded latencies.
func (p *pipe) quantile(q float64) time.Duration {
	s := slices.Clone(p.lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))]
}

// BenchmarkPublishToCallbackSASLSSL measures a decision's way from Publish
// (acks=all) to the subscriber's callback on the secure node twice, over
// its SASL_SSL listener (admin, SCRAM-SHA-512) and over its PLAINTEXT
// benchmark listener, one sample of each in turn so that both see the
// same load, and reports p50 and p99 of each and the p99 ratio.
func BenchmarkPublishToCallbackSASLSSL(b *testing.B) {
	n := secure(b)
	suffix := fmt.Sprint(time.Now().UnixNano())
	plain := newPipe(b, n.bench, "bench-plain-"+suffix, nil)
	tls := newPipe(b, n.addr, "bench-saslssl-"+suffix, n.security(b, "admin", kafkaconn.MechanismSCRAMSHA512))
	i := 0
	for b.Loop() {
		plain.sample(b, i)
		tls.sample(b, i)
		i++
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(plain.quantile(0.5)), "plain-p50-ms")
	b.ReportMetric(ms(plain.quantile(0.99)), "plain-p99-ms")
	b.ReportMetric(ms(tls.quantile(0.5)), "saslssl-p50-ms")
	b.ReportMetric(ms(tls.quantile(0.99)), "saslssl-p99-ms")
	b.ReportMetric(ms(tls.quantile(0.99))/ms(plain.quantile(0.99)), "p99-ratio")
}
