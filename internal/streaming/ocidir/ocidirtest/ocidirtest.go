// Package ocidirtest writes small OCI image layouts for tests.
package ocidirtest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DockerLayerGzip is Docker's media type for a gzip layer.
const DockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

// Layer is one layer: its files, and its media type (which decides the
// compression: ...tar, ...tar+gzip or Docker's rootfs.diff.tar.gzip).
type Layer struct {
	Files     map[string]string
	MediaType string
}

// Tar returns the layer's uncompressed tar.
func (l Layer) Tar() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(l.Files))
	for n := range l.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(l.Files[n]))})
		tw.Write([]byte(l.Files[n]))
	}
	tw.Close()
	return buf.Bytes()
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// New creates an empty OCI layout in dir.
func New(t testing.TB, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	writeIndex(t, dir, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex})
}

// WriteBlob stores b in the layout and returns its digest.
func WriteBlob(t testing.TB, dir string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// WriteJSON stores v as a JSON blob and returns its descriptor.
func WriteJSON(t testing.TB, dir, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: WriteBlob(t, dir, b), Size: int64(len(b))}
}

// Image stores an image manifest with these layers for platform p and
// returns its descriptor (not yet in index.json).
func Image(t testing.TB, dir string, p ocispec.Platform, manifestType string, layers ...Layer) ocispec.Descriptor {
	t.Helper()
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, l := range layers {
		raw := l.Tar()
		blob := raw
		if l.MediaType != ocispec.MediaTypeImageLayer {
			blob = Gzip(raw)
		}
		descs = append(descs, ocispec.Descriptor{MediaType: l.MediaType, Digest: WriteBlob(t, dir, blob), Size: int64(len(blob))})
		diffIDs = append(diffIDs, digest.FromBytes(raw))
	}
	cfg := WriteJSON(t, dir, ocispec.MediaTypeImageConfig, ocispec.Image{Platform: p, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	return WriteJSON(t, dir, manifestType, ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: manifestType, Config: cfg, Layers: descs})
}

// Tag adds d to index.json under tag.
func Tag(t testing.TB, dir string, d ocispec.Descriptor, tag string) {
	t.Helper()
	idx := ReadIndex(t, dir)
	d.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx.Manifests = append(idx.Manifests, d)
	writeIndex(t, dir, idx)
}

// ReadIndex returns the layout's index.json.
func ReadIndex(t testing.TB, dir string) ocispec.Index {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// ReadManifest decodes a manifest blob of the layout.
func ReadManifest(t testing.TB, dir string, d digest.Digest) ocispec.Manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func writeIndex(t testing.TB, dir string, idx ocispec.Index) {
	t.Helper()
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
