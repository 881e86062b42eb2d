package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/streaming/ocidir/ocidirtest"
)

// makeLayout writes an OCI layout holding one two-layer image tagged v1.
func makeLayout(t *testing.T) (string, ocispec.Descriptor) {
	dir := t.TempDir()
	ocidirtest.New(t, dir)
	d := ocidirtest.Image(t, dir, ocispec.Platform{OS: "linux", Architecture: "amd64"}, ocispec.MediaTypeImageManifest,
		ocidirtest.Layer{Files: map[string]string{"etc/os-release": "debian", "bin/sh": strings.Repeat("elf", 1000)}, MediaType: ocispec.MediaTypeImageLayerGzip},
		ocidirtest.Layer{Files: map[string]string{"app/main.py": "print(1)"}, MediaType: ocispec.MediaTypeImageLayer})
	ocidirtest.Tag(t, dir, d, "v1")
	return dir, d
}

// runSluice runs sluice in-process with args and returns its standard
// output and error, and the error as Execute's caller sees it.
func runSluice(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: isolatedEnv(t)}
	root := NewRootCommand(a)
	root.SetArgs(rewriteArgs(root, args))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.Execute()
	return out.String() + errOut.String(), err
}

func TestConvertOCILayout(t *testing.T) {
	dir, subject := makeLayout(t)
	for _, ref := range []string{"oci:" + dir + ":v1", "oci:" + dir} { // the second run is idempotent
		if out, err := runSluice(t, "convert", ref); err != nil {
			t.Fatalf("convert %s: %v\n%s", ref, err, out)
		}
	}
	idx := ocidirtest.ReadIndex(t, dir)
	if len(idx.Manifests) != 2 || idx.Manifests[1].ArtifactType != streaming.ArtifactType {
		t.Fatalf("index.json: %+v", idx)
	}
	m := ocidirtest.ReadManifest(t, dir, idx.Manifests[1].Digest)
	if m.Subject == nil || m.Subject.Digest != subject.Digest || m.ArtifactType != streaming.ArtifactType ||
		m.Annotations[streaming.AnnotationPlatformArch] != "amd64" || len(m.Layers) != 2 {
		t.Fatalf("streaming manifest: %+v", m)
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
	raw := ocidirtest.Layer{Files: map[string]string{"a": "hello", "b/c": "world"}}.Tar()
	os.WriteFile(in, ocidirtest.Gzip(raw), 0o644)
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
	windows := t.TempDir()
	ocidirtest.New(t, windows)
	layer := ocidirtest.Layer{Files: map[string]string{"app.exe": "MZ"}, MediaType: ocispec.MediaTypeImageLayer}
	ocidirtest.Tag(t, windows, ocidirtest.Image(t, windows, ocispec.Platform{OS: "windows", Architecture: "amd64"}, ocispec.MediaTypeImageManifest, layer), "win")
	ocidirtest.Tag(t, windows, ocidirtest.Image(t, windows, ocispec.Platform{Architecture: "amd64"}, ocispec.MediaTypeImageManifest, layer), "no-os")
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
		{"windows image", []string{"convert", "oci:" + windows + ":win"}, "UNSUPPORTED_PLATFORM: platform windows/amd64 is not supported"},
		{"image without os", []string{"convert", "oci:" + windows + ":no-os"}, "UNSUPPORTED_PLATFORM: platform /amd64 is not supported"},
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
