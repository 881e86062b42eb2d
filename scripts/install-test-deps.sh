#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages through
# apt-get (only those missing, so a warm machine stays fast), Go tools
# through `go install` into $(go env GOPATH)/bin, containerd 2.x for the
# node tests into $(go env GOPATH)/containerd-v2/bin, and the Azure Blob
# Storage emulator, Azurite, from npm into
# $(go env GOPATH)/sluice-test-tools/azurite.
set -euo pipefail

# haproxy is for deploy/local-cluster.sh, which runs its own; the Debian
# service's default configuration serves nothing.
apt_packages=(zstd skopeo containerd runc debootstrap docker-registry busybox-static gzip podman jq postgresql-15 haproxy chromium zlib1g-dev)
go_tools=(
	"oras.land/oras/cmd/oras@v1.3.6"
	"github.com/google/go-containerregistry/cmd/crane@v0.22.1"
	"sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0"
	"github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)
containerd_v2=v2.4.2
# 3.35.0 is the newest Azurite that runs on Debian's Node.js 20.
azurite_version=3.35.0

# Node.js's own packages bring npm with node; Debian's nodejs does not.
command -v npm >/dev/null || apt_packages+=(nodejs npm)

missing=()
for p in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
	echo "installing Debian packages: ${missing[*]}"
	$SUDO apt-get update -qq
	# Debian's docker-registry starts a service on :5000 when installed; the
	# tests and benchmarks start their own instance on a port of their
	# choice. A policy-rc.d that answers 101 ("action forbidden") keeps the
	# install from starting any service, so that nothing needs stopping
	# afterwards. It is made only where the machine has none, and removed
	# even if the install fails.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		trap '$SUDO rm -f "$policy"' EXIT
		printf '#!/bin/sh\n# made by sluice scripts/install-test-deps.sh for one apt-get install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 755 "$policy"
		made_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [ -n "$made_policy" ]; then
		$SUDO rm -f "$policy"
		trap - EXIT
	fi
	if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
		if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
			# Nor may it start at the next boot.
			$SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
		elif [ -z "$made_policy" ] && command -v service >/dev/null; then
			# The machine's own policy-rc.d decided; stop the service this
			# install started through its init script, which stops the
			# process whose PID it recorded.
			$SUDO service docker-registry stop >/dev/null 2>&1 || true
		fi
	fi
fi

gobin="$(go env GOPATH)/bin"
for t in "${go_tools[@]}"; do
	name="${t%@*}"; name="${name##*/}"
	if [ ! -x "$gobin/$name" ]; then
		echo "installing $t"
		go install "$t"
	fi
done

# containerd 2.x stays off PATH, where containerd is Debian's 1.6: the node
# tests run both. Its own runc shim must sit beside it (the tests put that
# directory first on its PATH): with Debian's 1.6 shim, containers fail to
# start ("failed to start shim: ... type with url ...: not found").
v2bin="$(go env GOPATH)/containerd-v2/bin"
if ! "$v2bin/containerd" --version 2>/dev/null | grep -q " ${containerd_v2#v}" ||
	[ ! -x "$v2bin/ctr" ] || [ ! -x "$v2bin/containerd-shim-runc-v2" ]; then
	echo "installing containerd $containerd_v2 into $v2bin"
	GOBIN="$v2bin" go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$containerd_v2" \
		"github.com/containerd/containerd/v2/cmd/ctr@$containerd_v2" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_v2"
fi

# Azurite goes into a prefix of its own, outside the repository and off
# PATH; internal/testbackend looks for it there.
azurite_dir="$(go env GOPATH)/sluice-test-tools/azurite"
if [ "$("$azurite_dir/node_modules/.bin/azurite-blob" --version 2>/dev/null)" != "$azurite_version" ]; then
	echo "installing azurite $azurite_version into $azurite_dir"
	npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >/dev/null
fi
