package streaming

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// SupportedPlatform reports whether images of platform p can be streamed:
// Linux images, of any architecture. The node snapshotter mounts Linux
// root filesystems only.
func SupportedPlatform(p ocispec.Platform) bool { return p.OS == "linux" }

// PlatformError is an image whose platform cannot be streamed.
type PlatformError struct{ Platform ocispec.Platform }

// CheckPlatform returns a *PlatformError unless images of p can be
// streamed.
func CheckPlatform(p ocispec.Platform) error {
	if SupportedPlatform(p) {
		return nil
	}
	return &PlatformError{Platform: p}
}

// Error says which platform was refused and what is supported; the
// conversion service and the CLI give it their error code.
func (e *PlatformError) Error() string {
	p := e.Platform.OS + "/" + e.Platform.Architecture
	if e.Platform.Variant != "" {
		p += "/" + e.Platform.Variant
	}
	if e.Platform.OS == "" {
		// crane append, for one, writes a config without os by default.
		return "platform " + p + " is not supported: the image config sets no os; artifact streaming supports Linux images (\"os\": \"linux\")"
	}
	return "platform " + p + " is not supported; artifact streaming supports Linux images"
}
