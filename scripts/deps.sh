#!/usr/bin/env bash
# deps.sh — install the system packages that building, generating and testing
# Portcullis need, on Debian, as root. Only what is missing is installed, so a
# second run costs a few checks and no network.
#
#   scripts/deps.sh          everything `make test` and `.ci/run` need
#   scripts/deps.sh demo     only what `make demo` needs
#   scripts/deps.sh lint     only what `make lint` needs beyond Go
#   scripts/deps.sh nginx    only what `make bench-nginx` needs
#
# Go itself is not installed here (Debian's is too old); go.mod names the
# toolchain.
set -euo pipefail

want=${1:-test}

# command:package pairs; a command found on PATH means its package is there.
demo_cmds=(make:make ip:iproute2 nsenter:util-linux nginx:nginx-light) # make demo: namespaces, nginx
lint_cmds=(make:make git:git shellcheck:shellcheck)
nginx_cmds=(nginx:nginx-light wrk:wrk)
# nginx's Lua module (LuaJIT) for the in-nginx check; brings no command.
nginx_pkgs=(libnginx-mod-http-lua)
test_cmds=(
	make:make gcc:gcc git:git
	clang:clang llvm-strip:llvm # bpf2go (make generate)
	ip:iproute2 ping:iputils-ping nft:nftables iptables:iptables ipset:ipset
	nsenter:util-linux setpriv:util-linux systemd-analyze:systemd # test/demo
	nginx:nginx-light wrk:wrk kcat:kcat
	java:openjdk-17-jre-headless mvn:maven # test/kafka/kafka.sh
	python3:python3
)
# Packages that bring no command of their own: checked with dpkg.
test_pkgs=(libbpf-dev libc6-dev python3-pip "${nginx_pkgs[@]}")

die() { echo "deps.sh: $*" >&2; exit 1; }

# Go is never installed from Debian (too old for this module); say so instead.
command -v go >/dev/null ||
	die "go not found on PATH; install Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") or newer"

case $want in
demo) cmds=("${demo_cmds[@]}") pkgs=() ;;
lint) cmds=("${lint_cmds[@]}") pkgs=() ;;
nginx) cmds=("${nginx_cmds[@]}") pkgs=("${nginx_pkgs[@]}") ;;
test) cmds=("${test_cmds[@]}") pkgs=("${test_pkgs[@]}") ;;
*) die "usage: $0 [test|demo|lint|nginx]" ;;
esac

missing=()
for pair in "${cmds[@]}"; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
for p in "${pkgs[@]}"; do
	[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	((EUID == 0)) || die "missing packages ${missing[*]}; run as root to install them"
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
	echo "deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update -qq
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The seed's Python consumer uses kafka-python; the interop tests run it with
# the python3 on PATH, so install it for that interpreter. Debian's own python3
# refuses pip installs into the system (PEP 668) unless told otherwise.
kafka_python=kafka-python==3.0.12
if [[ $want == test ]] && ! python3 -c 'import kafka' 2>/dev/null; then
	echo "deps.sh: installing $kafka_python for $(command -v python3)" >&2
	if ! python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$kafka_python" 2>/dev/null; then
		python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
			--break-system-packages "$kafka_python" || die "pip install $kafka_python failed"
	fi
	python3 -c 'import kafka' || die "python3 still cannot import kafka after installing $kafka_python"
fi
