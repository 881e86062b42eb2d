package conversion

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/testenv"
)

// treeLayer builds a layer from entries: a file's data, a symbolic link's
// target after "->", or a directory (a name ending in /).
type treeEntry struct {
	name, link string
	data       []byte
}

func treeLayer(t *testing.T, entries []treeEntry) layer {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o755, ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		switch {
		case e.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		case e.name[len(e.name)-1] == '/':
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	return layer{blob: gz.Bytes(), diffID: digest.FromBytes(tarBuf.Bytes())}
}

func hostFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	testenv.Need(t, err == nil, "the host's %s (the test's ELF files are the host's own)", p)
	return b
}

// TestInferredStartupProfile converts an image whose entrypoint is an ELF
// executable named like CPython, in a Debian-like tree (/lib a link to
// usr/lib, the interpreter a link through it), with the app in a second
// layer, and checks the inferred profile of each layer: the chunks of the
// executable, its interpreter, libc, the linker's cache and Python's
// startup modules, and nothing of a large file beside them.
func TestInferredStartupProfile(t *testing.T) {
	exe := hostFile(t, "/bin/true") // dynamically linked against libc
	libc := hostFile(t, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	ld := hostFile(t, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	rng := rand.New(rand.NewPCG(7, 7))
	decoy := make([]byte, 3<<20)
	for i := range decoy {
		decoy[i] = byte(rng.IntN(256))
	}
	// A file in chunks of its own: just over a chunk.
	own := func(seed uint64) []byte {
		rng := rand.New(rand.NewPCG(seed, 1))
		b := make([]byte, 257<<10)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	base := treeLayer(t, []treeEntry{
		{name: "lib", link: "usr/lib"},
		{name: "lib64/"},
		{name: "lib64/ld-linux-x86-64.so.2", link: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
		{name: "etc/"},
		{name: "etc/group", data: own(1)},
		{name: "etc/ld.so.cache", data: []byte("ld.so-1.7.0 cache of the test")},
		{name: "etc/ld.so.conf.d/"},
		{name: "etc/ld.so.conf.d/x86_64-linux-gnu.conf", data: []byte("# multiarch\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n")},
		{name: "etc/localtime", link: "/usr/share/zoneinfo/Etc/UTC"},
		{name: "etc/passwd", data: own(2)},
		{name: "usr/"},
		{name: "usr/lib/"},
		{name: "usr/lib/locale/C.utf8/LC_CTYPE", data: own(3)},
		{name: "usr/lib/locale/de_DE.utf8/LC_CTYPE", data: decoy},
		{name: "usr/lib/x86_64-linux-gnu/"},
		{name: "usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache", data: own(4)},
		{name: "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", data: ld},
		{name: "usr/lib/x86_64-linux-gnu/libc.so.6", data: libc},
		{name: "usr/share/decoy.bin", data: decoy},
		{name: "usr/share/zoneinfo/Etc/UTC", data: own(5)},
		{name: "usr/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc", data: []byte("pyc: encodings")},
		{name: "usr/lib/python3.11/encodings/__pycache__/aliases.cpython-311.pyc", data: []byte("pyc: aliases")},
		{name: "usr/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc", data: []byte("pyc: utf_8")},
		{name: "usr/lib/python3.11/encodings/cp1252.py", data: []byte("not read at start")},
		{name: "usr/lib/python3.11/keyword.py", data: []byte("not read at start either")},
		{name: "usr/lib/python3.11/token.py", data: []byte("nor this")},
		{name: "usr/lib/python3.11/sitecustomize.py", data: []byte("# Debian's")},
		{name: "usr/lib/python3/dist-packages/distutils-precedence.pth", data: []byte("import _distutils_hack")},
	})
	app := treeLayer(t, []treeEntry{
		{name: "usr/bin/"},
		{name: "usr/bin/python3", link: "python3.11"},
		{name: "usr/bin/python3.11", data: exe},
		{name: "usr/share/app.bin", data: decoy},
		{name: "usr/share/.wh.decoy.bin"},
	})
	e := newEnv(t, true)
	ctx := context.Background()
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{base.diffID, app.diffID}},
		Config: ocispec.ImageConfig{Cmd: []string{"python3"}, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}}
	m := convertImage(t, e, "py", cfg, base, app)

	want := []map[string]bool{
		{"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": true, "usr/lib/x86_64-linux-gnu/libc.so.6": true, "etc/ld.so.cache": true,
			"usr/lib/python3.11/encodings/__pycache__/__init__.cpython-311.pyc": true, "usr/lib/python3.11/encodings/__pycache__/aliases.cpython-311.pyc": true,
			"usr/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc": true, "usr/lib/python3.11/sitecustomize.py": true,
			"usr/lib/python3/dist-packages/distutils-precedence.pth": true,
			// runc reads these; CPython sets its locale (C.UTF-8 by
			// coercion) and time zone.
			"etc/passwd": true, "etc/group": true, "usr/lib/locale/C.utf8/LC_CTYPE": true,
			"usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache": true, "usr/share/zoneinfo/Etc/UTC": true},
		{"usr/bin/python3.11": true},
	}
	for i, l := range m.Layers {
		for p, c := range inferredCoverage(t, e, l) {
			switch {
			case want[i][p] && c[0] != c[1]:
				t.Errorf("layer %d: %s: %d of its %d chunks in the profile, want all", i, p, c[0], c[1])
			case (p == "usr/share/decoy.bin" || p == "usr/lib/locale/de_DE.utf8/LC_CTYPE") && c[0] > 0:
				t.Errorf("layer %d: %d of the decoy's %d chunks in the profile", i, c[0], c[1])
			case p == "usr/lib/python3.11/encodings/cp1252.py" && c[0] > 0:
				// Converted, it shares a chunk with the modules read at
				// start; split, it has one of its own.
				t.Errorf("layer %d: %s, not read at start, is in the profile", i, p)
			}
		}
	}

	// The split layers hold the same tar, and replace what the cache of
	// converted layers names; the unsplit form is gone.
	for i, src := range []layer{base, app} {
		if r := openLayer(t, e, m.Layers[i]); r.DiffID() != src.diffID {
			t.Errorf("layer %d holds %s, the image's is %s", i, r.DiffID(), src.diffID)
		}
		cached, err := e.meta.GetConvertedLayer(ctx, digest.FromBytes(src.blob).String(), streaming.FormatVersion)
		if err != nil || cached.Digest != m.Layers[i].Digest.String() {
			t.Errorf("layer %d: the cache names %+v (%v), the artifact %s", i, cached, err, m.Layers[i].Digest)
		}
	}
	var plain bytes.Buffer
	res, err := streaming.Convert(ctx, bytes.NewReader(base.blob), &plain, e.conv.opts.Streaming)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest == m.Layers[0].Digest {
		t.Fatal("the base layer was not split for its start")
	}
	// No manifest names the unsplit form: the garbage collector takes it.
	if _, err := e.reg.StatBlob(ctx, "py", res.Digest); err != nil {
		t.Fatalf("the base layer's unsplit form: %v", err)
	}
	if _, err := e.meta.UnlinkUnreferencedBlobs(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.StatBlob(ctx, "py", res.Digest); err == nil {
		t.Error("the base layer's unsplit form is still in the repository after a collection")
	}
	if _, err := e.reg.StatBlob(ctx, "py", m.Layers[0].Digest); err != nil {
		t.Errorf("the split base layer after a collection: %v", err)
	}
	// Another repository's conversion of the image reuses the split
	// layers as they are: the same artifact layers.
	if m2 := convertImage(t, e, "py2", cfg, base, app); m2.Layers[0].Digest != m.Layers[0].Digest || m2.Layers[1].Digest != m.Layers[1].Digest {
		t.Errorf("a second conversion made layers %s, %s; the first %s, %s", m2.Layers[0].Digest, m2.Layers[1].Digest, m.Layers[0].Digest, m.Layers[1].Digest)
	}
	// So does an image on the same layers with another start (one that
	// imports keyword but not token beside it): a layer shared by many
	// images is not stored again split for each one's start.
	other := cfg
	other.Config.Cmd = []string{"python3", "-c", "import keyword"}
	if m3 := convertImage(t, e, "py3", other, base, app); m3.Layers[0].Digest != m.Layers[0].Digest {
		t.Errorf("an image with another start got base layer %s, the first %s", m3.Layers[0].Digest, m.Layers[0].Digest)
	}

	// A node's recording replaces it; a later conversion does not put the
	// inferred one back.
	recorded := []streaming.Range{{Offset: 0, Length: 1}}
	if err := e.reg.PutStartupProfile(ctx, "py", m.Layers[1].Digest, recorded); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.PutInferredStartupProfile(ctx, "py", m.Layers[1].Digest, []streaming.Range{{Offset: 5, Length: 5}}); err != nil {
		t.Fatal(err)
	}
	if prof, _ := e.reg.StartupProfile(ctx, "py", m.Layers[1].Digest); prof.Inferred || len(prof.Ranges) != 1 || prof.Ranges[0] != recorded[0] {
		t.Fatalf("after a recording and another inference: %+v", prof)
	}
}

// convertImage pushes an image of layers with config cfg to repo, converts
// it and returns its streaming manifest.
func convertImage(t *testing.T, e *env, repo string, cfg ocispec.Image, layers ...layer) ocispec.Manifest {
	t.Helper()
	img := e.pushImageConfig(repo, "v1", cfg, layers...)
	op, err := e.conv.Start(context.Background(), repo, img.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if done := e.wait(repo, op.ID); done.Status != "Succeeded" {
		t.Fatalf("conversion %s: %s", done.Status, done.ErrorMessage)
	}
	refs := e.streamingReferrers(repo, img.Digest)
	sm, err := e.reg.GetManifest(context.Background(), repo, oci.Reference{Digest: refs[0].Digest.String()}, true)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(sm.Payload, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// inferredCoverage reads a layer's inferred profile and returns, for each
// regular file of the layer, how many of its chunks the profile lists and
// how many it has.
func inferredCoverage(t *testing.T, e *env, l ocispec.Descriptor) map[string][2]int {
	t.Helper()
	prof, err := e.reg.StartupProfile(context.Background(), "py", l.Digest)
	if err != nil {
		t.Fatalf("layer %s: %v", l.Digest, err)
	}
	if !prof.Inferred {
		t.Errorf("layer %s: the profile is not marked inferred", l.Digest)
	}
	in := map[int64]bool{}
	for _, r := range prof.Ranges {
		in[r.Offset] = true
	}
	r := openLayer(t, e, l)
	out := map[string][2]int{}
	for _, entry := range r.Entries() {
		if entry.Type != streaming.TypeReg || entry.Size == 0 {
			continue
		}
		chunks := fileChunks(r, &entry, nil)
		covered := 0
		for _, c := range chunks {
			if in[c.Offset] {
				covered++
			}
		}
		out[entry.Path()] = [2]int{covered, len(chunks)}
	}
	return out
}

func openLayer(t *testing.T, e *env, l ocispec.Descriptor) *streaming.Reader {
	t.Helper()
	c, err := e.reg.OpenBlob(context.Background(), "py", l.Digest)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	off, _ := strconv.ParseInt(l.Annotations[streaming.AnnotationTOCOffset], 10, 64)
	size, _ := strconv.ParseInt(l.Annotations[streaming.AnnotationTOCSize], 10, 64)
	r, err := streaming.Open(context.Background(), &seekerRanges{rs: c}, c.Size, streaming.WithTOC(digest.Digest(l.Annotations[streaming.AnnotationTOCDigest]), off, size))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestIndexSplitsASharedLayerOnce converts an index of two images on one
// layer whose starts differ: the layer is split for the first image's
// start, and the second image shares that form instead of a copy split
// for its own.
func TestIndexSplitsASharedLayerOnce(t *testing.T) {
	shared := treeLayer(t, []treeEntry{
		{name: "bin/"},
		{name: "bin/a", data: []byte("#!/bin/sh\necho a\n")},
		{name: "bin/b", data: []byte("#!/bin/sh\necho b\n")},
		{name: "bin/c", data: []byte("#!/bin/sh\necho c, which no start runs\n")},
		{name: "etc/"},
		{name: "etc/group", data: []byte("root:x:0:\n")},
		{name: "etc/hosts", data: []byte("127.0.0.1 localhost\n")},
		{name: "etc/passwd", data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
	})
	e := newEnv(t, true)
	ctx := context.Background()
	var images []ocispec.Descriptor
	for _, p := range []struct{ arch, cmd string }{{"amd64", "/bin/a"}, {"arm64", "/bin/b"}} {
		cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: p.arch}, Config: ocispec.ImageConfig{Cmd: []string{p.cmd}}}
		d := e.pushImageConfig("idx", "", cfg, shared)
		d.Platform = &cfg.Platform
		images = append(images, d)
	}
	idx := e.putManifest("idx", "latest", ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: images})
	op, err := e.conv.Start(ctx, "idx", idx.Digest, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if done := e.wait("idx", op.ID); done.Status != metadata.StatusSucceeded {
		t.Fatalf("conversion %s: %s", done.Status, done.ErrorMessage)
	}
	layers := map[digest.Digest]bool{}
	for _, ref := range e.streamingReferrers("idx", idx.Digest) {
		sm, err := e.reg.GetManifest(ctx, "idx", oci.Reference{Digest: ref.Digest.String()}, true)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(sm.Payload, &m); err != nil {
			t.Fatal(err)
		}
		layers[m.Layers[0].Digest] = true
	}
	var plain bytes.Buffer
	res, err := streaming.Convert(ctx, bytes.NewReader(shared.blob), &plain, e.conv.opts.Streaming)
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 || layers[res.Digest] {
		t.Fatalf("the two images stream layers %v (unsplit %s), want one split form", layers, res.Digest)
	}
}

// TestFileChunksOfASparseFile checks that a sparse file's chunks are those
// of its data (its fragments, back to back in the tar), not of as many
// bytes as the file is long, which would take in the files after it.
func TestFileChunksOfASparseFile(t *testing.T) {
	_, err := exec.LookPath("tar")
	testenv.Need(t, err == nil, "GNU tar not installed: cannot make sparse tar entries")
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "a-sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("data "), 1600))
	f.Truncate(4 << 20)
	f.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(rng.IntN(256))
	}
	if err := os.WriteFile(filepath.Join(dir, "b-after"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	tarBytes, err := exec.Command("tar", "--sparse", "--format=pax", "-C", dir, "-cf", "-", "a-sparse", "b-after").Output()
	if err != nil {
		t.Fatalf("tar --sparse: %v", err)
	}
	var blob bytes.Buffer
	res, err := streaming.Convert(context.Background(), bytes.NewReader(tarBytes), &blob, streaming.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := streaming.Open(context.Background(), streaming.ReaderAtRanges(bytes.NewReader(blob.Bytes())), res.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e, err := r.Lookup("a-sparse")
	if err != nil || e.Sparse == nil {
		t.Fatalf("a-sparse: %v, sparse map %v", err, e.Sparse)
	}
	if got := fileChunks(r, e, nil); len(got) != 1 {
		t.Fatalf("a sparse file with 8 KB of data is in %d chunks: %v", len(got), got)
	}
}
