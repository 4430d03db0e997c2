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
	ip:iproute2 ping:iputils-ping nft:nftables iptables:iptables ipset:ipset bpftool:bpftool
	nsenter:util-linux setpriv:util-linux systemd-analyze:systemd # test/demo
	nginx:nginx-light wrk:wrk kcat:kcat
	chromium:chromium # the console's browser test
	java:openjdk-17-jre-headless mvn:maven openssl:openssl # test/kafka/kafka.sh
	python3:python3
	# test/interop: real CrowdSec bouncers against portcullis lapi. Without
	# cscli (crowdsec is only recommended) their install scripts register
	# nowhere, and nothing here starts their services.
	crowdsec-firewall-bouncer:crowdsec-firewall-bouncer crowdsec-custom-bouncer:crowdsec-custom-bouncer
)
# Packages that bring no command of their own: checked with dpkg.
test_pkgs=(libbpf-dev libc6-dev python3-pip libsqlite3-0 "${nginx_pkgs[@]}")

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

# Debian's crowdsec (agent and LAPI, for test/interop's crowdsec-pull test and
# test/crowdsecdiff) is unpacked, not installed: its install script would
# register with CrowdSec's online service, which nothing here may contact. The
# tests start the unpacked binaries by hand without the Central API.
crowdsec_root=/opt/portcullis/crowdsec
if [[ $want == test && ! -x $crowdsec_root/usr/bin/crowdsec ]]; then
	((EUID == 0)) || die "missing $crowdsec_root; run as root to unpack Debian's crowdsec there"
	echo "deps.sh: unpacking Debian's crowdsec into $crowdsec_root (not installed: no postinst)" >&2
	tmp=$(mktemp -d)
	if ! (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=300 download crowdsec >/dev/null 2>&1); then
		apt-get -o DPkg::Lock::Timeout=300 update -qq
		(cd "$tmp" && apt-get -o DPkg::Lock::Timeout=300 download crowdsec >/dev/null 2>&1) || die "apt-get download crowdsec failed"
	fi
	mkdir -p "$crowdsec_root"
	dpkg-deb -x "$tmp"/crowdsec_*.deb "$crowdsec_root"
	rm -rf "$tmp"
	"$crowdsec_root/usr/bin/crowdsec" -version >/dev/null 2>&1 || die "unpacked crowdsec does not run (libsqlite3-0?)"
fi

# Python packages the tests run with the python3 on PATH: kafka-python for the
# seed's own consumer (test/interop), aiosmtpd for the SMTP server of notify's
# email test. Debian's own python3 refuses pip installs into the system
# (PEP 668) unless told otherwise.
pip_install() { # module requirement
	python3 -c "import $1" 2>/dev/null && return 0
	echo "deps.sh: installing $2 for $(command -v python3)" >&2
	if ! python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$2" 2>/dev/null; then
		python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
			--break-system-packages "$2" || die "pip install $2 failed"
	fi
	python3 -c "import $1" || die "python3 still cannot import $1 after installing $2"
}
if [[ $want == test ]]; then
	pip_install kafka kafka-python==3.0.12
	pip_install aiosmtpd aiosmtpd==1.4.6
fi

# Debian's crowdsec 1.4.6 is the oracle of the hub-format scenario tests
# (test/crowdsecdiff). Its maintainer scripts register with CrowdSec's online
# API and start a service, so the package is unpacked, not installed: the
# binary, the offline hub (parsers) and the grok patterns land under
# $crowdsec_root and nothing runs.
crowdsec_root=/opt/portcullis/crowdsec
if [[ $want == test && ! -x $crowdsec_root/usr/bin/crowdsec ]]; then
	((EUID == 0)) || die "crowdsec missing under $crowdsec_root; run as root to unpack it"
	echo "deps.sh: unpacking Debian's crowdsec into $crowdsec_root" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get -o DPkg::Lock::Timeout=300 download crowdsec >/dev/null 2>&1) ||
		{ apt-get -o DPkg::Lock::Timeout=300 update -qq && (cd "$tmp" && apt-get download crowdsec >/dev/null); } ||
		die "apt-get download crowdsec failed"
	mkdir -p "$crowdsec_root"
	dpkg-deb -x "$tmp"/crowdsec_*.deb "$crowdsec_root"
	"$crowdsec_root/usr/bin/crowdsec" -version >/dev/null 2>&1 || die "unpacked crowdsec does not run"
fi
