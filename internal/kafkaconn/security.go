package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// maxPasswordBytes bounds a password file; a larger file is a mistake.
const maxPasswordBytes = 4096

// Security is a built configuration: the TLS settings and the SASL
// mechanism every Kafka client of a program connects with. A nil
// *Security is plaintext without authentication.
type Security struct {
	cfg  Config
	tls  *tls.Config
	sasl sasl.Mechanism
}

// Build reads the files the configuration names and returns what the
// clients connect with. Every problem is one line naming the setting: a
// missing or unreadable file, a CA file without certificates, an expired
// or not yet valid certificate, a key that does not match its
// certificate, an unknown mechanism, an empty password. The error never
// contains the password.
func Build(c Config) (*Security, error) {
	return build(c, time.Now())
}

func build(c Config, now time.Time) (*Security, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &Security{cfg: c}
	if c.TLSEnabled() {
		tc, err := tlsConfig(&c, now)
		if err != nil {
			return nil, err
		}
		s.tls = tc
	}
	if m := c.mechanism(); m != "" {
		pw := string(c.SASLPassword)
		if pw == "" {
			b, err := readBounded(c.SASLPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("kafka sasl_password_file (--kafka-sasl-password-file) %s: %w", c.SASLPasswordFile, err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
			if pw == "" {
				return nil, fmt.Errorf("kafka sasl_password_file (--kafka-sasl-password-file) %s: empty", c.SASLPasswordFile)
			}
		}
		var err error
		switch m {
		case MechanismPlain:
			s.sasl = plain.Mechanism{Username: c.SASLUsername, Password: pw}
		case MechanismSCRAMSHA256:
			s.sasl, err = scram.Mechanism(scram.SHA256, c.SASLUsername, pw)
		case MechanismSCRAMSHA512:
			s.sasl, err = scram.Mechanism(scram.SHA512, c.SASLUsername, pw)
		}
		if err != nil {
			// scram's errors are about the user name's encoding (SASLprep),
			// never echo the password; still, say only what failed.
			return nil, errors.New("kafka sasl_username (--kafka-sasl-username): not a valid SCRAM user name or password (SASLprep)")
		}
	}
	return s, nil
}

func readBounded(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	if len(b) > maxPasswordBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxPasswordBytes)
	}
	return b, nil
}

// tlsConfig loads the CA and the client pair of c.
func tlsConfig(c *Config, now time.Time) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the operator's explicit, logged choice
	if c.TLSCA != "" {
		pemBytes, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("kafka tls_ca (--kafka-tls-ca) %s: %w", c.TLSCA, unwrapPath(err))
		}
		certs, err := parseCerts(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("kafka tls_ca (--kafka-tls-ca) %s: %w", c.TLSCA, err)
		}
		pool := x509.NewCertPool()
		valid := 0
		for _, cert := range certs {
			if now.Before(cert.NotAfter) && !now.Before(cert.NotBefore) {
				valid++
			}
			pool.AddCert(cert)
		}
		if valid == 0 {
			return nil, fmt.Errorf("kafka tls_ca (--kafka-tls-ca) %s: no certificate valid now (first expires %s)", c.TLSCA, certs[0].NotAfter.UTC().Format(time.RFC3339))
		}
		tc.RootCAs = pool
	}
	if c.TLSCert != "" {
		certPEM, err := os.ReadFile(c.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("kafka tls_cert (--kafka-tls-cert) %s: %w", c.TLSCert, unwrapPath(err))
		}
		keyPEM, err := os.ReadFile(c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("kafka tls_key (--kafka-tls-key) %s: %w", c.TLSKey, unwrapPath(err))
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("kafka tls_cert/tls_key (--kafka-tls-cert, --kafka-tls-key) %s, %s: %s", c.TLSCert, c.TLSKey, oneLine(strings.TrimPrefix(err.Error(), "tls: ")))
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("kafka tls_cert (--kafka-tls-cert) %s: %w", c.TLSCert, err)
		}
		if now.After(leaf.NotAfter) {
			return nil, fmt.Errorf("kafka tls_cert (--kafka-tls-cert) %s: certificate expired at %s", c.TLSCert, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if now.Before(leaf.NotBefore) {
			return nil, fmt.Errorf("kafka tls_cert (--kafka-tls-cert) %s: certificate not valid before %s", c.TLSCert, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		pair.Leaf = leaf
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// parseCerts returns every certificate of a PEM file.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// unwrapPath drops the path from an *os.PathError: the callers' messages
// name the file already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Config returns the configuration s was built from.
func (s *Security) Config() Config {
	if s == nil {
		return Config{}
	}
	return s.cfg
}

// TLS returns the TLS configuration, nil for plaintext.
func (s *Security) TLS() *tls.Config {
	if s == nil || s.tls == nil {
		return nil
	}
	return s.tls.Clone()
}

// SASL returns the SASL mechanism, nil for none.
func (s *Security) SASL() sasl.Mechanism {
	if s == nil {
		return nil
	}
	return s.sasl
}

// Transport sets t's TLS and SASL from s and returns t. Every kafka-go
// Writer and Client of Portcullis gets its transport through here.
func (s *Security) Transport(t *kafka.Transport) *kafka.Transport {
	t.TLS = s.TLS()
	t.SASL = s.SASL()
	return t
}

// Dialer sets d's TLS and SASL from s and returns d. Every kafka-go Reader
// and Conn of Portcullis gets its dialer through here.
func (s *Security) Dialer(d *kafka.Dialer) *kafka.Dialer {
	d.TLS = s.TLS()
	d.SASLMechanism = s.SASL()
	return d
}

// String describes s without the password.
func (s *Security) String() string {
	if s == nil {
		return Config{}.String()
	}
	return s.cfg.String()
}

// GoString is String.
func (s *Security) GoString() string { return s.String() }

// LogValue implements slog.LogValuer without the password.
func (s *Security) LogValue() slog.Value {
	if s == nil {
		return Config{}.LogValue()
	}
	return s.cfg.LogValue()
}

// Warnings returns what an operator must be told at start: today only that
// certificate verification is off.
func (s *Security) Warnings() []string {
	if s == nil || !s.cfg.InsecureSkipVerify {
		return nil
	}
	return []string{"kafka insecure_skip_verify is on: broker certificates are NOT verified; anyone on the path can read and forge decisions (labs only)"}
}
