#!/usr/bin/env bash
# demo.sh — the single-host demo behind `make demo` (which builds
# bin/portcullis, bin/fw-bouncer and bin/portcullis-demo first): three network
# namespaces, the embedded broker, nginx, the engine and fw-bouncer with XDP in
# the server one, a short attack from the attacker one while the bystander
# browses. It prints the alerts, the decisions, when each attacker address
# starts being dropped and the detect->drop latency, then removes everything
# it made (namespaces, bpffs pins, temporary directory) on every exit path.
# Runs as root; extra arguments go to portcullis-demo (--timeout, --result).
set -euo pipefail

cd "$(dirname "$0")/.."
for b in portcullis fw-bouncer portcullis-demo; do
	[[ -x bin/$b ]] || { echo "demo.sh: bin/$b not found; run make demo" >&2; exit 1; }
done
((EUID == 0)) || { echo "demo.sh: needs root (network namespaces, XDP); try: sudo make demo" >&2; exit 1; }
exec bin/portcullis-demo --bin bin "$@"
