package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"fmt"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// JWK is one P-256 public key as RFC 7517 writes it. Endorsement, when
// set, is the key's endorsement by the key it followed in a rotation
// (members a JWK reader does not know are ignored, RFC 7517 section 4).
type JWK struct {
	Kty         string `json:"kty"`
	Crv         string `json:"crv"`
	X           string `json:"x"`
	Y           string `json:"y"`
	Kid         string `json:"kid"`
	Use         string `json:"use,omitempty"`
	Alg         string `json:"alg,omitempty"`
	Endorsement string `json:"endorsement,omitempty"`
}

// JWKS is a key set as published at a registry's /acr/v1/_keys.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// coordinateSize is the byte length of a P-256 coordinate.
const coordinateSize = 32

// NewJWK describes a public key; its kid is KeyID's.
func NewJWK(pub *ecdsa.PublicKey) (JWK, error) {
	if err := checkCurve(pub); err != nil {
		return JWK{}, err
	}
	kid, err := KeyID(pub)
	if err != nil {
		return JWK{}, err
	}
	enc := base64.RawURLEncoding
	return JWK{Kty: "EC", Crv: "P-256", Kid: kid, Use: "sig", Alg: "ES256",
		X: enc.EncodeToString(pub.X.FillBytes(make([]byte, coordinateSize))),
		Y: enc.EncodeToString(pub.Y.FillBytes(make([]byte, coordinateSize)))}, nil
}

// PublicKey returns the key a JWK describes, checking that it is a P-256
// point and that its kid is the key's own.
func (k JWK) PublicKey() (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("%w key %q: kty %q crv %q, want EC P-256", ErrMalformed, k.Kid, k.Kty, k.Crv)
	}
	enc := base64.RawURLEncoding
	x, errX := enc.DecodeString(k.X)
	y, errY := enc.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != coordinateSize || len(y) != coordinateSize {
		return nil, fmt.Errorf("%w key %q: bad coordinates", ErrMalformed, k.Kid)
	}
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	if _, err := pub.ECDH(); err != nil { // checks the point is on the curve
		return nil, fmt.Errorf("%w key %q: not a point of P-256", ErrMalformed, k.Kid)
	}
	kid, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	if kid != k.Kid {
		return nil, fmt.Errorf("%w key: kid %q does not name the key (its id is %q)", ErrMalformed, k.Kid, kid)
	}
	return pub, nil
}

// IDs lists the key ids of the set, in its order.
func (s JWKS) IDs() []string {
	ids := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		ids[i] = k.Kid
	}
	return ids
}

// KeySet returns the keys of the set that parse, and the errors of those
// that do not.
func (s JWKS) KeySet() (KeySet, []error) {
	ks := KeySet{}
	var errs []error
	for _, k := range s.Keys {
		pub, err := k.PublicKey()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ks[k.Kid] = pub
	}
	return ks, errs
}

// endorsementClaims name the endorsed key by id; the id is a hash of the
// key, so it names exactly one key.
type endorsementClaims struct {
	jwt.RegisteredClaims
	Endorses string `json:"endorses"`
}

// Endorse has signer (named signerKid) vouch for the key next, for the
// rotation that makes next current.
func Endorse(signer *ecdsa.PrivateKey, signerKid string, next *ecdsa.PublicKey) (string, error) {
	kid, err := KeyID(next)
	if err != nil {
		return "", err
	}
	return signJWS(signer, signerKid, typeEndorsement, endorsementClaims{Endorses: kid})
}

// Extend returns the published keys that the pinned ones vouch for: those
// pinned, and every key whose endorsement verifies with a key vouched for,
// following chains of rotations. A pinned key that is no longer published
// still vouches for the keys it endorsed (a node that missed a rotation
// catches up), but is not trusted itself: a registry that stopped
// publishing a key withdrew it.
func Extend(pinned KeySet, published JWKS) KeySet {
	candidates, _ := published.KeySet()
	vouched := KeySet{}
	for kid, pub := range pinned {
		vouched[kid] = pub
	}
	endorsements := map[string]string{}
	for _, k := range published.Keys {
		if k.Endorsement != "" {
			endorsements[k.Kid] = k.Endorsement
		}
	}
	for grew := true; grew; {
		grew = false
		for kid, pub := range candidates {
			if _, ok := vouched[kid]; ok || endorsements[kid] == "" {
				continue
			}
			var c endorsementClaims
			if _, err := vouched.parse(endorsements[kid], typeEndorsement, &c); err == nil && c.Endorses == kid {
				vouched[kid] = pub
				grew = true
			}
		}
	}
	trusted := KeySet{}
	for kid, pub := range candidates {
		if known, ok := vouched[kid]; ok && known.Equal(pub) {
			trusted[kid] = pub
		}
	}
	return trusted
}
