package trust

import (
	"errors"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The signature artifact: a manifest whose subject is the image the
// streaming manifest was made from, carrying the signature in an
// annotation. Registries copy a referrer's annotations into the referrers
// list, so the node reads the signature from the same answer that lists
// the streaming manifests, without another request.
const (
	SignatureArtifactType = "application/vnd.sluice.streaming.signature.v1"
	AnnotationSignature   = "io.sluice.streaming.signature"
)

// EmptyDescriptor is the OCI empty descriptor (content "{}"), the config
// and only layer of a signature artifact.
var EmptyDescriptor = ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON,
	Digest: ocispec.DescriptorEmptyJSON.Digest, Size: ocispec.DescriptorEmptyJSON.Size}

// EmptyContent is EmptyDescriptor's content, for pushing it.
func EmptyContent() []byte { return []byte("{}") }

// SignatureManifest returns the signature artifact of jws for subject.
func SignatureManifest(subject ocispec.Descriptor, jws string) ocispec.Manifest {
	return ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: SignatureArtifactType,
		Config:       EmptyDescriptor,
		Layers:       []ocispec.Descriptor{EmptyDescriptor},
		Subject:      &subject,
		Annotations:  map[string]string{AnnotationSignature: jws},
	}
}

// Vouched returns the streaming manifests that the signatures among refs
// vouch for, for subject, with keys; unknownKey says some signature named
// a key not among them (the signer's key set may have changed).
func (ks KeySet) Vouched(refs []ocispec.Descriptor, subject digest.Digest) (signed map[digest.Digest]bool, unknownKey bool) {
	signed = map[digest.Digest]bool{}
	for _, d := range refs {
		if d.ArtifactType != SignatureArtifactType {
			continue
		}
		st, _, err := ks.Verify(d.Annotations[AnnotationSignature])
		if err != nil {
			unknownKey = unknownKey || errors.Is(err, ErrUntrusted)
			continue
		}
		if st.Subject == subject {
			signed[st.Manifest] = true
		}
	}
	return signed, unknownKey
}
