#!/usr/bin/env bash
# Builds the Debian root filesystems the benchmarks use, once, into a cache
# directory outside the repository, and packs each as a single image layer
# (tar.gz, as `docker build` would push it).
#
#   bench/images/build.sh [NAME...]      NAME: python3, numpy (default: both)
#
# Environment:
#   SLUICE_BENCH_CACHE  cache directory (default /var/cache/sluice-bench)
#   DEBIAN_MIRROR       mirror (default http://deb.debian.org/debian)
#   DEBIAN_SUITE        suite (default bookworm)
#
# Output, per image: $SLUICE_BENCH_CACHE/layers/NAME.tar.gz (and NAME.tar, the
# uncompressed layer, kept for benchmarks that need the raw bytes). An image
# that is already built is left alone; delete its files to rebuild it.
# Prints the path of each layer on stdout, one a line.
set -euo pipefail

cache="${SLUICE_BENCH_CACHE:-/var/cache/sluice-bench}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-bookworm}"

declare -A include=(
	[python3]="python3"
	[numpy]="python3,python3-numpy,python3-scipy,gcc"
)

need() {
	local missing=()
	for p in debootstrap zstd; do
		command -v "$p" >/dev/null || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "installing ${missing[*]}" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	fi
}

build() {
	local name="$1" rootfs="$cache/rootfs/$1" layer="$cache/layers/$1"
	if [ -s "$layer.tar.gz" ] && [ -s "$layer.tar" ]; then
		echo "$layer.tar.gz"
		return
	fi
	if [ ! -e "$rootfs/.sluice-complete" ]; then
		echo "debootstrap $name ($suite, minbase + ${include[$name]})" >&2
		rm -rf "$rootfs.tmp"
		mkdir -p "$cache/rootfs"
		# The root filesystem is kept as debootstrap leaves it, downloaded
		# packages included (var/cache/apt/archives): that is the layer
		# the reference figures (python3: ~260 MB of tar, 121 MB gzip) were
		# measured on, and its already-compressed .deb files are the hard
		# case for a recompressor.
		debootstrap --variant=minbase --include="${include[$name]}" \
			"$suite" "$rootfs.tmp" "$mirror" >&2
		touch "$rootfs.tmp/.sluice-complete"
		rm -rf "$rootfs"
		mv "$rootfs.tmp" "$rootfs"
	fi
	mkdir -p "$cache/layers"
	echo "packing $layer.tar.gz" >&2
	tar --sort=name --numeric-owner --xattrs --xattrs-include='*' \
		--exclude=./.sluice-complete -C "$rootfs" -cf "$layer.tar.tmp" .
	gzip -6 -c "$layer.tar.tmp" >"$layer.tar.gz.tmp"
	mv "$layer.tar.tmp" "$layer.tar"
	mv "$layer.tar.gz.tmp" "$layer.tar.gz"
	echo "$layer.tar.gz"
}

main() {
	[ "$(id -u)" -eq 0 ] || { echo "build.sh: debootstrap needs root" >&2; exit 1; }
	need
	local names=("$@")
	[ ${#names[@]} -gt 0 ] || names=(python3 numpy)
	for n in "${names[@]}"; do
		[ -n "${include[$n]:-}" ] || { echo "build.sh: unknown image $n (python3, numpy)" >&2; exit 2; }
		build "$n"
	done
}

main "$@"
