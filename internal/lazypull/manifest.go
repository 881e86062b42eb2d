package lazypull

import (
	"context"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imagesManifest reads the platform manifest of a pulled image.
func imagesManifest(ctx context.Context, img containerd.Image) (ocispec.Manifest, error) {
	return images.Manifest(ctx, img.ContentStore(), img.Target(), img.Platform())
}
