//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestSnapshotterStop drives `sluice-snapshotter stop` on a node with a
// streamed image: it refuses, changing nothing, while a container runs on
// the image's layers; once the container is gone it stops the snapshotter
// and the FUSE manager and leaves no mount; the node starts again from
// there; --force detaches layers in use, and the container's reads fail.
// On the way, `sluice pull` of an image already on the node says its
// layers are present, not streamed.
func TestSnapshotterStop(t *testing.T) {
	f := requireNode(t)
	img := newNodeImage(t, "stop", "e2e/node/stop", ocispec.ImageConfig{Cmd: []string{"echo", "streamed-ok"}},
		map[string][]byte{"data/blob.bin": compressibleBytes(newRand(t), 1<<20)})
	reg, password := startStreamingRegistry(t, img)
	// No background completion: the layers are read only as containers
	// read them, so a read after a forced stop needs the manager.
	n := startNode(t, f, snapshotterOptions{registry: reg.addr, user: nodeToken, password: password,
		cacheMaxBytes: 1 << 30, backgroundDelay: "1h"}, nil)

	t.Run("pull of an image on the node says present", func(t *testing.T) { testPullPresent(t, n, img) })
	t.Run("stop refuses while a container runs, then stops everything", func(t *testing.T) { testStopRefusesThenStops(t, n, img) })
	t.Run("the node starts again after stop", func(t *testing.T) {
		n.sn.start()
		n.waitSnapshotterReachable()
		if got := n.run(img, "e2e-after-stop", "busybox cat /etc/streamed.txt"); got != streamedText {
			t.Errorf("the container printed %q, want %q", got, streamedText)
		}
		if mounts := fuseMountsUnder(t, n.sn.dir); len(mounts) < len(img.Layers) {
			t.Errorf("%d fuse.sluice mounts after the restart, want at least %d: %v", len(mounts), len(img.Layers), mounts)
		}
	})
	t.Run("stop --force detaches layers in use", func(t *testing.T) { testStopForce(t, n, img) })
}

// requireNode skips the test where a node cannot run, and returns the
// containerd to run: Debian's when there is one.
func requireNode(t *testing.T) containerdFlavor {
	t.Helper()
	testenv.FUSE(t)
	requireTool(t, "skopeo")
	requireTool(t, "runc")
	flavors := containerdFlavors()
	testenv.Need(t, flavors[0].missing == "", "%s", flavors[0].missing)
	nodeBinaries(t)
	return flavors[0]
}

// startStreamingRegistry starts a sluiced with authentication on, pushes
// each image into a repository with streaming on and waits for its
// streaming artifact. It returns the registry and the password of the
// pull-only token nodeToken.
func startStreamingRegistry(t *testing.T, imgs ...*nodeImage) (*sluiced, string) {
	t.Helper()
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, admin, nodeToken)
	cl := newClients(t)
	for _, img := range imgs {
		admin.enableStreaming(t, img.repo)
		src := filepath.Join(cl.dir, img.name)
		img.writeLayout(t, src, "v1")
		cl.run(requireTool(t, "skopeo"), "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
			"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(reg.addr))
		admin.waitStreamingReferrers(t, img.repo, img.ManifestDigest, 1, conversionTimeout)
	}
	return reg, password
}

// pulledLayers is the layers of `sluice pull`'s JSON, present included.
type pulledLayers struct {
	Layers []struct {
		Digest   digest.Digest `json:"digest"`
		Streamed bool          `json:"streamed"`
		Present  bool          `json:"present"`
	} `json:"layers"`
}

// testPullPresent pulls an image twice: the first pull streams every
// layer, the second finds them all on the node and says so, in JSON and in
// the table, which has the image's digest and the time the pull took.
func testPullPresent(t *testing.T, n *nodeEnv, img *nodeImage) {
	pull := func(args ...string) string {
		return n.cl.run(sluiceBin, append([]string{"pull", img.ref(n.sn.registry), "--address", n.sock, "--namespace", nodeNamespace}, args...)...)
	}
	for i, want := range []string{"streamed", "present"} {
		out := pull()
		var res pulledLayers
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Layers) != len(img.Layers) {
			t.Fatalf("pull %d printed %v layers (%v), want %d:\n%s", i+1, len(res.Layers), err, len(img.Layers), out)
		}
		for _, l := range res.Layers {
			if l.Streamed != (want == "streamed") || l.Present != (want == "present") {
				t.Errorf("pull %d: layer %s has streamed %v, present %v; want only %s", i+1, l.Digest, l.Streamed, l.Present, want)
			}
		}
	}
	table := pull("-o", "table")
	t.Logf("sluice pull -o table of an image on the node:\n%s", table)
	if !strings.Contains(table, img.ManifestDigest.String()) {
		t.Errorf("the table lacks the image's digest %s", img.ManifestDigest)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(img.ref(n.sn.registry)) + `\s.*\s` + strconv.Itoa(len(img.Layers)) + ` present\s+[0-9.]+(ms|s)$`).MatchString(table) {
		t.Errorf("the table's image row does not say %d present and the time taken", len(img.Layers))
	}
	for _, l := range img.Layers {
		if !regexp.MustCompile(regexp.QuoteMeta(l.Digest.String()) + `\s+\d+\s+present\n`).MatchString(table) {
			t.Errorf("the table does not say layer %s is present", l.Digest)
		}
	}
	if strings.Contains(table, "streamed") {
		t.Errorf("the table says streamed for a pull that streamed nothing")
	}
}

// stop runs `sluice-snapshotter stop` for the node's snapshotter.
// waitSnapshotterReachable waits until containerd reaches the snapshotter
// again after a restart: its connection to the proxy plugin comes back
// after gRPC's reconnection backoff, which a loaded machine lengthens.
func (n *nodeEnv) waitSnapshotterReachable() {
	n.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, stderr, err := n.cl.try(n.flavor.ctr, "--address", n.sock, "--namespace", nodeNamespace, "snapshots", "--snapshotter", "sluice", "ls")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("containerd does not reach the restarted snapshotter: %v\n%s", err, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (n *nodeEnv) stop(args ...string) (stdout, stderr string, err error) {
	return n.cl.try(snapshotterBin, append([]string{"stop", "--root", n.sn.root, "--address", n.sn.address, "--config", n.sn.config}, args...)...)
}

// startHolder starts a container of img that sleeps, holding its layers,
// and returns its process ID; cleanup removes it.
func (n *nodeEnv) startHolder(img *nodeImage, id string) int {
	t := n.t
	t.Helper()
	n.ctr("run", "-d", "--snapshotter", "sluice", img.ref(n.sn.registry), id, "/bin/busybox", "sleep", "600")
	t.Cleanup(func() { n.removeContainer(id) })
	for _, line := range strings.Split(n.ctr("tasks", "ls"), "\n") {
		if fields := strings.Fields(line); len(fields) >= 3 && fields[0] == id && fields[2] == "RUNNING" {
			pid, err := strconv.Atoi(fields[1])
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("ctr tasks ls does not list %s running", id)
	return 0
}

// readInContainer reads a file of a running container through its root.
func readInContainer(pid int, path string) ([]byte, error) {
	return os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, path))
}

// testStopRefusesThenStops runs stop while a container holds the image's
// layers (refused: the layers, the container's root file system and
// --force are named, and nothing changes), then after the container is
// gone (the snapshotter and the FUSE manager exit, every layer is
// unmounted), then once more (nothing to stop).
func testStopRefusesThenStops(t *testing.T, n *nodeEnv, img *nodeImage) {
	const id = "e2e-stop-holder"
	pid := n.startHolder(img, id)
	mountsBefore := fuseMountsUnder(t, n.sn.dir)
	managers := n.sn.managerPIDs()
	if len(managers) != 1 {
		t.Fatalf("%d FUSE managers run for the snapshotter, want 1: %v", len(managers), managers)
	}

	stdout, stderr, err := n.stop()
	t.Logf("stop with a container running: %v\n%s%s", err, stdout, stderr)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("stop with a container running exited %v, want a non-zero exit", err)
	}
	for _, want := range []string{"in use", "--force", id, img.ref(n.sn.registry)} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stop's refusal does not mention %q", want)
		}
	}
	for _, mp := range mountsBefore {
		if !strings.Contains(stderr, mp+" ") {
			t.Errorf("stop's refusal does not name the mountpoint %s", mp)
		}
	}
	if got := fuseMountsUnder(t, n.sn.dir); len(got) != len(mountsBefore) {
		t.Errorf("after the refusal %d layers are mounted, before it %d", len(got), len(mountsBefore))
	}
	if b, err := readInContainer(pid, "/data/blob.bin"); err != nil || string(b) != string(img.data["/data/blob.bin"]) {
		t.Errorf("after the refusal the container reads /data/blob.bin: %d bytes, %v; want its %d bytes", len(b), err, len(img.data["/data/blob.bin"]))
	}
	if c, err := net.Dial("unix", n.sn.address); err != nil {
		t.Errorf("after the refusal the snapshotter does not answer: %v", err)
	} else {
		c.Close()
	}

	n.removeContainer(id)
	stdout, stderr, err = n.stop()
	t.Logf("stop: %v\n%s%s", err, stdout, stderr)
	if err != nil {
		t.Fatalf("stop with no container exited %v:\n%s%s", err, stdout, stderr)
	}
	if want := fmt.Sprintf("unmounted %d streamed layers", len(mountsBefore)); !strings.Contains(stdout, "stopped sluice-snapshotter") || !strings.Contains(stdout, want) {
		t.Errorf("stop printed %q, want that it stopped the snapshotter and %s", stdout, want)
	}
	n.checkStopped(managers)

	stdout, _, err = n.stop()
	if err != nil || !strings.Contains(stdout, "nothing to stop") {
		t.Errorf("stop of a stopped node: %v, %q; want that there is nothing to stop", err, stdout)
	}
}

// checkStopped checks that the snapshotter and the FUSE managers have
// exited and that no streamed layer is mounted.
func (n *nodeEnv) checkStopped(managers []int) {
	t := n.t
	t.Helper()
	select {
	case err := <-n.sn.d.exited:
		n.sn.d.exited <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Errorf("the snapshotter (pid %d) still runs after stop", n.sn.d.pid)
	}
	for _, pid := range managers {
		if !processGone(pid) {
			t.Errorf("the FUSE manager (pid %d) still runs after stop", pid)
		}
	}
	if mounts := fuseMountsUnder(t, n.sn.dir); len(mounts) > 0 {
		t.Errorf("layers are still mounted after stop: %v", mounts)
	}
	if _, err := os.Stat(filepath.Join(n.sn.dir, "fuse-manager.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the FUSE manager's socket is still there after stop (%v)", err)
	}
}

// testStopForce runs stop --force under a running container: it stops
// everything, warns that containers get I/O errors, and the container's
// next read of a streamed file fails.
func testStopForce(t *testing.T, n *nodeEnv, img *nodeImage) {
	const id = "e2e-stop-forced"
	pid := n.startHolder(img, id)
	managers := n.sn.managerPIDs()
	stdout, stderr, err := n.stop("--force")
	t.Logf("stop --force: %v\n%s%s", err, stdout, stderr)
	if err != nil {
		t.Fatalf("stop --force exited %v", err)
	}
	if !strings.Contains(stderr, "I/O errors") || !strings.Contains(stderr, id) {
		t.Errorf("stop --force did not warn that the container %s gets I/O errors: %q", id, stderr)
	}
	n.checkStopped(managers)
	// The file was never read: its bytes are not in the kernel's cache.
	if b, err := readInContainer(pid, "/data/blob.bin"); err == nil {
		t.Errorf("the container read %d bytes of a streamed file after stop --force", len(b))
	} else if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ECONNABORTED) {
		// ECONNABORTED: the kernel ends so the requests still pending
		// when the FUSE manager's exit aborts the connection; those
		// made after it get ENOTCONN.
		t.Errorf("the container's read after stop --force failed with %v, want ENOTCONN, EIO or ECONNABORTED", err)
	}
}
