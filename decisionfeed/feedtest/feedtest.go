// Package feedtest gives tests a Kafka to talk to: the broker named by
// PORTCULLIS_TEST_BROKERS (a real Apache Kafka, say) when it is set, else
// a fresh embedded broker per test; and topics with unique names, so the
// same tests run on both and never see each other's messages.
package feedtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// EnvBrokers names the environment variable that points the tests at
// external brokers, host:port[,host:port...].
const EnvBrokers = "PORTCULLIS_TEST_BROKERS"

var (
	mu      sync.Mutex
	perTest = map[testing.TB][]string{}
)

// External reports whether the tests run against external brokers.
func External() bool { return os.Getenv(EnvBrokers) != "" }

// Security returns the TLS and SASL settings of the external brokers, read
// from the PORTCULLIS_KAFKA_* environment as every program reads it (nil
// for the embedded broker, which is plaintext). Bad settings fail the test.
func Security(t testing.TB) *kafkaconn.Security {
	t.Helper()
	s, err := envSecurity()
	if err != nil {
		t.Fatalf("kafka security from the environment: %v", err)
	}
	return s
}

func envSecurity() (*kafkaconn.Security, error) {
	if !External() {
		return nil, nil
	}
	var f kafkaconn.Flags
	cfg, err := f.Resolve(kafkaconn.Config{}, os.Getenv)
	if err != nil {
		return nil, err
	}
	return kafkaconn.Build(cfg)
}

// Brokers returns the brokers of this test: those of PORTCULLIS_TEST_BROKERS
// when it is set, else the address of an embedded broker started for the
// test (once; later calls in the same test return the same one) and closed
// when the test ends.
func Brokers(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		var out []string
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				out = append(out, b)
			}
		}
		return out
	}
	mu.Lock()
	defer mu.Unlock()
	if bs, ok := perTest[t]; ok {
		return bs
	}
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	bs := []string{b.Addr()}
	perTest[t] = bs
	t.Cleanup(func() {
		b.Close()
		mu.Lock()
		delete(perTest, t)
		mu.Unlock()
	})
	return bs
}

// Publisher returns a publisher with cfg that is closed when the test
// ends; the test fails if that Close (which flushes) fails.
func Publisher(t testing.TB, cfg decisionfeed.PublisherConfig) *decisionfeed.Publisher {
	t.Helper()
	pub, err := decisionfeed.NewPublisher(cfg)
	if err != nil {
		t.Fatalf("new publisher: %v", err)
	}
	t.Cleanup(func() { Close(t, pub) })
	return pub
}

// Close closes c and fails the test if that fails: writers flush on
// Close, so its error means lost messages. It suits defer.
func Close(t testing.TB, c io.Closer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("close %T: %v", c, err)
	}
}

// Topic creates a topic with a unique name and the given number of
// partitions on the test's brokers, and its dead-letter topic
// "<name>.dlq" with one partition, and returns the name.
func Topic(t testing.TB, partitions int) string {
	t.Helper()
	return TopicWithConfigs(t, partitions, nil)
}

// CompactedTopic is Topic with cleanup.policy=compact, the shape of the
// decisions topic.
func CompactedTopic(t testing.TB, partitions int) string {
	t.Helper()
	return TopicWithConfigs(t, partitions, broker.CompactConfigs())
}

// TopicWithConfigs is Topic with topic configs.
func TopicWithConfigs(t testing.TB, partitions int, configs map[string]string) string {
	t.Helper()
	name := uniqueName(t.Name())
	brokers := Brokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, brokers, name, partitions, configs); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	if err := CreateTopic(ctx, brokers, decisionfeed.DLQTopic(name), 1, nil); err != nil {
		t.Fatalf("create topic %s: %v", decisionfeed.DLQTopic(name), err)
	}
	return name
}

// CreateTopic creates a topic and waits until its metadata shows every
// partition with a leader. On external brokers it connects with the
// security settings of the environment (see Security).
func CreateTopic(ctx context.Context, brokers []string, name string, partitions int, configs map[string]string) error {
	sec, err := envSecurity()
	if err != nil {
		return err
	}
	tr := sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	tc := kafka.TopicConfig{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		return err
	}
	if err := res.Errors[name]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err == nil && ready(md, name, partitions) && servesOffsets(ctx, c, name, partitions) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// servesOffsets reports whether the leaders answer for every partition:
// Apache Kafka lists a new topic in metadata a little before its leader
// serves it.
func servesOffsets(ctx context.Context, c *kafka.Client, name string, partitions int) bool {
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{name: reqs}})
	if err != nil || len(res.Topics[name]) != partitions {
		return false
	}
	for _, po := range res.Topics[name] {
		if po.Error != nil {
			return false
		}
	}
	return true
}

func ready(md *kafka.MetadataResponse, name string, partitions int) bool {
	for _, t := range md.Topics {
		if t.Name != name || t.Error != nil || len(t.Partitions) != partitions {
			continue
		}
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false
			}
		}
		return true
	}
	return false
}

// uniqueName makes a legal, unique topic name from a test name.
func uniqueName(test string) string {
	var b strings.Builder
	b.WriteString("test-")
	for _, r := range test {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 180 {
			break
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(rnd[:]))
	return b.String()
}
