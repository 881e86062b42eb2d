// Package e2e holds the end-to-end tests of sluiced. They build the binaries
// once, run it on loopback ports with temporary data directories, and drive
// it with the clients people use (skopeo, oras, crane, containerd's ctr) and
// with plain HTTP pushers that a crash test kills the registry under. The
// artifact streaming tests run a converted image in containerd, kill or
// cancel large conversions midway, and import from a second registry
// (Debian's docker-registry, or another sluiced). The node tests run
// sluice-snapshotter under Debian's containerd 1.6 and a containerd 2.x
// built with go install: lazy pulls with `sluice pull`, `ctr run` and CRI
// (crictl), the fallback, a tampered chunk, a kill -9 of the snapshotter
// under a reading container and a full chunk cache.
//
// A missing client skips its test, or fails it under `make test`, which
// installs them all with `make test-deps`. Set SLUICE_E2E_RACE=1 to build
// sluiced with the race detector as well (slow on a cold build cache); a
// race report in its log then fails the test.
package e2e
