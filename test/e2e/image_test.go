package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testImage is a single-platform OCI image made in memory: gzip layers
// (from newTestImage, each one file of random bytes), a config whose
// diff_ids match them (containerd checks that when it unpacks), and the
// manifest.
type testImage struct {
	Manifest       []byte
	ManifestDigest digest.Digest
	Platform       ocispec.Platform
	Config         ocispec.Descriptor
	Layers         []ocispec.Descriptor
	// Blobs holds the config and every layer by digest.
	Blobs map[digest.Digest][]byte
}

// newTestImage makes an image with one layer per size (the size of the
// random file inside it; random data barely compresses, so the gzip blob is
// about as large).
func newTestImage(t *testing.T, rng *rand.Rand, sizes ...int) *testImage {
	t.Helper()
	return newPlatformImage(t, rng, runtime.GOARCH, sizes...)
}

// newPlatformImage is newTestImage for a linux platform of another
// architecture, to be put in an index.
func newPlatformImage(t *testing.T, rng *rand.Rand, arch string, sizes ...int) *testImage {
	t.Helper()
	tarballs := make([][]byte, len(sizes))
	for i, size := range sizes {
		tarballs[i] = tarLayer(t, fileEntry(fmt.Sprintf("layer%d/data.bin", i), 0o755, randomBytes(rng, size)))
	}
	cfg := ocispec.ImageConfig{Cmd: []string{"/layer0/data.bin"}, Labels: map[string]string{"e2e.nonce": fmt.Sprint(rng.Uint64())}}
	return newImage(t, ocispec.Platform{Architecture: arch, OS: "linux"}, cfg, gzipLevel(gzip.DefaultCompression), tarballs...)
}

// newImage makes an image of the given layer tarballs, gzip-compressed by
// compress (in parallel: large layers take a while), with a config for
// platform whose diff_ids match them.
func newImage(t *testing.T, platform ocispec.Platform, cfg ocispec.ImageConfig, compress compressor, tarballs ...[]byte) *testImage {
	t.Helper()
	img := &testImage{Blobs: map[digest.Digest][]byte{}, Platform: platform}
	gz := make([][]byte, len(tarballs))
	errs := make([]error, len(tarballs))
	var wg sync.WaitGroup
	for i, tb := range tarballs {
		wg.Go(func() { gz[i], errs[i] = compress(tb) })
	}
	wg.Wait()
	var diffIDs []digest.Digest
	for i, tb := range tarballs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		diffIDs = append(diffIDs, digest.FromBytes(tb))
		img.Layers = append(img.Layers, img.addBlob(ocispec.MediaTypeImageLayerGzip, gz[i]))
	}
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	config, err := json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: img.Platform,
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = img.addBlob(ocispec.MediaTypeImageConfig, config)
	img.Manifest, err = json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    img.Config,
		Layers:    img.Layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.ManifestDigest = digest.FromBytes(img.Manifest)
	return img
}

func (img *testImage) addBlob(mediaType string, b []byte) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	img.Blobs[d.Digest] = b
	return d
}

// tarGzipLayer returns a tar archive holding one file of size random bytes
// at name, and its gzip compression.
func tarGzipLayer(t *testing.T, rng *rand.Rand, name string, size int) (tarball, gz []byte) {
	t.Helper()
	tarball = tarLayer(t, fileEntry(name, 0o755, randomBytes(rng, size)))
	gz, err := gzipBytes(tarball, gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	return tarball, gz
}

// tarEntry is one member of a layer tarball.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

// layerTime is the modification time of every entry of the test layers.
var layerTime = time.Unix(1700000000, 0)

func dirEntry(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: layerTime}}
}

func fileEntry(name string, mode int64, body []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: layerTime}, body: body}
}

func symlinkEntry(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink, ModTime: layerTime}}
}

// tarLayer returns a tar archive of entries, in order.
func tarLayer(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	size := 0
	for _, e := range entries {
		size += 1024 + len(e.body)
	}
	tb := bytes.NewBuffer(make([]byte, 0, size+1024))
	tw := tar.NewWriter(tb)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return tb.Bytes()
}

// compressor gzip-compresses a layer tarball.
type compressor func(tarball []byte) ([]byte, error)

// gzipLevel compresses in this process, at level.
func gzipLevel(level int) compressor {
	return func(tarball []byte) ([]byte, error) { return gzipBytes(tarball, level) }
}

// gzipCommand compresses with the gzip command at its fastest level: on
// large layers it is several times faster than this process, which the race
// detector may slow down.
func gzipCommand(path string) compressor {
	return func(tarball []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, path, "-1", "-n", "-c")
		cmd.Stdin = bytes.NewReader(tarball)
		out := bytes.NewBuffer(make([]byte, 0, len(tarball)/2))
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("gzip of a %d-byte layer: %v: %s", len(tarball), err, stderr.Bytes())
		}
		return out.Bytes(), nil
	}
}

func gzipBytes(b []byte, level int) ([]byte, error) {
	gb := bytes.NewBuffer(make([]byte, 0, len(b)/2))
	zw, err := gzip.NewWriterLevel(gb, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gb.Bytes(), nil
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// compressibleBytes returns n bytes that gzip and zstd shrink to about
// half, as they do real layers: every 4 KiB block is half random bytes and
// half a copy of bytes from a little earlier, within both compressors'
// windows. It is quick to make, even under the race detector, unlike
// realistic text.
func compressibleBytes(rng *rand.Rand, n int) []byte {
	const block = 4 << 10
	var seed [32]byte
	for i := 0; i < len(seed); i += 8 {
		binary.LittleEndian.PutUint64(seed[i:], rng.Uint64())
	}
	// ChaCha8's Read is assembly, which the race detector does not slow.
	random := rand.NewChaCha8(seed)
	b := make([]byte, n)
	for off := 0; off < n; off += block {
		end := min(off+block, n)
		half := off + (end-off)/2
		if off == 0 {
			half = end
		}
		_, _ = random.Read(b[off:half])
		if half < end {
			copy(b[half:end], b[off-block+int(random.Uint64()%(block/2)):])
		}
	}
	return b
}

// newRand returns a generator seeded from the test's name, so that every
// test makes distinct content and a rerun makes the same.
func newRand(t *testing.T) *rand.Rand {
	seed := digest.FromString(t.Name())
	var s [32]byte
	copy(s[:], []byte(seed.Encoded()))
	return rand.New(rand.NewChaCha8(s))
}

// descriptor describes the image's manifest, with its platform.
func (img *testImage) descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest,
		Digest:    img.ManifestDigest,
		Size:      int64(len(img.Manifest)),
		Platform:  &img.Platform,
	}
}

// writeLayout writes the image as an OCI image layout in dir, its manifest
// named tag in index.json.
func (img *testImage) writeLayout(t *testing.T, dir, tag string) {
	writeLayout(t, dir, tag, img.descriptor(), img.Manifest, img.Blobs)
}

// testIndex is a multi-platform image: an OCI index of test images.
type testIndex struct {
	Index  []byte
	Digest digest.Digest
	Images []*testImage
}

func newTestIndex(t *testing.T, images ...*testImage) *testIndex {
	t.Helper()
	ix := &testIndex{Images: images}
	var descs []ocispec.Descriptor
	for _, img := range images {
		descs = append(descs, img.descriptor())
	}
	var err error
	ix.Index, err = json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
	if err != nil {
		t.Fatal(err)
	}
	ix.Digest = digest.FromBytes(ix.Index)
	return ix
}

// blobs returns the manifests of the index's images and all their blobs.
func (ix *testIndex) blobs() map[digest.Digest][]byte {
	all := map[digest.Digest][]byte{}
	for _, img := range ix.Images {
		all[img.ManifestDigest] = img.Manifest
		maps.Copy(all, img.Blobs)
	}
	return all
}

func (ix *testIndex) writeLayout(t *testing.T, dir, tag string) {
	root := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: ix.Digest, Size: int64(len(ix.Index))}
	writeLayout(t, dir, tag, root, ix.Index, ix.blobs())
}

// writeLayout writes an OCI image layout in dir whose index.json names
// root tag; blobs holds everything root references, directly or not.
func writeLayout(t *testing.T, dir, tag string, root ocispec.Descriptor, payload []byte, blobs map[digest.Digest][]byte) {
	t.Helper()
	write := func(name string, b []byte) { writeFile(t, filepath.Join(dir, name), b) }
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	write(ocispec.ImageLayoutFile, layout)
	root.Platform = nil
	root.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	index, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{root},
	})
	write("index.json", index)
	write(layoutBlobPath(root.Digest), payload)
	for d, b := range blobs {
		write(layoutBlobPath(d), b)
	}
}

func layoutBlobPath(d digest.Digest) string {
	return filepath.Join("blobs", string(d.Algorithm()), d.Encoded())
}

// readLayoutBlob reads a blob of an OCI image layout and checks that it
// hashes to its name.
func readLayoutBlob(t *testing.T, dir string, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, layoutBlobPath(d)))
	if err != nil {
		t.Fatalf("blob %s missing from layout %s: %v", d, dir, err)
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		t.Fatalf("layout blob %s hashes to %s", d, got)
	}
	return b
}

// checkLayoutBlobs checks that an OCI image layout holds every blob with
// the expected content.
func checkLayoutBlobs(t *testing.T, dir string, want map[digest.Digest][]byte) {
	t.Helper()
	for d, b := range want {
		if got := readLayoutBlob(t, dir, d); !bytes.Equal(got, b) {
			t.Errorf("blob %s in layout %s differs from the original", d, dir)
		}
	}
}

// readLayoutManifest returns the descriptor and bytes of the manifest named
// tag in an OCI image layout.
func readLayoutManifest(t *testing.T, dir, tag string) (ocispec.Descriptor, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatalf("index.json of %s: %v", dir, err)
	}
	for _, d := range index.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == tag {
			return d, readLayoutBlob(t, dir, d.Digest)
		}
	}
	t.Fatalf("layout %s has no manifest named %q: %s", dir, tag, b)
	return ocispec.Descriptor{}, nil
}

// writeFile writes b to path, creating its directory.
func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
