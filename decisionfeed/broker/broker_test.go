package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/segmentio/kafka-go"
)

func client(addr string) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(addr), Transport: tr, Timeout: 10 * time.Second}, tr.CloseIdleConnections
}

func TestDefaultTopicsAndAdvertisedAddress(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Topics: broker.DefaultTopics()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, done := client(b.Addr())
	defer done()
	ctx := context.Background()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port) != b.Addr() {
		t.Fatalf("advertised brokers %+v, want exactly %s", md.Brokers, b.Addr())
	}
	want := map[string]int{
		"server-logs": 6, "crowdsec-decisions": 3, "alert-notifications": 2, "threat-intel": 1, "crowdsec-decisions.dlq": 1,
	}
	got := map[string]int{}
	for _, tp := range md.Topics {
		got[tp.Name] = len(tp.Partitions)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("topics %v, want %v", got, want)
	}
	cfg, err := c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: decisionfeed.TopicDecisions, ConfigNames: []string{"cleanup.policy"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Resources) != 1 || len(cfg.Resources[0].ConfigEntries) != 1 || cfg.Resources[0].ConfigEntries[0].ConfigValue != "compact" {
		t.Fatalf("cleanup.policy of the decisions topic: %+v", cfg.Resources)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := broker.Start(broker.Config{Listen: "no-port"}); err == nil {
		t.Fatal("a listen address without a port was accepted")
	}
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := broker.Start(broker.Config{Listen: b.Addr()}); err == nil {
		t.Fatal("a second broker on a busy address started")
	}
}

// readAll reads every record of one partition from the earliest offset to
// the high-water mark, as key/value pairs in order.
func readAll(t *testing.T, c *kafka.Client, topic string, p int) [][2]string {
	t.Helper()
	ctx := context.Background()
	var out [][2]string
	off := kafka.FirstOffset
	for {
		res, err := c.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: off, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Error != nil {
			t.Fatal(res.Error)
		}
		n := 0
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Offset < off {
				continue
			}
			k, _ := io.ReadAll(r.Key)
			var v []byte
			if r.Value != nil {
				v, _ = io.ReadAll(r.Value)
			}
			out = append(out, [2]string{string(k), string(v)})
			off = r.Offset + 1
			n++
		}
		if off >= res.HighWatermark || (n == 0 && off >= 0) {
			return out
		}
	}
}

// TestCompactionHappens checks that the decisions topic is really
// compacted at the configured cleaner interval: superseded values of a
// key go, its latest value stays, other keys stay.
func TestCompactionHappens(t *testing.T) {
	b, err := broker.Start(broker.Config{
		Listen:          "127.0.0.1:0",
		CleanerInterval: 200 * time.Millisecond,
		Topics:          []broker.Topic{{Name: "compacted", Partitions: 1, Configs: broker.CompactConfigs()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "compacted", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer feedtest.Close(t, w)
	ctx := context.Background()
	// One produce per message, so the log has many batches; the cleaner
	// never touches the last (active) one.
	for i := range 20 {
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("ip:192.0.2.1"), Value: []byte("v" + strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("ip:192.0.2.2"), Value: []byte("other")}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("ip:192.0.2.3"), Value: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	c, done := client(b.Addr())
	defer done()
	want := "[[ip:192.0.2.1 v19] [ip:192.0.2.2 other] [ip:192.0.2.3 last]]"
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := fmt.Sprint(readAll(t, c, "compacted", 0))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log not compacted after 15s:\n%s\nwant %s", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSurvivesKill9 publishes decisions (acks=all), kills the broker
// process with SIGKILL, starts it again on the same data directory and
// finds every decision and the topic layout still there.
func TestSurvivesKill9(t *testing.T) {
	p := feedtest.StartBrokerProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: p.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	var ds []decisionfeed.Decision
	for i := range 500 {
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 32)
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, pfx, time.Hour, "test", time.Now()))
	}
	for i := 0; i < len(ds); i += 50 {
		if err := pub.Publish(ctx, ds[i:i+50]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	p.Kill()
	p.Start()

	c, done := client(p.Addr())
	defer done()
	got := map[string]string{}
	for part := range decisionfeed.PartitionsDecisions {
		for _, kv := range readAll(t, c, decisionfeed.TopicDecisions, part) {
			d, err := decisionfeed.Decode([]byte(kv[1]), decisionfeed.DefaultLimits())
			if err != nil {
				t.Fatalf("after restart: %v", err)
			}
			got[kv[0]] = d.ID
		}
	}
	if len(got) != len(ds) {
		t.Fatalf("after kill -9 and restart: %d decisions, want %d", len(got), len(ds))
	}
	for _, d := range ds {
		if got[d.Key()] != d.ID {
			t.Fatalf("decision %s: id %q after restart, want %q", d.Key(), got[d.Key()], d.ID)
		}
	}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{decisionfeed.TopicServerLogs}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != decisionfeed.PartitionsServerLogs {
		t.Fatalf("server-logs after restart: %+v %v", md, err)
	}
}
