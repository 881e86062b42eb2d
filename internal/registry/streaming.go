package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
)

// ErrStreamingWriteDenied is returned for a push of a streaming artifact,
// or of its signature, by a writer that may not store them. Nodes mount a
// streaming artifact in place of its image's layers, so being allowed to
// push an image is not enough to say what nodes run for it.
var ErrStreamingWriteDenied = fmt.Errorf("%w: storing streaming artifacts needs the streaming/write action", ErrDenied)

// ownedReferrers are the artifact types of the referrers made from an
// image: its streaming artifacts and the registry's signatures of them.
// They go with the image when it is deleted, for good even when the delete
// is soft (restoring the image converts it again), and are never restored
// on their own.
var ownedReferrers = []string{streaming.ArtifactType, trust.SignatureArtifactType}

// streamingLayerAnnotations starts the keys of a streaming layer's
// annotations (the TOC's place and digest, the source layer).
const streamingLayerAnnotations = "io.sluice.streaming."

type streamingWritesKey struct{}

// AllowStreamingWrites returns ctx for a writer that may store streaming
// artifacts and their signatures: the conversion service, or a caller the
// HTTP edge found to hold streaming/write. Every other writer (a push
// without it, an import) is refused them.
func AllowStreamingWrites(ctx context.Context) context.Context {
	return context.WithValue(ctx, streamingWritesKey{}, true)
}

func streamingWritesAllowed(ctx context.Context) bool {
	allowed, _ := ctx.Value(streamingWritesKey{}).(bool)
	return allowed
}

// IsStreamingArtifact reports whether a manifest is, or poses as, a
// streaming artifact or a streaming signature: by its artifact type (which
// for an image manifest without one is its config's media type) or by
// layers annotated as streaming layers.
func IsStreamingArtifact(m *oci.Manifest) bool {
	if slices.Contains(ownedReferrers, m.ArtifactType) {
		return true
	}
	if m.Config != nil && slices.Contains(ownedReferrers, m.Config.MediaType) {
		return true
	}
	for _, l := range m.Layers {
		for k := range l.Annotations {
			if strings.HasPrefix(k, streamingLayerAnnotations) {
				return true
			}
		}
	}
	return false
}
