package kafkaconn

import (
	"context"
	"testing"

	"github.com/portcullis-ips/portcullis/internal/testpki"
)

// BenchmarkProbe is the start-up cost every program pays once: one
// connection, the TLS handshake and SASL exchange when configured, one
// metadata request.
func BenchmarkProbe(b *testing.B) {
	ca := testpki.NewCA(b, "bench")
	for _, tc := range []struct {
		name     string
		tls      bool
		sasl     bool
		security Config
	}{
		{"plaintext", false, false, Config{}},
		{"tls", true, false, Config{TLSCA: ca.CertFile}},
		{"tls+scram-sha-512", true, true, Config{TLSCA: ca.CertFile, SASLMechanism: MechanismSCRAMSHA512, SASLUsername: "alice", SASLPassword: secret}},
		{"tls+plain", true, true, Config{TLSCA: ca.CertFile, SASLMechanism: MechanismPlain, SASLUsername: "alice", SASLPassword: secret}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := secureCluster(b, ca, tc.tls, tc.sasl)
			s, err := Build(tc.security)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Probe(context.Background(), []string{addr}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
