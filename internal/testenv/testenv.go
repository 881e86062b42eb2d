// Package testenv decides what a test does when the machine lacks
// something it needs (root, /dev/fuse, a tool that `make test-deps`
// installs): a developer's `go test` skips it with the reason, while
// `make test`, which installs and starts everything the tests need and is
// what CI runs, fails it, so that a missing install step cannot pass as a
// green run of fewer tests.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// StrictVar is the environment variable `make test` sets: with it, a need
// the machine does not meet fails the test.
const StrictVar = "SLUICE_TEST_STRICT"

// Need skips t, or fails it under `make test`, unless ok; the message says
// what is missing and how to get it.
func Need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(StrictVar) != "" {
		t.Fatalf("%s (%s is set, as make test sets it: what the tests need must be here)", msg, StrictVar)
	}
	t.Skip(msg)
}

// Missing is Need for a need already found unmet.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	Need(t, false, format, args...)
}

// Root needs the test to run as root, for the reason why.
func Root(t testing.TB, why string) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root: %s; run the tests as root (make test in CI does)", why)
}

// FUSE needs root and /dev/fuse, for a test that mounts FUSE file systems.
func FUSE(t testing.TB) {
	t.Helper()
	Root(t, "the test mounts FUSE file systems")
	_, err := os.Stat("/dev/fuse")
	Need(t, err == nil, "no /dev/fuse (%v): FUSE file systems cannot be mounted here", err)
}
