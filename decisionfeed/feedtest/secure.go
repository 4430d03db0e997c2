package feedtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/portcullis-ips/portcullis/internal/testpki"
)

// Users of a SecureBroker: the admin, who alone may delete topics and
// records, and two ordinary users.
const (
	UserAdmin   = "admin"
	UserEngine  = "engine"
	UserBouncer = "bouncer"
)

// SecureBroker is an embedded broker with a TLS listener and SASL users,
// its certificates and passwords generated for the test.
type SecureBroker struct {
	*broker.Broker
	// CAFile signs the broker's certificate.
	CAFile string
	// UsersFile is the broker's --sasl-users file.
	UsersFile string
	// CertFile and KeyFile are the broker's TLS certificate and key.
	CertFile, KeyFile string
	// Passwords and PasswordFiles map each user to its random password and
	// to a file holding it.
	Passwords, PasswordFiles map[string]string
	// CA issues more certificates (client certificates, say).
	CA *testpki.CA
}

// StartSecureBroker starts an embedded broker on a free loopback port
// with TLS and the users UserAdmin, UserEngine and UserBouncer, each with a
// random password, and the topics of cfg (cfg.Listen, TLS and users are
// set here). It is closed when the test ends.
func StartSecureBroker(t testing.TB, cfg broker.Config) *SecureBroker {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "portcullis-test")
	srv := ca.Server(t)
	s := &SecureBroker{CAFile: ca.CertFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile, CA: ca,
		Passwords: map[string]string{}, PasswordFiles: map[string]string{}}
	var users strings.Builder
	users.WriteString("# test users\n")
	for _, u := range []string{UserAdmin, UserEngine, UserBouncer} {
		var b [12]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		pw := "pw-" + u + "-" + hex.EncodeToString(b[:])
		s.Passwords[u] = pw
		s.PasswordFiles[u] = writeFile(t, filepath.Join(dir, u+".password"), pw+"\n")
		users.WriteString(u + ":" + pw + "\n")
	}
	s.UsersFile = writeFile(t, filepath.Join(dir, "users"), users.String())
	us, err := broker.LoadUsers(s.UsersFile)
	if err != nil {
		t.Fatalf("load users: %v", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.TLSCert, cfg.TLSKey, cfg.Users = srv.CertFile, srv.KeyFile, us
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatalf("start secure broker: %v", err)
	}
	t.Cleanup(b.Close)
	s.Broker = b
	return s
}

// Config returns the client settings of user with mechanism.
func (s *SecureBroker) Config(user, mechanism string) kafkaconn.Config {
	return kafkaconn.Config{TLSCA: s.CAFile, SASLMechanism: mechanism, SASLUsername: user, SASLPasswordFile: s.PasswordFiles[user]}
}

// Security builds Config(user, mechanism); a failure fails the test.
func (s *SecureBroker) Security(t testing.TB, user, mechanism string) *kafkaconn.Security {
	t.Helper()
	sec, err := kafkaconn.Build(s.Config(user, mechanism))
	if err != nil {
		t.Fatalf("kafka security of %s: %v", user, err)
	}
	return sec
}

// Flags returns the command-line flags of every program for user with
// mechanism, --brokers included.
func (s *SecureBroker) Flags(user, mechanism string) []string {
	return []string{"--brokers", s.Addr(), "--kafka-tls-ca", s.CAFile, "--kafka-sasl-mechanism", mechanism,
		"--kafka-sasl-username", user, "--kafka-sasl-password-file", s.PasswordFiles[user]}
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
