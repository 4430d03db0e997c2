package kafkaconn_test

import (
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/internal/config"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

type file struct {
	Brokers []string         `yaml:"brokers"`
	Kafka   kafkaconn.Config `yaml:"kafka"`
}

// The "kafka:" section decodes with the repository's strict decoder; a
// password cannot be written into it (only a file or the environment hold
// one), and a misspelt key names its line.
func TestKafkaSectionDecodesStrictly(t *testing.T) {
	var f file
	doc := "brokers: [k:9093]\nkafka:\n  tls_ca: /ca.pem\n  tls_cert: /c.pem\n  tls_key: /c.key\n  sasl_mechanism: SCRAM-SHA-512\n" +
		"  sasl_username: bouncer\n  sasl_password_file: /pw\n  insecure_skip_verify: false\n  tls: true\n"
	if err := config.Decode("f.yaml", []byte(doc), &f); err != nil {
		t.Fatal(err)
	}
	want := kafkaconn.Config{TLS: true, TLSCA: "/ca.pem", TLSCert: "/c.pem", TLSKey: "/c.key", SASLMechanism: "SCRAM-SHA-512",
		SASLUsername: "bouncer", SASLPasswordFile: "/pw"}
	if f.Kafka != want {
		t.Fatalf("decoded %#v", f.Kafka)
	}
	for _, tc := range []struct{ doc, want string }{
		{"kafka:\n  sasl_password: hunter2\n", "f.yaml: line 2: field sasl_password not found"},
		{"kafka:\n  SASLPassword: hunter2\n", "f.yaml: line 2: field SASLPassword not found"},
		{"kafka:\n  tls_cafile: /x\n", "f.yaml: line 2: field tls_cafile not found"},
		{"kafka:\n  tls: maybe\n", "f.yaml: line 2:"},
	} {
		var f file
		err := config.Decode("f.yaml", []byte(tc.doc), &f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.doc, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error repeats the value", tc.doc)
		}
	}
}
