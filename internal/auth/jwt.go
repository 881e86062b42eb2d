package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrTokenInvalid is returned for a bearer token that is malformed, badly
// signed, expired, not yet valid, or for another service.
var ErrTokenInvalid = errors.New("invalid token")

// Token kinds, in the "typ" claim: what a JWT may be used for.
const (
	kindAccess  = "access"
	kindRefresh = "refresh"
)

// Claims are a Sluice JWT's claims: the registered ones, the access it
// grants, and for a token identity the password it was issued for.
type Claims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access,omitempty"`
	Kind   string   `json:"typ"`
	// Identity kind and password of the subject, so that a refresh, and
	// each request with an access token, can check the credential is
	// still valid.
	IdentityKind Kind   `json:"idk,omitempty"`
	Password     string `json:"pwd,omitempty"`
	// PasswordCreated (Unix nanoseconds) pins the password's generation: a
	// regenerated password has another.
	PasswordCreated int64 `json:"pwc,omitempty"`
}

// issuer is the iss claim of every token.
const issuer = "sluice-token-service"

func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sign makes a JWT for claims with the current key.
func (k *KeyRing) sign(c *Claims) (string, error) {
	kid, key := k.signing()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

// parse verifies a JWT's signature, times, issuer and audience, and that it
// is of the wanted kind.
func (k *KeyRing) parse(raw, audience, kind string, now time.Time) (*Claims, error) {
	c := &Claims{}
	_, err := jwt.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return k.verifying(kid)
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(30*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	if c.Kind != kind {
		return nil, fmt.Errorf("%w: a %s token cannot be used as a %s token", ErrTokenInvalid, c.Kind, kind)
	}
	return c, nil
}
