package acquire

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

const nginxLine = `203.0.113.7 - - [25/Nov/2026:10:00:05 +0000] "GET /wp-login.php HTTP/1.1" 200 512 "-" "curl/8.0"`

func TestDecodeMessage(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 5, 123000000, time.UTC)
	for _, tc := range []struct {
		name  string
		value string
		key   string
		want  Line
	}{
		{"raw", nginxLine + "\n", "", Line{Text: nginxLine, Type: "nginx"}},
		{"raw keyed by host", nginxLine, "web-1", Line{Text: nginxLine, Type: "nginx", Host: "web-1"}},
		{"raw crlf", "x y\r\n", "", Line{Text: "x y", Type: "nginx"}},
		{"filebeat",
			`{"@timestamp":"2026-11-25T10:00:05.123Z","message":"` + strings.ReplaceAll(nginxLine, `"`, `\"`) + `","fields":{"log_type":"nginx"},"host":{"name":"web-2","os":{"family":"debian"}},"log":{"file":{"path":"/var/log/nginx/access.log"}},"agent":{"type":"filebeat"}}`,
			"", Line{Text: nginxLine, Type: "nginx", Host: "web-2", Time: at}},
		{"filebeat sshd type wins over label",
			`{"@timestamp":"2026-11-25T10:00:05.123Z","message":"Nov 25 10:00:05 bastion sshd[1]: Failed password for root from 198.51.100.9 port 22 ssh2","fields":{"log_type":"syslog"},"host":{"name":"bastion"}}`,
			"", Line{Text: "Nov 25 10:00:05 bastion sshd[1]: Failed password for root from 198.51.100.9 port 22 ssh2", Type: "syslog", Host: "bastion", Time: at}},
		{"filebeat fields under root, host string",
			`{"@timestamp":"2026-11-25T10:00:05.123Z","message":"m","log_type":"sshd","host":"h1"}`,
			"", Line{Text: "m", Type: "sshd", Host: "h1", Time: at}},
		{"old filebeat source is a path",
			`{"@timestamp":"2026-11-25T10:00:05.123Z","message":"m","source":"/var/log/auth.log"}`,
			"k", Line{Text: "m", Type: "nginx", Host: "k", Time: at}},
		{"seed producer",
			`{"message": "` + strings.ReplaceAll(nginxLine, `"`, `\"`) + `", "source": "web-3", "timestamp": 1795600805.123}`,
			"", Line{Text: nginxLine, Type: "nginx", Host: "web-3", Time: time.Date(2026, 11, 25, 10, 0, 5, 123000000, time.UTC)}},
		{"seed producer integer time",
			`{"message":"m","source":"web-3","timestamp":1795600805}`,
			"", Line{Text: "m", Type: "nginx", Host: "web-3", Time: time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC)}},
		{"fluent bit / vector RFC 3339 time",
			`{"message":"m","source":"web-4","timestamp":"2026-11-25T11:00:05.5+01:00"}`,
			"", Line{Text: "m", Type: "nginx", Host: "web-4", Time: time.Date(2026, 11, 25, 10, 0, 5, 500000000, time.UTC)}},
		{"empty", "\n", "", Line{Type: "nginx"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(tc.value), []byte(tc.key), "nginx", 4096)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{`{"message":`, "json: unexpected end of JSON input"},
		{`{"msg":"x"}`, "json event without a message field"},
		{`{"message":3}`, "json: json: cannot unmarshal number into Go struct field jsonEvent.message of type string"},
		{`{"message":"x","@timestamp":"yesterday"}`, `@timestamp: "yesterday" is not an RFC 3339 time`},
		{`{"message":"x","fields":{"log_type":"mysql"}}`, `log_type: unknown type "mysql"`},
		{`{"message":"x","fields":[1]}`, "fields: not an object"},
		{`{"message":"x","host":{"name":"a b"}}`, `host: "a b" is not a host name`},
		{`{"message":"x","host":7}`, "host: neither a string nor an object with name"},
		{`{"message":"x","source":"h","timestamp":"now"}`, `timestamp: "now" is neither seconds since the epoch nor an RFC 3339 time`},
		{`{"message":"x","source":"h","timestamp":-1}`, "timestamp: -1 is neither seconds since the epoch nor an RFC 3339 time"},
		{`{"message":"x","source":5}`, "source: not a string"},
		{strings.Repeat("x", 65), "line too long: 65 bytes, limit 64"},
		{`{"message":"` + strings.Repeat("x", 65) + `"}`, "line too long: 65 bytes, limit 64"},
	} {
		_, err := DecodeMessage([]byte(tc.value), nil, "nginx", 64)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.value, err, tc.want)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(nginxLine), []byte("web-1"))
	f.Add([]byte(`{"@timestamp":"2026-11-25T10:00:05.123Z","message":"m","fields":{"log_type":"nginx"},"host":{"name":"w"}}`), []byte(nil))
	f.Add([]byte(`{"message":"m","source":"s","timestamp":1795600805.5}`), []byte("k"))
	f.Add([]byte(`{"message":"m","source":"s","timestamp":"2026-11-25T10:00:05Z"}`), []byte("k"))
	f.Add([]byte(`{"message":"m","log_type":"sshd","host":"h"}`), []byte{})
	f.Add([]byte("  {"), []byte{0xff})
	f.Fuzz(func(t *testing.T, value, key []byte) {
		l, err := DecodeMessage(value, key, "nginx", 1024)
		if err != nil {
			if l != (Line{}) {
				t.Fatalf("error %v with a line %+v", err, l)
			}
			return
		}
		if len(l.Text) > 1024 {
			t.Fatalf("text of %d bytes past the limit", len(l.Text))
		}
		if !contains(KnownTypes, l.Type) {
			t.Fatalf("type %q", l.Type)
		}
		if l.Host != "" {
			if _, err := hostName(l.Host); err != nil {
				t.Fatalf("host %q: %v", l.Host, err)
			}
		}
	})
}

func TestKafkaSource(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond}
	defer func() { _ = w.Close() }()
	msgs := []kafka.Message{
		{Value: []byte("raw line one")},
		{Key: []byte("web-9"), Value: []byte("raw line two\n")},
		{Value: []byte(`{"@timestamp":"2026-11-25T10:00:05Z","message":"filebeat line","fields":{"log_type":"nginx"},"host":{"name":"web-1"}}`)},
		{Value: []byte(`{"message":"seed line","source":"web-2","timestamp":1795600805.25}`)},
		{Value: []byte(`{"message":"broken`)},
		{Value: []byte(`{"message":"x","fields":{"log_type":"mysql"}}`)},
		{Value: []byte(strings.Repeat("z", 200))},
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKafkaSource(SourceConfig{
		Kind: KindKafka, Topic: topic, Brokers: brokers, GroupID: "g-" + topic, FromBeginning: true,
		MaxLineBytes: 128, Labels: map[string]string{"type": "nginx"},
	}, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	c, stop := runSource(t, s, 16)
	var got []Line
	for len(got) < 4 {
		select {
		case l := <-c:
			got = append(got, l)
		case <-ctx.Done():
			t.Fatalf("timeout after %d lines: %+v", len(got), got)
		}
	}
	// The bad messages sit in other partitions: wait for them to be counted.
	name := "kafka:" + topic
	waitCounter(t, m.Skipped.WithLabelValues(name, SkipBadMessage), 2)
	waitCounter(t, m.Skipped.WithLabelValues(name, SkipTooLong), 1)
	stop()
	slices.SortFunc(got, func(a, b Line) int { return strings.Compare(a.Text, b.Text) })
	want := []Line{
		{Text: "filebeat line", Type: "nginx", Host: "web-1", Time: time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC)},
		{Text: "raw line one", Type: "nginx"},
		{Text: "raw line two", Type: "nginx", Host: "web-9"},
		{Text: "seed line", Type: "nginx", Host: "web-2", Time: time.Date(2026, 11, 25, 10, 0, 5, 250000000, time.UTC)},
	}
	for i := range got {
		if !strings.HasPrefix(got[i].Source, "kafka:"+topic+"/") {
			t.Errorf("source %q", got[i].Source)
		}
		got[i].Source = ""
		if got[i] != want[i] {
			t.Errorf("line %d\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if n := testutil.ToFloat64(m.Lines.WithLabelValues(name, "nginx")); n != 4 {
		t.Errorf("lines = %v, want 4", n)
	}
}

// waitCounter waits for a counter that the source bumps after handing on
// the lines the test has seen.
func waitCounter(t *testing.T, c prometheus.Collector, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := testutil.ToFloat64(c)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter = %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKafkaDialerOptions(t *testing.T) {
	dir := t.TempDir()
	caPEM, _, certPEM, keyPEM := testPKI(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, cert, key := write("ca.pem", caPEM), write("c.pem", certPEM), write("c.key", keyPEM)
	d, err := NewKafkaDialer(&TLSConfig{CACert: ca, ClientCert: cert, ClientKey: key}, &SASLConfig{Mechanism: SASLSCRAMSHA256, Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if d.TLS == nil || d.TLS.RootCAs == nil || len(d.TLS.Certificates) != 1 || d.TLS.InsecureSkipVerify {
		t.Errorf("tls config %+v", d.TLS)
	}
	if d.SASLMechanism == nil || d.SASLMechanism.Name() != "SCRAM-SHA-256" {
		t.Errorf("sasl %v", d.SASLMechanism)
	}
	for mech, name := range map[string]string{SASLPlain: "PLAIN", SASLSCRAMSHA512: "SCRAM-SHA-512"} {
		d, err := NewKafkaDialer(nil, &SASLConfig{Mechanism: mech, Username: "u", Password: "p"})
		if err != nil || d.SASLMechanism.Name() != name || d.TLS != nil {
			t.Errorf("%s: %v %v", mech, d, err)
		}
	}
	if _, err := NewKafkaDialer(&TLSConfig{CACert: key}, nil); err == nil || !strings.Contains(err.Error(), "no PEM certificate found") {
		t.Errorf("key as CA: %v", err)
	}
	if _, err := NewKafkaDialer(&TLSConfig{CACert: filepath.Join(dir, "none")}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing CA: %v", err)
	}
}

// testPKI makes a CA and a certificate it signs for 127.0.0.1.
func testPKI(t *testing.T) (caPEM []byte, caCert *x509.Certificate, leafPEM, leafKeyPEM []byte) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if caCert, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	leafKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leafPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	leafKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(leafKey)})
	return caPEM, caCert, leafPEM, leafKeyPEM
}

// The source reaches a broker that wants TLS and SASL, with each mechanism.
func TestKafkaSourceTLSSASL(t *testing.T) {
	caPEM, _, leafPEM, leafKey := testPKI(t)
	serverCert, err := tls.X509KeyPair(leafPEM, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(
		kfake.Ports(0),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "pass256"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "pass512"),
		kfake.SeedTopics(1, "logs"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	tlsCfg := &TLSConfig{CACert: caFile}
	for i, sc := range []*SASLConfig{
		{Mechanism: SASLPlain, Username: "plain-user", Password: "plain-pass"},
		{Mechanism: SASLSCRAMSHA256, Username: "scram256", Password: "pass256"},
		{Mechanism: SASLSCRAMSHA512, Username: "scram512", Password: "pass512"},
	} {
		t.Run(sc.Mechanism, func(t *testing.T) {
			d, err := NewKafkaDialer(tlsCfg, sc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "logs", BatchTimeout: time.Millisecond,
				Transport: &kafka.Transport{TLS: d.TLS, SASL: d.SASLMechanism}}
			text := fmt.Sprintf("line %d over %s", i, sc.Mechanism)
			if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(text)}); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := NewKafkaSource(SourceConfig{Kind: KindKafka, Topic: "logs", Brokers: brokers, GroupID: "g-" + sc.Mechanism,
				FromBeginning: true, TLS: tlsCfg, SASL: sc, Labels: map[string]string{"type": "nginx"}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, stop := runSource(t, s, 16)
			var want []string
			for j := 0; j <= i; j++ {
				want = append(want, fmt.Sprintf("line %d over %s", j, []string{SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512}[j]))
			}
			c.expect(t, want...)
			stop()
		})
	}
}
