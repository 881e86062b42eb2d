#!/usr/bin/env bash
# A throw-away node, to try a lazy start without touching the system's
# containerd: a containerd of its own (its root, state and socket in a
# scratch directory) whose "sluice" snapshotter is a sluice-snapshotter
# running in the foreground. It prints the commands that pull and run an
# image lazily from a registry (by default the one `make run` serves on
# 127.0.0.1:5000). Ctrl-C kills the node's containers, stops containerd,
# runs `sluice-snapshotter stop` (the FUSE manager goes too, and every
# streamed layer is unmounted) and removes the scratch directory.
#
# Run it with `make node`, which builds bin/ first, as root.
#
# Environment:
#   NODE_DIR       scratch directory (default: a new /tmp/sluice-node.XXXXXX);
#                  it must not exist or be empty, as it is removed at the end
#   NODE_REGISTRY  registry to stream from (default 127.0.0.1:5000)
#   NODE_IMAGE     image to suggest, in that registry (default team/app:1.0)
#   SLUICE_USERNAME, SLUICE_PASSWORD
#                  the registry's credentials, for the snapshotter; without
#                  them it uses docker's config.json
#   BIN            where sluice and sluice-snapshotter are (default ./bin)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$repo/bin}
registry=${NODE_REGISTRY:-127.0.0.1:5000}
image=${NODE_IMAGE:-team/app:1.0}

die() {
	echo "node: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "a node needs root (containerd, and the FUSE mounts of streamed layers): run sudo make node"
[ -e /dev/fuse ] || die "no /dev/fuse: load the module (modprobe fuse) or run where FUSE is available"
for tool in containerd ctr runc; do
	command -v "$tool" >/dev/null || die "$tool is not on PATH: apt-get install containerd runc (make test-deps does)"
done
for b in sluice sluice-snapshotter; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make node, which builds it"
done

if [ -n "${NODE_DIR:-}" ]; then
	dir=$NODE_DIR
	mkdir -p "$dir"
	[ -z "$(ls -A "$dir")" ] || die "NODE_DIR $dir is not empty, and the node removes its directory when it stops: give a new one"
	dir=$(cd "$dir" && pwd)
else
	# Short: the sockets' paths must fit in 108 bytes.
	dir=$(mktemp -d /tmp/sluice-node.XXXXXX)
fi
sock=$dir/containerd.sock
snconfig=$dir/snapshotter.yaml
ctrdpid="" snpid=""

# unmount_under unmounts whatever is still mounted below the scratch
# directory, deepest first, so that removing it never reaches into a mount.
unmount_under() {
	awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r mnt; do
		umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
	done
}

cleanup() {
	trap - INT TERM EXIT
	echo
	echo "node: stopping"
	if [ -n "$ctrdpid" ] && kill -0 "$ctrdpid" 2>/dev/null; then
		# The containers go first: their shims outlive containerd, and
		# their root file systems hold the streamed layers.
		for ns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
			for id in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
				ctr --address "$sock" -n "$ns" tasks kill -s SIGKILL --all "$id" >/dev/null 2>&1 || true
				for _ in $(seq 100); do
					ctr --address "$sock" -n "$ns" tasks delete "$id" >/dev/null 2>&1 && break
					sleep 0.1
				done
			done
		done
		kill -TERM "$ctrdpid" 2>/dev/null || true
		wait "$ctrdpid" 2>/dev/null || true
	fi
	# Stops the snapshotter, then the FUSE manager, unmounting every
	# streamed layer; --force only if something still holds one.
	if ! "$BIN/sluice-snapshotter" stop --config "$snconfig"; then
		"$BIN/sluice-snapshotter" stop --config "$snconfig" --force || true
	fi
	if [ -n "$snpid" ]; then
		wait "$snpid" 2>/dev/null || true
	fi
	unmount_under
	rm -rf --one-file-system "$dir"
	echo "node: stopped; removed $dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

{
	echo "root: $dir/snapshotter"
	echo "address: $dir/sluice.sock"
	if [ -n "${SLUICE_USERNAME:-}" ] && [ -n "${SLUICE_PASSWORD:-}" ]; then
		(umask 077 && printf '%s' "$SLUICE_PASSWORD" >"$dir/registry.password")
		echo "registries:"
		echo "  \"$registry\":"
		echo "    username: \"$SLUICE_USERNAME\""
		echo "    passwordFile: $dir/registry.password"
	fi
} >"$snconfig"

# containerd's own configuration, then the snapshotter's part of it as
# `sluice-snapshotter install` writes it on a real node.
case "$(containerd --version)" in
*" 1."* | *" v1."*) version=2 disabled='"io.containerd.grpc.v1.cri"' ;;
*) version=3 disabled='"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"' ;;
esac
cat >"$dir/containerd.toml" <<EOF
version = $version
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = [$disabled]

[grpc]
  address = "$sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
EOF
"$BIN/sluice-snapshotter" install --no-systemd --no-cri --containerd-config "$dir/containerd.toml" \
	--root "$dir/snapshotter" --address "$dir/sluice.sock" >/dev/null

# wait_for polls a command until it succeeds, while the process pid lives.
wait_for() {
	local what=$1 pid=$2
	shift 2
	for _ in $(seq 600); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || die "$what exited; see above"
		sleep 0.1
	done
	die "$what did not start within 60s"
}

# Both in sessions of their own: Ctrl-C reaches this script only, which
# stops them in order.
setsid "$BIN/sluice-snapshotter" --config "$snconfig" &
snpid=$!
wait_for sluice-snapshotter "$snpid" test -S "$dir/sluice.sock"
TMPDIR=$dir setsid containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
ctrdpid=$!
wait_for "containerd (log: $dir/containerd.log)" "$ctrdpid" ctr --address "$sock" version

# runc keeps its state under /run whichever containerd asks: a container
# name of this node's own, so two nodes never meet there.
container="try-$(basename "$dir" | tr -cd 'A-Za-z0-9_.-')"

cat <<EOF

node: a throw-away node runs in $dir
  containerd: $sock (log: $dir/containerd.log)
  sluice-snapshotter: $dir/sluice.sock (log: below; the FUSE manager's: $dir/snapshotter/fuse-manager.log)

Try a lazy start, as root in another shell, from an image with a streaming
artifact in $registry (make run; README: "Artifact streaming, step by step"):

  export SLUICE_USERNAME=admin SLUICE_PASSWORD='...'   # if the registry wants a login
  $BIN/sluice pull --address $sock $registry/$image
  ctr --address $sock run --rm --snapshotter sluice $registry/$image $container

Ctrl-C stops the node and removes $dir.

EOF

wait -n "$snpid" "$ctrdpid" || true
die "a daemon of the node exited; stopping the other"
