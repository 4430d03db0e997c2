package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine/internal/enginetest"
)

// BenchmarkLineToDecision measures the live engine end to end: one line
// appended to a followed access log, from the write to the decision read
// back from the decisions topic (inotify, parse, [re-key through the
// events topic,] scenario, profile, publish, broker, consumer). Each
// iteration is one new scanner address (a trigger scenario), so each line
// makes exactly one decision.
func BenchmarkLineToDecision(b *testing.B) {
	b.Run("single", func(b *testing.B) { benchLineToDecision(b, false) })
	b.Run("rekey", func(b *testing.B) { benchLineToDecision(b, true) })
}

func benchLineToDecision(b *testing.B, rekey bool) {
	brokers := feedtest.Brokers(b)
	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.Topics.Decisions = feedtest.CompactedTopic(b, decisionfeed.PartitionsDecisions)
	cfg.Topics.Alerts = feedtest.Topic(b, decisionfeed.PartitionsAlerts)
	if rekey {
		cfg.Rekey = true
		cfg.Topics.Events = "events-" + cfg.Topics.Decisions
		cfg.RekeyGroup = "detect-" + cfg.Topics.Decisions
	}
	access := filepath.Join(b.TempDir(), "access.log")
	writeFile(b, access, "")
	in := startDaemon(b, cfg, fmt.Sprintf("filenames: [%q]\nlabels: {type: nginx}\n", access))
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, GroupTopics: []string{cfg.Topics.Decisions}, GroupID: "bench-" + cfg.Topics.Decisions,
		StartOffset: kafka.FirstOffset, MaxWait: 50 * time.Millisecond, ReadBatchTimeout: 5 * time.Millisecond,
		ReadBackoffMin: time.Millisecond, ReadBackoffMax: 10 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	line := func(i int) string {
		return fmt.Sprintf("2001:db8:%x:%x::1 - - [%s] \"GET / HTTP/1.1\" 200 1 \"-\" \"sqlmap/1.7\"\n",
			i>>16, i&0xffff, time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700"))
	}
	// Warm up: the follower has the file open and the reader its partitions.
	for i := 0; in.metric(b, "portcullis_engine_decisions_total") == 0; i++ {
		enginetest.AppendFile(b, access, line(1<<30+i))
		time.Sleep(50 * time.Millisecond)
	}
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := r.ReadMessage(rctx)
		rcancel()
		if err != nil {
			break // drained the warm-up decisions
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		enginetest.AppendFile(b, access, line(i))
		m, err := r.ReadMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		if len(m.Value) == 0 {
			b.Fatal("empty decision")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
}
