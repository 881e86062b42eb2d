#!/usr/bin/env bash
# Runs every benchmark program under bench/ (each directory with a main
# package), one after another, with its default flags, and prints their
# tables; each program's output is also kept in bench/results/NAME.txt.
#
#   bench/run.sh            run them all
#   bench/run.sh convert    run only bench/convert
set -uo pipefail
cd "$(dirname "$0")/.."

mkdir -p bench/results
only=("$@")
status=0
for dir in bench/*/; do
	name="$(basename "$dir")"
	[ -n "$(ls "$dir"*.go 2>/dev/null)" ] || continue
	grep -qs '^package main' "$dir"*.go || continue
	if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " == *" $name "* ]]; then
		continue
	fi
	echo "== bench/$name"
	# bench/ is a Go module of its own (its libraries stay out of the
	# product's go.mod); the programs work from the repository's root.
	if ! go run -C bench "./$name" | tee "bench/results/$name.txt"; then
		echo "bench/$name failed" >&2
		status=1
	fi
	echo
done
exit $status
