package oci

import (
	_ "crypto/sha256" // registers the sha256 hash for go-digest
	_ "crypto/sha512" // registers the sha512 hash for go-digest
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// ErrDigestInvalid is returned for a digest that is malformed or uses an
// algorithm the registry does not support.
var ErrDigestInvalid = errors.New("invalid digest")

// ParseDigest checks that s is a sha256 or sha512 digest in canonical form.
func ParseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrDigestInvalid, s, err)
	}
	if err := CheckAlgorithm(d.Algorithm()); err != nil {
		return "", err
	}
	return d, nil
}

// CheckAlgorithm accepts the digest algorithms of the OCI image spec that the
// registry computes: sha256 (canonical) and sha512.
func CheckAlgorithm(a digest.Algorithm) error {
	if a != digest.SHA256 && a != digest.SHA512 {
		return fmt.Errorf("%w: unsupported algorithm %q (supported: sha256, sha512)", ErrDigestInvalid, a)
	}
	return nil
}
