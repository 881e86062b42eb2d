package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
)

// Pushing what nodes would mount in place of an image's layers takes the
// streaming/write grant the edge marks the context with; a push of the
// same image content does not.
func TestStreamingArtifactsNeedStreamingWrites(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := put(t, e.reg, "app", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	layer := put(t, e.reg, "app", []byte("layer"))
	empty := put(t, e.reg, "app", trust.EmptyContent())
	subject := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest.FromString("victim").String() + `","size":1}`
	layerDesc := func(annotations string) string {
		return fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"%s","size":5%s}`, layer, annotations)
	}
	manifest := func(artifactType, configType string, configDigest digest.Digest, configSize int, layer string) []byte {
		at := ""
		if artifactType != "" {
			at = `"artifactType":"` + artifactType + `",`
		}
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",%s"config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[%s],"subject":%s}`,
			at, configType, configDigest, configSize, layer, subject))
	}
	cases := map[string][]byte{
		"artifactType":           manifest(streaming.ArtifactType, oci.MediaTypeImageConfig, cfg, 78, layerDesc("")),
		"signature":              manifest(trust.SignatureArtifactType, "application/vnd.oci.empty.v1+json", empty, 2, layerDesc("")),
		"config media type":      manifest("", streaming.ArtifactType, empty, 2, layerDesc("")),
		"streaming layer labels": manifest("", oci.MediaTypeImageConfig, cfg, 78, layerDesc(`,"annotations":{"io.sluice.streaming.toc.digest":"`+digest.FromString("toc").String()+`"}`)),
	}
	for name, payload := range cases {
		ref := oci.Reference{Digest: digest.FromBytes(payload).String()}
		if _, err := e.reg.PutManifest(ctx, "app", ref, "application/vnd.oci.image.manifest.v1+json", payload, nil); !errors.Is(err, ErrStreamingWriteDenied) || !errors.Is(err, ErrDenied) {
			t.Errorf("%s: push without streaming writes: %v, want ErrStreamingWriteDenied", name, err)
		}
		if _, err := e.reg.PutManifest(AllowStreamingWrites(ctx), "app", ref, "application/vnd.oci.image.manifest.v1+json", payload, nil); err != nil {
			t.Errorf("%s: push allowed streaming writes: %v", name, err)
		}
	}
	plain := manifest("", oci.MediaTypeImageConfig, cfg, 78, layerDesc(`,"annotations":{"org.example":"x"}`))
	if _, err := e.reg.PutManifest(ctx, "app", oci.Reference{Tag: "plain"}, "application/vnd.oci.image.manifest.v1+json", plain, nil); err != nil {
		t.Errorf("an ordinary image: %v", err)
	}
}

// Deleting an image takes its streaming artifacts and their signatures for
// good, even with soft delete on: only the image is restored, and a
// streaming artifact soft-deleted on its own is refused a restore.
func TestImageDeleteTakesItsStreamingArtifacts(t *testing.T) {
	e := newEnv(t)
	e.reg.opts.SoftDelete = time.Hour
	ctx := AllowStreamingWrites(context.Background())
	cfg := put(t, e.reg, "app", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	layer := put(t, e.reg, "app", []byte("layer"))
	empty := put(t, e.reg, "app", trust.EmptyContent())
	image, err := e.reg.PutManifest(ctx, "app", oci.Reference{Tag: "v1"}, "", imageManifest(cfg, layer, 78, 5), nil)
	if err != nil {
		t.Fatal(err)
	}
	referrer := func(artifactType, note string) digest.Digest {
		t.Helper()
		payload := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"%s",
			"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},
			"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2}],
			"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1},
			"annotations":{"note":"%s"}}`, artifactType, empty, empty, image.Digest, note)
		res, err := e.reg.PutManifest(ctx, "app", oci.Reference{Digest: digest.FromString(payload).String()}, "", []byte(payload), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Digest
	}
	artifact := referrer(streaming.ArtifactType, "a")
	signature := referrer(trust.SignatureArtifactType, "s")
	other := referrer("application/vnd.example.sbom", "o")

	if err := e.reg.DeleteManifest(ctx, "app", oci.Reference{Digest: artifact.String()}); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.RestoreManifest(ctx, "app", artifact, "", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("restoring a streaming artifact: %v, want ErrConflict", err)
	}
	if err := e.reg.DeleteManifest(ctx, "app", oci.Reference{Digest: image.Digest.String()}); err != nil {
		t.Fatal(err)
	}
	deleted, err := e.reg.DeletedManifests(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, d := range deleted {
		kept = append(kept, d.Digest)
	}
	if slices.Contains(kept, signature.String()) || !slices.Contains(kept, image.Digest.String()) {
		t.Fatalf("soft-deleted after the image's delete: %v; want the image and not its signature", kept)
	}
	if _, err := e.reg.GetManifest(ctx, "app", oci.Reference{Digest: other.String()}, false); err != nil {
		t.Fatalf("a referrer the image does not own went with it: %v", err)
	}
	if err := e.reg.RestoreManifest(ctx, "app", image.Digest, "v1", false); err != nil {
		t.Fatal(err)
	}
	if refs, err := e.reg.Referrers(ctx, "app", image.Digest, ""); err != nil || len(refs) != 1 || refs[0].Digest != other {
		t.Fatalf("referrers of the restored image: %v, %v; want only %s", refs, err, other)
	}
}
