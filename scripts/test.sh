#!/usr/bin/env bash
# test.sh — the full test run behind `make test`: every package (TEST_PKGS) with
# the race detector on the embedded broker, then the Kafka-facing packages again against
# a real Apache Kafka node started by test/kafka/kafka.sh, then the packages that
# need a SASL_SSL node and a three-broker cluster (REALKAFKA_PKGS) against those,
# started by kafka.sh too. The three start in the background while the first
# pass runs, and are stopped on every exit path, failure included.
#
# Environment (the Makefile sets these):
#   GO                  go command (default go)
#   TEST_FLAGS          flags for go test (default -race -count=1 -timeout 15m)
#   TEST_PKGS           packages of the embedded-broker pass (default ./...), less REALKAFKA_PKGS
#   KAFKA_PKGS          packages run against real Kafka (default ./decisionfeed/... ./test/interop/...)
#   KAFKA_PORT          port of the real Kafka node (default 19092)
#   REALKAFKA_PKGS      packages run against the secure node and the cluster (default ./test/realkafka/...)
#   KAFKA_SECURE_PORT   the secure node's SASL_SSL port; it takes the two above it (default 19094)
#   KAFKA_CLUSTER_PORT  the cluster's first port; it takes the five above it (default 19097)
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
read -r -a flags <<<"${TEST_FLAGS:--race -count=1 -timeout 15m}"
read -r -a pkgs <<<"${TEST_PKGS:-./...}"
read -r -a kafka_pkgs <<<"${KAFKA_PKGS:-./decisionfeed/... ./test/interop/...}"
read -r -a realkafka_pkgs <<<"${REALKAFKA_PKGS:-./test/realkafka/...}"
port=${KAFKA_PORT:-19092}
sport=${KAFKA_SECURE_PORT:-19094}
cport=${KAFKA_CLUSTER_PORT:-19097}
# Three Kafkas, three state directories: kafka.sh's default per port.
unset PORTCULLIS_KAFKA_STATE

# The first pass runs TEST_PKGS without REALKAFKA_PKGS, whose tests need the
# secure node and the cluster (and fail under CI=true without them). -e keeps a
# package that does not load in the list, so that go test reports it.
mapfile -t skip < <("$GO" list -e "${realkafka_pkgs[@]}")
mapfile -t first < <("$GO" list -e "${pkgs[@]}" | grep -vxF -f <(printf '%s\n' "${skip[@]}"))

# The real brokers boot while the embedded-broker pass runs; their output goes
# to files so it does not interleave with go test's.
kafka_out=$(mktemp)
secure_out=$(mktemp)
cluster_out=$(mktemp)
log1=$(mktemp)
log2=$(mktemp)
log3=$(mktemp)
stop_kafka() {
	local p
	for p in ${kafka_start:-} ${secure_start:-} ${cluster_start:-}; do
		wait "$p" 2>/dev/null
	done
	for p in "$port" "$sport" "$cport"; do
		test/kafka/kafka.sh stop "$p" || true
	done
	rm -f "$kafka_out" "$secure_out" "$cluster_out" "$log1" "$log2" "$log3"
}
trap stop_kafka EXIT

# summary prints the failing tests, packages and panics of one pass's log.
summary() {
	grep -E -e '^\s*--- FAIL' -e '^FAIL\s' -e '^panic: ' "$2" | sed "s/^/test.sh: [$1] /" >&2 || true
}
test/kafka/kafka.sh start "$port" >"$kafka_out" 2>&1 &
kafka_start=$!
test/kafka/kafka.sh start-secure "$sport" >"$secure_out" 2>&1 &
secure_start=$!
test/kafka/kafka.sh start-cluster "$cport" >"$cluster_out" 2>&1 &
cluster_start=$!

# Every pass runs even when an earlier one fails, so one run reports everything.
failed=()
echo "== go test ${flags[*]} ${pkgs[*]} (embedded broker; without ${skip[*]})"
env -u PORTCULLIS_TEST_BROKERS "$GO" test "${flags[@]}" "${first[@]}" 2>&1 | tee "$log1" ||
	failed+=("embedded broker")

if wait "$kafka_start"; then
	cat "$kafka_out"
	echo "== go test ${flags[*]} ${kafka_pkgs[*]} (Apache Kafka on 127.0.0.1:$port)"
	PORTCULLIS_TEST_BROKERS=127.0.0.1:$port "$GO" test "${flags[@]}" "${kafka_pkgs[@]}" 2>&1 |
		tee "$log2" || failed+=("Apache Kafka")
else
	cat "$kafka_out" >&2
	failed+=("Apache Kafka did not start")
fi
kafka_start=

secure_ok=0 cluster_ok=0
wait "$secure_start" && secure_ok=1
cat "$secure_out"
wait "$cluster_start" && cluster_ok=1
cat "$cluster_out"
secure_start='' cluster_start=''
if ((secure_ok && cluster_ok)); then
	echo "== go test ${flags[*]} ${realkafka_pkgs[*]} (SASL_SSL Kafka on 127.0.0.1:$sport, cluster on 127.0.0.1:$cport-$((cport + 2)))"
	PORTCULLIS_TEST_SECURE_BROKER=127.0.0.1:$sport \
		PORTCULLIS_TEST_SECURE_BENCH_BROKER=127.0.0.1:$((sport + 1)) \
		PORTCULLIS_TEST_SECURE_DIR=/tmp/portcullis-kafka-$sport/client \
		PORTCULLIS_TEST_CLUSTER_BROKERS=127.0.0.1:$cport,127.0.0.1:$((cport + 1)),127.0.0.1:$((cport + 2)) \
		PORTCULLIS_TEST_CLUSTER_DIR=/tmp/portcullis-kafka-$cport \
		"$GO" test "${flags[@]}" "${realkafka_pkgs[@]}" 2>&1 | tee "$log3" || failed+=("SASL_SSL node and cluster")
else
	((secure_ok)) || failed+=("the SASL_SSL Kafka node did not start")
	((cluster_ok)) || failed+=("the Kafka cluster did not start")
fi

if ((${#failed[@]})); then
	printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
	# The failing tests and packages of every pass, so a long log need not be searched.
	summary "embedded broker" "$log1"
	summary "Apache Kafka" "$log2"
	summary "SASL_SSL node and cluster" "$log3"
	exit 1
fi
echo "test.sh: all passes succeeded"
