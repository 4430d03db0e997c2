package main

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// startBouncer runs the bouncer with args and returns a function that
// waits for /check of ip to answer want.
func startBouncer(t *testing.T, ctx context.Context, args ...string) func(what, ip string, want int) {
	t.Helper()
	listen := bouncertest.FreeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, append([]string{"--listen", listen, "--fail-mode", "closed"}, args...), io.Discard)
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	return func(what, ip string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			req, _ := http.NewRequest(http.MethodGet, "http://"+listen+"/check", nil)
			req.Header.Set("X-Real-IP", ip)
			got := 0
			if resp, err := client.Do(req); err == nil {
				got = resp.StatusCode
				_ = resp.Body.Close()
			}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /check for %s = %d, want %d", what, ip, got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// The bouncer follows a TLS+SASL embedded broker with its own credential
// and sends heartbeats there; its logs hold no password.
func TestRunOverTLSAndSASL(t *testing.T) {
	s := feedtest.StartSecureBroker(t, broker.Config{Topics: broker.DefaultTopics()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = logs
	defer func() { os.Stderr = stderr }()

	check := startBouncer(t, ctx, append(s.Flags(feedtest.UserBouncer, kafkaconn.MechanismSCRAMSHA256),
		"--group", "portcullis-nginx-bouncer-test", "--heartbeat-interval", "100ms", "--log-level", "debug")...)
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{s.Addr()},
		Security: s.Security(t, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA512)})
	if err != nil {
		t.Fatal(err)
	}
	defer feedtest.Close(t, pub)
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "test", time.Now())
	if err := pub.Publish(ctx, d); err != nil {
		t.Fatal(err)
	}
	check("ban over TLS+SASL", "203.0.113.5", http.StatusForbidden)

	// Its heartbeat reached the broker over the same settings.
	tr := s.Security(t, feedtest.UserAdmin, kafkaconn.MechanismPlain).Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(s.Addr()), Transport: tr}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{heartbeat.Topic: {kafka.LastOffsetOf(0)}}})
		if err == nil && len(res.Topics[heartbeat.Topic]) == 1 && res.Topics[heartbeat.Topic][0].LastOffset > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat on %s: %v %+v", heartbeat.Topic, err, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.Stderr = stderr
	b, err := os.ReadFile(logs.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "sasl_username") && !strings.Contains(string(b), "nginx-bouncer") {
		t.Fatalf("no logs captured:\n%s", b)
	}
	for _, pw := range s.Passwords {
		if strings.Contains(string(b), pw) {
			t.Fatalf("a password is in the logs")
		}
	}
}

// A bouncer whose credential may only read the decisions topic, commit
// its own group and write heartbeats works fully: nothing it does writes
// to the decisions topic, and the DLQ copy of an invalid message, refused
// for lack of rights, is counted and does not stall the feed. The same
// credential is refused when it tries to publish a decision.
func TestRunWithReadOnlyCredential(t *testing.T) {
	const (
		topic    = decisionfeed.TopicDecisions
		bouncerP = "bouncer-pass-8d7e"
	)
	lit := kmsg.ACLResourcePatternTypeLiteral
	allow := func(rt kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: name, Pattern: lit, Operation: op, Allow: true}
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic), kfake.SeedTopics(1, decisionfeed.DLQTopic(topic)),
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser(kafkaconn.MechanismPlain, "admin", "admin-pass"),
		kfake.User(kafkaconn.MechanismPlain, "bouncer", bouncerP,
			// The minimal rights of a bouncer, as the README's kafka-acls.sh lines grant them.
			allow(kmsg.ACLResourceTypeTopic, topic, kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, topic, kmsg.ACLOperationDescribe),
			kfake.ACL{Resource: kmsg.ACLResourceTypeGroup, Name: "portcullis-nginx-bouncer-", Pattern: kmsg.ACLResourcePatternTypePrefixed, Operation: kmsg.ACLOperationRead, Allow: true},
			allow(kmsg.ACLResourceTypeTopic, heartbeat.Topic, kmsg.ACLOperationWrite),
			allow(kmsg.ACLResourceTypeTopic, heartbeat.Topic, kmsg.ACLOperationCreate),
			allow(kmsg.ACLResourceTypeTopic, heartbeat.Topic, kmsg.ACLOperationDescribe),
		))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	admin, err := kafkaconn.Build(kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "admin", SASLPassword: "admin-pass"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{addr}, Security: admin})
	if err != nil {
		t.Fatal(err)
	}
	defer feedtest.Close(t, pub)
	ban := func(p string) {
		t.Helper()
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), time.Hour, "test", time.Now())
		if err := pub.Publish(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	ban("203.0.113.0/24")

	pwFile := bouncertest.WriteFile(t, "pw", bouncerP+"\n")
	t.Setenv("PORTCULLIS_KAFKA_SASL_MECHANISM", "PLAIN")
	t.Setenv("PORTCULLIS_KAFKA_SASL_USERNAME", "bouncer")
	t.Setenv("PORTCULLIS_KAFKA_SASL_PASSWORD_FILE", pwFile)
	metricsAddr := bouncertest.FreeAddr(t)
	check := startBouncer(t, ctx, "--brokers", addr, "--group", "portcullis-nginx-bouncer-ro", "--heartbeat-interval", "100ms",
		"--metrics-listen", metricsAddr, "--log-level", "error")
	check("snapshot", "203.0.113.7", http.StatusForbidden)

	// An invalid message: the bouncer's DLQ copy is refused (no Write on
	// the DLQ topic), counted, and the next decision still arrives at once.
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Transport: admin.Transport(&kafka.Transport{}), BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("ip:198.51.100.1"), Value: []byte(`{"v":1,"op":"nonsense"}`)}); err != nil {
		t.Fatal(err)
	}
	feedtest.Close(t, w)
	start := time.Now()
	ban("198.51.100.0/24")
	check("ban after an invalid message", "198.51.100.9", http.StatusForbidden)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the feed stalled %s behind a refused DLQ copy", d)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !containsLine(string(body), "portcullis_feed_dlq_errors_total 1") || !containsLine(string(body), "portcullis_feed_invalid_total 1") {
		t.Errorf("metrics lack one refused DLQ copy and one invalid message:\n%s", grepLines(string(body), "portcullis_feed_"))
	}

	// The bouncer's credential cannot publish a decision.
	ro, err := kafkaconn.Build(kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "bouncer", SASLPasswordFile: pwFile})
	if err != nil {
		t.Fatal(err)
	}
	bp, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{addr}, Security: ro, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "bouncer", time.Now())
	if err := bp.Publish(ctx, d); err == nil || !strings.Contains(err.Error(), "Topic Authorization Failed") {
		t.Errorf("publish with the bouncer's credential: %v, want Topic Authorization Failed", err)
	}
	_ = bp.Close()
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
