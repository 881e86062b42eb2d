package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
)

func layerTar(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0644, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func writeBlob(t *testing.T, dir string, b []byte) digest.Digest {
	d := digest.FromBytes(b)
	p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// makeLayout writes an OCI layout holding one two-layer image tagged v1.
func makeLayout(t *testing.T) (string, ocispec.Descriptor) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for i, files := range []map[string]string{{"etc/os-release": "debian", "bin/sh": strings.Repeat("elf", 1000)}, {"app/main.py": "print(1)"}} {
		raw := layerTar(t, files)
		blob := raw
		mt := ocispec.MediaTypeImageLayer
		if i == 0 {
			blob, mt = gzipBytes(raw), ocispec.MediaTypeImageLayerGzip
		}
		layers = append(layers, ocispec.Descriptor{MediaType: mt, Digest: writeBlob(t, dir, blob), Size: int64(len(blob))})
		diffIDs = append(diffIDs, digest.FromBytes(raw))
	}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: writeBlob(t, dir, cfg), Size: int64(len(cfg))}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: layers})
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: writeBlob(t, dir, m), Size: int64(len(m)),
		Annotations: map[string]string{ocispec.AnnotationRefName: "v1"}}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	os.WriteFile(filepath.Join(dir, ocispec.ImageIndexFile), idx, 0o644)
	return dir, md
}

func runSluice(t *testing.T, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestConvertOCILayout(t *testing.T) {
	dir, subject := makeLayout(t)
	for _, ref := range []string{"oci:" + dir + ":v1", "oci:" + dir} { // the second run is idempotent
		if out, err := runSluice(t, "convert", ref); err != nil {
			t.Fatalf("convert %s: %v\n%s", ref, err, out)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	var idx ocispec.Index
	json.Unmarshal(b, &idx)
	if len(idx.Manifests) != 2 || idx.Manifests[1].ArtifactType != streaming.ArtifactType {
		t.Fatalf("index.json: %s", b)
	}
	mb, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", idx.Manifests[1].Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	json.Unmarshal(mb, &m)
	if m.Subject == nil || m.Subject.Digest != subject.Digest || m.ArtifactType != streaming.ArtifactType ||
		m.Annotations[streaming.AnnotationPlatformArch] != "amd64" || len(m.Layers) != 2 {
		t.Fatalf("streaming manifest: %s", mb)
	}
	for _, l := range m.Layers {
		if l.MediaType != streaming.MediaTypeLayer || l.Annotations[streaming.AnnotationTOCDigest] == "" {
			t.Errorf("layer descriptor %+v", l)
		}
		if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded())); err != nil {
			t.Errorf("converted layer blob missing: %v", err)
		}
	}
}

func TestConvertLayerCommand(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "layer.tar.gz"), filepath.Join(dir, "layer.szst")
	raw := layerTar(t, map[string]string{"a": "hello", "b/c": "world"})
	os.WriteFile(in, gzipBytes(raw), 0o644)
	stdout, err := runSluice(t, "convert", "--layer", "--verify", in, out)
	if err != nil {
		t.Fatalf("convert --layer: %v\n%s", err, stdout)
	}
	var res struct {
		DiffID      digest.Digest     `json:"diffID"`
		MediaType   string            `json:"mediaType"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.DiffID != digest.FromBytes(raw) || res.MediaType != streaming.MediaTypeLayer {
		t.Fatalf("output %s (%v)", stdout, err)
	}
}

func TestConvertErrors(t *testing.T) {
	dir, _ := makeLayout(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no arguments", []string{"convert"}, "oci:DIR"},
		{"layer without output", []string{"convert", "--layer", "x"}, "2 arg"},
		{"missing tag", []string{"convert", "oci:" + dir + ":nope"}, "no image tagged"},
		{"not a layout", []string{"convert", "oci:" + t.TempDir()}, "not an OCI image layout"},
		{"missing layer file", []string{"convert", "--layer", filepath.Join(dir, "nope"), filepath.Join(dir, "out")}, "no such file"},
		{"not a layer", []string{"convert", "--layer", filepath.Join(dir, ocispec.ImageIndexFile), filepath.Join(dir, "out")}, "corrupt input layer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runSluice(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseOCIRef(t *testing.T) {
	for ref, want := range map[string][2]string{
		"oci:/tmp/img:v1": {"/tmp/img", "v1"}, "oci:/tmp/img": {"/tmp/img", ""}, "oci:rel/dir:latest": {"rel/dir", "latest"},
		"oci:./a:b/c": {"./a:b/c", ""},
	} {
		if d, tag := parseOCIRef(ref); d != want[0] || tag != want[1] {
			t.Errorf("parseOCIRef(%q) = %q, %q; want %q", ref, d, tag, want)
		}
	}
}
