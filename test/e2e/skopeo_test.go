package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// TestSkopeoCopyRoundTrip copies a multi-layer OCI image from a layout into
// sluiced and back out with skopeo, and expects the same bytes everywhere:
// the manifest, the config and every layer. It then pushes the image
// converted to Docker schema 2 and reads it back in skopeo's dir: format.
func TestSkopeoCopyRoundTrip(t *testing.T) { onEachBackend(t, skopeoCopyRoundTrip) }

func skopeoCopyRoundTrip(t *testing.T, backend []string) {
	skopeo := requireTool(t, "skopeo")
	reg := startSluiced(t, t.TempDir(), backend...)
	cl := newClients(t)
	oc := newOCIClient(t, reg.addr)
	ctx := context.Background()

	img := newTestImage(t, newRand(t), 512, 64<<10, 700<<10, 3<<20)
	src := filepath.Join(cl.dir, "src")
	img.writeLayout(t, src, "v1")
	ref := "docker://" + reg.addr + "/e2e/skopeo"

	// --preserve-digests makes skopeo refuse, rather than quietly do, any
	// change of the manifest on the way.
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", ref+":v1")

	h, served, err := oc.getManifest(ctx, "e2e/skopeo", "v1", ocispec.MediaTypeImageManifest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, img.Manifest) {
		t.Fatalf("registry serves manifest\n%s\nbut skopeo pushed\n%s", served, img.Manifest)
	}
	if got := h.Get("Docker-Content-Digest"); got != img.ManifestDigest.String() {
		t.Errorf("Docker-Content-Digest %q, want %s", got, img.ManifestDigest)
	}
	if got := h.Get("Content-Type"); got != ocispec.MediaTypeImageManifest {
		t.Errorf("Content-Type %q, want %s", got, ocispec.MediaTypeImageManifest)
	}

	back := filepath.Join(cl.dir, "back")
	cl.run(skopeo, "--insecure-policy", "copy", "--preserve-digests", "--src-tls-verify=false", ref+":v1", "oci:"+back+":v1")
	desc, manifest := readLayoutManifest(t, back, "v1")
	if desc.Digest != img.ManifestDigest || !bytes.Equal(manifest, img.Manifest) {
		t.Fatalf("copied back manifest %s differs from the pushed %s:\n%s", desc.Digest, img.ManifestDigest, manifest)
	}
	checkLayoutBlobs(t, back, img.Blobs)

	t.Run("multi-platform index", func(t *testing.T) {
		rng := newRand(t)
		ix := newTestIndex(t, newPlatformImage(t, rng, "amd64", 8<<10), newPlatformImage(t, rng, "arm64", 16<<10, 4<<10))
		src := filepath.Join(cl.dir, "multi")
		ix.writeLayout(t, src, "multi")
		cl.run(skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":multi", ref+":multi")

		h, served, err := oc.getManifest(ctx, "e2e/skopeo", "multi", ocispec.MediaTypeImageIndex)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(served, ix.Index) || h.Get("Content-Type") != ocispec.MediaTypeImageIndex {
			t.Fatalf("registry serves index (%s)\n%s\nbut skopeo pushed\n%s", h.Get("Content-Type"), served, ix.Index)
		}
		back := filepath.Join(cl.dir, "multi-back")
		cl.run(skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", ref+":multi", "oci:"+back+":multi")
		desc, index := readLayoutManifest(t, back, "multi")
		if desc.Digest != ix.Digest || !bytes.Equal(index, ix.Index) {
			t.Fatalf("copied back index %s differs from the pushed %s", desc.Digest, ix.Digest)
		}
		checkLayoutBlobs(t, back, ix.blobs())
	})

	t.Run("docker schema 2", func(t *testing.T) {
		cl.run(skopeo, "--insecure-policy", "copy", "--format", "v2s2", "--dest-tls-verify=false", "oci:"+src+":v1", ref+":v2s2")
		h, served, err := oc.getManifest(ctx, "e2e/skopeo", "v2s2", mediaTypeDockerManifest)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Get("Content-Type"); got != mediaTypeDockerManifest {
			t.Errorf("Content-Type %q, want %s", got, mediaTypeDockerManifest)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(served, &m); err != nil {
			t.Fatal(err)
		}
		if m.MediaType != mediaTypeDockerManifest || m.Config.MediaType != mediaTypeDockerConfig {
			t.Errorf("schema 2 manifest has media types %q and config %q", m.MediaType, m.Config.MediaType)
		}
		if len(m.Layers) != len(img.Layers) {
			t.Fatalf("schema 2 manifest has %d layers, want %d", len(m.Layers), len(img.Layers))
		}
		for i, l := range m.Layers {
			if l.MediaType != mediaTypeDockerLayer || l.Digest != img.Layers[i].Digest {
				t.Errorf("layer %d is %s %s, want %s %s", i, l.MediaType, l.Digest, mediaTypeDockerLayer, img.Layers[i].Digest)
			}
		}

		dir := filepath.Join(cl.dir, "v2s2")
		cl.run(skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", ref+":v2s2", "dir:"+dir)
		got, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, served) {
			t.Errorf("skopeo read back manifest\n%s\nbut the registry serves\n%s", got, served)
		}
		for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			b, err := os.ReadFile(filepath.Join(dir, d.Digest.Encoded()))
			if err != nil {
				t.Fatalf("blob %s missing from skopeo's copy: %v", d.Digest, err)
			}
			if digest.FromBytes(b) != d.Digest {
				t.Errorf("skopeo's copy of %s hashes to %s", d.Digest, digest.FromBytes(b))
			}
		}
	})
}
