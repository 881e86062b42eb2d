// Package trust is how a streaming artifact earns a node's trust: a
// converter signs the pair (the image it was made from, the streaming
// manifest), the signature travels as a small referrer of the same image,
// and a node checks it against keys it trusts before it mounts anything.
//
// Signatures and key endorsements are compact JWS (ES256, P-256 keys).
// Registries publish their public keys as a JWKS; a key added by a rotation
// carries an endorsement signed by the key it follows, so a node that
// pinned the old key can accept the new one without being told, while a key
// set replaced wholesale is refused until an operator trusts it again.
//
// The package is a pure library: no I/O beyond reading key files.
package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"
)

// ErrUntrusted is returned for a signature or endorsement that does not
// verify with any key of the set it was checked against.
var ErrUntrusted = errors.New("not signed by a trusted key")

// ErrMalformed is returned for a signature, endorsement or key that cannot
// be parsed.
var ErrMalformed = errors.New("malformed")

// JWS "typ" headers: a signature can never pass for an endorsement, an
// access token for either, or either for an access token.
const (
	typeSignature   = "sluice-streaming-signature+jwt"
	typeEndorsement = "sluice-key-endorsement+jwt"
)

// Statement is what a signature vouches for: the streaming manifest
// Manifest was made from the image (or index) Subject by the signer.
type Statement struct {
	Subject  digest.Digest `json:"subject"`
	Manifest digest.Digest `json:"manifest"`
}

func (s Statement) validate() error {
	if s.Subject.Validate() != nil || s.Manifest.Validate() != nil {
		return fmt.Errorf("%w statement: subject %q and manifest %q must be digests", ErrMalformed, s.Subject, s.Manifest)
	}
	return nil
}

// statementClaims is a Statement as JWT claims.
type statementClaims struct {
	jwt.RegisteredClaims
	Statement
}

// KeyID names a public key: the first 120 bits of the SHA-256 of its
// PKIX form, in lower-case base32. The same key always gets the same name.
func KeyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15])), nil
}

// checkCurve refuses keys other than P-256, the only curve ES256 uses.
func checkCurve(pub *ecdsa.PublicKey) error {
	if pub == nil || pub.Curve != elliptic.P256() {
		return fmt.Errorf("%w key: only EC P-256 keys are supported", ErrMalformed)
	}
	return nil
}

// Sign signs a statement with key, named kid in the signature's header.
func Sign(key *ecdsa.PrivateKey, kid string, st Statement) (string, error) {
	if err := st.validate(); err != nil {
		return "", err
	}
	if err := checkCurve(&key.PublicKey); err != nil {
		return "", err
	}
	return signJWS(key, kid, typeSignature, statementClaims{Statement: st})
}

// signJWS makes a compact ES256 JWS of claims. The signature is
// deterministic (RFC 6979): the same key and claims always give the same
// bytes, so a conversion retried after a crash stores the same signature
// artifact instead of a second one.
func signJWS(key *ecdsa.PrivateKey, kid, typ string, claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = kid
	t.Header["typ"] = typ
	signingString, err := t.SigningString()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(signingString))
	der, err := key.Sign(nil, sum[:], crypto.SHA256)
	if err != nil {
		return "", err
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return "", err
	}
	// JWS wants R and S as two fixed-size big-endian halves (RFC 7518).
	raw := make([]byte, 2*coordinateSize)
	sig.R.FillBytes(raw[:coordinateSize])
	sig.S.FillBytes(raw[coordinateSize:])
	return signingString + "." + base64.RawURLEncoding.EncodeToString(raw), nil
}

// KeySet is a set of public keys by key id.
type KeySet map[string]*ecdsa.PublicKey

// IDs lists the key ids in order.
func (ks KeySet) IDs() []string {
	ids := make([]string, 0, len(ks))
	for id := range ks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Add puts a key in the set under its KeyID and returns the id.
func (ks KeySet) Add(pub *ecdsa.PublicKey) (string, error) {
	if err := checkCurve(pub); err != nil {
		return "", err
	}
	kid, err := KeyID(pub)
	if err != nil {
		return "", err
	}
	ks[kid] = pub
	return kid, nil
}

// Verify checks a signature against the set and returns what it vouches
// for and the id of the key that signed it.
func (ks KeySet) Verify(jws string) (Statement, string, error) {
	var c statementClaims
	kid, err := ks.parse(jws, typeSignature, &c)
	if err != nil {
		return Statement{}, "", err
	}
	if err := c.Statement.validate(); err != nil {
		return Statement{}, "", err
	}
	return c.Statement, kid, nil
}

// parse verifies a compact JWS of type typ with the key its header names,
// which must be in the set, and decodes its claims into claims.
func (ks KeySet) parse(jws, typ string, claims jwt.Claims) (string, error) {
	var kid string
	_, err := jwt.ParseWithClaims(jws, claims, func(t *jwt.Token) (any, error) {
		if got, _ := t.Header["typ"].(string); got != typ {
			return nil, fmt.Errorf("%w: a %q, not a %q", ErrMalformed, got, typ)
		}
		kid, _ = t.Header["kid"].(string)
		key, ok := ks[kid]
		if !ok {
			return nil, fmt.Errorf("%w: key %q is not one of %v", ErrUntrusted, kid, ks.IDs())
		}
		return key, nil
	}, jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}))
	switch {
	case err == nil:
		return kid, nil
	case errors.Is(err, ErrUntrusted), errors.Is(err, ErrMalformed):
		return "", err
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "", fmt.Errorf("%w: the signature of key %q does not verify", ErrUntrusted, kid)
	}
	return "", fmt.Errorf("%w signature: %v", ErrMalformed, err)
}
