package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func newKey(t testing.TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, kid
}

var statement = Statement{Subject: digest.FromString("image"), Manifest: digest.FromString("streaming manifest")}

func TestSignVerify(t *testing.T) {
	key, kid := newKey(t)
	other, _ := newKey(t)
	jws, err := Sign(key, kid, statement)
	if err != nil {
		t.Fatal(err)
	}
	ks := KeySet{}
	if _, err := ks.Add(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	got, signer, err := ks.Verify(jws)
	if err != nil || got != statement || signer != kid {
		t.Fatalf("Verify = %+v, %q, %v; want %+v, %q", got, signer, err, statement, kid)
	}

	// A key not in the set, a key lying about its id, and a tampered
	// payload are all refused.
	otherSet := KeySet{}
	if _, err := otherSet.Add(&other.PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := otherSet.Verify(jws); !errors.Is(err, ErrUntrusted) {
		t.Errorf("verify with another key's set: %v, want ErrUntrusted", err)
	}
	impostor := KeySet{kid: &other.PublicKey}
	if _, _, err := impostor.Verify(jws); !errors.Is(err, ErrUntrusted) {
		t.Errorf("verify with a different key under the signer's id: %v, want ErrUntrusted", err)
	}
	forged, _ := Sign(other, kid, statement) // claims to be kid
	if _, _, err := ks.Verify(forged); !errors.Is(err, ErrUntrusted) {
		t.Errorf("signature by another key naming kid: %v, want ErrUntrusted", err)
	}
	parts := strings.Split(jws, ".")
	payload, _ := json.Marshal(Statement{Subject: statement.Subject, Manifest: digest.FromString("forged")})
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	if _, _, err := ks.Verify(tampered); !errors.Is(err, ErrUntrusted) {
		t.Errorf("tampered payload: %v, want ErrUntrusted", err)
	}
}

func TestSignatureIsNotAnEndorsementAndBack(t *testing.T) {
	key, kid := newKey(t)
	next, _ := newKey(t)
	ks := KeySet{kid: &key.PublicKey}
	endorsement, err := Endorse(key, kid, &next.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ks.Verify(endorsement); !errors.Is(err, ErrMalformed) {
		t.Errorf("an endorsement verified as a signature: %v", err)
	}
	sig, _ := Sign(key, kid, statement)
	var c endorsementClaims
	if _, err := ks.parse(sig, typeEndorsement, &c); err == nil {
		t.Error("a signature parsed as an endorsement")
	}
}

func TestSignRefusesBadStatements(t *testing.T) {
	key, kid := newKey(t)
	for _, st := range []Statement{{}, {Subject: "sha256:nope", Manifest: statement.Manifest}, {Subject: statement.Subject}} {
		if _, err := Sign(key, kid, st); !errors.Is(err, ErrMalformed) {
			t.Errorf("Sign(%+v) = %v, want ErrMalformed", st, err)
		}
	}
}

func TestJWKRoundTrip(t *testing.T) {
	key, kid := newKey(t)
	j, err := NewJWK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if j.Kid != kid || j.Kty != "EC" || j.Alg != "ES256" {
		t.Fatalf("JWK = %+v", j)
	}
	pub, err := j.PublicKey()
	if err != nil || !pub.Equal(&key.PublicKey) {
		t.Fatalf("PublicKey = %v, %v", pub, err)
	}
	_, otherKid := newKey(t)
	lying := j
	lying.Kid = otherKid
	if _, err := lying.PublicKey(); !errors.Is(err, ErrMalformed) {
		t.Errorf("a JWK whose kid names another key: %v, want ErrMalformed", err)
	}
	offCurve := j
	offCurve.Y = j.X
	if _, err := offCurve.PublicKey(); !errors.Is(err, ErrMalformed) {
		t.Errorf("a point off the curve: %v, want ErrMalformed", err)
	}
}

// rotation returns a published key set where each key after the first is
// endorsed by the one before it.
func rotation(t *testing.T, n int) ([]*ecdsa.PrivateKey, []string, JWKS) {
	var keys []*ecdsa.PrivateKey
	var kids []string
	var set JWKS
	for i := 0; i < n; i++ {
		key, kid := newKey(t)
		j, err := NewJWK(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if j.Endorsement, err = Endorse(keys[i-1], kids[i-1], &key.PublicKey); err != nil {
				t.Fatal(err)
			}
		}
		keys, kids = append(keys, key), append(kids, kid)
		set.Keys = append(set.Keys, j)
	}
	return keys, kids, set
}

func TestExtendFollowsEndorsedRotations(t *testing.T) {
	keys, kids, published := rotation(t, 3)
	pinned := KeySet{kids[0]: &keys[0].PublicKey}
	got := Extend(pinned, published)
	if len(got) != 3 {
		t.Fatalf("trusted %v, want all three keys of the chain", got.IDs())
	}

	// The first key withdrawn: a node that pinned only it still follows
	// its endorsements, but no longer trusts it.
	withdrawn := JWKS{Keys: published.Keys[1:]}
	if got := Extend(pinned, withdrawn); len(got) != 2 || got[kids[0]] != nil {
		t.Errorf("after the first key was withdrawn: %v, want the other two", got.IDs())
	}

	// A key set replaced wholesale, even with its own internal chain,
	// shares nothing with the pins: nothing is trusted.
	_, _, stranger := rotation(t, 2)
	if got := Extend(pinned, stranger); len(got) != 0 {
		t.Errorf("a replaced key set: trusted %v, want none", got.IDs())
	}

	// An attacker appending a key with an endorsement by itself, or a
	// copied endorsement for another key, gains nothing.
	evil, evilKid := newKey(t)
	ej, _ := NewJWK(&evil.PublicKey)
	ej.Endorsement, _ = Endorse(evil, evilKid, &evil.PublicKey)
	copied, _ := NewJWK(&evil.PublicKey)
	copied.Endorsement = published.Keys[1].Endorsement
	for _, extra := range []JWK{ej, copied} {
		p := JWKS{Keys: append(append([]JWK(nil), published.Keys...), extra)}
		if got := Extend(pinned, p); got[evilKid] != nil {
			t.Errorf("an unendorsed key was trusted (endorsement %.20s...)", extra.Endorsement)
		}
	}
}

func TestPEMKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "signing.pem")
	key, created, err := LoadOrCreatePrivateKey(path)
	if err != nil || !created {
		t.Fatalf("first use: %v, created %v", err, created)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	again, created, err := LoadOrCreatePrivateKey(path)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("second use: %v, created %v, same key %v", err, created, again.Equal(key))
	}
	pubs, err := ReadPublicKeys(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := KeyID(&key.PublicKey)
	if len(pubs) != 1 || pubs[kid] == nil {
		t.Fatalf("public keys %v, want %s", pubs.IDs(), kid)
	}
	if _, err := ReadPublicKeys(path); err != nil {
		t.Errorf("the public half of a private key file: %v", err)
	}
	// A public key file lost or cut short (a crash after the key was
	// linked in) is written again on the next use.
	for _, pub := range [][]byte{nil, []byte("-----BEGIN PUBLIC KEY-----\nMFkw")} {
		_ = os.Remove(path + ".pub")
		if pub != nil {
			_ = os.WriteFile(path+".pub", pub, 0o644)
		}
		if _, _, err := LoadOrCreatePrivateKey(path); err != nil {
			t.Fatal(err)
		}
		if pubs, err := ReadPublicKeys(path + ".pub"); err != nil || pubs[kid] == nil {
			t.Errorf("public key file after it was %q: %v %v", pub, pubs.IDs(), err)
		}
	}
	bad := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := ReadPublicKeys(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("a file without keys: %v", err)
	}
}

func TestConcurrentFirstUseMakesOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	var wg sync.WaitGroup
	keys := make([]*ecdsa.PrivateKey, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreatePrivateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k == nil || !k.Equal(keys[0]) {
			t.Fatal("concurrent first uses ended with different keys")
		}
	}
}

// FuzzVerify feeds untrusted signatures and key sets to the parsers a node
// runs on what a registry sends.
func FuzzVerify(f *testing.F) {
	key, kid := newKey(f)
	jws, _ := Sign(key, kid, statement)
	j, _ := NewJWK(&key.PublicKey)
	set, _ := json.Marshal(JWKS{Keys: []JWK{j}})
	f.Add(jws, set)
	f.Add("e30.e30.e30", []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	ks := KeySet{kid: &key.PublicKey}
	f.Fuzz(func(t *testing.T, sig string, jwks []byte) {
		if st, _, err := ks.Verify(sig); err == nil && st != statement {
			t.Fatalf("a signature verified to %+v, which the key never signed", st)
		}
		var published JWKS
		if json.Unmarshal(jwks, &published) == nil {
			_ = Extend(ks, published)
		}
	})
}

func TestSignaturesAreDeterministic(t *testing.T) {
	key, kid := newKey(t)
	a, err := Sign(key, kid, statement)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Sign(key, kid, statement)
	if a != b {
		t.Fatal("the same key and statement gave two signatures")
	}
	other, _ := Sign(key, kid, Statement{Subject: statement.Subject, Manifest: digest.FromString("other")})
	if other == a {
		t.Fatal("two statements gave one signature")
	}
}

// Vouched counts the signatures of the key set for the subject asked
// about, and says when a signature names a key the set lacks.
func TestVouched(t *testing.T) {
	key, kid := newKey(t)
	stranger, strangerKid := newKey(t)
	subject, other := digest.FromString("image"), digest.FromString("other image")
	sig := func(k *ecdsa.PrivateKey, id string, st Statement) ocispec.Descriptor {
		jws, err := Sign(k, id, st)
		if err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{ArtifactType: SignatureArtifactType, Annotations: map[string]string{AnnotationSignature: jws}}
	}
	good, forOther, byStranger := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	refs := []ocispec.Descriptor{
		sig(key, kid, Statement{Subject: subject, Manifest: good}),
		sig(key, kid, Statement{Subject: other, Manifest: forOther}),
		// Not a signature, though it carries one.
		{ArtifactType: "application/vnd.example", Annotations: sig(key, kid, Statement{Subject: subject, Manifest: forOther}).Annotations},
	}
	ks := KeySet{kid: &key.PublicKey}
	signed, unknown := ks.Vouched(refs, subject)
	if len(signed) != 1 || !signed[good] || unknown {
		t.Errorf("Vouched = %v, unknown key %v; want only %s", signed, unknown, good)
	}
	refs = append(refs, sig(stranger, strangerKid, Statement{Subject: subject, Manifest: byStranger}))
	if signed, unknown := ks.Vouched(refs, subject); signed[byStranger] || !unknown {
		t.Errorf("a stranger's signature: %v, unknown key %v; want it ignored and reported", signed, unknown)
	}
}
