package kafkaconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/testpki"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

const secret = "s3cr3t-Pa55-word"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolvePrecedence(t *testing.T) {
	file := Config{TLSCA: "/file/ca.pem", SASLMechanism: "plain", SASLUsername: "file-user", SASLPasswordFile: "/file/pw"}
	parse := func(args ...string) *Flags {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		var f Flags
		f.Register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &f
	}
	// File only.
	got, err := parse().Resolve(file, env(nil))
	if err != nil || got.TLSCA != "/file/ca.pem" || got.SASLUsername != "file-user" || got.SASLPassword != "" {
		t.Fatalf("file only: %+v %v", got, err)
	}
	// Environment over file.
	e := env(map[string]string{"PORTCULLIS_KAFKA_SASL_USERNAME": "env-user", "PORTCULLIS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", EnvPassword: secret})
	got, err = parse().Resolve(file, e)
	if err != nil || got.SASLUsername != "env-user" || got.SASLMechanism != "SCRAM-SHA-512" || string(got.SASLPassword) != secret || got.TLSCA != "/file/ca.pem" {
		t.Fatalf("env over file: %v %v", got, err)
	}
	// Flags over environment; an explicit password file beats the env password.
	got, err = parse("--kafka-sasl-username", "flag-user", "--kafka-sasl-password-file", "/flag/pw", "--kafka-tls-ca", "/flag/ca.pem").Resolve(file, e)
	if err != nil || got.SASLUsername != "flag-user" || got.SASLPasswordFile != "/flag/pw" || got.SASLPassword != "" || got.TLSCA != "/flag/ca.pem" {
		t.Fatalf("flag over env: %v %v", got, err)
	}
	// A false boolean flag overrides a true environment value.
	got, err = parse("--kafka-tls=false").Resolve(Config{}, env(map[string]string{"PORTCULLIS_KAFKA_TLS": "true"}))
	if err != nil || got.TLS {
		t.Fatalf("--kafka-tls=false over env: %v %v", got, err)
	}
	if _, err := parse().Resolve(Config{}, env(map[string]string{"PORTCULLIS_KAFKA_TLS": "maybe"})); err == nil || !strings.Contains(err.Error(), "PORTCULLIS_KAFKA_TLS") {
		t.Fatalf("bad env bool: %v", err)
	}
	// A password from the environment never reaches --help.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var help bytes.Buffer
	fs.SetOutput(&help)
	var f Flags
	f.Register(fs)
	t.Setenv(EnvPassword, secret)
	t.Setenv("PORTCULLIS_KAFKA_SASL_PASSWORD_FILE", "/env/"+secret)
	fs.PrintDefaults()
	if strings.Contains(help.String(), secret) || !strings.Contains(help.String(), "-kafka-sasl-password-file") {
		t.Fatalf("help:\n%s", help.String())
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{SASLMechanism: "GSSAPI", SASLUsername: "u", SASLPassword: secret}, "sasl_mechanism (--kafka-sasl-mechanism): unknown mechanism \"GSSAPI\""},
		{Config{SASLMechanism: "PLAIN\nx", SASLUsername: "u", SASLPassword: secret}, "unknown mechanism \"PLAIN…\""},
		{Config{SASLMechanism: "PLAIN", SASLPassword: secret}, "sasl_username (--kafka-sasl-username): empty"},
		{Config{SASLMechanism: "PLAIN", SASLUsername: "u"}, "no password given"},
		{Config{SASLUsername: "u"}, "sasl_mechanism (--kafka-sasl-mechanism): empty"},
		{Config{TLSCert: "c.pem"}, "give both or neither"},
		{Config{TLSCA: "ca.pem", InsecureSkipVerify: true}, "insecure_skip_verify"},
	} {
		err := tc.c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), secret) {
			t.Errorf("%v: %v, want %q", tc.c, err, tc.want)
		}
	}
	for _, m := range []string{"plain", "SCRAM-SHA-256", "scram-sha-512"} {
		c := Config{SASLMechanism: m, SASLUsername: "u", SASLPassword: secret}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}

func TestBuild(t *testing.T) {
	ca := testpki.NewCA(t, "test")
	client := ca.Client(t, "bouncer")
	expired := ca.Expired(t, "old")
	other := testpki.NewCA(t, "other").Client(t, "x")
	pw := writeFile(t, "pw", secret+"\n")

	s, err := Build(Config{TLSCA: ca.CertFile, TLSCert: client.CertFile, TLSKey: client.KeyFile, SASLMechanism: "scram-sha-512", SASLUsername: "u", SASLPasswordFile: pw})
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Transport(&kafka.Transport{})
	if tr.TLS == nil || tr.TLS.RootCAs == nil || len(tr.TLS.Certificates) != 1 || tr.SASL == nil || tr.SASL.Name() != MechanismSCRAMSHA512 {
		t.Fatalf("transport: %+v", tr)
	}
	d := s.Dialer(&kafka.Dialer{})
	if d.TLS == nil || d.SASLMechanism == nil || d.SASLMechanism.Name() != MechanismSCRAMSHA512 {
		t.Fatalf("dialer: %+v", d)
	}
	var nilSec *Security
	if tr := nilSec.Transport(&kafka.Transport{}); tr.TLS != nil || tr.SASL != nil {
		t.Fatal("nil security is not plaintext")
	}
	s, err = Build(Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: secret})
	if err != nil || s.TLS() != nil || s.SASL().Name() != MechanismPlain {
		t.Fatalf("plain without tls: %v %v", s, err)
	}
	if s, err := Build(Config{InsecureSkipVerify: true}); err != nil || len(s.Warnings()) != 1 || !s.TLS().InsecureSkipVerify {
		t.Fatalf("insecure: %v %v", s, err)
	}

	missing := filepath.Join(t.TempDir(), "none.pem")
	garbage := writeFile(t, "garbage.pem", "not a certificate\n")
	empty := writeFile(t, "empty", "\n")
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"missing CA", Config{TLSCA: missing}, "tls_ca (--kafka-tls-ca) " + missing + ": no such file"},
		{"CA without PEM", Config{TLSCA: garbage}, "tls_ca (--kafka-tls-ca) " + garbage + ": no PEM certificate found"},
		{"missing cert", Config{TLSCert: missing, TLSKey: client.KeyFile}, "tls_cert (--kafka-tls-cert) " + missing + ": no such file"},
		{"missing key", Config{TLSCert: client.CertFile, TLSKey: missing}, "tls_key (--kafka-tls-key) " + missing + ": no such file"},
		{"mismatched key", Config{TLSCert: client.CertFile, TLSKey: other.KeyFile}, "private key does not match public key"},
		{"expired cert", Config{TLSCert: expired.CertFile, TLSKey: expired.KeyFile}, "tls_cert (--kafka-tls-cert) " + expired.CertFile + ": certificate expired at"},
		{"missing password file", Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPasswordFile: missing}, "sasl_password_file (--kafka-sasl-password-file) " + missing + ": no such file"},
		{"empty password file", Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPasswordFile: empty}, ": empty"},
	} {
		_, err := Build(tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// A CA that expired is refused too.
	if _, err := build(Config{TLSCA: ca.CertFile}, time.Now().Add(48*time.Hour)); err == nil || !strings.Contains(err.Error(), "no certificate valid now") {
		t.Errorf("expired CA: %v", err)
	}
}

func TestRedaction(t *testing.T) {
	c := Config{TLS: true, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: secret}
	s, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, v := range []any{c, &c, c.SASLPassword, s} {
		fmt.Fprintf(&out, "%v %+v %#v %s %q %x\n", v, v, v, v, v, v)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		l := slog.New(h)
		l.Info("start", "kafka", c, "security", s, "password", c.SASLPassword, "ptr", &c)
	}
	if strings.Contains(out.String(), secret) {
		t.Fatalf("password printed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), Redacted) || !strings.Contains(out.String(), "sasl_username=u") {
		t.Fatalf("expected the redaction marker and the user name:\n%s", out.String())
	}
}

// secureCluster starts kfake with a TLS listener (server certificate from
// ca) and SASL users for every mechanism.
func secureCluster(t *testing.T, ca *testpki.CA, withTLS, withSASL bool) string {
	t.Helper()
	var opts []kfake.Opt
	opts = append(opts, kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if withTLS {
		p := ca.Server(t)
		cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	if withSASL {
		opts = append(opts, kfake.EnableSASL(),
			kfake.Superuser(MechanismPlain, "alice", secret),
			kfake.Superuser(MechanismSCRAMSHA256, "alice", secret),
			kfake.Superuser(MechanismSCRAMSHA512, "alice", secret))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func TestProbe(t *testing.T) {
	ca := testpki.NewCA(t, "test")
	otherCA := testpki.NewCA(t, "other")
	secure := secureCluster(t, ca, true, true)
	tlsOnly := secureCluster(t, ca, true, false)
	plain := secureCluster(t, ca, false, false)
	wrong := writeFile(t, "wrong", "not-the-password")
	good := writeFile(t, "good", secret)

	ctx := context.Background()
	for _, m := range []string{MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512} {
		s, err := Build(Config{TLSCA: ca.CertFile, SASLMechanism: m, SASLUsername: "alice", SASLPasswordFile: good})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Probe(ctx, []string{secure}); err != nil {
			t.Errorf("%s with the right password: %v", m, err)
		}
	}
	for _, tc := range []struct {
		name   string
		c      Config
		broker string
		want   string
	}{
		{"wrong password", Config{TLSCA: ca.CertFile, SASLMechanism: "SCRAM-SHA-512", SASLUsername: "alice", SASLPasswordFile: wrong}, secure, "sasl_username/sasl_password_file"},
		{"wrong password plain", Config{TLSCA: ca.CertFile, SASLMechanism: "PLAIN", SASLUsername: "alice", SASLPassword: "nope"}, secure, "sasl_username/sasl_password_file"},
		{"unknown user", Config{TLSCA: ca.CertFile, SASLMechanism: "SCRAM-SHA-256", SASLUsername: "mallory", SASLPassword: secret}, secure, "sasl_username/sasl_password_file"},
		{"no SASL", Config{TLSCA: ca.CertFile}, secure, "requires SASL"},
		{"no TLS no SASL", Config{}, secure, "requires TLS or SASL"},
		{"CA mismatch", Config{TLSCA: otherCA.CertFile, SASLMechanism: "PLAIN", SASLUsername: "alice", SASLPassword: secret}, secure, "tls_ca (--kafka-tls-ca) broker " + secure + ": its certificate is not signed by the CA in " + otherCA.CertFile},
		{"system pool", Config{TLS: true}, tlsOnly, "not signed by a CA of the system pool"},
		{"TLS to plaintext", Config{TLSCA: ca.CertFile}, plain, "kafka tls (--kafka-tls) broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Build(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = s.Probe(ctx, []string{tc.broker})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), secret) || errors.Is(err, ErrUnreachable) {
				t.Fatalf("not a one-line, secret-free settings error: %v", err)
			}
			if d := time.Since(start); d > ProbeTimeout+time.Second {
				t.Fatalf("took %s: reported by timeout, not by the handshake", d)
			}
		})
	}
	// TLS without SASL to the TLS-only listener and plaintext to plaintext work.
	if s, _ := Build(Config{TLSCA: ca.CertFile}); s.Probe(ctx, []string{tlsOnly}) != nil {
		t.Error("tls only")
	}
	var none *Security
	if err := none.Probe(ctx, []string{plain}); err != nil {
		t.Errorf("plaintext: %v", err)
	}
	// Nobody listening: unreachable, which daemons retry.
	if err := none.Probe(ctx, []string{"127.0.0.1:1"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("closed port: %v", err)
	}
}
