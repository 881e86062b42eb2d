package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
)

func TestArtifactTypesAgree(t *testing.T) {
	if metadata.ArtifactTypeStreaming != streaming.ArtifactType || metadata.ArtifactTypeStreamingSignature != trust.SignatureArtifactType {
		t.Fatal("the metadata's streaming artifact types differ from the format's")
	}
}

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
