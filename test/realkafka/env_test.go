package realkafka

import (
	"os"
	"strings"
	"testing"
)

// The environment that points the tests at the scripts' Kafka.
const (
	// envClusterBrokers lists the three cluster brokers, host:port,...
	envClusterBrokers = "PORTCULLIS_TEST_CLUSTER_BROKERS"
	// envClusterDir is the cluster's kafka.sh state directory: node-<id>/kafka.pid.
	envClusterDir = "PORTCULLIS_TEST_CLUSTER_DIR"
	// envSecureBroker is the SASL_SSL listener of the secure node, host:port.
	envSecureBroker = "PORTCULLIS_TEST_SECURE_BROKER"
	// envSecureBench is the secure node's PLAINTEXT benchmark listener.
	envSecureBench = "PORTCULLIS_TEST_SECURE_BENCH_BROKER"
	// envSecureDir is the secure node's client directory: ca.pem, <user>.password.
	envSecureDir = "PORTCULLIS_TEST_SECURE_DIR"
)

// need returns the values of the named environment variables. When one is
// unset the test skips, or fails under CI=true, where every test must run.
func need(tb testing.TB, names ...string) []string {
	tb.Helper()
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = os.Getenv(n)
		if out[i] != "" {
			continue
		}
		msg := n + " is not set: start Kafka with test/kafka/kafka.sh (scripts/test.sh does) and pass it in"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return out
}

// list splits a comma-separated broker list.
func list(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
