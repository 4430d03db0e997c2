package decisionfeed_test

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/prometheus/client_golang/prometheus"
)

// printer is a Handler that prints what it is told.
type printer struct{}

func (printer) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	n := 0
	for d := range live {
		fmt.Println("enforce", d.Type, d.Target(), "until", d.Until)
		n++
	}
	fmt.Println("live decisions:", n)
	return nil
}

func (printer) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	for _, d := range cs {
		fmt.Println(d.Op, d.Target(), d.Until)
	}
	return nil
}

// A bouncer follows the feed: one snapshot of the live set, then changes.
func ExampleSubscriber_Run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers: []string{"127.0.0.1:9092"},
		Logger:  slog.Default().With("component", "feed"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	prometheus.MustRegister(sub) // portcullis_feed_lag, _messages_total, _invalid_total, ...
	if err := sub.Run(ctx, printer{}); err != nil {
		fmt.Println(err)
	}
}

// The engine and the CLI publish decisions; Publish returns once the
// brokers acknowledged them.
func ExamplePublisher_Publish() {
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		// Close flushes: an error here means decisions were lost.
		if err := pub.Close(); err != nil {
			fmt.Println(err)
		}
	}()
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan,
		netip.MustParsePrefix("203.0.113.7/32"), 4*time.Hour, "engine", time.Now())
	d.Scenario = "crowdsecurity/ssh-bf"
	if err := pub.Publish(context.Background(), d); err != nil {
		fmt.Println(err)
	}
}
