#!/usr/bin/env bash
# kafka.sh — a single-node Apache Kafka (KRaft, combined broker+controller)
# on 127.0.0.1 for the real-Kafka test run.
#
#   test/kafka/kafka.sh start  [port]   fetch jars if needed, format fresh storage,
#                                        start in the background, wait until a
#                                        metadata request succeeds
#   test/kafka/kafka.sh stop   [port]   stop it (SIGTERM, then SIGKILL after 30 s)
#   test/kafka/kafka.sh status [port]   exit 0 when running and answering metadata
#   test/kafka/kafka.sh fetch           only resolve the jars into test/kafka/dist
#
# port defaults to 19092; the controller listens on the first free port above
# it. State (data, config, pid file, kafka.log) lives in $PORTCULLIS_KAFKA_STATE,
# default /tmp/portcullis-kafka-<port>. Every start formats fresh storage: this broker is
# for tests, and a test run must not see a previous run's topics.
# Needs: java >= 17, mvn, kcat (scripts/deps.sh installs them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dist=$here/dist
cmd=${1:-}
port=${2:-19092}

die() { echo "kafka.sh: $*" >&2; exit 1; }

if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65435)); then
	die "port $port: not a TCP port below 65436 (the controller takes one above it)"
fi
state=${PORTCULLIS_KAFKA_STATE:-/tmp/portcullis-kafka-$port}
pidfile=$state/kafka.pid
logfile=$state/kafka.log
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

# fetch resolves the broker's jars with Maven; a stamp holding the pom's hash
# makes a second run a no-op (Maven's own cache in ~/.m2 makes a re-fetch fast).
fetch() {
	local want have=""
	want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
	[[ -f $dist/.stamp ]] && have=$(<"$dist/.stamp")
	[[ $want == "$have" ]] && return 0
	command -v mvn >/dev/null || die "mvn not found (run scripts/deps.sh)"
	rm -rf "$dist"
	echo "kafka.sh: fetching Apache Kafka jars with Maven into $dist" >&2
	# Maven 3.8 prints bare colour resets even with -B -q: show its output
	# only when it fails.
	local out
	out=$(mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies 2>&1) || {
		echo "$out" >&2
		die "mvn dependency:copy-dependencies failed"
	}
	echo "$want" >"$dist/.stamp"
}

# ourpid prints the pid from the pid file when that process is still this
# script's broker (the command line names our state directory), so a recycled
# pid is never signalled.
ourpid() {
	local pid cmdline
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"kafka.Kafka $state/server.properties"* ]] || return 1
	echo "$pid"
}

# in_use succeeds when something accepts connections on 127.0.0.1:$1.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ready succeeds when the broker answers a metadata request listing itself.
# (The output is captured, not piped into grep -q, whose early exit would make
# kcat die of SIGPIPE and pipefail report a failure on a long topic list.)
ready() {
	local md
	md=$(kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null) || return 1
	[[ $md == *"broker 1 at 127.0.0.1:$port"* ]]
}

# cluster_id prints a new KRaft cluster id the way Kafka's Uuid.randomUuid
# does — 16 random bytes, URL-safe base64 without padding, never starting
# with "-" — without paying a JVM start for "StorageTool random-uuid".
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		[[ $id != -* ]] && break
	done
	echo "$id"
}

write_config() {
	cat >"$state/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$state/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
CONF
}

start() {
	local pid i uuid cport
	if pid=$(ourpid); then
		if ready; then
			echo "kafka.sh: already running on 127.0.0.1:$port (pid $pid)"
			return 0
		fi
		die "pid $pid is running but does not answer on 127.0.0.1:$port; run: $0 stop $port"
	fi
	command -v kcat >/dev/null || die "kcat not found (run scripts/deps.sh)"
	command -v "$java" >/dev/null || die "java not found (install openjdk-17-jre-headless)"
	in_use "$port" && die "127.0.0.1:$port is already in use by another process"
	for ((cport = port + 1; cport < port + 100; cport++)); do
		in_use "$cport" || break
	done
	in_use "$cport" && die "no free controller port in 127.0.0.1:$((port + 1))-$cport"

	fetch
	rm -rf "$state"
	mkdir -p "$state/data"
	write_config
	local cp="$dist/*"
	local jvm=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/log4j2.properties")
	uuid=$(cluster_id)
	# The one-shot format tool needs no optimising JIT; C1 only starts faster.
	"$java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${jvm[@]}" -cp "$cp" \
		kafka.tools.StorageTool format -t "$uuid" \
		-c "$state/server.properties" >>"$logfile" 2>&1 ||
		die "StorageTool format failed (see $logfile)"
	# setsid: the broker must not get the terminal's SIGINT meant for the test run;
	# the caller stops it with "kafka.sh stop".
	setsid "$java" -Xms256m -Xmx1g -XX:+UseG1GC "${jvm[@]}" -cp "$cp" kafka.Kafka "$state/server.properties" \
		>>"$logfile" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pidfile"
	for ((i = 0; i < 120; i++)); do
		# kill -0, not ourpid: right after the fork the child may not have
		# exec'd java yet, so its command line does not name the broker.
		if ! kill -0 "$pid" 2>/dev/null; then
			grep -m 5 -E '^\[.*\] (ERROR|FATAL)' "$logfile" >&2 || tail -n 30 "$logfile" >&2
			die "broker exited during start-up (log: $logfile)"
		fi
		if ready; then
			echo "kafka.sh: Apache Kafka running on 127.0.0.1:$port (pid $pid, log $logfile)"
			return 0
		fi
		sleep 0.5
	done
	tail -n 30 "$logfile" >&2
	stop
	die "broker did not answer a metadata request within 60 s (log: $logfile)"
}

stop() {
	local pid i
	if ! pid=$(ourpid); then
		rm -f "$pidfile"
		echo "kafka.sh: not running on 127.0.0.1:$port"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		[[ -d /proc/$pid ]] || break
		sleep 0.5
	done
	if [[ -d /proc/$pid ]]; then
		echo "kafka.sh: pid $pid ignored SIGTERM for 30 s, sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
	echo "kafka.sh: stopped (pid $pid)"
}

status() {
	local pid
	if ! pid=$(ourpid); then
		echo "kafka.sh: not running on 127.0.0.1:$port"
		return 3
	fi
	if ! ready; then
		echo "kafka.sh: pid $pid running but not answering on 127.0.0.1:$port"
		return 1
	fi
	echo "kafka.sh: running on 127.0.0.1:$port (pid $pid)"
}

case $cmd in
start) start ;;
stop) stop ;;
status) status ;;
fetch) fetch ;;
*) die "usage: $0 start|stop|status [port] | fetch" ;;
esac
