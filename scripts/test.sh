#!/usr/bin/env bash
# test.sh — the full test run behind `make test`: every package (TEST_PKGS) with
# the race detector on the embedded broker, then the Kafka-facing packages again against
# a real Apache Kafka node started by test/kafka/kafka.sh. Kafka is stopped on
# every exit path, failure included.
#
# Environment (the Makefile sets these):
#   GO            go command (default go)
#   TEST_FLAGS    flags for go test (default -race -count=1 -timeout 15m)
#   TEST_PKGS     packages of the embedded-broker pass (default ./...)
#   KAFKA_PKGS    packages run against real Kafka (default ./decisionfeed/... ./test/interop/...)
#   KAFKA_PORT    port of the real Kafka node (default 19092)
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
read -r -a flags <<<"${TEST_FLAGS:--race -count=1 -timeout 15m}"
read -r -a pkgs <<<"${TEST_PKGS:-./...}"
read -r -a kafka_pkgs <<<"${KAFKA_PKGS:-./decisionfeed/... ./test/interop/...}"
port=${KAFKA_PORT:-19092}

# The real broker boots while the embedded-broker pass runs; its output goes to
# a file so it does not interleave with go test's.
kafka_out=$(mktemp)
log1=$(mktemp)
log2=$(mktemp)
stop_kafka() {
	[[ -n ${kafka_start:-} ]] && wait "$kafka_start" 2>/dev/null
	test/kafka/kafka.sh stop "$port" || true
	rm -f "$kafka_out" "$log1" "$log2"
}
trap stop_kafka EXIT

# summary prints the failing tests, packages and panics of one pass's log.
summary() {
	grep -E -e '^\s*--- FAIL' -e '^FAIL\s' -e '^panic: ' "$2" | sed "s/^/test.sh: [$1] /" >&2 || true
}
test/kafka/kafka.sh start "$port" >"$kafka_out" 2>&1 &
kafka_start=$!

# Both passes run even when the first fails, so one run reports everything.
failed=()
echo "== go test ${flags[*]} ${pkgs[*]} (embedded broker)"
env -u PORTCULLIS_TEST_BROKERS "$GO" test "${flags[@]}" "${pkgs[@]}" 2>&1 | tee "$log1" ||
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

if ((${#failed[@]})); then
	printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
	# The failing tests and packages of both passes, so a long log need not be searched.
	summary "embedded broker" "$log1"
	summary "Apache Kafka" "$log2"
	exit 1
fi
echo "test.sh: all passes succeeded"
