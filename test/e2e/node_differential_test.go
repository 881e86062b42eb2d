//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/internal/testenv/hostiletar"
)

// differentialRepo holds the images of TestNodeDifferential, one tag each.
const differentialRepo = "e2e/differential"

// differentialNamespace is the containerd namespace of the reference
// unpack, apart from the node's.
const differentialNamespace = "e2e-overlayfs"

// benchCache is where bench/images/build.sh keeps the benchmark images.
const benchCache = "/var/cache/sluice-bench"

// differentialLongVar set to 1 adds the corpus's long cases (500,000
// entries: over two minutes here, where 100,000 take half a minute).
const differentialLongVar = "SLUICE_E2E_LONG"

// maxDiffsShown is how many differences a case prints.
const maxDiffsShown = 30

// TestNodeDifferential compares the lazy view of an image with containerd's
// own unpack of it, for every case of the hostile corpus (hostiletar) and
// for the benchmark images. Each image is pushed once to a sluiced that
// converts it; then, on one containerd, `sluice pull` mounts its streaming
// layers over FUSE through sluice-snapshotter, and `ctr image pull` unpacks
// the original with the stock overlayfs snapshotter. Both roots are
// mounted read-only (a view of the top layer's chain) and walked: names as
// bytes, types, permission bits, owners, symlink targets, device numbers,
// xattrs, the sha256 of every file and which names share an inode must
// agree. The other accepted outcome is that both refuse: the conversion
// or the node on Sluice's side, the unpack on containerd's. Nothing may be
// written outside the root (hostiletar.Escapes). The corpus runs against
// each containerd the node tests know, with one registry for all; the
// large cases and the benchmark images (python3 and numpy, which
// bench/images/build.sh builds) against the newest only. Each case's
// differences are printed, and a table of every verdict at the end.
// SLUICE_E2E_LONG=1 adds the 500,000-entry case.
func TestNodeDifferential(t *testing.T) {
	began := time.Now()
	testenv.FUSE(t)
	flavors := containerdFlavors()
	testenv.Need(t, flavors[0].missing == "" || flavors[1].missing == "", "no containerd to run: %s; %s", flavors[0].missing, flavors[1].missing)
	gzipTool := requireTool(t, "gzip")
	nodeBinaries(t)
	for _, p := range hostiletar.Escapes {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists before the test: a breakout of an earlier run? Remove it first", p)
		}
	}
	reg := startSluiced(t, t.TempDir(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_USER="+nodeAdmin, "SLUICE_ADMIN_PASSWORD="+nodeAdminPassword)
	admin := newOCIClient(t, reg.addr).as(nodeAdmin, nodeAdminPassword)
	password := createPullToken(t, admin, nodeToken)
	admin.enableStreaming(t, differentialRepo)
	d := &differential{reg: reg, admin: admin, conversions: map[digest.Digest]string{}}

	built := time.Now()
	for _, c := range hostiletar.Cases() {
		if c.Long && os.Getenv(differentialLongVar) != "1" {
			t.Logf("%s (%s) takes minutes: it runs with %s=1", c.Name, c.About, differentialLongVar)
			continue
		}
		img := &differentialImage{name: c.Name, about: c.About, large: c.Large}
		if !c.Large || !testing.Short() {
			img.testImage = hostileImage(t, gzipTool, c)
			admin.pushImage(t, differentialRepo, img.name, img.testImage)
		}
		d.images = append(d.images, img)
	}
	t.Logf("built and pushed %d images in %v", len(d.images), time.Since(built).Round(time.Millisecond))
	for _, name := range []string{"python3", "numpy"} {
		d.images = append(d.images, &differentialImage{name: "bench-" + name, about: "the " + name + " benchmark image", large: true, bench: name})
	}

	// The lazy view is the node's whatever the containerd: the large
	// images, up to a minute each, are compared with the newest
	// containerd only.
	largeOn := ""
	for _, f := range flavors {
		if f.missing == "" {
			largeOn = f.name
		}
	}
	for _, f := range flavors {
		t.Run(f.name, func(t *testing.T) {
			testenv.Need(t, f.missing == "", "%s", f.missing)
			n := startNode(t, f, snapshotterOptions{registry: reg.addr, user: nodeToken, password: password,
				cacheMaxBytes: 8 << 30, backgroundDelay: "1h"}, nil)
			for _, img := range d.images {
				if img.large && f.name != largeOn {
					t.Logf("%s is compared with %s only", img.name, largeOn)
					continue
				}
				t.Run(img.name, func(t *testing.T) {
					caseBegan, verdict := time.Now(), "did not finish: see its log"
					defer func() {
						for _, p := range hostiletar.Escapes {
							if _, err := os.Lstat(p); err == nil {
								t.Errorf("%s exists after %s: the image wrote outside its root", p, img.name)
								verdict += "; WROTE " + p
								_ = os.RemoveAll(p)
							}
						}
						d.summary = append(d.summary, fmt.Sprintf("%-16s %-36s %-7v %s", f.name, img.name, time.Since(caseBegan).Round(100*time.Millisecond), verdict))
					}()
					verdict = d.compare(t, n, img)
				})
			}
		})
	}
	t.Logf("%d comparisons in %v:\n%s", len(d.summary), time.Since(began).Round(time.Second), strings.Join(d.summary, "\n"))
}

// differential is the registry TestNodeDifferential pushes to, and what it
// found so far.
type differential struct {
	reg    *sluiced
	admin  *ociClient
	images []*differentialImage
	// conversions holds each image's conversion outcome once known:
	// empty when it succeeded, else why it did not.
	conversions map[digest.Digest]string
	summary     []string
}

// differentialImage is an image of the comparison: a corpus case, built
// and pushed up front, or a benchmark image, pushed on first use.
type differentialImage struct {
	name, about string
	large       bool
	// bench names the benchmark image.
	bench string
	*testImage
}

func (img *differentialImage) ref(addr string) string {
	return addr + "/" + differentialRepo + ":" + img.name
}

// compare runs one image through both unpacks and returns the verdict for
// the summary; a difference fails t.
func (d *differential) compare(t *testing.T, n *nodeEnv, img *differentialImage) string {
	if img.large {
		testenv.Need(t, !testing.Short(), "%s (%s) takes up to a minute; it runs without -short", img.name, img.about)
	}
	if img.bench != "" && img.testImage == nil {
		img.testImage = pushBenchImage(t, d.reg, img)
	}
	timeout := conversionTimeout
	if img.large {
		timeout = 15 * time.Minute
	}
	phase := time.Now()
	var phases []string
	lap := func(what string) {
		phases = append(phases, fmt.Sprintf("%s %v", what, time.Since(phase).Round(time.Millisecond)))
		phase = time.Now()
	}
	defer func() { t.Logf("%s", strings.Join(phases, ", ")) }()
	sluiceRefused := d.conversion(t, img, timeout)
	lap("conversion")
	if sluiceRefused == "" {
		sluiceRefused = pullLazily(t, n, img)
		lap("sluice pull")
	}
	containerdRefused := pullOverlayfs(t, n, img)
	lap("ctr image pull")
	switch {
	case sluiceRefused != "" && containerdRefused != "":
		t.Logf("%s: both refuse, as they should.\nSluice: %s\ncontainerd: %s", img.about, sluiceRefused, containerdRefused)
		return "both refuse"
	case sluiceRefused != "":
		t.Errorf("%s: Sluice refuses what containerd unpacks.\nSluice: %s", img.about, sluiceRefused)
		return "DIFFERS: Sluice refuses (" + oneLine(sluiceRefused) + "), containerd unpacks"
	case containerdRefused != "":
		t.Errorf("%s: Sluice shows a lazy view of what containerd refuses to unpack.\ncontainerd: %s", img.about, containerdRefused)
		return "DIFFERS: containerd refuses (" + oneLine(containerdRefused) + "), Sluice shows a view"
	}
	chain := identity.ChainID(img.diffIDs()).String()
	want := walkView(t, n, differentialNamespace, "overlayfs", chain)
	lap("containerd's view")
	got := walkView(t, n, nodeNamespace, "sluice", chain)
	lap("the lazy view")
	diffs := compareTrees(want, got)
	if len(diffs) == 0 {
		t.Logf("%s: the lazy view equals containerd's unpack (%d entries)", img.about, len(want))
		return fmt.Sprintf("equal (%d entries)", len(want))
	}
	shown := diffs[:min(len(diffs), maxDiffsShown)]
	t.Errorf("%s: %d differences between containerd's overlayfs unpack (%d entries) and the lazy view (%d entries), the first %d:\n  %s",
		img.about, len(diffs), len(want), len(got), len(shown), strings.Join(shown, "\n  "))
	return fmt.Sprintf("DIFFERS: %d differences, first: %s", len(diffs), diffs[0])
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// diffIDs are the image's layers' digests uncompressed, from its config.
func (img *differentialImage) diffIDs() []digest.Digest {
	var cfg ocispec.Image
	_ = json.Unmarshal(img.Blobs[img.Config.Digest], &cfg)
	return cfg.RootFS.DiffIDs
}

// conversion waits for the auto-conversion of img and returns why it did
// not succeed, empty when it did.
func (d *differential) conversion(t *testing.T, img *differentialImage, timeout time.Duration) string {
	t.Helper()
	if why, ok := d.conversions[img.ManifestDigest]; ok {
		return why
	}
	path := "/acr/v1/" + differentialRepo + "/_streaming/" + img.ManifestDigest.String() + "?latest=true"
	var op operation
	waitFor(t, timeout, "the conversion of "+img.name+" ends", func() bool {
		_, err := d.admin.mgmt(context.Background(), http.MethodGet, path, nil, http.StatusOK, &op)
		return err == nil && op.finished()
	})
	why := ""
	switch {
	case op.Status == statusSucceeded:
	case op.Error != nil:
		why = fmt.Sprintf("the conversion %s: %s: %s", op.Status, op.Error.Code, op.Error.Message)
	default:
		why = "the conversion " + op.String()
	}
	d.conversions[img.ManifestDigest] = why
	return why
}

// pullLazily pulls img with `sluice pull` and returns why its layers are
// not all mounted lazily, empty when they are.
func pullLazily(t *testing.T, n *nodeEnv, img *differentialImage) string {
	t.Helper()
	stdout, stderr, err := n.cl.try(sluiceBin, "pull", img.ref(n.sn.registry), "--address", n.sock, "--namespace", nodeNamespace, "--plain-http")
	var res pullResult
	if err == nil {
		if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil || len(res.Layers) != len(img.Layers) {
			t.Fatalf("sluice pull printed what is not the image's %d layers (%v):\n%s", len(img.Layers), jerr, stdout)
		}
	}
	var why []string
	for i, l := range img.Layers {
		if err == nil && res.Layers[i].Streamed {
			continue
		}
		// The snapshotter says why it let containerd download a layer.
		if lines := n.sn.logLines("layer not streamed; containerd downloads it", "layer="+l.Digest.String()); len(lines) > 0 {
			_, reason, _ := strings.Cut(lines[len(lines)-1], "reason=")
			why = append(why, fmt.Sprintf("the node does not stream layer %d: %s", i, reason))
		} else if err == nil {
			why = append(why, fmt.Sprintf("the node does not stream layer %d, and logs no reason", i))
		}
	}
	if err != nil {
		out := strings.TrimSpace(stderr)
		why = append(why, fmt.Sprintf("sluice pull failed (%v): %s", err, out[strings.LastIndexByte(out, '\n')+1:]))
	}
	return strings.Join(why, "\n")
}

// pullOverlayfs pulls and unpacks img with containerd's overlayfs
// snapshotter and returns why it failed, empty when it did not.
func pullOverlayfs(t *testing.T, n *nodeEnv, img *differentialImage) string {
	t.Helper()
	stdout, stderr, err := n.cl.try(n.flavor.ctr, "--address", n.sock, "--namespace", differentialNamespace, "image", "pull", "--plain-http",
		"--snapshotter", "overlayfs", "--user", n.sn.user+":"+n.sn.password, img.ref(n.sn.registry))
	if err == nil {
		return ""
	}
	// stdout is progress; stderr ends with ctr's error.
	out := strings.TrimSpace(stderr)
	if out == "" {
		out = strings.TrimSpace(stdout)
	}
	return fmt.Sprintf("ctr image pull failed (%v): %s", err, out[strings.LastIndexByte(out, '\n')+1:])
}

// walkView mounts a read-only view of the snapshot chain of a snapshotter
// and walks it.
func walkView(t *testing.T, n *nodeEnv, namespace, snapshotter, chain string) fsTree {
	t.Helper()
	client, err := containerd.New(n.sock, containerd.WithDefaultNamespace(namespace))
	if err != nil {
		t.Fatalf("connect to containerd: %v", err)
	}
	defer client.Close()
	// A lease keeps containerd's garbage collector off the view.
	ctx, done, err := client.WithLease(context.Background())
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	defer func() {
		if err := done(context.Background()); err != nil {
			t.Errorf("release the lease of the %s view: %v", snapshotter, err)
		}
	}()
	sn := client.SnapshotService(snapshotter)
	key := fmt.Sprintf("differential-view-%d", time.Now().UnixNano())
	mounts, err := sn.View(ctx, key, chain)
	if err != nil {
		t.Fatalf("view of %s in %s: %v", chain, snapshotter, err)
	}
	defer func() {
		if err := sn.Remove(ctx, key); err != nil {
			t.Errorf("remove view %s of %s: %v", key, snapshotter, err)
		}
	}()
	target := t.TempDir()
	if err := mount.All(mounts, target); err != nil {
		t.Fatalf("mount the %s view %v: %v", snapshotter, mounts, err)
	}
	defer func() {
		if err := mount.UnmountAll(target, 0); err != nil {
			t.Errorf("unmount the %s view: %v", snapshotter, err)
		}
	}()
	tree, err := walkTree(target)
	if err != nil {
		t.Fatalf("walk the %s view: %v", snapshotter, err)
	}
	return tree
}

// hostileImage is the image of a corpus case: its layers compressed by
// the gzip command at its best (a GiB of zeros to a MiB; compress/gzip
// would take minutes under the race detector), and a config whose
// diff_ids match them.
func hostileImage(t *testing.T, gzipTool string, c hostiletar.Case) *testImage {
	t.Helper()
	gz := make([][]byte, len(c.Layers))
	diffIDs := make([]digest.Digest, len(c.Layers))
	for i, l := range c.Layers {
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		cmd := exec.CommandContext(ctx, gzipTool, "-9", "-n", "-c")
		tarball, w := io.Pipe()
		var out, stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tarball, &out, &stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		sum := digest.SHA256.Digester()
		_, err := l.WriteTo(io.MultiWriter(sum.Hash(), w))
		w.CloseWithError(err)
		if werr := cmd.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("%v: %s", werr, stderr.Bytes())
		}
		cancel()
		if err != nil {
			t.Fatalf("layer %d of %s: %v", i, c.Name, err)
		}
		gz[i], diffIDs[i] = out.Bytes(), sum.Digest()
	}
	return assembleImage(t, gz, diffIDs)
}

// assembleImage makes a linux image of this machine's architecture from
// gzip layers and their diff_ids.
func assembleImage(t *testing.T, gz [][]byte, diffIDs []digest.Digest) *testImage {
	t.Helper()
	img := &testImage{Blobs: map[digest.Digest][]byte{}, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}}
	for _, b := range gz {
		img.Layers = append(img.Layers, img.addBlob(ocispec.MediaTypeImageLayerGzip, b))
	}
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	config, err := json.Marshal(ocispec.Image{Created: &created, Platform: img.Platform,
		Config: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = img.addBlob(ocispec.MediaTypeImageConfig, config)
	img.Manifest, err = json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: img.Config, Layers: img.Layers})
	if err != nil {
		t.Fatal(err)
	}
	img.ManifestDigest = digest.FromBytes(img.Manifest)
	return img
}

// pushBenchImage pushes a benchmark image, its one layer the gzip tar that
// bench/images/build.sh made, with skopeo from an OCI layout whose layer
// blob is a symlink to the cache's file (a GiB is not read into memory).
func pushBenchImage(t *testing.T, reg *sluiced, img *differentialImage) *testImage {
	t.Helper()
	layer := benchLayer(t, img.bench)
	skopeo := requireTool(t, "skopeo")
	gzDigest, gzSize := fileDigest(t, layer+".tar.gz")
	diffID, _ := fileDigest(t, layer+".tar")
	// The layer's bytes are not held: Blobs gets the config only.
	bench := assembleImage(t, nil, []digest.Digest{diffID})
	bench.Layers = []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: gzDigest, Size: gzSize}}
	var err error
	if bench.Manifest, err = json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: bench.Config, Layers: bench.Layers}); err != nil {
		t.Fatal(err)
	}
	bench.ManifestDigest = digest.FromBytes(bench.Manifest)
	cl := newClients(t)
	dir := filepath.Join(cl.dir, img.bench)
	bench.writeLayout(t, dir, "v1")
	if err := os.Symlink(layer+".tar.gz", filepath.Join(dir, layoutBlobPath(gzDigest))); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
		"--dest-creds", nodeAdmin+":"+nodeAdminPassword, "oci:"+dir+":v1", "docker://"+img.ref(reg.addr))
	t.Logf("pushed %s (%d bytes of gzip, diff_id %s) in %v", img.bench, gzSize, diffID, time.Since(began).Round(time.Millisecond))
	return bench
}

// benchLayer returns the path of a benchmark image's one layer, without
// its .tar.gz or .tar, building the image with bench/images/build.sh
// when it is missing, as the benchmarks do (cached outside the repository,
// so only a fresh machine pays for it; the script takes a lock, so the
// benchmark test building python3 beside this waits for it).
func benchLayer(t *testing.T, image string) string {
	t.Helper()
	layer := filepath.Join(benchCache, "layers", image)
	_, errGz := os.Stat(layer + ".tar.gz")
	_, errTar := os.Stat(layer + ".tar")
	if errGz == nil && errTar == nil {
		return layer
	}
	script, err := filepath.Abs("../../bench/images/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	cmd := exec.Command(script, image)
	cmd.Dir = filepath.Dir(filepath.Dir(filepath.Dir(script)))
	cmd.Env = append(os.Environ(), "SLUICE_BENCH_CACHE="+benchCache)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the %s benchmark image is not built and bench/images/build.sh failed: %v\n%s", image, err, out)
	}
	t.Logf("built the %s benchmark image into %s in %v", image, benchCache, time.Since(began).Round(time.Second))
	return layer
}

// fileDigest hashes a file as it streams by.
func fileDigest(t *testing.T, path string) (digest.Digest, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := digest.SHA256.Digester()
	n, err := io.Copy(d.Hash(), f)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return d.Digest(), n
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
