#!/usr/bin/env bash
# Builds the Debian root filesystems the benchmarks use, once, into a cache
# directory outside the repository, and packs their layers (tar.gz, as
# `docker build` would push them).
#
#   bench/images/build.sh [NAME...]      NAME: python3, numpy, webapp (default: all)
#
# python3 and numpy are one layer each: a debootstrap root. webapp has three,
# as a Dockerfile FROM a language image makes them: the python3 image's layer
# as its base (the same blob, shared), a runtime layer (apt-get install of a
# web stack in a container of that base, lists and package cache removed
# after, so the layer also whites out files of the base) and an app layer
# (/app: a small Flask and SQLAlchemy service).
#
# Environment:
#   SLUICE_BENCH_CACHE  cache directory (default /var/cache/sluice-bench)
#   DEBIAN_MIRROR       mirror (default http://deb.debian.org/debian)
#   DEBIAN_SUITE        suite (default bookworm)
#
# Output, per layer: $SLUICE_BENCH_CACHE/layers/LAYER.tar.gz (and LAYER.tar,
# the uncompressed layer, kept for benchmarks that need the raw bytes); an
# image's layers are named in the table below. A layer that is already
# built is left alone; delete its files to rebuild it. Prints the path of
# each layer of each image on stdout, one a line, bottom layer first.
set -euo pipefail

cache="${SLUICE_BENCH_CACHE:-/var/cache/sluice-bench}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-bookworm}"

# The debootstrap roots: packages added to minbase.
declare -A include=(
	[python3]="python3"
	[numpy]="python3,python3-numpy,python3-scipy,gcc"
)

# Each image's layers, bottom first.
declare -A layers=(
	[python3]="python3"
	[numpy]="numpy"
	[webapp]="python3 webapp-runtime webapp-app"
)

# What webapp's runtime layer installs on the python3 root.
webapp_packages="python3-flask python3-sqlalchemy python3-requests python3-yaml python3-babel"

need() {
	local missing=() c
	# command:package
	for c in debootstrap:debootstrap zstd:zstd getfattr:attr; do
		command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "installing ${missing[*]}" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	fi
}

# rootfs NAME makes the debootstrap root NAME, once.
rootfs() {
	local name="$1" rootfs="$cache/rootfs/$1"
	[ -e "$rootfs/.sluice-complete" ] && return
	echo "debootstrap $name ($suite, minbase + ${include[$name]})" >&2
	rm -rf "$rootfs.tmp"
	mkdir -p "$cache/rootfs"
	# The root filesystem is kept as debootstrap leaves it, downloaded
	# packages included (var/cache/apt/archives): that is the layer the
	# reference figures (python3: ~260 MB of tar, 121 MB gzip) were
	# measured on, and its already-compressed .deb files are the hard case
	# for a recompressor.
	debootstrap --variant=minbase --include="${include[$name]}" \
		"$suite" "$rootfs.tmp" "$mirror" >&2
	touch "$rootfs.tmp/.sluice-complete"
	rm -rf "$rootfs"
	mv "$rootfs.tmp" "$rootfs"
}

# runtime_rootfs makes the directory of webapp's runtime layer, once: the
# upper directory of an overlay on the python3 root in which apt-get ran,
# as a container runtime's diff of a `RUN` step, with overlayfs's
# whiteouts turned into the OCI layer's.
runtime_rootfs() {
	local dir="$cache/rootfs/webapp-runtime" tmp="$cache/rootfs/webapp-runtime.tmp"
	[ -e "$dir/.sluice-complete" ] && return
	rootfs python3
	echo "webapp-runtime: apt-get install $webapp_packages on the python3 root" >&2
	rm -rf "$tmp"
	mkdir -p "$tmp/upper" "$tmp/work" "$tmp/merged"
	mount -t overlay overlay -o "lowerdir=$cache/rootfs/python3,upperdir=$tmp/upper,workdir=$tmp/work" "$tmp/merged"
	mount -t proc proc "$tmp/merged/proc"
	local status=0
	chroot "$tmp/merged" /bin/sh -c "apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $webapp_packages &&
		apt-get clean && rm -rf /var/lib/apt/lists/*" >&2 || status=$?
	umount "$tmp/merged/proc"
	umount "$tmp/merged"
	[ "$status" -eq 0 ] || { echo "build.sh: apt-get in the webapp-runtime overlay failed" >&2; exit 1; }
	whiteouts "$tmp/upper"
	touch "$tmp/upper/.sluice-complete"
	rm -rf "$dir"
	mv "$tmp/upper" "$dir"
	rm -rf "$tmp"
}

# whiteouts DIR turns overlayfs's whiteouts in an upper directory into the
# OCI layer's: a character device 0/0 becomes an empty .wh.NAME, and an
# opaque directory gets a .wh..wh..opq (tar leaves out the overlay's
# xattrs).
whiteouts() {
	local f
	find "$1" -type c -print0 | while IFS= read -r -d '' f; do
		if [ "$(stat -c %t:%T "$f")" = 0:0 ]; then
			rm "$f"
			: >"$(dirname "$f")/.wh.$(basename "$f")"
		fi
	done
	find "$1" -type d -print0 | while IFS= read -r -d '' f; do
		if [ "$(getfattr --absolute-names --only-values -n trusted.overlay.opaque "$f" 2>/dev/null)" = y ]; then
			: >"$f/.wh..wh..opq"
		fi
	done
}

# app_rootfs makes the directory of webapp's app layer, once: /app, a
# service that at start reads its configuration (YAML), loads its seed
# data (CSV, 2,000 rows) into SQLite through SQLAlchemy, renders a Jinja
# template through Flask and formats dates with Babel, then prints a line.
app_rootfs() {
	local dir="$cache/rootfs/webapp-app"
	[ -e "$dir/.sluice-complete" ] && return
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp/app/templates" "$dir.tmp/app/static"
	cat >"$dir.tmp/app/main.py" <<'PY'
import csv
import datetime
import os
import sys

import requests  # the service's outbound client
import yaml
from babel.dates import format_datetime
from flask import Flask, jsonify, render_template
from sqlalchemy import Column, Integer, String, create_engine, func, insert, select
from sqlalchemy.orm import Session, declarative_base

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "config.yaml")) as f:
    config = yaml.safe_load(f)

Base = declarative_base()


class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    name = Column(String, nullable=False)
    category = Column(String, nullable=False)
    price = Column(Integer, nullable=False)


engine = create_engine(config["database"])
Base.metadata.create_all(engine)
with engine.begin() as conn, open(os.path.join(here, "seed.csv"), newline="") as f:
    conn.execute(insert(Item), [dict(r, id=int(r["id"]), price=int(r["price"])) for r in csv.DictReader(f)])

app = Flask(__name__)
http = requests.Session()


@app.route("/")
def index():
    with Session(engine) as s:
        rows = s.execute(select(Item.category, func.count()).group_by(Item.category)).all()
    now = format_datetime(datetime.datetime(2024, 1, 1), locale=config["locale"])
    return render_template("index.html", title=config["title"], rows=rows, now=now)


@app.route("/items/<category>")
def items(category):
    with Session(engine) as s:
        return jsonify([i.name for i in s.scalars(select(Item).where(Item.category == category).limit(10))])


if __name__ == "__main__":
    client = app.test_client()
    page = client.get("/")
    listed = client.get("/items/c7")
    print("webapp ready:", page.status_code, len(page.data), "bytes,", len(listed.get_json()), "items", flush=True)
    sys.exit(0)
PY
	cat >"$dir.tmp/app/config.yaml" <<'YAML'
title: Inventory
database: "sqlite://"
locale: de_DE
YAML
	cat >"$dir.tmp/app/templates/index.html" <<'HTML'
<!doctype html>
<title>{{ title }}</title>
<link rel="stylesheet" href="/static/site.css">
<h1>{{ title }}</h1>
<p>{{ now }}</p>
<table>{% for category, n in rows %}<tr><td>{{ category }}</td><td>{{ n }}</td></tr>{% endfor %}</table>
HTML
	printf 'body { font-family: sans-serif; }\ntable { border-collapse: collapse; }\n' >"$dir.tmp/app/static/site.css"
	awk 'BEGIN { print "id,name,category,price"; for (i = 1; i <= 2000; i++) printf "%d,item %05d,c%d,%d\n", i, i, i % 17, (i * 7919) % 10000 }' \
		>"$dir.tmp/app/seed.csv"
	touch "$dir.tmp/.sluice-complete"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}

# pack NAME DIR packs DIR as the layer NAME.
pack() {
	local layer="$cache/layers/$1"
	mkdir -p "$cache/layers"
	echo "packing $layer.tar.gz" >&2
	tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --xattrs-exclude='trusted.overlay.*' \
		--exclude=./.sluice-complete -C "$2" -cf "$layer.tar.tmp" .
	gzip -6 -c "$layer.tar.tmp" >"$layer.tar.gz.tmp"
	mv "$layer.tar.tmp" "$layer.tar"
	mv "$layer.tar.gz.tmp" "$layer.tar.gz"
}

# layer NAME builds the layer NAME unless it is built, and prints its path.
layer() {
	local name="$1" layer="$cache/layers/$1"
	if [ ! -s "$layer.tar.gz" ] || [ ! -s "$layer.tar" ]; then
		case "$name" in
		webapp-runtime) runtime_rootfs ;;
		webapp-app) app_rootfs ;;
		*) rootfs "$name" ;;
		esac
		pack "$name" "$cache/rootfs/$name"
	fi
	echo "$layer.tar.gz"
}

main() {
	[ "$(id -u)" -eq 0 ] || { echo "build.sh: debootstrap needs root" >&2; exit 1; }
	need
	# One build at a time: test packages and benchmarks running side by
	# side wait for each other instead of debootstrapping into one
	# directory.
	mkdir -p "$cache"
	exec 9>"$cache/.build.lock"
	flock 9
	local names=("$@") n l
	[ ${#names[@]} -gt 0 ] || names=(python3 numpy webapp)
	for n in "${names[@]}"; do
		[ -n "${layers[$n]:-}" ] || { echo "build.sh: unknown image $n (python3, numpy, webapp)" >&2; exit 2; }
		for l in ${layers[$n]}; do
			layer "$l"
		done
	done
}

main "$@"
