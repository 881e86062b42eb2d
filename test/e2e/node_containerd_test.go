//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nodeNamespace is the containerd namespace of `sluice pull` and `ctr run`.
const nodeNamespace = "e2e"

// nodeEnv is a node: a containerd of the test's own whose proxy snapshotter
// "sluice" is a sluice-snapshotter of the test's own.
type nodeEnv struct {
	t      *testing.T
	flavor containerdFlavor
	sock   string
	sn     *snapshotterProc
	cl     *clients
	cri    *criSetup
}

// criSetup turns on containerd's CRI plugin, with the snapshotter and the
// registry of the test.
type criSetup struct {
	registry, sandbox, user, password string
	// logDir holds the pods' logs.
	logDir string
}

// startNode starts a snapshotter, then a containerd configured for it by
// `sluice-snapshotter install`, with CRI when cri is not nil.
func startNode(t *testing.T, f containerdFlavor, o snapshotterOptions, cri *criSetup) *nodeEnv {
	t.Helper()
	n := &nodeEnv{t: t, flavor: f, cri: cri, sn: startSnapshotter(t, o), cl: newClients(t)}
	n.cl.env = append(n.cl.env, "SLUICE_USERNAME="+o.user, "SLUICE_PASSWORD="+o.password)
	setup := containerdSetup{bin: f.bin, ctr: f.ctr, version: f.configVersion, pathDir: f.dir}
	if cri != nil {
		setup.cri = true
		setup.extra = cri.config(f.configVersion)
		cri.logDir = t.TempDir()
	}
	setup.configure = func(config string) {
		args := []string{"install", "--no-systemd", "--containerd-config", config, "--address", n.sn.address, "--root", n.sn.root}
		// For 1.6, install takes the version from the file (2); for 2.x it
		// is given, as `containerd --version` on PATH is Debian's 1.6.
		if f.configVersion == 3 {
			args = append(args, "--config-version", "3")
		}
		if cri == nil {
			args = append(args, "--no-cri")
		}
		out := n.cl.run(snapshotterBin, args...)
		if !strings.Contains(out, "wrote "+config) {
			t.Errorf("sluice-snapshotter install printed %q, want that it wrote %s", out, config)
		}
		if out := n.cl.run(snapshotterBin, args...); !strings.Contains(out, "already up to date") {
			t.Errorf("sluice-snapshotter install run twice printed %q the second time, want that nothing changed", out)
		}
		b, _ := os.ReadFile(config)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("containerd config:\n%s", b)
			}
		})
	}
	n.sock = startContainerd(t, setup)
	return n
}

// config is the CRI part of containerd's config, before install adds the
// snapshotter: the sandbox image, plain HTTP and the node's credentials
// for the registry, and what containers need on this machine.
func (c *criSetup) config(version int) string {
	registry := func(table string) string {
		return fmt.Sprintf(`
[%[1]s.registry.mirrors.%[2]q]
  endpoint = ["http://%[2]s"]

[%[1]s.registry.configs.%[2]q.auth]
  username = %[3]q
  password = %[4]q
`, table, c.registry, c.user, c.password)
	}
	// restrict_oom_score_adj: without it runc fails here with "can't get
	// final child's PID from pipe".
	if version == 2 {
		const cri = `plugins."io.containerd.grpc.v1.cri"`
		return fmt.Sprintf(`
[%s]
  stream_server_port = "0"
  restrict_oom_score_adj = true
  sandbox_image = %q
`, cri, c.sandbox) + registry(cri)
	}
	const images = `plugins."io.containerd.cri.v1.images"`
	return fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true

[%s.pinned_images]
  sandbox = %q
`, images, c.sandbox) + registry(images)
}

// ctr runs ctr against the node's containerd in nodeNamespace.
func (n *nodeEnv) ctr(args ...string) string {
	n.t.Helper()
	return n.cl.run(n.flavor.ctr, append([]string{"--address", n.sock, "--namespace", nodeNamespace}, args...)...)
}

// pull runs `sluice pull` of img and checks that it reports the image's
// layers.
func (n *nodeEnv) pull(img *nodeImage) pullResult {
	t := n.t
	t.Helper()
	ref := img.ref(n.sn.registry)
	out := n.cl.run(sluiceBin, "pull", ref, "--address", n.sock, "--namespace", nodeNamespace, "--plain-http")
	var res pullResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("sluice pull printed what is not its JSON result: %v\n%s", err, out)
	}
	if res.Digest != img.ManifestDigest || len(res.Layers) != len(img.Layers) {
		t.Fatalf("sluice pull of %s reports %s with %d layers, want %s with %d:\n%s", ref, res.Digest, len(res.Layers), img.ManifestDigest, len(img.Layers), out)
	}
	for i, l := range res.Layers {
		if l.Digest != img.Layers[i].Digest {
			t.Errorf("sluice pull reports layer %d as %s, want %s", i, l.Digest, img.Layers[i].Digest)
		}
	}
	return res
}

// run runs script in a container of img with `ctr run --rm` and returns
// its output, failing the test if it does not exit 0.
func (n *nodeEnv) run(img *nodeImage, id, script string) string {
	n.t.Helper()
	stdout, stderr, err := n.tryRun(img, id, script, "")
	if err != nil {
		n.t.Fatalf("ctr run %s: %v\nstdout:\n%s\nstderr:\n%s", id, err, stdout, stderr)
	}
	return stdout
}

// tryRun runs script in a container of img with `ctr run --rm`; out, when
// set, is mounted read-write at /out.
func (n *nodeEnv) tryRun(img *nodeImage, id, script, out string) (stdout, stderr string, err error) {
	n.t.Helper()
	args := []string{"--address", n.sock, "--namespace", nodeNamespace, "run", "--rm", "--snapshotter", "sluice"}
	if out != "" {
		args = append(args, "--mount", "type=bind,src="+out+",dst=/out,options=rbind:rw")
	}
	args = append(args, img.ref(n.sn.registry), id, "/bin/busybox", "sh", "-c", script)
	return n.cl.try(n.flavor.ctr, args...)
}

// removeContainer kills a container started with `ctr run -d` and removes
// it, ignoring errors (it is cleanup).
func (n *nodeEnv) removeContainer(id string) {
	ctr := func(args ...string) error {
		_, _, err := n.cl.try(n.flavor.ctr, append([]string{"--address", n.sock, "--namespace", nodeNamespace}, args...)...)
		return err
	}
	_ = ctr("tasks", "kill", "-s", "SIGKILL", id)
	_ = poll(30*time.Second, func() bool { return ctr("tasks", "delete", id) == nil })
	_ = ctr("containers", "delete", id)
}

// testSnapshotterKilled kills the snapshotter with SIGKILL while a
// container reads files one after the other (comparing each with its
// sha256): the container keeps reading, files it had not read yet
// included, while the snapshotter is down; once it is back (finding the
// FUSE manager it had started), a new container starts and reads every
// file; no read ever fails.
// startReader runs a container that checks the image's files against
// /data/sums.txt over and over, one file every 50 ms (the first pass takes
// seconds); readLog returns its lines so far, and waitReads waits until it
// has read n files, failing the test at the first bad read.
func startReader(t *testing.T, n *nodeEnv, img *nodeImage, id string) (readLog func() (ok, bad []string), waitReads func(n int, what string)) {
	out := t.TempDir()
	reads := filepath.Join(out, "reads.log")
	script := `n=0
while :; do
  while read -r sum f; do
    got=$(busybox sha256sum "$f" 2>&1)
    if [ "${got%% *}" = "$sum" ]; then echo "ok $n $f"; else echo "BAD $n $f $got"; fi
    n=$((n+1))
    busybox usleep 50000
  done < /data/sums.txt
done >> /out/reads.log 2>&1`
	n.ctr("run", "-d", "--snapshotter", "sluice", "--mount", "type=bind,src="+out+",dst=/out,options=rbind:rw",
		img.ref(n.sn.registry), id, "/bin/busybox", "sh", "-c", script)
	t.Cleanup(func() { n.removeContainer(id) })
	readLog = func() (ok, bad []string) {
		b, _ := os.ReadFile(reads)
		// The last line may be half written.
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[:len(lines)-1] {
			switch {
			case strings.HasPrefix(line, "ok "):
				ok = append(ok, line)
			case line != "":
				bad = append(bad, line)
			}
		}
		return ok, bad
	}
	waitReads = func(count int, what string) {
		t.Helper()
		waitFor(t, time.Minute, fmt.Sprintf("the reader has read %d files %s", count, what), func() bool {
			ok, bad := readLog()
			if len(bad) > 0 {
				t.Fatalf("a read failed in the reading container:\n%s", strings.Join(bad, "\n"))
			}
			return len(ok) >= count
		})
	}
	return readLog, waitReads
}

func testSnapshotterKilled(t *testing.T, n *nodeEnv, img *nodeImage) {
	n.pull(img)
	readLog, waitReads := startReader(t, n, img, "e2e-reader")
	waitReads(5, "before the kill")
	managers := n.sn.managerPIDs()
	if len(managers) != 1 {
		t.Fatalf("found FUSE managers %v for the snapshotter, want one", managers)
	}
	n.sn.d.kill(t)
	atKill, _ := readLog()
	t.Logf("killed the snapshotter (pid %d) after %d reads; its FUSE manager is %d", n.sn.d.pid, len(atKill), managers[0])
	waitReads(len(atKill)+20, "while the snapshotter is down")
	if len(atKill) >= len(img.sums) {
		t.Errorf("the reader had read every file once before the kill (%d reads), so no first read came while the snapshotter was down", len(atKill))
	}
	if processGone(managers[0]) {
		t.Fatalf("the FUSE manager %d died with the snapshotter", managers[0])
	}

	n.sn.start()
	if got := n.sn.managerPIDs(); len(got) != 1 || got[0] != managers[0] {
		t.Errorf("after the restart the FUSE managers are %v, want the same one, %d", got, managers[0])
	}
	if lines := n.sn.logLines("FUSE manager ready", "started=false"); len(lines) == 0 {
		t.Errorf("the restarted snapshotter did not log that it found the running FUSE manager")
	}
	if lines := n.sn.logLines("streamed layers restored"); len(lines) != 2 || !strings.Contains(lines[1], " failed=0") {
		t.Errorf("the restarted snapshotter did not restore its streamed layers: %q", lines)
	}
	// containerd's connection to the snapshotter comes back on its own.
	waitFor(t, time.Minute, "containerd reaches the restarted snapshotter", func() bool {
		_, _, err := n.cl.try(n.flavor.ctr, "--address", n.sock, "--namespace", nodeNamespace, "snapshots", "--snapshotter", "sluice", "ls")
		return err == nil
	})
	stdout := n.run(img, "e2e-after-restart", "busybox sha256sum -c /data/sums.txt")
	if ok := strings.Count(stdout, ": OK\n"); ok != len(img.sums) {
		t.Errorf("after the restart, a new container checked %d files OK, want %d:\n%s", ok, len(img.sums), stdout)
	}
	afterRestart, _ := readLog()
	waitReads(len(afterRestart)+5, "after the restart")
	ok, _ := readLog()
	t.Logf("the reader read %d files without a failure: %d before the kill, %d until the restart", len(ok), len(atKill), len(afterRestart))
}

// testUnmountedByHand detaches every streamed layer's FUSE mount behind the
// snapshotter's back while a container uses them: a new container still
// gets the image's files (the snapshotter finds the mountpoints empty and
// has them mounted again; the manager once answered that an empty
// mountpoint was served), and the running container keeps reading through
// the mount it holds. Then, with no container holding them, the mounts are
// detached again, which ends their FUSE connections: the layers are
// mounted again from the node's cache, nothing fetched again.
func testUnmountedByHand(t *testing.T, n *nodeEnv, img *nodeImage) {
	n.pull(img)
	const holder = "e2e-holder"
	n.ctr("run", "-d", "--snapshotter", "sluice", img.ref(n.sn.registry), holder, "/bin/busybox", "sleep", "600")
	removed := false
	t.Cleanup(func() {
		if !removed {
			n.removeContainer(holder)
		}
	})
	if mounts := detachFuseMounts(t, n.sn.dir); len(mounts) < len(img.Layers) {
		t.Fatalf("%d fuse.sluice mounts under the snapshotter's root, want at least %d: %v", len(mounts), len(img.Layers), mounts)
	}
	want := img.sums["/data/blob.bin"] + "  /data/blob.bin\n"
	if got := n.run(img, "e2e-remounted", "busybox sha256sum /data/blob.bin"); got != want {
		t.Errorf("a container started after the unmount printed %q, want %q", got, want)
	}
	if got := n.ctr("tasks", "exec", "--exec-id", "e2e-check", holder, "/bin/busybox", "sha256sum", "/data/blob.bin"); got != want {
		t.Errorf("the container that held the old mounts printed %q, want %q", got, want)
	}
	if lines := n.sn.managerLogLines("a layer is no longer mounted where the manager mounted it; mounting it again"); len(lines) < len(img.Layers) {
		t.Errorf("the FUSE manager logged %d remounts, want at least %d (one per layer): %q", len(lines), len(img.Layers), lines)
	}
	if got := fuseMountsUnder(t, n.sn.dir); len(got) < len(img.Layers) {
		t.Errorf("%d fuse.sluice mounts after the remount, want at least %d: %v", len(got), len(img.Layers), got)
	}

	n.removeContainer(holder)
	removed = true
	const onDemand = `sluice_snapshotter_fetched_bytes_total{kind="on_demand"}`
	before := n.sn.metrics()[onDemand]
	detachFuseMounts(t, n.sn.dir)
	if got := n.run(img, "e2e-remounted-again", "busybox sha256sum /data/blob.bin"); got != want {
		t.Errorf("a container started after the second unmount printed %q, want %q", got, want)
	}
	if after := n.sn.metrics()[onDemand]; after != before {
		t.Errorf("mounting the layers again fetched %v bytes on demand: their chunks should have stayed in the cache", after-before)
	}
}

// detachFuseMounts detaches, as someone unmounting by hand would, every
// fuse.sluice mount below dir, and returns their mount points.
func detachFuseMounts(t *testing.T, dir string) []string {
	t.Helper()
	mounts := fuseMountsUnder(t, dir)
	for _, mp := range mounts {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", mp, err)
		}
	}
	return mounts
}

// logLines returns the lines of the snapshotter's log with msg that contain
// every one of attrs (key=value as its text log writes them).
func (s *snapshotterProc) logLines(msg string, attrs ...string) []string {
	return logLinesOf(s.logText(), msg, attrs...)
}

// managerLogLines is logLines of the FUSE manager's log.
func (s *snapshotterProc) managerLogLines(msg string, attrs ...string) []string {
	return logLinesOf(s.managerLog(), msg, attrs...)
}

func logLinesOf(text, msg string, attrs ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(text, "\n") {
		if !strings.Contains(line, fmt.Sprintf("msg=%q", msg)) && !strings.Contains(line, "msg="+msg+" ") {
			continue
		}
		for _, a := range attrs {
			if !strings.Contains(line, a) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}
