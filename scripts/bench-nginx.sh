#!/usr/bin/env bash
# bench-nginx.sh — make bench-nginx: nginx alone against every protected
# mode (in-nginx Lua check over the ban file, auth_request to nginx-bouncer
# over a unix socket with and without the allow cache) and the reference
# Lua shared-dict check, one million bans each, side by side under wrk in
# one run. Prints one line per mode ending in ratio=N.NN and the load.
# PORTCULLIS_NGINX_BENCH_DURATION sets each wrk run (default 5s; 12 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh nginx
GO=${GO:-go}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! PORTCULLIS_NGINX_BENCH=1 "$GO" test -count=1 -run '^TestNginxBench$' -v -timeout 10m ./test/nginx/ >"$out" 2>&1; then
	cat "$out"
	echo "bench-nginx: FAILED" >&2
	exit 1
fi
grep -E '^(bench-nginx|plain nginx|mode=|memory:)' "$out"
