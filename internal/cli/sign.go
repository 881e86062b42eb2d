package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/trust"
)

// streamingSigner signs the streaming artifacts convert pushes.
type streamingSigner struct {
	key *ecdsa.PrivateKey
	kid string
}

// signer loads (or, the first time, creates) the key of --sign-key, or of
// --sign (useDefault); nil without either.
func (a *App) signer(path string, useDefault bool) (*streamingSigner, error) {
	if path == "" && !useDefault {
		return nil, nil
	}
	if useDefault {
		conf, err := a.configPath()
		if err != nil {
			return nil, err
		}
		path = filepath.Join(filepath.Dir(conf), "streaming-signing-key.pem")
	}
	key, created, err := trust.LoadOrCreatePrivateKey(path)
	if err != nil {
		return nil, fmt.Errorf("--sign-key: %w", err)
	}
	kid, err := trust.KeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	if created {
		pub, err := trust.PublicPEM(&key.PublicKey)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(a.Stderr, "Created the signing key %s (key id %s). Nodes that should trust what it signs need its public key, written to %s.pub:\n\n%s\n",
			path, kid, path, pub)
	}
	return &streamingSigner{key: key, kid: kid}, nil
}

// signedBy returns the streaming manifests that this key's signatures
// among refs vouch for, for subject.
func (s *streamingSigner) signedBy(refs []ocispec.Descriptor, subject digest.Digest) map[digest.Digest]bool {
	signed, _ := trust.KeySet{s.kid: &s.key.PublicKey}.Vouched(refs, subject)
	return signed
}

// push signs that manifest was made from subject and pushes the signature
// artifact (and its empty config) as a referrer of subject.
func (s *streamingSigner) push(ctx context.Context, cl *client.Client, repo string, subject ocispec.Descriptor, manifest digest.Digest, schema client.ReferrersSchema) (ocispec.Descriptor, error) {
	jws, err := trust.Sign(s.key, s.kid, trust.Statement{Subject: subject.Digest, Manifest: manifest})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := cl.PushBlob(ctx, repo, trust.EmptyDescriptor, bytes.NewReader(trust.EmptyContent())); err != nil {
		return ocispec.Descriptor{}, err
	}
	payload, err := json.Marshal(trust.SignatureManifest(subject, jws))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return cl.PushManifest(ctx, repo, ocispec.MediaTypeImageManifest, payload, schema)
}
