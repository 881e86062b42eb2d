package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// ErrStreamingWriteDenied is returned for a push of a streaming artifact,
// or of its signature, by a writer that may not store them. Nodes mount a
// streaming artifact in place of its image's layers, so being allowed to
// push an image is not enough to say what nodes run for it.
var ErrStreamingWriteDenied = fmt.Errorf("%w: storing streaming artifacts needs the streaming/write action", ErrDenied)

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
	switch m.ArtifactType {
	case metadata.ArtifactTypeStreaming, metadata.ArtifactTypeStreamingSignature:
		return true
	}
	if m.Config != nil && (m.Config.MediaType == metadata.ArtifactTypeStreaming || m.Config.MediaType == metadata.ArtifactTypeStreamingSignature) {
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
