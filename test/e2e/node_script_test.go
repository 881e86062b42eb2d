//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestNodeScript runs scripts/node.sh (what `make node` runs once the
// binaries are built) against a sluiced of the test's: it starts a
// containerd and a snapshotter in the scratch directory it is given,
// prints the commands to try a lazy start, and those commands, run as
// printed, pull the image lazily and run it. SIGINT (Ctrl-C), with a
// container still running, stops everything and removes the directory.
func TestNodeScript(t *testing.T) {
	requireNode(t)
	img := newNodeImage(t, "script", "e2e/node/script", ocispec.ImageConfig{Cmd: []string{"echo", "streamed-ok"}},
		map[string][]byte{"data/blob.bin": compressibleBytes(newRand(t), 1<<20)})
	reg, password := startStreamingRegistry(t, img)
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "node.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: the sockets' paths must fit in sun_path.
	parent, err := os.MkdirTemp("", "nd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(t, parent)
		_ = os.RemoveAll(parent)
	})
	dir := filepath.Join(parent, "node")
	creds := []string{"SLUICE_USERNAME=" + nodeToken, "SLUICE_PASSWORD=" + password}
	cl := newClients(t)
	cmd := exec.Command(script)
	cmd.Env = append(append(cl.env, "NODE_DIR="+dir, "NODE_REGISTRY="+reg.addr, "NODE_IMAGE="+img.repo+":v1", "BIN="+binDir), creds...)
	// Whatever the script leaves if the test fails half-way goes after it.
	d := startDaemonLogFile(t, "node.sh", cmd, filepath.Join(parent, "node.log"), func() {
		stopProcesses(t, "process of the node", append(processesWithArgs("--config", filepath.Join(dir, "containerd.toml")),
			processesWithArgs("--root", filepath.Join(dir, "snapshotter", "fusemanager"))...))
	})
	d.waitReady(t, 2*time.Minute, "node.sh prints how to try a lazy start", func() bool {
		return strings.Contains(d.output(), "Ctrl-C stops the node")
	})
	pull, run := printedCommand(t, d.output(), "/sluice pull "), printedCommand(t, d.output(), "ctr --address ")
	cl.env = append(cl.env, creds...)
	var res pulledLayers
	if text := cl.run("sh", "-c", pull); json.Unmarshal([]byte(text), &res) != nil || len(res.Layers) != len(img.Layers) {
		t.Fatalf("%s printed\n%s\nwant the image's %d layers", pull, text, len(img.Layers))
	}
	for _, l := range res.Layers {
		if !l.Streamed {
			t.Errorf("layer %s was not streamed by the printed pull", l.Digest)
		}
	}
	if got := cl.run("sh", "-c", run); got != "streamed-ok\n" {
		t.Errorf("%s printed %q, want %q", run, got, "streamed-ok\n")
	}
	if mounts := fuseMountsUnder(t, dir); len(mounts) < len(img.Layers) {
		t.Errorf("%d streamed layers are mounted in the node's directory, want %d: %v", len(mounts), len(img.Layers), mounts)
	}
	containerd := processesWithArgs("--config", filepath.Join(dir, "containerd.toml"))
	managers := processesWithArgs("--root", filepath.Join(dir, "snapshotter", "fusemanager"))
	if len(containerd) != 1 || len(managers) != 1 {
		t.Fatalf("the node runs %d containerd and %d FUSE managers, want one of each", len(containerd), len(managers))
	}

	// A container still running when the node stops holds the layers:
	// the script kills it first.
	sock := filepath.Join(dir, "containerd.sock")
	cl.run("ctr", "--address", sock, "run", "-d", "--snapshotter", "sluice", img.ref(reg.addr), "e2e-left-running", "/bin/busybox", "sleep", "600")
	if err := syscall.Kill(d.pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		d.exited <- err // for the cleanup
		if err != nil {
			t.Errorf("node.sh exited %v after SIGINT, want 0", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("node.sh still runs 2 minutes after SIGINT")
	}
	t.Logf("node.sh printed:\n%s", d.output())
	for _, pid := range append(containerd, managers...) {
		if !processGone(pid) {
			t.Errorf("process %d of the node still runs after node.sh exited", pid)
		}
	}
	if pids := processesWithArgs("--config", filepath.Join(dir, "snapshotter.yaml")); len(pids) > 0 {
		t.Errorf("the node's sluice-snapshotter still runs after node.sh exited: %v", pids)
	}
	if pids := processesWithArgs("-address", sock); len(pids) > 0 {
		t.Errorf("shims of the node's containerd still run after node.sh exited: %v", pids)
	}
	if mounts := fuseMountsUnder(t, parent); len(mounts) > 0 {
		t.Errorf("streamed layers are still mounted after node.sh exited: %v", mounts)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the node's directory %s is still there (%v)", dir, err)
	}
}

// printedCommand finds the command line containing marker in what
// node.sh printed.
func printedCommand(t *testing.T, text, marker string) string {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, marker) {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("node.sh printed no command with %q", marker)
	return ""
}
