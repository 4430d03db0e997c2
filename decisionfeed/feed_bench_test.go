package decisionfeed_test

import (
	"context"
	"iter"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// benchAddr returns the i-th distinct address of a benchmark.
func benchAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// arrival is a Handler that hands every change's id to a channel.
type arrival struct {
	ready chan struct{}
	ids   chan string
}

func (a *arrival) Snapshot(context.Context, iter.Seq[decisionfeed.Decision]) error {
	close(a.ready)
	return nil
}

func (a *arrival) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	for _, d := range cs {
		a.ids <- d.ID
	}
	return nil
}

// BenchmarkPublishToCallback measures one decision's way from Publish to
// the subscriber's Changes callback on loopback, and reports p50 and p99.
func BenchmarkPublishToCallback(b *testing.B) {
	brokers := feedtest.Brokers(b)
	topic := feedtest.CompactedTopic(b, decisionfeed.PartitionsDecisions)
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-"})
	if err != nil {
		b.Fatal(err)
	}
	h := &arrival{ready: make(chan struct{}), ids: make(chan string, 1)}
	run(b, sub, h)
	<-h.ready
	pub := feedtest.Publisher(b, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	var lat []time.Duration
	i := 0
	for b.Loop() {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, benchAddr(i), time.Hour, "bench", time.Now())
		i++
		start := time.Now()
		if err := pub.Publish(context.Background(), d); err != nil {
			b.Fatal(err)
		}
		if id := <-h.ids; id != d.ID {
			b.Fatalf("got %s, want %s", id, d.ID)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

// BenchmarkPublishThroughput publishes batches of 1000 decisions.
func BenchmarkPublishThroughput(b *testing.B) {
	brokers := feedtest.Brokers(b)
	topic := feedtest.CompactedTopic(b, decisionfeed.PartitionsDecisions)
	pub := feedtest.Publisher(b, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	now := time.Now()
	ds := make([]decisionfeed.Decision, 1000)
	n := 0
	for b.Loop() {
		for j := range ds {
			ds[j] = decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, benchAddr(n), time.Hour, "bench", now)
			n++
		}
		if err := pub.Publish(context.Background(), ds...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkRebuild measures a fresh subscriber's rebuild of 100,000 live
// decisions (feedbench measures a million, with the broker in another
// process so the memory figures are the subscriber's alone).
func BenchmarkRebuild(b *testing.B) {
	const n = 100_000
	brokers := feedtest.Brokers(b)
	topic := feedtest.CompactedTopic(b, decisionfeed.PartitionsDecisions)
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	ds := make([]decisionfeed.Decision, 0, 1000)
	for i := range n {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, benchAddr(i), 24*time.Hour, "engine", now)
		d.Scenario, d.Country = "crowdsecurity/ssh-bf", "RU"
		ds = append(ds, d)
		if len(ds) == cap(ds) {
			if err := pub.Publish(context.Background(), ds...); err != nil {
				b.Fatal(err)
			}
			ds = ds[:0]
		}
	}
	if err := pub.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
		if err != nil {
			b.Fatal(err)
		}
		h := &sizeHandler{live: make(chan int, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sub.Run(ctx, h) }()
		if got := <-h.live; got != n {
			b.Fatalf("rebuilt %d decisions, want %d", got, n)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "decisions/s")
}

type sizeHandler struct{ live chan int }

func (s *sizeHandler) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	n := 0
	for range live {
		n++
	}
	s.live <- n
	return nil
}

func (s *sizeHandler) Changes(context.Context, []decisionfeed.Decision) error { return nil }
