package streaming

import (
	"strconv"
	"strings"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationPlatformVariant carries the CPU variant (v7, v8) of a streaming
// manifest's platform, when it has one.
const AnnotationPlatformVariant = "streaming.platform.variant"

// Manifest returns the streaming manifest of an image: its own config (the
// converted layers have the same DiffIDs), the converted layers (from
// Result.Descriptor), the original image manifest as subject, and the
// format and platform annotations (DESIGN.md section 4). Plain runtimes
// pull it as an ordinary zstd image.
func Manifest(config ocispec.Descriptor, layers []ocispec.Descriptor, subject ocispec.Descriptor, p ocispec.Platform) ocispec.Manifest {
	annotations := map[string]string{
		AnnotationFormat:       FormatName,
		AnnotationVersion:      FormatVersion,
		AnnotationPlatformOS:   p.OS,
		AnnotationPlatformArch: p.Architecture,
	}
	if p.Variant != "" {
		annotations[AnnotationPlatformVariant] = p.Variant
	}
	return ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       config,
		Layers:       layers,
		Subject:      &subject,
		Annotations:  annotations,
	}
}

// SupportedVersion reports whether this build reads streaming manifests of
// the given format version (the streaming.version annotation).
func SupportedVersion(v string) bool { return v == FormatVersion }

// VersionNumber orders format versions: "v1" is 1; anything else is 0.
func VersionNumber(v string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(v, "v"))
	if err != nil || !strings.HasPrefix(v, "v") || n < 0 {
		return 0
	}
	return n
}
