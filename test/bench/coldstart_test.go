//go:build linux

// Package bench_test keeps the cold start benchmark's peers from rotting
// unnoticed: one trial each of stargz-snapshotter on eStargz and of
// sluice-snapshotter, on the python3 benchmark image, on an unshaped
// loopback. A peer that cannot be built, set up or run fails the test.
package bench_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

func TestColdStartPeers(t *testing.T) {
	testenv.Root(t, "the cold start benchmark runs containerd, FUSE and runc")
	for _, tool := range []string{"containerd", "runc", "ctr", "debootstrap"} {
		_, err := exec.LookPath(tool)
		testenv.Need(t, err == nil, "%s is not installed (make test-deps installs it)", tool)
	}
	testenv.Need(t, !testing.Short(), "the peers' trial takes minutes; it runs without -short")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	testenv.Build(t, bin, "github.com/sluicehq/sluice/cmd/sluiced", "github.com/sluicehq/sluice/cmd/sluice-snapshotter")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	// The benchmark builds the python3 image once (debootstrap) and keeps
	// it in /var/cache/sluice-bench; its Go build cache keeps peerd.
	cmd := exec.CommandContext(ctx, "go", "run", "-C", "bench", "./coldstart",
		"-bin", bin, "-images", "python3", "-rates", "unshaped", "-trials", "1", "-modes", "lazy,estargz")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("coldstart (%v):\n%s", time.Since(start).Round(time.Second), out.String())
	if err != nil {
		t.Fatalf("the cold start benchmark failed: %v", err)
	}
	for _, mode := range []string{"lazy", "estargz"} {
		if !strings.Contains(out.String(), "python3  unshaped "+mode+" ") {
			t.Errorf("no %s row in the table", mode)
		}
	}
}
