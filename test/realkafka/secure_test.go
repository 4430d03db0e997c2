package realkafka

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// secureNode is the SASL_SSL node of test/kafka/kafka.sh start-secure.
type secureNode struct {
	addr  string // SASL_SSL listener
	bench string // PLAINTEXT listener, bench-* topics only
	dir   string // ca.pem, <user>.password
}

// secure returns the secure node of the environment, with the decisions
// topics created (once per test binary) by the admin user.
func secure(t testing.TB) secureNode {
	t.Helper()
	env := need(t, envSecureBroker, envSecureBench, envSecureDir)
	n := secureNode{addr: env[0], bench: env[1], dir: env[2]}
	topicsOnce.Do(func() { topicsErr = n.createTopics() })
	if topicsErr != nil {
		t.Fatalf("create the topics on the secure node: %v", topicsErr)
	}
	return n
}

var (
	topicsOnce sync.Once
	topicsErr  error
)

// config is the Kafka client configuration of user with mechanism.
func (n secureNode) config(user, mechanism string) kafkaconn.Config {
	return kafkaconn.Config{
		TLSCA:            filepath.Join(n.dir, "ca.pem"),
		SASLMechanism:    mechanism,
		SASLUsername:     user,
		SASLPasswordFile: n.passwordFile(user),
	}
}

func (n secureNode) passwordFile(user string) string {
	return filepath.Join(n.dir, user+".password")
}

// security builds config(user, mechanism).
func (n secureNode) security(t testing.TB, user, mechanism string) *kafkaconn.Security {
	t.Helper()
	s, err := kafkaconn.Build(n.config(user, mechanism))
	if err != nil {
		t.Fatalf("kafka security of %s: %v", user, err)
	}
	return s
}

// flags are the command-line flags that connect a program as user.
func (n secureNode) flags(user, mechanism string) []string {
	return []string{"--brokers", n.addr, "--kafka-tls-ca", filepath.Join(n.dir, "ca.pem"),
		"--kafka-sasl-mechanism", mechanism, "--kafka-sasl-username", user,
		"--kafka-sasl-password-file", n.passwordFile(user)}
}

// env is the environment that connects a program as user, the way an
// operator sets it (the password itself in PORTCULLIS_KAFKA_SASL_PASSWORD).
func (n secureNode) env(t testing.TB, user, mechanism string) []string {
	t.Helper()
	pw, err := os.ReadFile(n.passwordFile(user))
	if err != nil {
		t.Fatal(err)
	}
	return []string{"PORTCULLIS_BROKERS=" + n.addr,
		"PORTCULLIS_KAFKA_TLS_CA=" + filepath.Join(n.dir, "ca.pem"),
		"PORTCULLIS_KAFKA_SASL_MECHANISM=" + mechanism,
		"PORTCULLIS_KAFKA_SASL_USERNAME=" + user,
		"PORTCULLIS_KAFKA_SASL_PASSWORD=" + strings.TrimSpace(string(pw))}
}

// createTopics creates the topics "portcullis broker" creates, as an
// operator creates them on a Kafka cluster: with the admin user.
func (n secureNode) createTopics() error {
	sec, err := kafkaconn.Build(n.config("admin", kafkaconn.MechanismSCRAMSHA512))
	if err != nil {
		return err
	}
	tr := sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(n.addr), Transport: tr, Timeout: 30 * time.Second}
	var req kafka.CreateTopicsRequest
	for _, tp := range broker.DefaultTopics() {
		tc := kafka.TopicConfig{Topic: tp.Name, NumPartitions: int(tp.Partitions), ReplicationFactor: 1}
		for k, v := range tp.Configs {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		req.Topics = append(req.Topics, tc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.CreateTopics(ctx, &req)
	if err != nil {
		return err
	}
	for name, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return errors.Join(errors.New(name), err)
		}
	}
	return nil
}

// ban is a one-hour ban of p.
func ban(p string) decisionfeed.Decision {
	return decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(p), time.Hour, "test", time.Now())
}

// TestFeedOverSASLSSL: with every mechanism, a decision the engine's
// credential publishes reaches a subscriber holding the bouncer's
// credential, which also commits its offsets under its own group.
func TestFeedOverSASLSSL(t *testing.T) {
	n := secure(t)
	for i, mech := range []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA256, kafkaconn.MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			group := "portcullis-realkafka-" + strings.ToLower(mech)
			sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: []string{n.addr},
				Group: group, CommitInterval: 100 * time.Millisecond, Security: n.security(t, "bouncer", mech)})
			if err != nil {
				t.Fatal(err)
			}
			f := newFollower()
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- sub.Run(runCtx, f) }()
			defer func() {
				stop()
				if err := <-done; err != nil {
					t.Errorf("subscriber: %v", err)
				}
			}()
			waitReady(ctx, t, sub)

			pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{n.addr},
				Security: n.security(t, "engine", mech)})
			if err != nil {
				t.Fatal(err)
			}
			d := ban(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}).String() + "/32")
			if err := pub.Publish(ctx, d); err != nil {
				t.Fatalf("publish as engine: %v", err)
			}
			if err := pub.Close(); err != nil {
				t.Errorf("close publisher: %v", err)
			}
			for f.missing([]string{d.Key()}) > 0 {
				if ctx.Err() != nil {
					t.Fatalf("the bouncer did not get %s: %+v", d.Key(), sub.Stats())
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The bouncer's lag-reporting group holds its offsets.
			admin := n.security(t, "admin", kafkaconn.MechanismSCRAMSHA512).Transport(&kafka.Transport{})
			defer admin.CloseIdleConnections()
			c := &kafka.Client{Addr: kafka.TCP(n.addr), Transport: admin}
			for {
				res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group,
					Topics: map[string][]int{decisionfeed.TopicDecisions: {0, 1, 2}}})
				committed := int64(0)
				if err == nil && res.Error == nil {
					for _, p := range res.Topics[decisionfeed.TopicDecisions] {
						if p.Error == nil && p.CommittedOffset > 0 {
							committed += p.CommittedOffset
						}
					}
				}
				if committed > 0 {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("no offsets committed under %s: %v %+v", group, err, res)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestStrangersRefused: a client without TLS and SASL, one with TLS but
// no SASL, a wrong password and an unknown user are each refused at once
// with one line that names the setting and holds no password.
func TestStrangersRefused(t *testing.T) {
	n := secure(t)
	wrong := filepath.Join(t.TempDir(), "wrong.password")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withPW := func(c kafkaconn.Config, file string) kafkaconn.Config { c.SASLPasswordFile = file; return c }
	cases := []struct {
		name string
		cfg  kafkaconn.Config
		want string
	}{
		{"plaintext, no SASL", kafkaconn.Config{}, "requires TLS or SASL"},
		{"TLS, no SASL", kafkaconn.Config{TLSCA: filepath.Join(n.dir, "ca.pem")}, "requires SASL authentication"},
		{"wrong password", withPW(n.config("engine", kafkaconn.MechanismSCRAMSHA512), wrong), `authentication failed for user "engine"`},
		{"wrong password, PLAIN", withPW(n.config("engine", kafkaconn.MechanismPlain), wrong), `authentication failed for user "engine"`},
		{"unknown user", withPW(n.config("mallory", kafkaconn.MechanismSCRAMSHA256), wrong), `authentication failed for user "mallory"`},
	}
	secrets := passwords(t, n)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sec, err := kafkaconn.Build(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err = sec.Probe(ctx, []string{n.addr})
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("probe: %v; want one line with %q", err, c.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("probe took %v: refused by a timeout, not by the broker", took)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the error holds a password")
				}
			}
			t.Logf("refused in %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// passwords returns every password of the secure node's users.
func passwords(t testing.TB, n secureNode) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(n.dir, "*.password"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no password files in %s: %v", n.dir, err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}

// TestBouncerCannotPublish: the broker refuses a decision published with
// the bouncer's credential (TopicAuthorizationFailed), and nothing of it
// reaches the topic.
func TestBouncerCannotPublish(t *testing.T) {
	n := secure(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mech := range []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA512} {
		pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{n.addr}, MaxAttempts: 1,
			Security: n.security(t, "bouncer", mech)})
		if err != nil {
			t.Fatal(err)
		}
		err = pub.Publish(ctx, ban("192.0.2.66/32"))
		// kafka-go reports the partition's error code by its title.
		if err == nil || !strings.Contains(err.Error(), kafka.TopicAuthorizationFailed.Title()) {
			t.Errorf("publish as bouncer (%s): %v, want Topic Authorization Failed", mech, err)
		}
		if err := pub.Close(); err != nil {
			t.Logf("close the refused publisher: %v", err)
		}
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: []string{n.addr}, Group: "-",
		Security: n.security(t, "bouncer", kafkaconn.MechanismSCRAMSHA256)})
	if err != nil {
		t.Fatal(err)
	}
	f := newFollower()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(runCtx, f) }()
	waitReady(ctx, t, sub)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.missing([]string{"ip:192.0.2.66"}) == 0 {
		t.Fatal("the bouncer's refused decision is in the live set")
	}
}
