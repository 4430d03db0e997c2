package acquire

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// benchLine returns the i-th line of a synthetic nginx access log (about 170 bytes).
func benchLine(i int) string {
	return fmt.Sprintf(`203.0.%d.%d - - [25/Nov/2026:10:%02d:%02d +0000] "GET /catalog/item-%d?page=2 HTTP/1.1" 200 %d "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"`,
		i/250%250, i%250+1, i/60%60, i%60, i, 1000+i%5000)
}

// counter hands on lines and closes done after n of them.
func counter(n int, done chan<- struct{}) Handler {
	seen := 0
	return func(_ context.Context, ls []Line) error {
		seen += len(ls)
		if seen >= n && done != nil {
			close(done)
			done = nil
		}
		return nil
	}
}

// BenchmarkFileTail measures the follower: a file of b.N lines, written
// while the source follows it, read, split and handed on.
func BenchmarkFileTail(b *testing.B) {
	p := filepath.Join(b.TempDir(), "access.log")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	s, err := NewFileSource(SourceConfig{Kind: KindFile, Filenames: []string{p}, Labels: map[string]string{"type": "nginx"}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx, counter(b.N, done)) }()
	time.Sleep(100 * time.Millisecond) // the follower opens the file at its end
	var content []byte
	for i := range b.N {
		content = append(content, benchLine(i)...)
		content = append(content, '\n')
	}
	b.ResetTimer()
	start := time.Now()
	// Append in 64 KiB writes, as a busy web server's log grows.
	for rest := content; len(rest) > 0; {
		n := min(len(rest), 64<<10)
		if _, err := f.Write(rest[:n]); err != nil {
			b.Fatal(err)
		}
		rest = rest[n:]
	}
	<-done
	el := time.Since(start)
	b.SetBytes(int64(len(content) / b.N))
	b.ReportMetric(float64(b.N)/el.Seconds(), "lines/s")
}

func benchTopic(b *testing.B, n int) ([]string, string) {
	brokers := feedtest.Brokers(b)
	topic := feedtest.Topic(b, 6)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond, BatchSize: 5000}
	defer func() { _ = w.Close() }()
	msgs := make([]kafka.Message, 0, 5000)
	for i := 0; i < n; i++ {
		msgs = append(msgs, kafka.Message{Value: []byte(benchLine(i))})
		if len(msgs) == cap(msgs) || i == n-1 {
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	return brokers, topic
}

// BenchmarkKafkaSource measures the Kafka source over b.N raw lines already
// in a six-partition topic of the embedded broker.
func BenchmarkKafkaSource(b *testing.B) {
	brokers, topic := benchTopic(b, b.N)
	s, err := NewKafkaSource(SourceConfig{Kind: KindKafka, Topic: topic, Brokers: brokers, GroupID: "bench-" + topic,
		FromBeginning: true, Labels: map[string]string{"type": "nginx"}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	go func() { _ = s.Run(ctx, counter(b.N, done)) }()
	<-done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkKafkaReaderBare is the peer of BenchmarkKafkaSource: the same
// kafka-go group reader with nothing done per message, the floor the
// source's decoding and hand-off add to.
func BenchmarkKafkaReaderBare(b *testing.B) {
	brokers, topic := benchTopic(b, b.N)
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: "bare-" + topic, Topic: topic,
		StartOffset: kafka.FirstOffset, CommitInterval: KafkaCommitInterval, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond})
	defer func() { _ = r.Close() }()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := r.ReadMessage(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lines/s")
}

// BenchmarkDecodeMessage measures decoding one message of each form.
func BenchmarkDecodeMessage(b *testing.B) {
	line := benchLine(7)
	for _, tc := range []struct{ name, value string }{
		{"raw", line},
		{"filebeat", `{"@timestamp":"2026-11-25T10:00:05.123Z","message":` + fmt.Sprintf("%q", line) + `,"fields":{"log_type":"nginx"},"host":{"name":"web-1"},"log":{"file":{"path":"/var/log/nginx/access.log"}},"agent":{"type":"filebeat","version":"8.15.0"}}`},
		{"seed", `{"message": ` + fmt.Sprintf("%q", line) + `, "source": "web-2", "timestamp": 1795600805.123}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			v := []byte(tc.value)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeMessage(v, nil, "nginx", DefaultMaxLineBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
