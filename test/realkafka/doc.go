// Package realkafka holds the tests that need Apache Kafka in a shape the
// single test node of PORTCULLIS_TEST_BROKERS does not have: a node with a
// SASL_SSL listener, the StandardAuthorizer and per-role ACLs, and a
// three-broker KRaft cluster whose partition leader a test kills.
// test/kafka/kafka.sh starts both (start-secure, start-cluster) and
// scripts/test.sh passes them in through the environment; without it the
// tests skip, and under CI=true they fail.
package realkafka
