package kafkaconn

import (
	"flag"
	"fmt"
	"strconv"
)

// EnvPassword is the environment variable holding the SASL password.
const EnvPassword = "PORTCULLIS_KAFKA_SASL_PASSWORD"

// setting is one configuration key with its flag and environment names.
type setting struct {
	flag, env, usage string
	isBool           bool
	field            func(c *Config) any // *string or *bool
}

// settings are the keys every program takes, in --help order.
var settings = []setting{
	{"kafka-tls", "PORTCULLIS_KAFKA_TLS", "connect to the brokers over TLS", true, func(c *Config) any { return &c.TLS }},
	{"kafka-tls-ca", "PORTCULLIS_KAFKA_TLS_CA", "PEM `FILE` of the CAs that sign the brokers' certificates (default: the system's; implies --kafka-tls)", false, func(c *Config) any { return &c.TLSCA }},
	{"kafka-tls-cert", "PORTCULLIS_KAFKA_TLS_CERT", "PEM client certificate `FILE` for mutual TLS (with --kafka-tls-key)", false, func(c *Config) any { return &c.TLSCert }},
	{"kafka-tls-key", "PORTCULLIS_KAFKA_TLS_KEY", "PEM client key `FILE` for mutual TLS", false, func(c *Config) any { return &c.TLSKey }},
	{"kafka-tls-insecure-skip-verify", "PORTCULLIS_KAFKA_TLS_INSECURE_SKIP_VERIFY", "accept any broker certificate (labs only; logged as a warning)", true, func(c *Config) any { return &c.InsecureSkipVerify }},
	{"kafka-sasl-mechanism", "PORTCULLIS_KAFKA_SASL_MECHANISM", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: none)", false, func(c *Config) any { return &c.SASLMechanism }},
	{"kafka-sasl-username", "PORTCULLIS_KAFKA_SASL_USERNAME", "SASL user name", false, func(c *Config) any { return &c.SASLUsername }},
	{"kafka-sasl-password-file", "PORTCULLIS_KAFKA_SASL_PASSWORD_FILE", "`FILE` holding the SASL password (or env " + EnvPassword + ")", false, func(c *Config) any { return &c.SASLPasswordFile }},
}

// Flags holds the --kafka-* flags of one command line.
type Flags struct {
	fs     *flag.FlagSet
	values Config
}

// Register adds the --kafka-* flags to fs. Their defaults are empty, so
// --help shows no value from the environment.
func (f *Flags) Register(fs *flag.FlagSet) {
	f.fs = fs
	for _, s := range settings {
		usage := s.usage + " (env " + s.env + ")"
		switch p := s.field(&f.values).(type) {
		case *bool:
			fs.BoolVar(p, s.flag, false, usage)
		case *string:
			fs.StringVar(p, s.flag, "", usage)
		}
	}
}

// Resolve returns file (the "kafka:" section of the configuration file,
// zero when there is none) overlaid by the environment, then by the
// flags given on the command line: flag > environment > file > default.
// getenv is os.Getenv outside tests. It checks the result (Validate).
func (f *Flags) Resolve(file Config, getenv func(string) string) (Config, error) {
	c := file
	c.SASLPassword = ""
	for _, s := range settings {
		v := getenv(s.env)
		if v == "" {
			continue
		}
		switch p := s.field(&c).(type) {
		case *bool:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("env %s: %q is not a boolean", s.env, oneLine(v))
			}
			*p = b
		case *string:
			*p = v
		}
	}
	if pw := getenv(EnvPassword); pw != "" {
		c.SASLPassword = Secret(pw)
	}
	if f.fs != nil {
		given := map[string]bool{}
		f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
		for _, s := range settings {
			if !given[s.flag] {
				continue
			}
			switch p := s.field(&c).(type) {
			case *bool:
				*p = *s.field(&f.values).(*bool)
			case *string:
				*p = *s.field(&f.values).(*string)
			}
		}
		if given["kafka-sasl-password-file"] {
			// The flag is the operator's explicit choice over the environment.
			c.SASLPassword = ""
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}
