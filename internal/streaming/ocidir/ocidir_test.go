package ocidir

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/streaming/ocidir/ocidirtest"
)

var (
	amd64   = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	armv7   = ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	windows = ocispec.Platform{OS: "windows", Architecture: "amd64"}
	base    = ocidirtest.Layer{Files: map[string]string{"etc/os-release": "debian", "bin/sh": strings.Repeat("elf", 999)}, MediaType: ocispec.MediaTypeImageLayerGzip}
	app     = ocidirtest.Layer{Files: map[string]string{"app/main.py": "print(1)"}, MediaType: ocispec.MediaTypeImageLayer}
	docker  = ocidirtest.Layer{Files: map[string]string{"x": "y"}, MediaType: ocidirtest.DockerLayerGzip}
)

func TestConvertIndexPerPlatform(t *testing.T) {
	dir := t.TempDir()
	ocidirtest.New(t, dir)
	var subs []ocispec.Descriptor
	for _, p := range []ocispec.Platform{amd64, armv7, windows} {
		d := ocidirtest.Image(t, dir, p, ocispec.MediaTypeImageManifest, base, app)
		p := p
		d.Platform = &p
		subs = append(subs, d)
	}
	idx := ocidirtest.WriteJSON(t, dir, ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: subs})
	ocidirtest.Tag(t, dir, idx, "multi")
	cs, err := Convert(context.Background(), dir, "multi", streaming.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("converted %d platforms, want the 2 Linux ones", len(cs))
	}
	for i, c := range cs {
		m := ocidirtest.ReadManifest(t, dir, c.Manifest.Digest)
		// The index is the subject, as in the registry's conversions.
		if m.Subject.Digest != idx.Digest || m.ArtifactType != streaming.ArtifactType || len(m.Layers) != 2 {
			t.Errorf("streaming manifest %d: %+v", i, m)
		}
	}
	if cs[1].Manifest.Annotations[streaming.AnnotationPlatformVariant] != "v7" {
		t.Errorf("arm/v7 manifest annotations %v", cs[1].Manifest.Annotations)
	}
	if got := len(ocidirtest.ReadIndex(t, dir).Manifests); got != 3 {
		t.Errorf("index.json has %d manifests, want the index and 2 streaming manifests", got)
	}
}

func TestConvertDockerImage(t *testing.T) {
	dir := t.TempDir()
	ocidirtest.New(t, dir)
	d := ocidirtest.Image(t, dir, amd64, "application/vnd.docker.distribution.manifest.v2+json", docker)
	ocidirtest.Tag(t, dir, d, "latest")
	cs, err := Convert(context.Background(), dir, "", streaming.Options{})
	if err != nil || len(cs) != 1 || cs[0].Layers[0].SourceCompression != streaming.CompressionGzip {
		t.Fatalf("Convert: %v %+v", err, cs)
	}
}

func TestConvertRefuses(t *testing.T) {
	dir := t.TempDir()
	ocidirtest.New(t, dir)
	d := ocidirtest.Image(t, dir, amd64, ocispec.MediaTypeImageManifest, base)
	ocidirtest.Tag(t, dir, d, "a")
	ocidirtest.Tag(t, dir, d, "b")
	if _, err := Convert(context.Background(), dir, "", streaming.Options{}); err == nil || !strings.Contains(err.Error(), "oci:") {
		t.Errorf("two images and no tag: %v", err)
	}
	cs, err := Convert(context.Background(), dir, "a", streaming.Options{})
	if err != nil {
		t.Fatal(err)
	}
	streamingDesc := cs[0].Manifest
	ocidirtest.Tag(t, dir, streamingDesc, "streaming")
	if _, err := Convert(context.Background(), dir, "streaming", streaming.Options{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a tag naming only a streaming artifact: %v", err)
	}
	if _, err := new(layout).convertManifest(context.Background(), streamingDesc, streamingDesc, streaming.Options{}); err == nil {
		t.Errorf("converting a streaming manifest again succeeded")
	}
	l := layout{Dir: dir}
	if _, err := l.convertManifest(context.Background(), streamingDesc, streamingDesc, streaming.Options{}); !errors.Is(err, ErrAlreadyStreaming) {
		t.Errorf("converting a streaming manifest again: %v", err)
	}
}

// An image whose config is not a Linux one is refused, naming its
// platform, as the registry's conversions refuse it; an index skips such an
// image even when its descriptor has no platform.
func TestConvertRefusesOtherPlatforms(t *testing.T) {
	dir := t.TempDir()
	ocidirtest.New(t, dir)
	noOS := ocispec.Platform{Architecture: "amd64"}
	for tag, p := range map[string]ocispec.Platform{"windows": windows, "no-os": noOS} {
		ocidirtest.Tag(t, dir, ocidirtest.Image(t, dir, p, ocispec.MediaTypeImageManifest, base), tag)
	}
	for tag, want := range map[string]string{"windows": "platform windows/amd64", "no-os": "platform /amd64"} {
		_, err := Convert(context.Background(), dir, tag, streaming.Options{})
		var pe *streaming.PlatformError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s image: %v, want a platform error naming %q", tag, err, want)
		}
	}

	linux := ocidirtest.Image(t, dir, amd64, ocispec.MediaTypeImageManifest, app)
	unlabelled := ocidirtest.Image(t, dir, windows, ocispec.MediaTypeImageManifest, app)
	idx := ocidirtest.WriteJSON(t, dir, ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{linux, unlabelled}})
	ocidirtest.Tag(t, dir, idx, "multi")
	cs, err := Convert(context.Background(), dir, "multi", streaming.Options{})
	if err != nil || len(cs) != 1 || cs[0].Platform.OS != "linux" {
		t.Errorf("index of a Linux and an unlabelled Windows image: %v %+v, want the Linux image only", err, cs)
	}
	if got := len(ocidirtest.ReadIndex(t, dir).Manifests); got != 4 {
		t.Errorf("index.json has %d manifests, want the 3 images and 1 streaming manifest", got)
	}
}
