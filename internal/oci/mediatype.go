package oci

// Manifest media types accepted by the registry.
const (
	MediaTypeImageManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex           = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest       = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1        = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeImageConfig          = "application/vnd.oci.image.config.v1+json"
	MediaTypeDockerImageConfig    = "application/vnd.docker.container.image.v1+json"
	MediaTypeEmptyJSON            = "application/vnd.oci.empty.v1+json"
	MediaTypeImageLayer           = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeImageLayerGzip       = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeImageLayerZstd       = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeDockerLayerGzip      = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer   = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeImageLayerNonDistrib = "application/vnd.oci.image.layer.nondistributable.v1.tar"
)

// IsManifestMediaType reports whether mt names a manifest kind the registry
// stores and serves.
func IsManifestMediaType(mt string) bool {
	switch mt {
	case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		return true
	}
	return false
}

// IsIndexMediaType reports whether mt is a list of manifests (OCI index or
// Docker manifest list).
func IsIndexMediaType(mt string) bool {
	return mt == MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}
