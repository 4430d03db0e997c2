// Package kafkaconn is the one Kafka security configuration of every
// Portcullis program: the "kafka:" section of its YAML file, the --kafka-*
// flags and PORTCULLIS_KAFKA_* environment variables, and what they build —
// the TLS configuration and kafka-go SASL mechanism every Kafka client
// (transport, dialer) connects with. Secrets are read from files or the
// environment and never appear in logs, errors or --help.
package kafkaconn

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// SASL mechanisms, as Kafka names them.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Config is the "kafka:" section of every program's configuration file;
// its keys are the --kafka-* flags' names without the prefix, dashes as
// underscores. The zero value is plaintext without authentication.
type Config struct {
	// TLS turns TLS on. Setting TLSCA, TLSCert or InsecureSkipVerify
	// implies it.
	TLS bool `yaml:"tls"`
	// TLSCA is a PEM file of the CAs that sign the brokers' certificates;
	// empty means the system's pool.
	TLSCA string `yaml:"tls_ca"`
	// TLSCert and TLSKey are the PEM client certificate and key for
	// mutual TLS; both or neither.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// InsecureSkipVerify accepts any broker certificate. For labs only:
	// it is logged as a warning at every start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL.
	SASLMechanism string `yaml:"sasl_mechanism"`
	// SASLUsername is the SASL user.
	SASLUsername string `yaml:"sasl_username"`
	// SASLPasswordFile is a file holding the SASL password (one line).
	SASLPasswordFile string `yaml:"sasl_password_file"`
	// SASLPassword is the password itself. It is never read from YAML,
	// only from PORTCULLIS_KAFKA_SASL_PASSWORD, and wins over
	// SASLPasswordFile unless --kafka-sasl-password-file is given.
	SASLPassword Secret `yaml:"-"`
}

// TLSEnabled reports whether the configuration asks for TLS.
func (c *Config) TLSEnabled() bool {
	return c.TLS || c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" || c.InsecureSkipVerify
}

// Validate checks the settings without reading any file. Errors are one
// line naming the setting.
func (c *Config) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("kafka tls_cert and tls_key (--kafka-tls-cert, --kafka-tls-key): give both or neither")
	}
	if c.InsecureSkipVerify && c.TLSCA != "" {
		return errors.New("kafka insecure_skip_verify: set together with tls_ca (--kafka-tls-ca), which it would ignore")
	}
	switch c.mechanism() {
	case "":
		if c.SASLUsername != "" || c.SASLPasswordFile != "" || c.SASLPassword != "" {
			return errors.New("kafka sasl_mechanism (--kafka-sasl-mechanism): empty, but a SASL username or password is set")
		}
		return nil
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
	default:
		return fmt.Errorf("kafka sasl_mechanism (--kafka-sasl-mechanism): unknown mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", oneLine(c.SASLMechanism))
	}
	if c.SASLUsername == "" {
		return errors.New("kafka sasl_username (--kafka-sasl-username): empty with a SASL mechanism set")
	}
	if c.SASLPasswordFile == "" && c.SASLPassword == "" {
		return errors.New("kafka sasl_password_file (--kafka-sasl-password-file, or env PORTCULLIS_KAFKA_SASL_PASSWORD): no password given")
	}
	return nil
}

// mechanism returns the SASL mechanism in Kafka's upper-case spelling.
func (c *Config) mechanism() string { return strings.ToUpper(strings.TrimSpace(c.SASLMechanism)) }

// String describes the configuration without the password.
func (c Config) String() string {
	var b strings.Builder
	if c.TLSEnabled() {
		b.WriteString("tls")
		if c.TLSCert != "" {
			b.WriteString(" (client certificate)")
		}
		if c.InsecureSkipVerify {
			b.WriteString(" (insecure_skip_verify)")
		}
	} else {
		b.WriteString("plaintext")
	}
	if m := c.mechanism(); m != "" {
		fmt.Fprintf(&b, ", sasl %s as %q", m, c.SASLUsername)
	}
	return b.String()
}

// GoString is String, so %#v does not print the password either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the settings without the password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("tls", c.TLSEnabled()),
		slog.String("tls_ca", c.TLSCA),
		slog.String("tls_cert", c.TLSCert),
		slog.Bool("insecure_skip_verify", c.InsecureSkipVerify),
		slog.String("sasl_mechanism", c.mechanism()),
		slog.String("sasl_username", c.SASLUsername),
		slog.Bool("sasl_password_set", c.SASLPassword != "" || c.SASLPasswordFile != ""),
	)
}

// oneLine cuts s at its first line break and bounds its length, so a value
// quoted in an error stays on one line.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i] + "…"
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return s
}

// Redacted is what a Secret prints as.
const Redacted = "[redacted]"

// Secret is a password. Every way of printing or logging it yields
// Redacted; string(s) is the only way to the value.
type Secret string

// String returns Redacted.
func (Secret) String() string { return Redacted }

// GoString returns Redacted.
func (Secret) GoString() string { return Redacted }

// Format prints Redacted for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue returns Redacted.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText returns Redacted, so JSON and YAML encoders do not leak it.
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
