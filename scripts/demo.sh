#!/usr/bin/env bash
# demo.sh — the single-host demo behind `make demo`: start the embedded broker
# on a free loopback port with a throw-away data directory, ban an address and
# a range with `portcullis decisions add`, list the live set, lift one ban,
# list again, and clean everything up. Expects bin/portcullis (make build).
set -euo pipefail

cd "$(dirname "$0")/.."
bin=bin/portcullis
[[ -x $bin ]] || { echo "demo.sh: $bin not found; run make build" >&2; exit 1; }

tmp=$(mktemp -d /tmp/portcullis-demo.XXXXXX)
broker_pid=
cleanup() {
	if [[ -n $broker_pid ]] && kill -0 "$broker_pid" 2>/dev/null; then
		kill -TERM "$broker_pid"
		wait "$broker_pid" || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

step "embedded broker (port 0: the kernel picks a free one)"
"$bin" broker --listen 127.0.0.1:0 --data-dir "$tmp/broker" 2>"$tmp/broker.log" &
broker_pid=$!
addr=
for ((i = 0; i < 100; i++)); do
	addr=$(sed -n 's/.*msg="broker listening".* addr=\([^ ]*\).*/\1/p' "$tmp/broker.log")
	[[ -n $addr ]] && break
	kill -0 "$broker_pid" 2>/dev/null || { cat "$tmp/broker.log" >&2; exit 1; }
	sleep 0.1
done
[[ -n $addr ]] || { cat "$tmp/broker.log" >&2; echo "demo.sh: broker did not start" >&2; exit 1; }
echo "broker on $addr, data in $tmp/broker"

step "ban an address and a range"
run "$bin" decisions add --brokers "$addr" --ip 203.0.113.7 --duration 4h --reason "demo: ssh brute force"
run "$bin" decisions add --brokers "$addr" --range 198.51.100.0/24 --duration 1h --type captcha --reason "demo: crawler range"

step "the live set, as every bouncer rebuilds it from the topic"
run "$bin" decisions list --brokers "$addr"

step "lift the address ban"
run "$bin" decisions delete --brokers "$addr" --ip 203.0.113.7
run "$bin" decisions list --brokers "$addr"

step "done; stopping the broker and removing $tmp"
