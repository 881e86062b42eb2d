package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations and media type of the streaming format (DESIGN.md, section 4).
const (
	mediaTypeStreamingLayer    = "application/vnd.oci.image.layer.v1.tar+zstd"
	annotationSourceDigest     = "io.sluice.streaming.source.digest"
	annotationTOCDigest        = "io.sluice.streaming.toc.digest"
	annotationStreamingOS      = "streaming.platform.os"
	annotationStreamingArch    = "streaming.platform.arch"
	annotationStreamingFormat  = "streaming.format"
	annotationStreamingVersion = "streaming.version"
)

// conversionTimeout bounds a conversion of the small test images, on a
// machine busy with other test packages.
const conversionTimeout = time.Minute

// TestStreamingIndexAutoConversion enables auto-streaming on a repository
// before anything is pushed to it, copies a three-platform index in with
// `skopeo copy --all`, and expects one streaming artifact per Linux
// platform with the index as subject, none for the Windows image, and each
// artifact a faithful conversion of its platform's image.
func TestStreamingIndexAutoConversion(t *testing.T) {
	skopeo := requireTool(t, "skopeo")
	zstd := requireTool(t, "zstd")
	reg := startSluiced(t, t.TempDir())
	oc := newOCIClient(t, reg.addr)
	cl := newClients(t)
	rng := newRand(t)
	const repo = "e2e/streaming/multi"

	amd64 := newPlatformImage(t, rng, "amd64", 64<<10, 300<<10)
	arm64 := newPlatformImage(t, rng, "arm64", 96<<10)
	windows := newImage(t, ocispec.Platform{OS: "windows", Architecture: "amd64"}, ocispec.ImageConfig{Cmd: []string{`C:\app.exe`}}, gzipLevel(6),
		tarLayer(t, fileEntry("Files/app.exe", 0o644, randomBytes(rng, 8<<10))))
	ix := newTestIndex(t, amd64, arm64, windows)
	src := filepath.Join(cl.dir, "multi")
	ix.writeLayout(t, src, "multi")

	oc.enableStreaming(t, repo)
	cl.run(skopeo, "--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
		"oci:"+src+":multi", "docker://"+reg.addr+"/"+repo+":multi")

	refs := waitAutoConversion(t, oc, repo, ix.Digest, 2)
	byArch := map[string]*testImage{"amd64": amd64, "arm64": arm64}
	for _, ref := range refs {
		img := byArch[ref.Annotations[annotationStreamingArch]]
		if img == nil {
			t.Errorf("streaming artifact %s of the index is for %s/%s, want one each for linux/amd64 and linux/arm64",
				ref.Digest, ref.Annotations[annotationStreamingOS], ref.Annotations[annotationStreamingArch])
			continue
		}
		delete(byArch, ref.Annotations[annotationStreamingArch])
		subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: ix.Digest, Size: int64(len(ix.Index))}
		checkStreamingArtifact(t, oc, zstd, repo, ref, subject, img)
	}
	if len(byArch) > 0 {
		t.Errorf("no streaming artifact for %v", slices.Sorted(maps.Keys(byArch)))
	}

	// The Teleport check of the legacy API agrees.
	if _, _, err := oc.do(context.Background(), http.MethodGet, "/mount/v1/"+repo+"/_manifests/"+ix.Digest.String(), nil, nil, http.StatusOK); err != nil {
		t.Errorf("the legacy expansion check of the converted index: %v", err)
	}
	// skopeo pushed the platform images by digest before the index, each
	// a runnable image pushed to a streaming repository, so the Linux ones
	// may have been converted on their own too, but never twice.
	for _, img := range ix.Images {
		n := len(oc.referrers(t, repo, img.ManifestDigest, artifactTypeStreaming))
		t.Logf("%s/%s image %s: %d streaming artifacts of its own", img.Platform.OS, img.Platform.Architecture, img.ManifestDigest, n)
		if n > 1 || (n > 0 && img.Platform.OS != "linux") {
			t.Errorf("%s/%s image %s has %d streaming artifacts of its own", img.Platform.OS, img.Platform.Architecture, img.ManifestDigest, n)
		}
	}
}

// waitAutoConversion waits for the conversion auto-streaming started for
// repo@dgst: it follows the operation if it catches it queued or running,
// and waits until the referrers API lists n streaming artifacts. Asking for
// a conversion afterwards must answer at once that it succeeded, with the
// same artifacts, rather than convert again.
func waitAutoConversion(t *testing.T, oc *ociClient, repo string, dgst digest.Digest, n int) []ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	var refs []ocispec.Descriptor
	var running operation
	var err error
	waitFor(t, conversionTimeout, fmt.Sprintf("%s@%s has a conversion or a streaming artifact", repo, dgst), func() bool {
		_, err = oc.mgmt(ctx, http.MethodGet, "/acr/v1/"+repo+"/_streaming/"+dgst.String(), nil, http.StatusOK, &running)
		if err == nil {
			return true
		}
		refs = oc.referrers(t, repo, dgst, artifactTypeStreaming)
		return len(refs) > 0
	})
	if err == nil {
		op := oc.waitSucceeded(t, "/acr/v1/"+repo+"/_operations/"+running.ID, conversionTimeout)
		t.Logf("auto-streaming operation: %v", op)
	}
	refs = oc.waitStreamingReferrers(t, repo, dgst, n, conversionTimeout)

	loc, again := oc.startConversion(t, repo, dgst.String())
	if again.Status != statusSucceeded {
		t.Errorf("asking to convert %s@%s again started operation %s (%v), want one that succeeded at once", repo, dgst, loc, again)
	}
	var result struct{ Referrers []ocispec.Descriptor }
	if err := json.Unmarshal(again.Result, &result); err != nil || len(result.Referrers) == 0 {
		t.Errorf("operation %s of an image already converted has result %s, want its streaming artifacts (%v)", loc, again.Result, err)
	}
	for _, r := range result.Referrers {
		if !slices.ContainsFunc(refs, func(d ocispec.Descriptor) bool { return d.Digest == r.Digest }) {
			t.Errorf("operation %s names streaming artifact %s, which the referrers API does not list", loc, r.Digest)
		}
	}
	if got := oc.referrers(t, repo, dgst, artifactTypeStreaming); len(got) != n {
		t.Errorf("after asking again, %s@%s has %d streaming artifacts, want still %d", repo, dgst, len(got), n)
	}
	return refs
}

// checkStreamingArtifact checks a streaming artifact, as the referrers API
// describes it, against the image it converts: the manifest's type,
// subject and platform annotations, the image's own config, one zstd layer
// per original layer naming its source, every layer readable and hashing to
// its digest, and each decompressing (with the zstd command) to exactly
// the original tar, whose sha256 is the config's diff_id.
func checkStreamingArtifact(t *testing.T, oc *ociClient, zstd, repo string, ref, subject ocispec.Descriptor, img *testImage) {
	t.Helper()
	if ref.ArtifactType != artifactTypeStreaming || ref.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("referrer %s is %s of artifactType %q, want an image manifest of %s", ref.Digest, ref.MediaType, ref.ArtifactType, artifactTypeStreaming)
	}
	m, _ := oc.getImageManifest(t, repo, ref.Digest.String())
	if m.ArtifactType != artifactTypeStreaming {
		t.Errorf("streaming manifest %s has artifactType %q", ref.Digest, m.ArtifactType)
	}
	if m.Subject == nil || m.Subject.Digest != subject.Digest || m.Subject.MediaType != subject.MediaType || m.Subject.Size != subject.Size {
		t.Errorf("streaming manifest %s has subject %+v, want %+v", ref.Digest, m.Subject, subject)
	}
	wantAnn := map[string]string{annotationStreamingOS: img.Platform.OS, annotationStreamingArch: img.Platform.Architecture,
		annotationStreamingFormat: "seekable-zstd", annotationStreamingVersion: "v1"}
	for k, v := range wantAnn {
		if m.Annotations[k] != v || ref.Annotations[k] != v {
			t.Errorf("streaming manifest %s: annotation %s is %q (referrers API: %q), want %q", ref.Digest, k, m.Annotations[k], ref.Annotations[k], v)
		}
	}
	if m.Config.Digest != img.Config.Digest || m.Config.MediaType != img.Config.MediaType {
		t.Errorf("streaming manifest %s has config %s %s, want the image's own %s", ref.Digest, m.Config.MediaType, m.Config.Digest, img.Config.Digest)
	}
	var config ocispec.Image
	if err := json.Unmarshal(img.Blobs[img.Config.Digest], &config); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != len(img.Layers) {
		t.Fatalf("streaming manifest %s has %d layers, the image %d", ref.Digest, len(m.Layers), len(img.Layers))
	}
	for i, l := range m.Layers {
		if l.MediaType != mediaTypeStreamingLayer || l.Annotations[annotationSourceDigest] != img.Layers[i].Digest.String() || l.Annotations[annotationTOCDigest] == "" {
			t.Errorf("streaming layer %d is %s from %q (TOC %q), want %s from %s with a TOC", i, l.MediaType,
				l.Annotations[annotationSourceDigest], l.Annotations[annotationTOCDigest], mediaTypeStreamingLayer, img.Layers[i].Digest)
		}
		blob, err := oc.getBlob(context.Background(), repo, l.Digest)
		if err != nil {
			t.Errorf("streaming layer %d: %v", i, err)
			continue
		}
		if int64(len(blob)) != l.Size {
			t.Errorf("streaming layer %d %s is %d bytes, its descriptor says %d", i, l.Digest, len(blob), l.Size)
		}
		if got := zstdDiffID(t, zstd, blob); got != config.RootFS.DiffIDs[i] {
			t.Errorf("streaming layer %d %s decompresses to %s, but the image's diff_id is %s", i, l.Digest, got, config.RootFS.DiffIDs[i])
		}
	}
}

// zstdDiffID is the sha256 of what the zstd command decompresses blob to.
func zstdDiffID(t *testing.T, zstd string, blob []byte) digest.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, zstd, "-d", "-c", "-q")
	cmd.Stdin = bytes.NewReader(blob)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	digester := digest.Canonical.Digester()
	cmd.Stdout = digester.Hash()
	if err := cmd.Run(); err != nil {
		t.Fatalf("zstd -d of a %d-byte streaming layer: %v\n%s", len(blob), err, stderr.Bytes())
	}
	return digester.Digest()
}
