package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"regexp"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize is the largest manifest the registry accepts, the size the
// distribution spec asks every registry to support.
const MaxManifestSize = 4 << 20

var (
	// ErrManifestInvalid is returned for a manifest that cannot be parsed
	// or breaks the rules of its media type.
	ErrManifestInvalid = errors.New("invalid manifest")
	// ErrManifestTooLarge is returned for a manifest over MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
)

// Manifest is the part of a manifest the registry needs: what it references
// and how it describes itself in the referrers API.
type Manifest struct {
	MediaType string
	// ArtifactType is the manifest's artifactType, or for an image manifest
	// without one, its config's media type: the value the referrers API
	// reports.
	ArtifactType string
	Config       *ocispec.Descriptor
	Layers       []ocispec.Descriptor
	Manifests    []ocispec.Descriptor
	Subject      *ocispec.Descriptor
	Annotations  map[string]string
}

// RequiredBlobs lists the blobs that must be in the repository before the
// manifest is accepted: the config and every layer, except non-distributable
// layers that name external URLs.
func (m *Manifest) RequiredBlobs() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) > 0 {
			continue
		}
		out = append(out, l)
	}
	return out
}

// rawManifest is the union of the fields of every manifest kind.
type rawManifest struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
	FSLayers      json.RawMessage      `json:"fsLayers"`
}

// ParseManifest validates payload as a manifest sent with the given
// Content-Type (which may be empty) and returns what it references.
func ParseManifest(contentType string, payload []byte) (*Manifest, error) {
	if len(payload) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d accepted", ErrManifestTooLarge, len(payload), MaxManifestSize)
	}
	ct := contentType
	if ct != "" {
		parsed, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Type %q: %v", ErrManifestInvalid, ct, err)
		}
		ct = parsed
	}
	if ct == MediaTypeDockerSchema1 || ct == MediaTypeDockerSchema1Signed {
		return nil, fmt.Errorf("%w: Docker schema 1 manifests are not supported; push with a client that writes schema 2 or OCI", ErrManifestInvalid)
	}
	var raw rawManifest
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrManifestInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrManifestInvalid)
	}
	if raw.FSLayers != nil {
		return nil, fmt.Errorf("%w: Docker schema 1 manifests are not supported; push with a client that writes schema 2 or OCI", ErrManifestInvalid)
	}
	if raw.SchemaVersion == nil || *raw.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion must be 2", ErrManifestInvalid)
	}
	mt, err := resolveMediaType(ct, &raw)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		MediaType:    mt,
		ArtifactType: raw.ArtifactType,
		Subject:      raw.Subject,
		Annotations:  raw.Annotations,
	}
	if IsIndexMediaType(mt) {
		err = m.fillIndex(&raw)
	} else {
		err = m.fillImage(&raw)
	}
	if err != nil {
		return nil, err
	}
	if raw.Subject != nil {
		if err := ValidateDescriptor(*raw.Subject); err != nil {
			return nil, fmt.Errorf("%w: subject: %v", ErrManifestInvalid, err)
		}
	}
	return m, nil
}

// resolveMediaType reconciles the Content-Type header with the manifest's own
// mediaType field. They must agree when both are given; OCI manifests may
// omit the field, Docker manifests may not.
func resolveMediaType(ct string, raw *rawManifest) (string, error) {
	field := raw.MediaType
	switch {
	case field != "" && ct != "" && field != ct:
		return "", fmt.Errorf("%w: Content-Type %q does not match the manifest's mediaType %q", ErrManifestInvalid, ct, field)
	case field != "":
		ct = field
	case ct == MediaTypeDockerManifest || ct == MediaTypeDockerManifestList:
		return "", fmt.Errorf("%w: a Docker manifest must carry its mediaType field", ErrManifestInvalid)
	case ct == "" && raw.Manifests != nil:
		ct = MediaTypeImageIndex
	case ct == "":
		ct = MediaTypeImageManifest
	}
	if !IsManifestMediaType(ct) {
		return "", fmt.Errorf("%w: unsupported media type %q (accepted: OCI image manifest and index, Docker manifest v2 and manifest list)", ErrManifestInvalid, ct)
	}
	return ct, nil
}

func (m *Manifest) fillImage(raw *rawManifest) error {
	if raw.Manifests != nil {
		return fmt.Errorf("%w: an image manifest has no manifests field", ErrManifestInvalid)
	}
	if raw.Config == nil {
		return fmt.Errorf("%w: config descriptor is required", ErrManifestInvalid)
	}
	if err := ValidateDescriptor(*raw.Config); err != nil {
		return fmt.Errorf("%w: config: %v", ErrManifestInvalid, err)
	}
	for i, l := range raw.Layers {
		if err := ValidateDescriptor(l); err != nil {
			return fmt.Errorf("%w: layers[%d]: %v", ErrManifestInvalid, i, err)
		}
	}
	m.Config = raw.Config
	m.Layers = raw.Layers
	if m.ArtifactType == "" {
		m.ArtifactType = raw.Config.MediaType
	}
	return nil
}

func (m *Manifest) fillIndex(raw *rawManifest) error {
	if raw.Config != nil || raw.Layers != nil {
		return fmt.Errorf("%w: an index has no config or layers", ErrManifestInvalid)
	}
	for i, d := range raw.Manifests {
		if err := ValidateDescriptor(d); err != nil {
			return fmt.Errorf("%w: manifests[%d]: %v", ErrManifestInvalid, i, err)
		}
	}
	m.Manifests = raw.Manifests
	return nil
}

// mediaTypeRE is RFC 6838's restricted-name grammar for type/subtype.
var mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

// ValidateDescriptor checks the fields every descriptor must have.
func ValidateDescriptor(d ocispec.Descriptor) error {
	if !mediaTypeRE.MatchString(d.MediaType) {
		return fmt.Errorf("mediaType %q is not a valid media type", d.MediaType)
	}
	if _, err := ParseDigest(d.Digest.String()); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("size %d is negative", d.Size)
	}
	if d.Data != nil {
		if d.Digest.Algorithm().FromBytes(d.Data) != d.Digest || int64(len(d.Data)) != d.Size {
			return fmt.Errorf("embedded data does not match digest %s and size %d", d.Digest, d.Size)
		}
	}
	return nil
}
