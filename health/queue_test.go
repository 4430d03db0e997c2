package health

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// TestSampleQueueRate: messages written between the two samples show as a
// positive rate, and a group that committed nothing on a topic is not listed.
func TestSampleQueueRate(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 3)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	defer func() { _ = w.Close() }()
	produced := make(chan error, 1)
	go func() {
		// 20 batches of 10 over about a second, while SampleQueue waits.
		for i := range 20 {
			msgs := make([]kafka.Message, 10)
			for j := range msgs {
				msgs[j] = kafka.Message{Value: []byte(fmt.Sprint(i*10 + j))}
			}
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				produced <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		produced <- nil
	}()
	q, err := SampleQueue(ctx, c, QueueConfig{Topics: []string{topic}, Interval: 500 * time.Millisecond, LagThreshold: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	if len(q.Topics) != 1 || q.Topics[0].Partitions != 3 || q.Topics[0].MessagesPerSec <= 0 || q.Topics[0].Messages <= 0 {
		t.Fatalf("topics: %+v", q.Topics)
	}
	for _, g := range q.Groups {
		if g.Topic == topic {
			t.Fatalf("group %s listed on %s without a commit", g.Group, topic)
		}
	}
	if _, err := SampleQueue(ctx, c, QueueConfig{}); err == nil {
		t.Fatal("no topics: no error")
	}
}
