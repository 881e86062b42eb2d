#!/usr/bin/env bash
# The reference topology of a Sluice registry on shared backends, on one
# machine: a throw-away PostgreSQL, an object store (Azurite, or versitygw
# with --s3), three `sluiced serve` replicas that only queue conversions,
# two `sluiced worker` processes that run them, and HAProxy in front,
# balancing every HTTP request round-robin over the replicas that pass
# /readyz. See deploy/README.md.
#
#   deploy/local-cluster.sh up [--s3]   start it all and wait until it serves
#   deploy/local-cluster.sh status      what runs, and where
#   deploy/local-cluster.sh down        stop what up started, remove its state
#
# Everything lives in one state directory, SLUICE_CLUSTER_DIR (default
# ${XDG_STATE_HOME:-$HOME/.local/state}/sluice-cluster): configuration,
# data, logs (logs/NAME.log) and the PIDs of what up started, which down
# stops and nothing else. Ports: HAProxy on SLUICE_CLUSTER_PORT (5000), and
# from SLUICE_CLUSTER_BASE_PORT (that plus one) on, eight in a row: the
# replicas (+0..+2), the workers' probes (+3, +4), PostgreSQL (+5), the
# object store (+6) and HAProxy's statistics page (+7). sluiced comes from
# bin/ (make build), or the directory SLUICE_CLUSTER_BIN names.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SLUICE_CLUSTER_BIN:-$repo/bin}
state=${SLUICE_CLUSTER_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/sluice-cluster}
lb_port=${SLUICE_CLUSTER_PORT:-5000}
base=${SLUICE_CLUSTER_BASE_PORT:-$((lb_port + 1))}
replicas=3
workers=2
replica_port() { echo $((base + $1 - 1)); }
worker_port() { echo $((base + replicas + $1 - 1)); }
pg_port=$((base + 5))
store_port=$((base + 6))
stats_port=$((base + 7))
# How long up waits for each thing to come up, and down for each to stop.
timeout=${SLUICE_CLUSTER_TIMEOUT:-60}

die() {
	echo "local-cluster: $*" >&2
	exit 1
}
say() { echo "local-cluster: $*" >&2; }

# --- processes ---------------------------------------------------------

# start NAME CMD...: runs CMD in the background, its output in
# logs/NAME.log, and records its PID with its start time, so that stop
# never signals a process that merely reuses the PID.
start() {
	local name=$1
	shift
	"$@" >"$state/logs/$name.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid $(starttime "$pid")" >"$state/pids/$name"
}

# starttime PID: the process's start time in clock ticks since boot
# (field 22 of /proc/PID/stat), which exec does not change.
starttime() {
	local stat
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
	stat=${stat##*) }
	# shellcheck disable=SC2086 # the fields are split on purpose
	set -- $stat
	echo "${20}"
}

# pid_of NAME: the recorded PID if that process still runs, else nothing.
pid_of() {
	local f=$state/pids/$1 pid started
	[ -f "$f" ] || return 0
	read -r pid started <"$f"
	if [ -n "$pid" ] && [ "$(starttime "$pid")" = "$started" ]; then
		echo "$pid"
	fi
}

# stop SIGNAL NAME...: signals each recorded process, waits until all have
# exited, and kills those still there after the timeout.
stop() {
	local sig=$1 name pid left deadline=$((SECONDS + timeout))
	shift
	for name in "$@"; do
		pid=$(pid_of "$name")
		[ -z "$pid" ] || kill "-$sig" "$pid" 2>/dev/null || true
	done
	while :; do
		left=()
		for name in "$@"; do
			[ -z "$(pid_of "$name")" ] || left+=("$name")
		done
		[ ${#left[@]} -gt 0 ] || break
		if [ $SECONDS -ge $deadline ]; then
			for name in "${left[@]}"; do
				say "$name did not stop within ${timeout}s; killing it"
				kill -KILL "$(pid_of "$name")" 2>/dev/null || true
			done
			sleep 0.2
			break
		fi
		sleep 0.1
	done
	for name in "$@"; do rm -f "$state/pids/$name"; done
}

# wait_for NAME CHECK...: polls CHECK until it succeeds; fails with the
# tail of NAME's log if NAME exits first or the timeout passes.
wait_for() {
	local name=$1 deadline=$((SECONDS + timeout))
	shift
	until "$@" >/dev/null 2>&1; do
		if [ -z "$(pid_of "$name")" ]; then
			tail -n 20 "$state/logs/$name.log" >&2 || true
			die "$name exited while starting (its log: $state/logs/$name.log)"
		fi
		if [ $SECONDS -ge $deadline ]; then
			tail -n 20 "$state/logs/$name.log" >&2 || true
			die "$name not ready within ${timeout}s (its log: $state/logs/$name.log)"
		fi
		sleep 0.1
	done
}

answers() { curl -sS -o /dev/null --max-time 2 "$1"; }
ready() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# The order down stops things in: the front first, the stores last.
names() {
	echo haproxy
	local i
	for ((i = 1; i <= replicas; i++)); do echo "replica-$i"; done
	for ((i = 1; i <= workers; i++)); do echo "worker-$i"; done
	echo objectstore postgres
}

# --- PostgreSQL ----------------------------------------------------------

pg_bin() {
	local d dirs
	mapfile -t dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
	for d in "${dirs[@]}"; do
		[ -x "$d/initdb" ] && echo "$d" && return
	done
	command -v initdb >/dev/null && dirname "$(command -v initdb)" && return
	die "PostgreSQL's initdb not found (in /usr/lib/postgresql/*/bin or on PATH): apt-get install postgresql"
}

# PostgreSQL refuses to run as root: under root the cluster belongs to the
# postgres user, and its programs run as that user (setpriv execs them, so
# the PID recorded is the server's own).
as_pg=()
[ "$(id -u)" -ne 0 ] || as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)

# The prefix of the directory a cluster gets outside the state directory.
pg_elsewhere=sluice-cluster-postgres

start_postgres() {
	local pgbin pgdir=$state/postgres
	pgbin=$(pg_bin)
	mkdir -p "$pgdir"
	if [ "$(id -u)" -eq 0 ]; then
		id postgres >/dev/null 2>&1 || die "running as root, PostgreSQL needs its own user, postgres (apt-get install postgresql makes it)"
		chown postgres: "$pgdir"
		# A state directory the postgres user cannot reach (one under
		# /root, or a private temporary directory) gets the cluster
		# elsewhere, linked from it; down removes both.
		if ! "${as_pg[@]}" test -w "$pgdir"; then
			rmdir "$pgdir"
			local elsewhere
			elsewhere=$(mktemp -d "${TMPDIR:-/tmp}/$pg_elsewhere.XXXXXX")
			chown postgres: "$elsewhere"
			ln -s "$elsewhere" "$pgdir"
			pgdir=$elsewhere
		fi
	fi
	"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U sluice --auth=trust -E UTF8 --no-sync --no-instructions >"$state/logs/initdb.log" 2>&1 ||
		{ cat "$state/logs/initdb.log" >&2; die "initdb failed"; }
	# Throw-away data: no fsync.
	start postgres "${as_pg[@]}" "$pgbin/postgres" -D "$pgdir/data" -p "$pg_port" -k "$pgdir" \
		-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
		-c max_connections=$((32 * (replicas + workers) + 20))
	wait_for postgres "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"
	"$pgbin/createdb" -h 127.0.0.1 -p "$pg_port" -U sluice sluice
	SLUICE_DATABASE_DSN="postgres://sluice@127.0.0.1:$pg_port/sluice?sslmode=disable"
}

# --- object store --------------------------------------------------------

tool() {
	local name=$1 dir=$2
	if command -v "$name" >/dev/null; then
		command -v "$name"
	elif [ -x "$dir/$name" ]; then
		echo "$dir/$name"
	else
		die "$name not found (on PATH or in $dir): make test-deps installs it"
	fi
}

gopath() {
	local p
	p=$(go env GOPATH 2>/dev/null) || p=$HOME/go
	echo "${p%%:*}"
}

start_azurite() {
	local prog
	prog=$(tool azurite-blob "$(gopath)/sluice-test-tools/azurite/node_modules/.bin")
	mkdir -p "$state/azurite"
	# --skipApiVersionCheck: the Azure SDK speaks a newer API version than
	# Azurite knows; the operations sluiced uses are older than either.
	start objectstore "$prog" --blobHost 127.0.0.1 --blobPort "$store_port" --location "$state/azurite" \
		--disableTelemetry --skipApiVersionCheck --silent
	wait_for objectstore answers "http://127.0.0.1:$store_port/devstoreaccount1?comp=list"
	# Azurite's one account, with its published key.
	export AZURE_STORAGE_ACCOUNT=devstoreaccount1
	export AZURE_STORAGE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
	storage_url="azblob://sluice-blobs?protocol=http&domain=127.0.0.1:$store_port&localemu=true"
}

start_s3() {
	local prog
	prog=$(tool versitygw "$(gopath)/bin")
	mkdir -p "$state/s3"
	export AWS_ACCESS_KEY_ID=sluice AWS_SECRET_ACCESS_KEY=sluice-local-cluster AWS_REGION=us-east-1
	start objectstore "$prog" --port "127.0.0.1:$store_port" --access "$AWS_ACCESS_KEY_ID" \
		--secret "$AWS_SECRET_ACCESS_KEY" --region "$AWS_REGION" --quiet posix "$state/s3"
	wait_for objectstore answers "http://127.0.0.1:$store_port/"
	storage_url="s3://sluice-blobs?endpoint=http://127.0.0.1:$store_port&use_path_style=true"
}

# --- configuration -------------------------------------------------------

# sluiced.yaml, shared by the replicas and the workers: no secret in it.
# The DSN and the object store's credentials reach the processes through
# the environment.
write_sluiced_config() {
	cat >"$state/sluiced.yaml" <<EOF
database:
  driver: postgres
storage:
  url: $storage_url
auth:
  # The name clients reach the registry by (HAProxy), the same on every
  # replica: it is the tokens' audience.
  service: 127.0.0.1:$lb_port
# After SIGTERM a replica keeps serving this long with /readyz failing:
# more than HAProxy's check interval (1s) times its fall count (2).
drainDelay: 3s
streaming:
  # Replicas only queue conversions; the workers run them (each with
  # SLUICE_STREAMING_WORKERS=1).
  workers: 0
EOF
}

# HAProxy: every request balanced on its own, round-robin over the
# replicas whose /readyz answers 200.
write_haproxy_config() {
	local i
	{
		cat <<EOF
global
	log stdout format raw local0 info
	maxconn 4096

defaults
	mode http
	log global
	option httplog
	timeout connect 5s
	timeout http-request 30s
	timeout http-keep-alive 60s
	# Inactivity, not duration: a large blob streams for as long as it
	# keeps moving.
	timeout client 5m
	timeout server 5m
	timeout queue 30s
	# A replica that refuses the connection (stopped, or restarting):
	# the request goes to another.
	retries 2
	option redispatch

frontend registry
	bind 127.0.0.1:$lb_port
	default_backend sluiced

backend sluiced
	balance roundrobin
	# HAProxy 2.6 keeps connections alive on both sides and load-balances
	# each request of a client connection on its own; prefer-last-server,
	# which would keep a client on one replica, is off. Idle connections to
	# the replicas are pooled and shared between clients ("safe": a
	# client's first request always gets a connection of its own).
	option http-keep-alive
	http-reuse safe
	option httpchk GET /readyz
	http-check expect status 200
	default-server check inter 1s fall 2 rise 1
EOF
		for ((i = 1; i <= replicas; i++)); do
			printf '\tserver replica-%d 127.0.0.1:%d\n' "$i" "$(replica_port "$i")"
		done
		cat <<EOF

frontend stats
	bind 127.0.0.1:$stats_port
	stats enable
	stats uri /
	stats refresh 5s
EOF
	} >"$state/haproxy.cfg"
}

# --- commands ------------------------------------------------------------

up() {
	local backend=azurite
	case "${1:-}" in
	"") ;;
	--s3) backend=s3 ;;
	*) die "up takes --s3 or nothing, not $1" ;;
	esac
	local name
	if [ -d "$state/pids" ]; then
		for name in $(names); do
			[ -z "$(pid_of "$name")" ] || die "already up in $state ($name runs): run down first"
		done
	fi
	[ -x "$bin/sluiced" ] || die "$bin/sluiced not found: run make build"
	command -v haproxy >/dev/null || die "haproxy not found: apt-get install haproxy"
	command -v curl >/dev/null || die "curl not found: apt-get install curl"

	if [ -f "$state/backend" ]; then
		remove_state # a cluster's leftovers, its processes gone
	elif [ -e "$state" ] && [ -n "$(ls -A "$state")" ]; then
		die "$state exists and is not a cluster's state directory: choose another with SLUICE_CLUSTER_DIR"
	fi
	mkdir -p "$state/pids" "$state/logs"
	chmod 0700 "$state"
	echo "$backend" >"$state/backend"
	# Whatever fails from here stops what was started, keeping the logs.
	trap 'say "up failed; stopping what started (logs stay in $state/logs; down removes them)"; stop_all' EXIT

	start_postgres
	if [ "$backend" = s3 ]; then start_s3; else start_azurite; fi
	write_sluiced_config
	export SLUICE_DATABASE_DSN
	SLUICE_ADMIN_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
	export SLUICE_ADMIN_PASSWORD
	(umask 077 && echo "$SLUICE_ADMIN_PASSWORD" >"$state/admin-password")

	local i
	for ((i = 1; i <= replicas; i++)); do
		start "replica-$i" "$bin/sluiced" serve --config "$state/sluiced.yaml" \
			--listen "127.0.0.1:$(replica_port "$i")" --data "$state/replica-$i"
	done
	for ((i = 1; i <= workers; i++)); do
		start "worker-$i" env SLUICE_STREAMING_WORKERS=1 "$bin/sluiced" worker --config "$state/sluiced.yaml" \
			--listen "127.0.0.1:$(worker_port "$i")" --data "$state/worker-$i"
	done
	for ((i = 1; i <= replicas; i++)); do
		wait_for "replica-$i" ready "http://127.0.0.1:$(replica_port "$i")/readyz"
	done
	for ((i = 1; i <= workers; i++)); do
		wait_for "worker-$i" ready "http://127.0.0.1:$(worker_port "$i")/readyz"
	done

	write_haproxy_config
	haproxy -c -q -f "$state/haproxy.cfg"
	start haproxy haproxy -db -f "$state/haproxy.cfg"
	wait_for haproxy ready "http://127.0.0.1:$lb_port/readyz"
	trap - EXIT

	cat <<EOF
Sluice cluster up ($backend) in $state
  registry:        http://127.0.0.1:$lb_port  (HAProxy over replicas on $(replica_port 1)-$(replica_port "$replicas"))
  admin:           admin / $SLUICE_ADMIN_PASSWORD
  HAProxy stats:   http://127.0.0.1:$stats_port/
  workers:         http://127.0.0.1:$(worker_port 1)/metrics, http://127.0.0.1:$(worker_port 2)/metrics
  PostgreSQL:      $SLUICE_DATABASE_DSN
  logs:            $state/logs/
Stop it with: $0 down
EOF
}

# stop_all stops every recorded process: HAProxy and the sluiced
# processes (each drains for drainDelay), then, once nothing uses them,
# the stores.
stop_all() {
	trap - EXIT
	local front=(haproxy) i
	for ((i = 1; i <= replicas; i++)); do front+=("replica-$i"); done
	for ((i = 1; i <= workers; i++)); do front+=("worker-$i"); done
	stop TERM "${front[@]}"
	# SIGINT is PostgreSQL's fast shutdown: it ends the sessions, writes
	# a checkpoint and exits.
	stop INT postgres &
	stop TERM objectstore
	wait
}

down() {
	[ -d "$state" ] || {
		say "nothing in $state"
		return 0
	}
	[ -f "$state/backend" ] || die "$state does not look like a cluster's state directory; not removing it"
	stop_all
	remove_state
	say "down; removed $state"
}

# remove_state removes the state directory, and the cluster's PostgreSQL
# directory where it had to live elsewhere.
remove_state() {
	local pg=$state/postgres target
	if [ -L "$pg" ]; then
		target=$(readlink "$pg")
		case "$(basename "$target")" in
		"$pg_elsewhere".*) rm -rf "$target" ;;
		esac
	fi
	rm -rf "$state"
}

status() {
	[ -f "$state/backend" ] || {
		echo "not up (no cluster in $state)"
		return 0
	}
	echo "cluster in $state ($(cat "$state/backend"))"
	local name pid
	for name in $(names); do
		pid=$(pid_of "$name")
		if [ -n "$pid" ]; then
			printf '  %-12s running, pid %s\n' "$name" "$pid"
		else
			printf '  %-12s not running\n' "$name"
		fi
	done
	if ready "http://127.0.0.1:$lb_port/readyz"; then
		echo "registry http://127.0.0.1:$lb_port: ready"
	else
		echo "registry http://127.0.0.1:$lb_port: not answering /readyz"
	fi
	echo "admin password in $state/admin-password"
}

case "${1:-}" in
up) shift && up "$@" ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up [--s3] | down | status" >&2
	exit 2
	;;
esac
