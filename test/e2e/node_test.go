//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Identities of the node tests' sluiced: the admin pushes, the node pulls
// with a pull-only token.
const (
	nodeAdmin         = "admin"
	nodeAdminPassword = "node-e2e-admin-password"
	nodeToken         = "node-e2e-puller"
)

// nodeSmallCache is the strict node's chunk cache size: less than the
// cache image's data, and than the chunk of its 3 MiB file.
const nodeSmallCache = 2 << 20

// nodeImages are the images the node tests run, pushed once.
type nodeImages struct {
	// main streams: busybox, /etc, 4 MiB of data.
	main *nodeImage
	// plain is alike, in a repository without streaming (the fallback).
	plain *nodeImage
	// sandbox is CRI's pod sandbox image: busybox sleeping.
	sandbox *nodeImage
	// reader has many small files, which a container reads one after the
	// other while the snapshotter is killed.
	reader *nodeImage
	// tampered has one byte of its streamed data layer changed in
	// sluiced's blob store after conversion.
	tampered *nodeImage
	// cache has more data than nodeSmallCache holds.
	cache *nodeImage
	// profiled has eight files of 1 MiB, each a chunk of its own: a
	// start that reads three reads less than half its data layer, which
	// a startup profile may cover at most; one that reads seven, more.
	profiled *nodeImage
}

// TestNode runs images of a sluiced with authentication on through
// sluice-snapshotter and containerd, for Debian's containerd 1.6 and for
// containerd 2.x: streamed layers mounted lazily over FUSE (`sluice pull`,
// `ctr run`, CRI with crictl), the fallback for an image without a streaming
// artifact, a tampered chunk (an I/O error, never wrong bytes), a kill -9 of
// the snapshotter under a reading container, a cache smaller than the
// data read, and startup profiles (recorded by a first start, prefetched by
// later ones, given and read with the node's token). The snapshotter
// reaches the registry with a pull-only token from its config; `sluice
// pull` with the same token in SLUICE_USERNAME and SLUICE_PASSWORD.
func TestNode(t *testing.T) {
	testenv.FUSE(t)
	skopeo := requireTool(t, "skopeo")
	requireTool(t, "runc")
	flavors := containerdFlavors()
	testenv.Need(t, flavors[0].missing == "" || flavors[1].missing == "", "no containerd to run: %s; %s", flavors[0].missing, flavors[1].missing)
	nodeBinaries(t)
	data := t.TempDir()
	reg := startSluiced(t, data, "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, admin, nodeToken)
	imgs := pushNodeImages(t, reg, data, admin, skopeo)
	// Startup profiles are the FUSE manager's and the registry's work;
	// containerd only asks for the mounts, as the streamed subtests show
	// 1.6 and 2.x do alike. So they run under one flavour, the newest here.
	profiles := flavors[len(flavors)-1]
	if profiles.missing != "" {
		profiles = flavors[0]
	}

	for _, f := range flavors {
		t.Run(f.name, func(t *testing.T) {
			testenv.Need(t, f.missing == "", "%s", f.missing)
			creds := snapshotterOptions{registry: reg.addr, user: nodeToken, password: password}
			t.Run("streamed", func(t *testing.T) {
				o := creds
				o.cacheMaxBytes, o.backgroundDelay = 1<<30, "2s"
				n := startNode(t, f, o, &criSetup{registry: reg.addr, sandbox: imgs.sandbox.ref(reg.addr), user: nodeToken, password: password})
				t.Run("sluice pull and ctr run", func(t *testing.T) { testStreamedRun(t, n, imgs.main) })
				t.Run("a layer unmounted by hand is mounted again", func(t *testing.T) { testUnmountedByHand(t, n, imgs.main) })
				t.Run("fallback without a streaming artifact", func(t *testing.T) { testFallback(t, n, imgs.plain) })
				if f.configVersion == 3 {
					t.Run("ctr image pull through the transfer service", func(t *testing.T) { testTransferPull(t, n, imgs.main) })
				}
				t.Run("CRI", func(t *testing.T) { testCRI(t, n, imgs.main, imgs.sandbox) })
				t.Run("snapshotter killed under a reading container", func(t *testing.T) { testSnapshotterKilled(t, n, imgs.reader) })
			})
			t.Run("unpacked once complete", func(t *testing.T) {
				o := creds
				o.cacheMaxBytes, o.backgroundDelay, o.unpackComplete = 1<<30, "1s", true
				n := startNode(t, f, o, nil)
				testUnpackedOnceComplete(t, n, imgs.reader)
			})
			t.Run("strict", func(t *testing.T) {
				// No background completion: a container's read is the
				// first to touch a chunk.
				o := creds
				o.cacheMaxBytes, o.backgroundDelay = nodeSmallCache, "1h"
				n := startNode(t, f, o, nil)
				t.Run("tampered chunk", func(t *testing.T) { testTamperedChunk(t, n, imgs.tampered) })
				t.Run("full cache", func(t *testing.T) { testFullCache(t, n, imgs.cache) })
			})
			if f.name == profiles.name {
				t.Run("startup profiles", func(t *testing.T) { testStartupProfiles(t, f, reg, admin, creds, imgs.profiled) })
			}
		})
	}
}

// createPullToken creates a token with the built-in pull-only scope map and
// returns its first password, after checking that it cannot push.
func createPullToken(t *testing.T, admin *ociClient, name string) string {
	t.Helper()
	password := createToken(t, admin, name, "_repositories_pull").password
	if _, err := admin.as(name, password).startUpload(context.Background(), "e2e/node/main"); err == nil {
		t.Fatalf("the pull-only token %s may push", name)
	}
	return password
}

// pushNodeImages builds the node tests' images, pushes them with skopeo as
// the admin (into repositories with auto-streaming on, but for the plain
// image), waits for their streaming artifacts and tampers with one.
func pushNodeImages(t *testing.T, reg *sluiced, data string, admin *ociClient, skopeo string) *nodeImages {
	t.Helper()
	rng := newRand(t)
	echo := ocispec.ImageConfig{Cmd: []string{"echo", "streamed-ok"}}
	imgs := &nodeImages{
		main:  newNodeImage(t, "main", "e2e/node/main", echo, map[string][]byte{"data/blob.bin": compressibleBytes(rng, 4<<20)}),
		plain: newNodeImage(t, "plain", "e2e/node/plain", echo, map[string][]byte{"data/blob.bin": compressibleBytes(rng, 4<<20)}),
		sandbox: newNodeImage(t, "sandbox", "e2e/node/sandbox", ocispec.ImageConfig{Cmd: []string{"sleep", "86400"}},
			map[string][]byte{"data/pause": []byte("a pod sandbox\n")}),
		reader:   newNodeImage(t, "reader", "e2e/node/reader", echo, dataFiles(rng, "data/read", "f", 120, 48<<10)),
		tampered: newNodeImage(t, "tampered", "e2e/node/tampered", echo, map[string][]byte{"data/blob.bin": compressibleBytes(rng, 12<<20)}),
		cache: newNodeImage(t, "cache", "e2e/node/cache", echo, dataFiles(rng, "data/cache", "part", 12, 512<<10),
			map[string][]byte{"data/big.bin": compressibleBytes(rng, 3<<20)}),
		profiled: newNodeImage(t, "profiled", "e2e/node/profiled", echo, dataFiles(rng, "data/start", "f", 8, 1<<20)),
	}
	all := []*nodeImage{imgs.main, imgs.plain, imgs.sandbox, imgs.reader, imgs.tampered, imgs.cache, imgs.profiled}
	cl := newClients(t)
	for _, img := range all {
		if img != imgs.plain {
			admin.enableStreaming(t, img.repo)
		}
		src := filepath.Join(cl.dir, img.name)
		img.writeLayout(t, src, "v1")
		cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
			"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+src+":v1", "docker://"+img.ref(reg.addr))
	}
	for _, img := range all {
		if img != imgs.plain {
			admin.waitStreamingReferrers(t, img.repo, img.ManifestDigest, 1, conversionTimeout)
		}
	}
	tamperStreamedLayer(t, data, admin, imgs.tampered)
	return imgs
}

// tamperStreamedLayer changes one byte in the middle of the streamed twin
// of an image's last layer, in the blob store of the sluiced serving data:
// the TOC (at the end) stays intact, a data chunk does not.
func tamperStreamedLayer(t *testing.T, data string, admin *ociClient, img *nodeImage) {
	t.Helper()
	last := img.Layers[len(img.Layers)-1].Digest
	streamed := streamedLayers(t, admin, img)[last].Digest
	path := filepath.Join(data, "blobs", "blobs", string(streamed.Algorithm()), streamed.Encoded()[:2], streamed.Encoded())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the streamed layer's blob file: %v", err)
	}
	b[len(b)/2] ^= 0x5a
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("tampered with byte %d of %s (%d bytes), the streamed twin of %s", len(b)/2, streamed, len(b), last)
}

// streamedLayers maps each layer of img to its streamed twin in the image's
// streaming artifact.
func streamedLayers(t *testing.T, admin *ociClient, img *nodeImage) map[digest.Digest]ocispec.Descriptor {
	t.Helper()
	refs := admin.referrers(t, img.repo, img.ManifestDigest, artifactTypeStreaming)
	if len(refs) == 0 {
		t.Fatalf("%s@%s has no streaming artifact", img.repo, img.ManifestDigest)
	}
	m, _ := admin.getImageManifest(t, img.repo, refs[0].Digest.String())
	twins := map[digest.Digest]ocispec.Descriptor{}
	for _, l := range m.Layers {
		twins[digest.Digest(l.Annotations[annotationSourceDigest])] = l
	}
	for _, l := range img.Layers {
		if _, ok := twins[l.Digest]; !ok {
			t.Fatalf("streaming manifest %s has no layer made from %s", refs[0].Digest, l.Digest)
		}
	}
	return twins
}

// testStreamedRun pulls an image with `sluice pull` (every layer streamed,
// mounted over FUSE) and runs it with `ctr run`.
func testStreamedRun(t *testing.T, n *nodeEnv, img *nodeImage) {
	res := n.pull(img)
	for i, l := range res.Layers {
		if !l.Streamed {
			t.Errorf("layer %d %s was not streamed", i, l.Digest)
		}
	}
	if mounts := fuseMountsUnder(t, n.sn.dir); len(mounts) < len(img.Layers) {
		t.Errorf("%d fuse.sluice mounts under the snapshotter's root, want at least %d (one per layer): %v", len(mounts), len(img.Layers), mounts)
	}
	script := "busybox echo streamed-ok && busybox cat /etc/streamed.txt && busybox sha256sum /data/blob.bin"
	stdout := n.run(img, "e2e-streamed", script)
	if want := fmt.Sprintf("streamed-ok\n%s%s  /data/blob.bin\n", streamedText, img.sums["/data/blob.bin"]); stdout != want {
		t.Errorf("the container printed\n%q\nwant\n%q", stdout, want)
	}
	for _, l := range img.Layers {
		if got := n.sn.logLines("layer streamed", "layer="+l.Digest.String()); len(got) == 0 {
			t.Errorf("the snapshotter did not log that it streamed layer %s", l.Digest)
		}
	}
	m := n.sn.metrics()
	if got := m["sluice_snapshotter_layers_streamed_total"]; got < float64(len(img.Layers)) {
		t.Errorf("sluice_snapshotter_layers_streamed_total is %v, want at least %d", got, len(img.Layers))
	}
	if got := m[`sluice_snapshotter_fetched_bytes_total{kind="on_demand"}`]; got <= 0 {
		t.Errorf("no bytes fetched on demand, by the metrics: %v", got)
	}
	t.Logf("pulled in %s; metrics: %s", res.Duration, pickMetrics(m, "layers_streamed", "fetched_bytes", "layers_mounted", "chunk_cache"))
	// Once reads are quiet, the rest of each layer is fetched in the
	// background and the whole layer checked against its DiffID.
	waitFor(t, time.Minute, "background completion verifies every layer", func() bool {
		return n.sn.metrics()["sluice_snapshotter_layers_completed_total"] >= float64(len(img.Layers))
	})
}

// testUnpackedOnceComplete: once the FUSE manager has completed and
// verified a streamed layer, the snapshotter unpacks it in place of its
// FUSE mount. A container started before keeps reading through the
// detached mount, and the next one runs on the local copy, with the same
// bytes.
func testUnpackedOnceComplete(t *testing.T, n *nodeEnv, img *nodeImage) {
	res := n.pull(img)
	for i, l := range res.Layers {
		if !l.Streamed {
			t.Fatalf("layer %d %s was not streamed", i, l.Digest)
		}
	}
	readLog, waitReads := startReader(t, n, img, "e2e-before-unpack")
	waitReads(5, "on the streamed layers")
	waitFor(t, 2*time.Minute, "the snapshotter unpacks every complete layer", func() bool {
		return n.sn.metrics()["sluice_snapshotter_complete_layers_unpacked_total"] >= float64(len(img.Layers))
	})
	// Without the page cache, the old container's reads reach the
	// detached mounts' FUSE manager again.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	atUnpack, _ := readLog()
	waitReads(len(atUnpack)+2*len(img.sums), "through the detached FUSE mounts, twice over")
	if mounts := fuseMountsUnder(t, n.sn.dir); len(mounts) != 0 {
		t.Errorf("FUSE mounts left at the snapshotter's mountpoints after unpacking: %v", mounts)
	}
	// The detached mounts still serve a container: stop refuses.
	if _, stderr, err := n.stop(); err == nil || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, "e2e-before-unpack") {
		t.Errorf("stop while a container reads detached mounts: %v\n%s\nwant a refusal naming the container", err, stderr)
	}
	if stdout := n.run(img, "e2e-after-unpack", "busybox sha256sum -c /data/sums.txt >/dev/null && echo checked"); stdout != "checked\n" {
		t.Errorf("a container on the unpacked layers printed\n%s", stdout)
	}
	for _, l := range img.Layers {
		if got := n.sn.logLines("streamed layer complete: unpacked for the containers created from now on", "layer="+l.Digest.String()); len(got) != 1 {
			t.Errorf("the snapshotter logged %d unpackings of layer %s, want 1", len(got), l.Digest)
		}
	}
}

// testTransferPull pulls an image with containerd 2.x's own `ctr image
// pull`, which goes through the transfer service: the unpack_config entry
// and enable_remote_snapshot_annotations that install writes for config
// version 3 make it stream the layers as `sluice pull` does.
func testTransferPull(t *testing.T, n *nodeEnv, img *nodeImage) {
	before := n.sn.metrics()["sluice_snapshotter_layers_streamed_total"]
	// A namespace of its own: the image is not there yet.
	n.cl.run(n.flavor.ctr, "--address", n.sock, "--namespace", "e2e-transfer", "image", "pull", "--plain-http", "--snapshotter", "sluice",
		"--user", n.sn.user+":"+n.sn.password, img.ref(n.sn.registry))
	if got := n.sn.metrics()["sluice_snapshotter_layers_streamed_total"] - before; got != float64(len(img.Layers)) {
		t.Errorf("ctr image pull streamed %v layers, want all %d (fallbacks: %s)", got, len(img.Layers), pickMetrics(n.sn.metrics(), "fallbacks_total"))
	}
	stdout := n.cl.run(n.flavor.ctr, "--address", n.sock, "--namespace", "e2e-transfer", "run", "--rm", "--snapshotter", "sluice",
		img.ref(n.sn.registry), "e2e-transfer", "/bin/busybox", "sha256sum", "/data/blob.bin")
	if want := img.sums["/data/blob.bin"] + "  /data/blob.bin\n"; stdout != want {
		t.Errorf("the container printed %q, want %q", stdout, want)
	}
}

// testFallback pulls an image that has no streaming artifact: every layer
// is downloaded, the snapshotter says why in one line per layer, and the
// image runs.
func testFallback(t *testing.T, n *nodeEnv, img *nodeImage) {
	res := n.pull(img)
	for i, l := range res.Layers {
		if l.Streamed {
			t.Errorf("layer %d %s of an image without a streaming artifact was streamed", i, l.Digest)
		}
	}
	for _, l := range img.Layers {
		lines := n.sn.logLines("layer not streamed; containerd downloads it", "layer="+l.Digest.String())
		if len(lines) != 1 || !strings.Contains(lines[0], "no streaming artifact") {
			t.Errorf("the snapshotter logged %d lines on falling back for layer %s, want one saying it has no streaming artifact: %q", len(lines), l.Digest, lines)
		}
	}
	if got := n.sn.metrics()[`sluice_snapshotter_fallbacks_total{reason="no_artifact"}`]; got < float64(len(img.Layers)) {
		t.Errorf(`sluice_snapshotter_fallbacks_total{reason="no_artifact"} is %v, want at least %d`, got, len(img.Layers))
	}
	stdout := n.run(img, "e2e-fallback", "busybox sha256sum /data/blob.bin")
	if want := img.sums["/data/blob.bin"] + "  /data/blob.bin\n"; stdout != want {
		t.Errorf("the container printed %q, want %q", stdout, want)
	}
}

// testTamperedChunk reads a file whose chunk was tampered with in the
// registry: the read fails with an I/O error, every byte read before it is
// right, and the snapshotter counts a verification failure.
func testTamperedChunk(t *testing.T, n *nodeEnv, img *nodeImage) {
	res := n.pull(img)
	for i, l := range res.Layers {
		if !l.Streamed {
			t.Errorf("layer %d %s was not streamed (its TOC is intact)", i, l.Digest)
		}
	}
	out := t.TempDir()
	script := `busybox sha256sum /data/blob.bin; echo "sha256sum-exit=$?"; ` +
		`busybox dd if=/data/blob.bin of=/out/copy bs=131072; echo "dd-exit=$?"`
	stdout, stderr, err := n.tryRun(img, "e2e-tampered", script, out)
	if err != nil {
		t.Fatalf("ctr run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	t.Logf("the container printed:\n%s%s", stdout, stderr)
	if !strings.Contains(stdout+stderr, "Input/output error") {
		t.Errorf("reading the tampered file did not fail with an I/O error:\n%s%s", stdout, stderr)
	}
	if strings.Contains(stdout, "sha256sum-exit=0") || strings.Contains(stdout, "dd-exit=0") ||
		regexp.MustCompile(`[0-9a-f]{64}  /data/blob.bin`).MatchString(stdout) {
		t.Errorf("a read of the tampered file succeeded:\n%s", stdout)
	}
	want := img.data["/data/blob.bin"]
	copied, err := os.ReadFile(filepath.Join(out, "copy"))
	if err != nil {
		t.Fatalf("dd wrote no copy: %v", err)
	}
	if len(copied) >= len(want) || !bytes.Equal(copied, want[:len(copied)]) {
		t.Errorf("dd copied %d of %d bytes before the error; want fewer, all equal to the file's (they are %s)",
			len(copied), len(want), map[bool]string{true: "equal", false: "NOT equal"}[bytes.Equal(copied, want[:min(len(copied), len(want))])])
	}
	t.Logf("dd copied %d of %d bytes before the I/O error", len(copied), len(want))
	m := n.sn.metrics()
	if got := m["sluice_snapshotter_verification_failures_total"]; got < 1 {
		t.Errorf("sluice_snapshotter_verification_failures_total is %v after reading a tampered chunk", got)
	}
	if got := m[`sluice_snapshotter_fetched_bytes_total{kind="background"}`]; got != 0 {
		t.Errorf("%v bytes were fetched in the background, so the container's read may not have been the first", got)
	}
	if !strings.Contains(n.sn.managerLog(), "chunk failed verification") {
		t.Errorf("the FUSE manager did not log the verification failure")
	}

	// The layer is bad from then on: no read of it is answered, not even
	// of the bytes read, and cached, before the tampered chunk.
	file := ""
	for _, mp := range fuseMountsUnder(t, n.sn.dir) {
		if _, err := os.Stat(filepath.Join(mp, "data/blob.bin")); err == nil {
			file = filepath.Join(mp, "data/blob.bin")
		}
	}
	if file == "" {
		t.Fatal("no streamed layer mount holds /data/blob.bin")
	}
	waitFor(t, 10*time.Second, "reads of the bad layer fail, cached pages included", func() bool {
		_, err := os.ReadFile(file)
		return errors.Is(err, syscall.EIO)
	})
	if err := readDirect(file); !errors.Is(err, syscall.EIO) {
		t.Errorf("an O_DIRECT read of the bad layer: %v, want EIO", err)
	}
	// The next container runs on the original layer, downloaded in place
	// of the streamed one.
	if stdout := n.run(img, "e2e-tampered-again", "busybox sha256sum /data/blob.bin"); stdout != img.sums["/data/blob.bin"]+"  /data/blob.bin\n" {
		t.Errorf("the next container printed %q, want the file's sum", stdout)
	}
	if got := n.sn.metrics()["sluice_snapshotter_bad_layers_replaced_total"]; got != 1 {
		t.Errorf("sluice_snapshotter_bad_layers_replaced_total is %v, want 1", got)
	}
}

// testFullCache reads more data than the chunk cache holds: everything
// reads right, and the cache evicts to stay within its size.
func testFullCache(t *testing.T, n *nodeEnv, img *nodeImage) {
	n.pull(img)
	before := n.sn.metrics()["sluice_snapshotter_chunk_cache_evictions_total"]
	stdout := n.run(img, "e2e-cache", "busybox sha256sum -c /data/sums.txt")
	if ok := strings.Count(stdout, ": OK\n"); ok != len(img.sums) {
		t.Errorf("sha256sum -c checked %d files OK, want %d:\n%s", ok, len(img.sums), stdout)
	}
	// The cache writes chunks to disk, and evicts, in the background.
	var m map[string]float64
	if !poll(30*time.Second, func() bool {
		m = n.sn.metrics()
		return m["sluice_snapshotter_chunk_cache_evictions_total"] > before
	}) {
		t.Errorf("the chunk cache evicted nothing (%v before) while %d bytes were read through %d bytes of cache",
			before, totalSize(img.data), nodeSmallCache)
	}
	if got := m["sluice_snapshotter_chunk_cache_bytes"]; got > nodeSmallCache {
		t.Errorf("the chunk cache holds %v bytes, more than its %d", got, nodeSmallCache)
	}
	t.Logf("metrics: %s", pickMetrics(m, "chunk_cache", "fetched_bytes"))
}

func totalSize(files map[string][]byte) int {
	n := 0
	for _, b := range files {
		n += len(b)
	}
	return n
}

// pickMetrics formats the samples whose names contain one of parts.
func pickMetrics(m map[string]float64, parts ...string) string {
	var out []string
	for k, v := range m {
		for _, p := range parts {
			if strings.Contains(k, p) {
				out = append(out, fmt.Sprintf("%s=%v", strings.TrimPrefix(k, "sluice_snapshotter_"), v))
				break
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// pullResult is what `sluice pull` prints.
type pullResult struct {
	Image  string        `json:"image"`
	Digest digest.Digest `json:"digest"`
	Layers []struct {
		Digest   digest.Digest `json:"digest"`
		Size     int64         `json:"size"`
		Streamed bool          `json:"streamed"`
	} `json:"layers"`
	Duration string `json:"duration"`
}
