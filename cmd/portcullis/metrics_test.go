package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/health"
)

// commit commits offset on every partition of topic under group, as a
// consumer that read up to there would.
func commit(t *testing.T, c *kafka.Client, group, topic string, partitions int, offset func(p int) int64) {
	t.Helper()
	var cs []kafka.OffsetCommit
	for p := range partitions {
		cs = append(cs, kafka.OffsetCommit{Partition: p, Offset: offset(p)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: cs}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("commit %s/%d: %v", topic, p.Partition, p.Error)
			}
		}
	}
}

func metricsJSON(t *testing.T, args ...string) metricsReport {
	t.Helper()
	out, err := portcullis(t, append([]string{"metrics", "-o", "json", "--interval", "300ms"}, args...)...)
	if err != nil {
		t.Fatalf("metrics: %v\n%s", err, out)
	}
	var rep metricsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("metrics -o json: %v\n%s", err, out)
	}
	return rep
}

func groupStatus(rep metricsReport, group string) (health.GroupLag, bool) {
	for _, g := range rep.Groups {
		if g.Group == group {
			return g, true
		}
	}
	return health.GroupLag{}, false
}

func TestMetricsLaggingConsumer(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 2)
	group := "held-back-" + topic
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}

	// 100 messages per partition.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	var msgs []kafka.Message
	for i := range 400 {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte("x")})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	hw := map[int]int64{}
	for _, p := range res.Topics[topic] {
		hw[p.Partition] = p.LastOffset
	}
	if hw[0]+hw[1] != 400 {
		t.Fatalf("high-water marks %v, want a sum of 400", hw)
	}

	// The consumer is held back: it committed 10 messages into each partition.
	commit(t, c, group, topic, 2, func(int) int64 { return 10 })
	common := []string{"--brokers", strings.Join(brokers, ","), "--topics", topic + ",no-such-topic-" + topic, "--lag-threshold", "50"}
	rep := metricsJSON(t, common...)
	g, ok := groupStatus(rep, group)
	if !ok || g.Topic != topic || g.Lag != 380 || g.Status != health.Lagging {
		t.Fatalf("held-back group: %+v (found %v), want lag 380 Lagging; report %+v", g, ok, rep)
	}
	if len(rep.Topics) != 2 || rep.Topics[0].Partitions != 2 || rep.Topics[0].Messages != 400 || !rep.Topics[1].Missing {
		t.Fatalf("topics: %+v", rep.Topics)
	}

	// Caught up to within the threshold, then fully.
	commit(t, c, group, topic, 2, func(p int) int64 { return hw[p] - 20 })
	if g, _ := groupStatus(metricsJSON(t, common...), group); g.Lag != 40 || g.Status != health.Healthy {
		t.Fatalf("group 40 behind with threshold 50: %+v, want Healthy", g)
	}
	commit(t, c, group, topic, 2, func(p int) int64 { return hw[p] })
	if g, _ := groupStatus(metricsJSON(t, common...), group); g.Lag != 0 || g.Status != health.Healthy {
		t.Fatalf("caught-up group: %+v, want lag 0 Healthy", g)
	}
}

func TestMetricsEngineAndTable(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1)
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/garbage" {
			_, _ = fmt.Fprint(w, "portcullis_engine_alerts_total{scenario=\"x\" 1\n")
			return
		}
		_, _ = fmt.Fprint(w, `# TYPE portcullis_engine_parse_lines_total counter
portcullis_engine_parse_lines_total{format="nginx",result="event"} 90
portcullis_engine_parse_lines_total{format="nginx",result="no_event"} 7
portcullis_engine_parse_lines_total{format="nginx",result="malformed"} 3
portcullis_engine_parse_lines_total{format="sshd",result="event"} 12
# TYPE portcullis_engine_alerts_total counter
portcullis_engine_alerts_total{scenario="crowdsecurity/ssh-bf"} 2
portcullis_engine_alerts_total{scenario="crowdsecurity/http-bad-user-agent"} 5
# TYPE portcullis_engine_decisions_total counter
portcullis_engine_decisions_total{scenario="crowdsecurity/ssh-bf"} 1
# TYPE go_goroutines gauge
go_goroutines 12
`)
	}))
	defer engine.Close()
	out, err := portcullis(t, "metrics", "--brokers", strings.Join(brokers, ","), "--topics", topic, "--interval", "100ms", "--engine-metrics", engine.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"=== Parsers ===", "nginx   100    90      7         3", "sshd    12     12      0         0",
		"=== Scenarios ===", "crowdsecurity/http-bad-user-agent  5       0", "crowdsecurity/ssh-bf               2       1",
		"=== Topics ===", topic + "  1           0         0.0", "=== Consumer groups ===",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics table lacks %q:\n%s", want, out)
		}
	}
	if _, err := portcullis(t, "metrics", "--brokers", strings.Join(brokers, ","), "--topics", topic, "--interval", "10ms", "--engine-metrics", engine.URL+"/garbage"); err == nil || !strings.Contains(err.Error(), "engine metrics") {
		t.Errorf("unparsable engine metrics: %v, want an error", err)
	}
}
