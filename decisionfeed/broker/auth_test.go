package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func TestParseUsers(t *testing.T) {
	users, err := broker.ParseUsers("users", []byte("# comment\n\nadmin:a:b:c\r\nengine:pw two\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0].Name != "admin" || string(users[0].Password) != "a:b:c" || string(users[1].Password) != "pw two" {
		t.Fatalf("users %v", users)
	}
	const secret = "sup3r-secret"
	for _, tc := range []struct{ in, want string }{
		{"admin " + secret + "\n", "users:1: want user:password"},
		{"x:y\n:" + secret + "\n", "users:2: user name: empty"},
		{"bad name:" + secret + "\n", `users:1: user name: "bad name" holds`},
		{"admin:\n", "users:1: user admin: empty password"},
		{"a:" + secret + "\na:" + secret + "\n", "users:2: user a: listed twice"},
		{"# only comments\n", "users: no users"},
	} {
		_, err := broker.ParseUsers("users", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

// FuzzParseUsers: any input parses or fails with a one-line error that
// does not repeat a password, and never panics.
func FuzzParseUsers(f *testing.F) {
	for _, s := range []string{"admin:x\n", "a:b\r\nc:d:e\n", "# c\n\n", "a b:c\n", ":x\n", "a:\n", "a:1\na:2\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := broker.ParseUsers("f", data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, u := range users {
			if u.Name == "" || u.Password == "" || strings.ContainsAny(u.Name, ": \n") {
				t.Fatalf("bad user %q", u.Name)
			}
		}
	})
}

// kgoClient is a franz-go client as user, for the admin requests kafka-go
// does not have (DeleteRecords).
func kgoClient(t *testing.T, s *feedtest.SecureBroker, user string) *kgo.Client {
	t.Helper()
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	sec := s.Security(t, user, kafkaconn.MechanismSCRAMSHA512)
	tc := sec.TLS()
	if tc.RootCAs == nil || len(ca) == 0 {
		t.Fatal("no CA")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Addr()), kgo.DialTLSConfig(tc),
		kgo.SASL(scram.Auth{User: user, Pass: s.Passwords[user]}.AsSha512Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func deleteRecords(ctx context.Context, cl *kgo.Client, topic string) error {
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	p := kmsg.NewDeleteRecordsRequestTopicPartition()
	p.Offset = -1 // up to the high-water mark
	rt.Partitions = append(rt.Partitions, p)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
}

func deleteTopic(ctx context.Context, cl *kgo.Client, topic string) error {
	req := kmsg.NewPtrDeleteTopicsRequest()
	t := kmsg.NewDeleteTopicsRequestTopic()
	t.Topic = &topic
	req.Topics = append(req.Topics, t)
	req.TopicNames = []string{topic}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.Topics[0].ErrorCode)
}

// The red-team pass of issue 12: with authentication on, an ordinary user
// publishes and reads, but neither deletes records nor topics; the admin does.
func TestSecureBrokerRefusesDeletesButToAdmin(t *testing.T) {
	s := feedtest.StartSecureBroker(t, broker.Config{Topics: broker.DefaultTopics()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Every mechanism authenticates an ordinary user, who publishes.
	for _, m := range []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA256, kafkaconn.MechanismSCRAMSHA512} {
		pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{s.Addr()}, Security: s.Security(t, feedtest.UserEngine, m), MaxAttempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.7/32"), time.Hour, "test", time.Now())
		if err := pub.Publish(ctx, d); err != nil {
			t.Fatalf("publish over TLS with %s: %v", m, err)
		}
		feedtest.Close(t, pub)
	}

	user := kgoClient(t, s, feedtest.UserEngine)
	if err := deleteRecords(ctx, user, decisionfeed.TopicDecisions); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("DeleteRecords by %s: %v, want TOPIC_AUTHORIZATION_FAILED", feedtest.UserEngine, err)
	}
	if err := deleteTopic(ctx, user, decisionfeed.TopicDecisions); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("DeleteTopics by %s: %v, want TOPIC_AUTHORIZATION_FAILED", feedtest.UserEngine, err)
	}
	// The decisions are all still there.
	live := liveKeys(t, ctx, s, feedtest.UserBouncer)
	if live != 1 {
		t.Fatalf("live keys after refused deletes: %d, want 1", live)
	}
	admin := kgoClient(t, s, feedtest.UserAdmin)
	if err := deleteRecords(ctx, admin, decisionfeed.TopicThreatIntel); err != nil {
		t.Fatalf("DeleteRecords by the admin: %v", err)
	}
	if err := deleteTopic(ctx, admin, decisionfeed.TopicThreatIntel); err != nil {
		t.Fatalf("DeleteTopics by the admin: %v", err)
	}
}

func liveKeys(t *testing.T, ctx context.Context, s *feedtest.SecureBroker, user string) int {
	t.Helper()
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers: []string{s.Addr()}, Security: s.Security(t, user, kafkaconn.MechanismSCRAMSHA256), Group: "-", DLQTopic: "-",
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	n := -1
	h := handlerFunc(func(live []decisionfeed.Decision) { n = len(live); stop() })
	if err := sub.Run(runCtx, h); err != nil {
		t.Fatal(err)
	}
	return n
}

type handlerFunc func([]decisionfeed.Decision)

func (f handlerFunc) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	f(live)
	return nil
}

func (handlerFunc) Changes(context.Context, []decisionfeed.Decision) error { return nil }

func TestSecureBrokerRefusesStrangers(t *testing.T) {
	s := feedtest.StartSecureBroker(t, broker.Config{})
	ctx := context.Background()
	for name, c := range map[string]kafkaconn.Config{
		"no credentials": {TLSCA: s.CAFile},
		"wrong password": {TLSCA: s.CAFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: feedtest.UserEngine, SASLPassword: "guess"},
		"plaintext":      {},
		"unknown user":   {TLSCA: s.CAFile, SASLMechanism: "PLAIN", SASLUsername: "mallory", SASLPassword: "x"},
		"other CA":       {TLSCA: feedtest.StartSecureBroker(t, broker.Config{}).CAFile, SASLMechanism: "PLAIN", SASLUsername: feedtest.UserEngine, SASLPasswordFile: s.PasswordFiles[feedtest.UserEngine]},
	} {
		sec, err := kafkaconn.Build(c)
		if err != nil {
			t.Fatal(err)
		}
		err = sec.Probe(ctx, []string{s.Addr()})
		if err == nil || errors.Is(err, kafkaconn.ErrUnreachable) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want a one-line settings error", name, err)
		}
		for _, pw := range s.Passwords {
			if strings.Contains(err.Error(), pw) {
				t.Errorf("%s: error holds a password: %v", name, err)
			}
		}
	}
}

func TestListenBeyondLoopbackNeedsTLSAndSASL(t *testing.T) {
	_, err := broker.Start(broker.Config{Listen: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "needs TLS and SASL") {
		t.Fatalf("plaintext on 0.0.0.0: %v", err)
	}
	b, err := broker.Start(broker.Config{Listen: "0.0.0.0:0", AllowInsecureListen: true})
	if err != nil {
		t.Fatalf("with AllowInsecureListen: %v", err)
	}
	b.Close()
	s := feedtest.StartSecureBroker(t, broker.Config{Listen: "0.0.0.0:0"})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("advertised %s", s.Addr())
	}
	if _, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Users: []broker.User{{Name: "engine", Password: "x"}}}); err == nil || !strings.Contains(err.Error(), `no admin user "admin"`) {
		t.Fatalf("users without the admin: %v", err)
	}
	if _, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", TLSCert: s.CertFile}); err == nil || !strings.Contains(err.Error(), "both the certificate and the key") {
		t.Fatalf("certificate without key: %v", err)
	}
	if _, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", TLSCert: s.CertFile, TLSKey: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Fatal("missing key accepted")
	}
}

// A restart on the same data directory takes the users file as it is now:
// a changed password is the only one accepted, and an ordinary user still
// has its rights (kfake itself reloads its saved users and ACLs).
func TestSecureBrokerRestartTakesNewUsers(t *testing.T) {
	dir := t.TempDir()
	s := feedtest.StartSecureBroker(t, broker.Config{DataDir: dir, Topics: broker.DefaultTopics()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := s.Security(t, feedtest.UserEngine, kafkaconn.MechanismSCRAMSHA256)
	if err := old.Probe(ctx, []string{s.Addr()}); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Close()
	users, err := broker.LoadUsers(s.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	for i := range users {
		if users[i].Name == feedtest.UserEngine {
			users[i].Password = "rotated-password"
		}
	}
	pair, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil || pair.Leaf == nil {
		t.Fatal(err)
	}
	b, err := broker.Start(broker.Config{Listen: addr, DataDir: dir, TLSCert: s.CertFile, TLSKey: s.KeyFile, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := old.Probe(ctx, []string{addr}); err == nil || !strings.Contains(err.Error(), "sasl_username") {
		t.Fatalf("old password after rotation: %v", err)
	}
	sec, err := kafkaconn.Build(kafkaconn.Config{TLSCA: s.CAFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: feedtest.UserEngine, SASLPassword: "rotated-password"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: []string{addr}, Security: sec, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer feedtest.Close(t, pub)
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.8/32"), time.Hour, "test", time.Now())
	if err := pub.Publish(ctx, d); err != nil {
		t.Fatalf("publish with the new password after restart: %v", err)
	}
}
