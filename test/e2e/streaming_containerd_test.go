//go:build linux

package e2e

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// busyboxPath is Debian's statically linked busybox, from busybox-static.
const busyboxPath = "/bin/busybox"

// TestStreamingRunsInContainerd converts a runnable image and runs its
// streaming artifact. The image is Debian's static busybox in one layer,
// files in a second and a few MiB of data in a third; it goes into a
// repository with auto-streaming on by `skopeo copy`. `oras discover`
// must then list the streaming artifact, and a containerd of the test's own
// pulls the streaming manifest by digest (verifying every zstd layer
// against the config's diff_ids as it unpacks) and runs a container from
// it that reads all three layers.
func TestStreamingRunsInContainerd(t *testing.T) {
	testenv.Root(t, "containerd needs root to run")
	skopeo := requireTool(t, "skopeo")
	oras := requireTool(t, "oras")
	zstd := requireTool(t, "zstd")
	containerd := requireTool(t, "containerd")
	ctr := requireTool(t, "ctr")
	rng := newRand(t)
	img, dataSum := busyboxImage(t, rng)

	reg := startSluiced(t, t.TempDir())
	oc := newOCIClient(t, reg.addr)
	cl := newClients(t)
	const repo = "e2e/streaming/busybox"
	oc.enableStreaming(t, repo)
	src := filepath.Join(cl.dir, "busybox")
	img.writeLayout(t, src, "v1")
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", "docker://"+reg.addr+"/"+repo+":v1")

	refs := waitAutoConversion(t, oc, repo, img.ManifestDigest, 1)
	streamed := refs[0]
	checkStreamingArtifact(t, oc, zstd, repo, streamed, img.descriptor(), img)

	found := decodeOras(t, cl.run(oras, "discover", "--plain-http", "--format", "json", reg.addr+"/"+repo+":v1"))
	if found.Digest != img.ManifestDigest {
		t.Errorf("oras discover resolved v1 to %s, want %s", found.Digest, img.ManifestDigest)
	}
	byType := map[string][]string{}
	for _, r := range found.Referrers {
		byType[r.ArtifactType] = append(byType[r.ArtifactType], r.Digest.String())
	}
	if len(found.Referrers) != 2 || len(byType[artifactTypeStreaming]) != 1 || byType[artifactTypeStreaming][0] != streamed.Digest.String() || len(byType[artifactTypeStreamingSignature]) != 1 {
		t.Fatalf("oras discover lists referrers %+v, want %s of type %s and its signature", found.Referrers, streamed.Digest, artifactTypeStreaming)
	}

	sock := startContainerd(t, containerdSetup{bin: containerd, ctr: ctr})
	ctrRun := func(args ...string) string {
		t.Helper()
		return cl.run(ctr, append([]string{"--address", sock, "--namespace", "e2e"}, args...)...)
	}
	snapshotter := pickSnapshotter(t, ctrRun("plugins", "ls"))
	t.Logf("containerd snapshotter: %s", snapshotter)
	ref := reg.addr + "/" + repo + "@" + streamed.Digest.String()
	ctrRun("image", "pull", "--plain-http", "--snapshotter", snapshotter, ref)
	if check := ctrRun("image", "check", "--snapshotter", snapshotter); !strings.Contains(check, ref) || !strings.Contains(check, "complete") {
		t.Errorf("ctr image check does not report %s complete:\n%s", ref, check)
	}
	// What containerd stored decompresses to the original layers too.
	m, _ := oc.getImageManifest(t, repo, streamed.Digest.String())
	var config ocispec.Image
	if err := json.Unmarshal([]byte(ctrRun("content", "get", m.Config.Digest.String())), &config); err != nil {
		t.Fatal(err)
	}
	for i, l := range m.Layers {
		if got := zstdDiffID(t, zstd, []byte(ctrRun("content", "get", l.Digest.String()))); got != config.RootFS.DiffIDs[i] {
			t.Errorf("containerd's copy of streaming layer %s decompresses to %s, want diff_id %s", l.Digest, got, config.RootFS.DiffIDs[i])
		}
	}
	if n := committedSnapshots(ctrRun("snapshots", "--snapshotter", snapshotter, "ls")); n != len(img.Layers) {
		t.Errorf("containerd unpacked %d layers of the streaming image, want %d", n, len(img.Layers))
	}

	script := "busybox echo streamed-ok && busybox cat /etc/streamed.txt && busybox sha256sum /data/blob.bin"
	stdout, stderr, err := cl.try(ctr, "--address", sock, "--namespace", "e2e", "run", "--rm", "--snapshotter", snapshotter,
		ref, "e2e-streamed", "/bin/busybox", "sh", "-c", script)
	if err != nil {
		if limit := sandboxLimit(stderr); limit != "" {
			testenv.Missing(t, "ctr run cannot start a container on this machine (%s), which nothing in sluice causes: %v\n%s", limit, err, stderr)
		}
		t.Fatalf("ctr run of the streaming image: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	want := fmt.Sprintf("streamed-ok\n%s%s  /data/blob.bin\n", streamedText, dataSum)
	if stdout != want {
		t.Errorf("the container printed\n%q\nwant\n%q", stdout, want)
	}
}

// streamedText is a file of the busybox image's second layer.
const streamedText = "served by sluice as a streaming artifact\n"

// busyboxImage makes a runnable image for this machine's architecture:
// static busybox, /etc files, and 4 MiB of data whose sha256 it returns.
func busyboxImage(t *testing.T, rng *rand.Rand) (*testImage, string) {
	t.Helper()
	busybox := readStaticBusybox(t)
	data := compressibleBytes(rng, 4<<20)
	sum := sha256.Sum256(data)
	layers := [][]byte{
		tarLayer(t, dirEntry("bin"), fileEntry("bin/busybox", 0o755, busybox), symlinkEntry("bin/sh", "busybox")),
		tarLayer(t, dirEntry("etc"), fileEntry("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\n")),
			fileEntry("etc/group", 0o644, []byte("root:x:0:\n")), fileEntry("etc/streamed.txt", 0o644, []byte(streamedText))),
		tarLayer(t, dirEntry("data"), fileEntry("data/blob.bin", 0o644, data)),
	}
	cfg := ocispec.ImageConfig{
		Env:        []string{"PATH=/bin"},
		Entrypoint: []string{"/bin/busybox"},
		Cmd:        []string{"echo", "streamed-ok"},
		WorkingDir: "/",
	}
	img := newImage(t, ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}, cfg, gzipLevel(6), layers...)
	return img, hex.EncodeToString(sum[:])
}

// readStaticBusybox reads busyboxPath, skipping the test unless it is the
// static build: a dynamically linked one cannot run alone in an image.
func readStaticBusybox(t *testing.T) []byte {
	t.Helper()
	f, err := elf.Open(busyboxPath)
	testenv.Need(t, err == nil, "%s is not installed (%v); `make test-deps` installs Debian's busybox-static", busyboxPath, err)
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			testenv.Missing(t, "%s is dynamically linked (Debian's busybox rather than busybox-static); `make test-deps` installs busybox-static", busyboxPath)
		}
	}
	b, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pickSnapshotter chooses overlayfs when containerd could load it on its
// root directory, native otherwise.
func pickSnapshotter(t *testing.T, plugins string) string {
	t.Helper()
	for _, line := range strings.Split(plugins, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.snapshotter.v1" && f[1] == "overlayfs" && f[len(f)-1] == "ok" {
			return "overlayfs"
		}
	}
	t.Logf("containerd has no working overlayfs snapshotter; using native")
	return "native"
}

// sandboxLimit names what in ctr's error output shows that the machine
// cannot run containers at all (no cgroups, no mounts, no namespaces), as
// in some sandboxes; it is empty for any other failure.
func sandboxLimit(stderr string) string {
	for _, sign := range []string{"cgroup", "operation not permitted", "permission denied", "namespace", "seccomp"} {
		if strings.Contains(strings.ToLower(stderr), sign) {
			return sign
		}
	}
	return ""
}
