//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerdPull pulls an image from sluiced into a containerd of the
// test's own, which fetches, verifies and unpacks every layer (checking the
// config's diff_ids), and reads the stored content back with ctr.
func TestContainerdPull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root to run; run the tests as root")
	}
	containerd := requireTool(t, "containerd")
	ctr := requireTool(t, "ctr")
	reg := startSluiced(t, t.TempDir())
	rng := newRand(t)
	img := newTestImage(t, rng, 4<<10, 1<<20)
	amd64, arm64 := newPlatformImage(t, rng, "amd64", 16<<10), newPlatformImage(t, rng, "arm64", 24<<10)
	ix := newTestIndex(t, amd64, arm64)
	oc := newOCIClient(t, reg.addr)
	oc.pushImage(t, "e2e/containerd", "v1", img)
	oc.pushIndex(t, "e2e/containerd", "multi", ix)

	sock := startContainerd(t, containerd, ctr)
	cl := newClients(t)
	ref := reg.addr + "/e2e/containerd:v1"
	ctrRun := func(args ...string) string {
		t.Helper()
		return cl.run(ctr, append([]string{"--address", sock, "--namespace", "e2e"}, args...)...)
	}

	// The native snapshotter needs no overlay support from the kernel.
	ctrRun("image", "pull", "--plain-http", "--snapshotter", "native", ref)

	found := false
	for _, line := range strings.Split(ctrRun("image", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			found = true
			if f[2] != img.ManifestDigest.String() {
				t.Errorf("containerd has %s at %s, want %s", ref, f[2], img.ManifestDigest)
			}
		}
	}
	if !found {
		t.Fatalf("ctr image ls does not list %s", ref)
	}
	if got := ctrRun("content", "get", img.ManifestDigest.String()); got != string(img.Manifest) {
		t.Errorf("containerd stored manifest\n%s\nwant\n%s", got, img.Manifest)
	}
	for d, want := range img.Blobs {
		if got := ctrRun("content", "get", d.String()); got != string(want) {
			t.Errorf("containerd stored blob %s with different content (%d bytes, want %d)", d, len(got), len(want))
		}
	}
	if check := ctrRun("image", "check", "--snapshotter", "native"); !strings.Contains(check, ref) || !strings.Contains(check, "complete") {
		t.Errorf("ctr image check does not report %s complete:\n%s", ref, check)
	}
	// One snapshot per layer, from unpacking.
	if n := committedSnapshots(ctrRun("snapshots", "--snapshotter", "native", "ls")); n != len(img.Layers) {
		t.Errorf("containerd unpacked %d layers, want %d", n, len(img.Layers))
	}

	// From an index, containerd fetches the platform it is asked for only.
	multi := reg.addr + "/e2e/containerd:multi"
	ctrRun("image", "pull", "--plain-http", "--snapshotter", "native", "--platform", "linux/amd64", multi)
	if got := ctrRun("content", "get", ix.Digest.String()); got != string(ix.Index) {
		t.Errorf("containerd stored index\n%s\nwant\n%s", got, ix.Index)
	}
	for d, want := range amd64.Blobs {
		if got := ctrRun("content", "get", d.String()); got != string(want) {
			t.Errorf("containerd stored amd64 blob %s with different content", d)
		}
	}
	for d := range arm64.Blobs {
		if _, _, err := cl.try(ctr, "--address", sock, "--namespace", "e2e", "content", "get", d.String()); err == nil {
			t.Errorf("containerd fetched arm64 blob %s for a linux/amd64 pull", d)
		}
	}
	if n := committedSnapshots(ctrRun("snapshots", "--snapshotter", "native", "ls")); n != len(img.Layers)+len(amd64.Layers) {
		t.Errorf("containerd has %d unpacked layers after pulling the index, want %d", n, len(img.Layers)+len(amd64.Layers))
	}
}

// committedSnapshots counts the committed snapshots `ctr snapshots ls` lists.
func committedSnapshots(out string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[len(f)-1] == "Committed" {
			n++
		}
	}
	return n
}

// startContainerd runs containerd with root, state and socket in a
// temporary directory and returns its socket once it answers. Cleanup
// stops its process group and unmounts whatever it left mounted there.
func startContainerd(t *testing.T, containerd, ctr string) string {
	t.Helper()
	// A short directory: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "opt"))
	writeFile(t, filepath.Join(dir, "config.toml"), []byte(config))

	cmd := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	d := startDaemon(t, "containerd", cmd, func() {
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove containerd directory: %v", err)
		}
	})
	d.waitReady(t, time.Minute, "containerd answers on "+sock, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, ctr, "--address", sock, "version").Run() == nil
	})
	return sock
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// The fifth field is the mount point, with spaces escaped as \040.
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, strings.ReplaceAll(fields[4], `\040`, " "))
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}
