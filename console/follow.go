package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Follow reads every partition of topic from its earliest offset and
// calls fn with each message, in order per partition, until ctx ends. A
// partition reader that fails is restarted after a pause from the next
// offset, so a broker restart only delays the console. fn is called from
// one goroutine per partition.
func Follow(ctx context.Context, dialer *kafka.Dialer, brokers []string, topic string, log *slog.Logger, fn func(kafka.Message)) error {
	n, err := partitions(ctx, dialer, brokers, topic)
	if err != nil {
		return err
	}
	done := make(chan struct{}, n)
	for p := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			followPartition(ctx, dialer, brokers, topic, p, log, fn)
		}()
	}
	for range n {
		<-done
	}
	return nil
}

// partitions returns the partition count of topic, retrying until the
// topic exists or ctx ends.
func partitions(ctx context.Context, dialer *kafka.Dialer, brokers []string, topic string) (int, error) {
	for {
		var lastErr error
		for _, b := range brokers {
			conn, err := dialer.DialContext(ctx, "tcp", b)
			if err != nil {
				lastErr = err
				continue
			}
			ps, err := conn.ReadPartitions(topic)
			_ = conn.Close() // read-only metadata connection
			if err == nil && len(ps) > 0 {
				return len(ps), nil
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("partitions of %s: %w", topic, errors.Join(ctx.Err(), lastErr))
		case <-time.After(2 * time.Second):
		}
	}
}

func followPartition(ctx context.Context, dialer *kafka.Dialer, brokers []string, topic string, p int, log *slog.Logger, fn func(kafka.Message)) {
	offset := kafka.FirstOffset
	for ctx.Err() == nil {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, Dialer: dialer,
			MaxWait: 500 * time.Millisecond, MaxBytes: 4 << 20})
		if err := r.SetOffset(offset); err != nil {
			log.Warn("set offset", "topic", topic, "partition", p, "err", err)
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("read topic, retrying", "topic", topic, "partition", p, "err", err)
				}
				break
			}
			offset = m.Offset + 1
			fn(m)
		}
		_ = r.Close() // nothing committed: the reader has no group
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
