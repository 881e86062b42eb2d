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

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestContainerdPull pulls an image from sluiced into a containerd of the
// test's own, which fetches, verifies and unpacks every layer (checking the
// config's diff_ids), and reads the stored content back with ctr.
func TestContainerdPull(t *testing.T) {
	testenv.Root(t, "containerd needs root to run")
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

	sock := startContainerd(t, containerdSetup{bin: containerd, ctr: ctr})
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

// containerdSetup says which containerd to run and how to configure it.
type containerdSetup struct {
	// bin and ctr are the daemon and its client.
	bin, ctr string
	// version of the config file: 2 (containerd 1.x, the default) or 3
	// (containerd 2.x).
	version int
	// cri keeps the CRI plugin, which is off otherwise.
	cri bool
	// extra is TOML added to the config: tables the base config lacks.
	extra string
	// pathDir, when set, goes first on the daemon's PATH, for the shim
	// built with it.
	pathDir string
	// configure, when set, edits the config file before the daemon starts
	// (sluice-snapshotter install, say).
	configure func(config string)
}

// startContainerd runs containerd with root, state and socket in a
// temporary directory and returns its socket once it answers. Cleanup
// kills the tasks it still runs, stops its process group and unmounts
// whatever it left mounted there.
func startContainerd(t *testing.T, cd containerdSetup) string {
	t.Helper()
	// A short directory: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove containerd directory: %v", err)
		}
	})
	sock := filepath.Join(dir, "containerd.sock")
	version := cd.version
	if version == 0 {
		version = 2
	}
	criPlugins := `"io.containerd.grpc.v1.cri"`
	if version == 3 {
		criPlugins += `, "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"`
	}
	disabled := ""
	if !cd.cri {
		disabled = "disabled_plugins = [" + criPlugins + "]"
	}
	config := fmt.Sprintf(`version = %d
root = %q
state = %q
%s

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, version, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, sock, filepath.Join(dir, "opt"))
	if version == 3 {
		// NRI's socket is machine-wide; these daemons need none.
		config += `
[plugins."io.containerd.nri.v1.nri"]
  disable = true
`
	}
	config += cd.extra
	configPath := filepath.Join(dir, "config.toml")
	writeFile(t, configPath, []byte(config))
	if cd.configure != nil {
		cd.configure(configPath)
	}

	cmd := exec.Command(cd.bin, "--config", configPath)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	if cd.pathDir != "" {
		cmd.Env = append(cmd.Env, "PATH="+cd.pathDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	d := startDaemon(t, "containerd", cmd, func() { killShims(t, sock) })
	d.waitReady(t, time.Minute, "containerd answers on "+sock, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return exec.CommandContext(ctx, cd.ctr, "--address", sock, "version").Run() == nil
	})
	// Before the daemon stops: its shims outlive it, and so would the
	// containers they run.
	t.Cleanup(func() { removeTasks(t, cd.ctr, sock) })
	return sock
}

// removeTasks kills and deletes every task containerd runs, in every
// namespace, so that their shims exit.
func removeTasks(t *testing.T, ctr, sock string) {
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctr, append([]string{"--address", sock}, args...)...).Output()
		if err != nil {
			t.Logf("ctr %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	for _, ns := range strings.Fields(run("namespaces", "ls", "-q")) {
		ids := strings.Fields(run("-n", ns, "tasks", "ls", "-q"))
		for _, id := range ids {
			run("-n", ns, "tasks", "kill", "-s", "SIGKILL", "--all", id)
		}
		if len(ids) > 0 && !poll(30*time.Second, func() bool { return !strings.Contains(run("-n", ns, "tasks", "ls"), "RUNNING") }) {
			t.Errorf("tasks of namespace %s still run 30s after SIGKILL", ns)
		}
		for _, id := range ids {
			run("-n", ns, "tasks", "delete", id)
		}
	}
}

// killShims kills what is left of the shims of the containerd on sock (they
// name its address on their command line) once it has stopped, should
// removeTasks have failed to end them.
func killShims(t *testing.T, sock string) {
	for _, pid := range processesWithArgs("-address", sock) {
		t.Logf("killing shim %d left by containerd on %s", pid, sock)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
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
