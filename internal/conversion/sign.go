package conversion

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/oci"
	"github.com/sluicehq/sluice/internal/streaming"
	"github.com/sluicehq/sluice/internal/trust"
)

// Signer signs streaming artifacts as the registry: the registry's key
// ring, whose public keys nodes fetch to verify what they mount.
type Signer interface {
	// SignStreaming signs that the streaming manifest was made from
	// subject, with the current key.
	SignStreaming(subject, manifest digest.Digest) (string, error)
	// PublicKeys is every key the registry publishes.
	PublicKeys() trust.KeySet
}

// SignedReferrers returns the streaming artifacts of subject that carry a
// valid signature by one of the registry's keys: those a node trusting the
// registry mounts. Streaming artifacts pushed without the converter's
// signature (by an identity holding streaming/write, or before signatures
// existed) are not among them.
func (s *Service) SignedReferrers(ctx context.Context, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	refs, err := s.reg.Referrers(ctx, repo, subject, "")
	if err != nil {
		return nil, err
	}
	signed, _ := s.signer.PublicKeys().Vouched(refs, subject)
	var out []ocispec.Descriptor
	for _, d := range refs {
		if d.ArtifactType == streaming.ArtifactType && signed[d.Digest] {
			out = append(out, d)
		}
	}
	return out, nil
}

// sign stores the registry's signature of the streaming manifest made
// from subject, unless a valid one is stored already (a retry after a
// crash). The signature goes in before the streaming manifest, so that a
// node never sees the artifact without it.
func (j *job) sign(ctx context.Context, subject ocispec.Descriptor, manifest digest.Digest) error {
	repo := j.op.Repository
	refs, err := j.s.reg.Referrers(ctx, repo, subject.Digest, trust.SignatureArtifactType)
	if err != nil {
		return err
	}
	signed, _ := j.s.signer.PublicKeys().Vouched(refs, subject.Digest)
	if signed[manifest] {
		return nil
	}
	jws, err := j.s.signer.SignStreaming(subject.Digest, manifest)
	if err != nil {
		return fmt.Errorf("sign streaming manifest %s: %w", manifest, err)
	}
	if _, err := j.s.reg.PutBlob(ctx, repo, trust.EmptyDescriptor.Digest, bytes.NewReader(trust.EmptyContent())); err != nil {
		return fmt.Errorf("store the signature's empty config: %w", err)
	}
	j.blobs = append(j.blobs, trust.EmptyDescriptor.Digest)
	payload, err := json.Marshal(trust.SignatureManifest(subject, jws))
	if err != nil {
		return err
	}
	dgst := digest.FromBytes(payload)
	if _, err := j.s.reg.PutManifest(ctx, repo, oci.Reference{Digest: dgst.String()}, ocispec.MediaTypeImageManifest, payload, nil); err != nil {
		return fmt.Errorf("push the signature of streaming manifest %s: %w", manifest, err)
	}
	j.referrer = append(j.referrer, dgst)
	return nil
}
