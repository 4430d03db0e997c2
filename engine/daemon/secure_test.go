package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Every Kafka client of the engine works against a TLS+SASL broker: the
// server-logs source (its own tls/sasl keys in acquis.yaml), the re-keying
// writer, reader and admin client, and the alert and decision writers
// (Options.Security); the attackers are banned as over plaintext.
func TestEngineOverTLSAndSASL(t *testing.T) {
	s := feedtest.StartSecureBroker(t, broker.Config{Topics: broker.DefaultTopics()})
	brokers := []string{s.Addr()}
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: decisionfeed.TopicServerLogs, Balancer: &kafka.RoundRobin{},
		BatchTimeout: time.Millisecond, Transport: s.Security(t, feedtest.UserAdmin, kafkaconn.MechanismPlain).Transport(&kafka.Transport{})}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	msgs := serverLogsMessages(t, c)
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	feedtest.Close(t, w)

	dir := t.TempDir()
	acquis := filepath.Join(dir, "acquis.yaml")
	doc := fmt.Sprintf("source: kafka\ntopic: %s\nbrokers: [%q]\ngroup_id: engine-tls\nfrom_beginning: true\nlabels: {type: nginx}\n"+
		"tls: {ca_cert: %q}\nsasl: {mechanism: scram-sha-512, username: %s, password: %q}\n",
		decisionfeed.TopicServerLogs, s.Addr(), s.CAFile, feedtest.UserEngine, s.Passwords[feedtest.UserEngine])
	if err := os.WriteFile(acquis, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Acquis, cfg.Host, cfg.Rekey, cfg.DrainTimeout = acquis, testHost, true, 5*time.Second
	reg := prometheus.NewRegistry()
	d, err := New(cfg, Options{Registry: reg, Brokers: brokers, Security: s.Security(t, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA256)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	in := &instance{d: d, reg: reg, cancel: stop, done: make(chan error, 1)}
	go func() { in.done <- d.Run(rctx) }()
	defer in.stop(t)
	// Generous: TLS under the race detector on a loaded CI machine is slow.
	waitMetric(t, []*instance{in}, "portcullis_acquire_lines_total", float64(len(msgs)), 90*time.Second)

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: decisionfeed.TopicDecisions, GroupID: "reader-tls",
		StartOffset: kafka.FirstOffset, MaxWait: 50 * time.Millisecond,
		Dialer: s.Security(t, feedtest.UserBouncer, kafkaconn.MechanismSCRAMSHA512).Dialer(&kafka.Dialer{Timeout: 10 * time.Second})})
	defer func() { _ = r.Close() }()
	var vs [][]byte
	for len(vs) < len(c.attackers) {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read decisions over TLS+SASL: got %d of %d: %v", len(vs), len(c.attackers), err)
		}
		vs = append(vs, m.Value)
	}
	checkVerdicts(t, "kafka over TLS+SASL", verdictsOf(decodeDecisions(t, vs)), c)
}

// engine.yaml takes the same "kafka:" section as every program, strictly.
func TestParseConfigKafkaSection(t *testing.T) {
	c, err := ParseConfig("engine.yaml", []byte("acquis: a.yaml\nkafka:\n  tls_ca: /ca.pem\n  sasl_mechanism: SCRAM-SHA-256\n  sasl_username: engine\n  sasl_password_file: /pw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.TLSCA != "/ca.pem" || c.Kafka.SASLMechanism != "SCRAM-SHA-256" || c.Kafka.SASLUsername != "engine" || c.Kafka.SASLPasswordFile != "/pw" {
		t.Fatalf("kafka section %#v", c.Kafka)
	}
	if _, err := ParseConfig("engine.yaml", []byte("acquis: a.yaml\nkafka:\n  sasl_password: hunter2\n")); err == nil ||
		!strings.Contains(err.Error(), "engine.yaml:3") && !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("a password in engine.yaml: %v", err)
	}
}
