// Package interop holds tests that check the decision feed with clients that
// are not Portcullis: the seed architecture's own kafka-python consumer and
// kcat. They publish with the real `portcullis decisions` command and run on
// the embedded broker, or on the brokers of PORTCULLIS_TEST_BROKERS (a real
// Apache Kafka in `make test`). A missing python3 with kafka-python or kcat
// skips a test, and fails it when CI=true.
package interop
