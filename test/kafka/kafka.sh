#!/usr/bin/env bash
# kafka.sh — Apache Kafka (KRaft) on 127.0.0.1 for the real-Kafka test runs:
# one plaintext node, one SASL_SSL node with ACLs, or a three-broker cluster.
#
#   test/kafka/kafka.sh start         [port]  one node, PLAINTEXT on port
#   test/kafka/kafka.sh start-secure  [port]  one node, SASL_SSL on port (see below)
#   test/kafka/kafka.sh start-cluster [port]  three nodes, PLAINTEXT on port..port+2
#   test/kafka/kafka.sh start-node    port id start node id of the cluster under port
#                                             again after it was killed (tests do)
#   test/kafka/kafka.sh stop          [port]  stop every node started under port
#                                             (SIGTERM, SIGKILL after 30 s; 10 s
#                                             for a cluster)
#   test/kafka/kafka.sh status        [port]  exit 0 when every node started under port runs
#   test/kafka/kafka.sh fetch                 only resolve the jars into test/kafka/dist
#
# port defaults to 19092. Each start fetches the jars if needed, formats fresh
# storage (a test run must not see a previous run's topics or users), starts
# the nodes in parallel in the background and waits until every one answers a
# metadata request. A node is a combined broker+controller; its controller
# listens above the client ports (start: the first free port above port;
# start-secure: port+2; start-cluster: port+3..port+5). A start that fails
# stops what it started, as does one that is interrupted.
#
# State lives in $PORTCULLIS_KAFKA_STATE, default /tmp/portcullis-kafka-<port>:
# node-<id>/ holds a node's server.properties, data, kafka.pid and kafka.log.
#
# start-secure: the client listener is SASL_SSL (SASL PLAIN, SCRAM-SHA-256 and
# SCRAM-SHA-512) with a certificate for 127.0.0.1 and localhost signed by a CA
# made at start (openssl), and the StandardAuthorizer. The controller listener
# is SASL_SSL too (PLAIN, admin only). The users, with random passwords, are
# admin (super user) and one per role of the README (engine, operator,
# bouncer, lapi, crowdsec-pull), each with the README's least ACLs
# (kafka-acls), so the tests prove the documented ACLs; the engine also reads
# the decisions in group portcullis-engine-prune, which its continuous prune
# needs.
# A second listener on port+1 is PLAINTEXT for benchmarks only: there the
# anonymous user may use topics named bench-* and nothing else.
# Clients find what they need in $state/client/: ca.pem, <user>.password, and
# admin.properties (a client config for Kafka's own tools). Topics are not
# created here; the tests create them with the admin user.
#
# start-cluster: replication factor 3 and min.insync.replicas 2 by default,
# brokers fenced 4 s after their last heartbeat (Kafka's default: 9 s), so a
# killed leader is replaced within seconds.
#
# Needs: java >= 17, mvn, kcat, openssl (scripts/deps.sh installs them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dist=$here/dist
cmd=${1:-}
port=${2:-19092}

die() { echo "kafka.sh: $*" >&2; exit 1; }

if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65430)); then
	die "port $port: not a TCP port below 65431 (the controllers take ports above it)"
fi
state=${PORTCULLIS_KAFKA_STATE:-/tmp/portcullis-kafka-$port}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
cp="$dist/*"
jvm=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/log4j2.properties")
# One-shot tools (format, kafka-acls) need no optimising JIT; C1 only starts faster.
tooljvm=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/tools-log4j2.properties")

# fetch resolves the broker's jars with Maven; a stamp holding the pom's hash
# makes a second run a no-op (Maven's own cache in ~/.m2 makes a re-fetch fast).
# A lock makes starts that run at once (make test starts three) fetch once.
fetch() {
	local want have=""
	exec 9>"$dist.lock"
	flock 9
	want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
	[[ -f $dist/.stamp ]] && have=$(<"$dist/.stamp")
	if [[ $want == "$have" ]]; then
		exec 9>&-
		return 0
	fi
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
	exec 9>&-
}

# nodes lists the node directories of this state directory.
nodes() {
	local d
	for d in "$state"/node-*; do
		[[ -d $d ]] && echo "$d"
	done
}

# ourpid prints the pid from node directory $1's pid file when that process
# is still this node's broker (the command line names its config), so a
# recycled pid is never signalled.
ourpid() {
	local pid cmdline
	[[ -f $1/kafka.pid ]] || return 1
	pid=$(<"$1/kafka.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"kafka.Kafka $1/server.properties"* ]] || return 1
	echo "$pid"
}

# in_use succeeds when something accepts connections on 127.0.0.1:$1.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ready succeeds when the node with id $1 answers a metadata request on
# 127.0.0.1:$2 listing itself; kcat options for the listener follow.
# (The output is captured, not piped into grep -q, whose early exit would make
# kcat die of SIGPIPE and pipefail report a failure on a long topic list.)
ready() {
	local id=$1 p=$2 md
	shift 2
	md=$(timeout 5 kcat -b "127.0.0.1:$p" "$@" -L -m 2 2>/dev/null) || return 1
	[[ $md == *"broker $id at 127.0.0.1:$p"* ]]
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

# password prints a random password of 24 letters and digits (safe inside the
# JAAS and --add-scram syntaxes without quoting).
password() {
	local p=""
	while ((${#p} < 24)); do
		p+=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
	done
	echo "${p:0:24}"
}

# free_above prints the first port above $1 that nothing listens on.
free_above() {
	local p
	for ((p = $1 + 1; p < $1 + 100; p++)); do
		in_use "$p" || { echo "$p"; return 0; }
	done
	die "no free port in 127.0.0.1:$(($1 + 1))-$p"
}

# common_config prints the settings every node shares: node $1, log dirs in
# node directory $2.
common_config() {
	cat <<CONF
process.roles=broker,controller
node.id=$1
log.dirs=$2/data
controller.listener.names=CONTROLLER
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
offsets.topic.num.partitions=3
CONF
}

# format writes fresh KRaft storage for node directory $1 with cluster id $2;
# further arguments go to the storage tool (SCRAM users).
format() {
	local dir=$1 uuid=$2
	shift 2
	"$java" "${tooljvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$uuid" \
		-c "$dir/server.properties" "$@" >>"$dir/kafka.log" 2>&1 ||
		die "StorageTool format failed (see $dir/kafka.log)"
}

# launch starts the broker of node directory $1 in the background with heap
# limit $2 and records its pid.
launch() {
	local dir=$1 heap=$2
	# setsid: the broker must not get the terminal's SIGINT meant for the test
	# run; the caller stops it with "kafka.sh stop".
	setsid "$java" -Xms128m "-Xmx$heap" -XX:+UseG1GC "${jvm[@]}" -cp "$cp" \
		kafka.Kafka "$dir/server.properties" >>"$dir/kafka.log" 2>&1 </dev/null &
	echo "$!" >"$dir/kafka.pid"
}

# await waits until node $2 (directory $1) answers metadata on 127.0.0.1:$3
# (kcat options for the listener follow), for at most 90 s.
await() {
	local dir=$1 id=$2 p=$3 pid deadline=$((SECONDS + 90))
	shift 3
	pid=$(<"$dir/kafka.pid")
	while ((SECONDS < deadline)); do
		# kill -0, not ourpid: right after the fork the child may not have
		# exec'd java yet, so its command line does not name the broker.
		if ! kill -0 "$pid" 2>/dev/null; then
			grep -m 5 -E '^\[.*\] (ERROR|FATAL)' "$dir/kafka.log" >&2 || tail -n 30 "$dir/kafka.log" >&2
			echo "kafka.sh: node $id exited during start-up (log: $dir/kafka.log)" >&2
			return 1
		fi
		ready "$id" "$p" "$@" && return 0
		sleep 0.25
	done
	tail -n 30 "$dir/kafka.log" >&2
	echo "kafka.sh: node $id did not answer a metadata request on 127.0.0.1:$p within 90 s (log: $dir/kafka.log)" >&2
	return 1
}

# prepare checks the tools and ports $@, fetches the jars and empties the
# state directory; it refuses when nodes of this state directory still run.
prepare() {
	local d p
	for d in $(nodes); do
		ourpid "$d" >/dev/null && die "nodes under $state are running; run: $0 stop $port"
	done
	command -v kcat >/dev/null || die "kcat not found (run scripts/deps.sh)"
	command -v "$java" >/dev/null || die "java not found (install openjdk-17-jre-headless)"
	for p in "$@"; do
		in_use "$p" && die "127.0.0.1:$p is already in use by another process"
	done
	fetch
	rm -rf "$state"
	mkdir -p "$state"
}

# arm makes every exit before started — a failure, set -e, SIGINT, SIGTERM —
# stop the nodes this start launched (prepare has checked that no others run
# under $state).
arm() {
	starting=1
	trap 'exit 130' INT TERM HUP
	trap on_exit EXIT
}

on_exit() {
	if ((starting)); then
		stop >/dev/null 2>&1 || true
	fi
}

# started prints how long the start took; $1 names what runs.
started() {
	starting=0
	echo "kafka.sh: $1 running under $state (started in $((SECONDS - t0)) s)"
}

start() {
	local dir=$state/node-1 cport
	t0=$SECONDS
	prepare "$port"
	arm
	cport=$(free_above "$port")
	mkdir -p "$dir/data"
	{
		common_config 1 "$dir"
		cat <<CONF
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
CONF
	} >"$dir/server.properties"
	format "$dir" "$(cluster_id)"
	launch "$dir" 1g
	await "$dir" 1 "$port" || die "start failed"
	started "Apache Kafka on 127.0.0.1:$port (pid $(<"$dir/kafka.pid"))"
}

# certs makes a CA and a server certificate for 127.0.0.1 and localhost
# (EC P-256, valid two days) in $1, and the PEM key store Kafka reads
# (ssl.keystore.type=PEM: the PKCS#8 key and the certificate in one file).
certs() {
	local d=$1
	command -v openssl >/dev/null || die "openssl not found (run scripts/deps.sh)"
	mkdir -p "$d"
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout ca.key -out ca.pem -days 2 -subj "/CN=portcullis test CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout server.key -out server.csr -subj "/CN=localhost"
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-out server.pem -days 2 \
			-extfile <(printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
				"extendedKeyUsage=serverAuth,clientAuth")
		cat server.key server.pem >keystore.pem
		chmod 600 ca.key server.key keystore.pem
	) >>"$state/openssl.log" 2>&1 || die "openssl failed (see $state/openssl.log)"
}

# acl runs kafka-acls with arguments $@ as admin on the secure node. Output
# goes to acls.log.
acl() {
	"$java" "${tooljvm[@]}" -cp "$cp" org.apache.kafka.tools.AclCommand \
		--bootstrap-server "127.0.0.1:$port" --command-config "$state/client/admin.properties" \
		"$@" >>"$state/acls.log" 2>&1
}

# The users of the secure node besides admin, one per role of the README's
# "Roles and the least Kafka ACLs".
roles=(engine operator bouncer lapi crowdsec-pull)

# grant_acls starts kafka-acls runs in the background that create the
# README's least ACLs of every role, lines with the same operations merged
# into one run (each run is a JVM of its own), and the benchmark listener's;
# it appends their pids to the array acl_pids.
grant_acls() {
	local pfx=(--resource-pattern-type prefixed)
	# engine: server-logs in its groups, writes decisions and alerts, owns portcullis-events.
	acl --add --allow-principal User:engine --operation Read --operation Describe --topic server-logs &
	acl_pids+=($!)
	# The engine's continuous prune reads the decisions in group portcullis-engine-prune.
	acl --add --allow-principal User:engine --operation Read --group portcullis-engine --group portcullis-engine-detect \
		--group portcullis-engine-prune --topic crowdsec-decisions &
	acl_pids+=($!)
	acl --add --allow-principal User:engine --operation Write --operation Describe \
		--topic crowdsec-decisions --topic alert-notifications &
	acl_pids+=($!)
	acl --add --allow-principal User:engine --operation Create --operation Write --operation Read \
		--operation Describe --topic portcullis-events &
	acl_pids+=($!)
	# operator CLI, and crowdsec-pull: read and write decisions.
	acl --add --allow-principal User:operator --allow-principal User:crowdsec-pull --operation Read \
		--operation Write --operation Describe --topic crowdsec-decisions &
	acl_pids+=($!)
	acl --add --allow-principal User:operator --operation Write --operation Describe --topic threat-intel &
	acl_pids+=($!)
	acl --add --allow-principal User:operator --operation Read --operation Describe \
		--topic alert-notifications --topic portcullis-heartbeats &
	acl_pids+=($!)
	acl --add --allow-principal User:operator --operation Describe --group '*' &
	acl_pids+=($!)
	# bouncers, and lapi: read decisions, commit their own per-host group.
	acl --add --allow-principal User:bouncer --allow-principal User:lapi --operation Read \
		--operation Describe --topic crowdsec-decisions &
	acl_pids+=($!)
	acl --add --allow-principal User:bouncer --allow-principal User:lapi --operation Read "${pfx[@]}" \
		--group portcullis- &
	acl_pids+=($!)
	acl --add --allow-principal User:bouncer --operation Create --operation Write --operation Describe \
		--topic portcullis-heartbeats &
	acl_pids+=($!)
	acl --add --allow-principal User:bouncer --operation Write --operation Describe \
		--topic crowdsec-decisions.dlq &
	acl_pids+=($!)
	# The benchmark listener's anonymous user: bench-* topics and groups only.
	acl --add --allow-principal User:ANONYMOUS --operation All "${pfx[@]}" --topic bench- --group bench- &
	acl_pids+=($!)
}

start_secure() {
	local dir=$state/node-1 cport bport user m scram=() j plainusers=""
	local -A pass
	t0=$SECONDS
	bport=$((port + 1))
	cport=$((port + 2))
	prepare "$port" "$bport" "$cport"
	arm
	mkdir -p "$dir/data" "$state/client"
	certs "$state/tls"
	cp "$state/tls/ca.pem" "$state/client/ca.pem"
	for user in admin "${roles[@]}"; do
		pass[$user]=$(password)
		(umask 077 && echo "${pass[$user]}" >"$state/client/$user.password")
		for m in SCRAM-SHA-256 SCRAM-SHA-512; do
			scram+=(--add-scram "$m=[name=$user,password=${pass[$user]}]")
		done
		plainusers+=" user_$user=\"${pass[$user]}\""
	done
	local plain="org.apache.kafka.common.security.plain.PlainLoginModule required"
	local scramlm="org.apache.kafka.common.security.scram.ScramLoginModule required;"
	(
		umask 077
		{
			common_config 1 "$dir"
			cat <<CONF
controller.quorum.voters=1@127.0.0.1:$cport
listeners=SECURE://127.0.0.1:$port,BENCH://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SECURE://127.0.0.1:$port,BENCH://127.0.0.1:$bport
listener.security.protocol.map=SECURE:SASL_SSL,BENCH:PLAINTEXT,CONTROLLER:SASL_SSL
inter.broker.listener.name=SECURE
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.secure.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.secure.plain.sasl.jaas.config=$plain username="admin" password="${pass[admin]}"$plainusers;
listener.name.secure.scram-sha-256.sasl.jaas.config=$scramlm
listener.name.secure.scram-sha-512.sasl.jaas.config=$scramlm
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=$plain username="admin" password="${pass[admin]}" user_admin="${pass[admin]}";
ssl.keystore.type=PEM
ssl.keystore.location=$state/tls/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$state/tls/ca.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
CONF
		} >"$dir/server.properties"
		cat >"$state/client/admin.properties" <<CONF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${pass[admin]}";
ssl.truststore.type=PEM
ssl.truststore.location=$state/client/ca.pem
CONF
	)
	format "$dir" "$(cluster_id)" "${scram[@]}"
	launch "$dir" 384m
	# kcat (librdkafka 1.9 of Debian 12) fails SCRAM against this broker while
	# Java and kafka-go succeed; PLAIN proves the listener is up just as well.
	local kc=(-X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN
		-X sasl.username=admin -X "sasl.password=${pass[admin]}" -X "ssl.ca.location=$state/client/ca.pem")
	await "$dir" 1 "$port" "${kc[@]}" || die "start failed"

	acl_pids=()
	grant_acls
	for j in "${acl_pids[@]}"; do
		wait "$j" || { tail -n 20 "$state/acls.log" >&2; die "kafka-acls failed (see $state/acls.log)"; }
	done
	started "Apache Kafka with SASL_SSL on 127.0.0.1:$port, PLAINTEXT bench listener on 127.0.0.1:$bport (pid $(<"$dir/kafka.pid"))"
}

start_cluster() {
	local id dir voters="" uuid pids=()
	t0=$SECONDS
	prepare "$port" $((port + 1)) $((port + 2)) $((port + 3)) $((port + 4)) $((port + 5))
	arm
	for id in 1 2 3; do
		voters+="${voters:+,}$id@127.0.0.1:$((port + 2 + id))"
	done
	uuid=$(cluster_id)
	for id in 1 2 3; do
		dir=$state/node-$id
		mkdir -p "$dir/data"
		{
			common_config "$id" "$dir"
			cat <<CONF
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((port + id - 1)),CONTROLLER://127.0.0.1:$((port + 2 + id))
advertised.listeners=PLAINTEXT://127.0.0.1:$((port + id - 1))
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
CONF
		} >"$dir/server.properties"
		format "$dir" "$uuid" &
		pids+=($!)
	done
	for id in "${pids[@]}"; do
		wait "$id" || die "format failed"
	done
	for id in 1 2 3; do
		launch "$state/node-$id" 384m
	done
	for id in 1 2 3; do
		await "$state/node-$id" "$id" $((port + id - 1)) || die "start failed"
	done
	started "three-node Apache Kafka cluster on 127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))"
}

# start_node starts node $1 of the cluster under port again, on its storage
# as it was left (a test kills a node with SIGKILL and brings it back).
start_node() {
	local id=$1 dir=$state/node-$1 p=$((port + $1 - 1))
	t0=$SECONDS
	[[ $id =~ ^[1-3]$ && -f $dir/server.properties ]] || die "no cluster node $id under $state"
	ourpid "$dir" >/dev/null && die "node $id under $state is running"
	launch "$dir" 384m
	await "$dir" "$id" "$p" || die "node $id did not start"
	started "node $id on 127.0.0.1:$p (pid $(<"$dir/kafka.pid"))"
}

stop() {
	local d pid deadline pids=() grace=30
	for d in $(nodes); do
		if pid=$(ourpid "$d"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	if ((${#pids[@]} == 0)); then
		echo "kafka.sh: nothing running under $state"
		return 0
	fi
	# The last nodes of a cluster that stops as a whole wait for a controller
	# quorum that is gone; this throwaway cluster's data need not be kept.
	((${#pids[@]} > 1)) && grace=10
	deadline=$((SECONDS + grace))
	for pid in "${pids[@]}"; do
		while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do
			sleep 0.25
		done
		if [[ -d /proc/$pid ]]; then
			echo "kafka.sh: pid $pid ignored SIGTERM for $grace s, sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for d in $(nodes); do
		rm -f "$d/kafka.pid"
	done
	echo "kafka.sh: stopped (pids ${pids[*]})"
}

status() {
	local d pid n=0
	for d in $(nodes); do
		if ! pid=$(ourpid "$d"); then
			echo "kafka.sh: ${d##*/} not running"
			return 3
		fi
		n=$((n + 1))
	done
	((n)) || { echo "kafka.sh: nothing under $state"; return 3; }
	echo "kafka.sh: $n node(s) running under $state"
}

case $cmd in
start) start ;;
start-secure) start_secure ;;
start-cluster) start_cluster ;;
start-node) start_node "${3:-}" ;;
stop) stop ;;
status) status ;;
fetch) fetch ;;
*) die "usage: $0 start|start-secure|start-cluster|stop|status [port] | start-node port id | fetch" ;;
esac
