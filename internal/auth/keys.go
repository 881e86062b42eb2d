package auth

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/trust"
)

// KeyRing holds the registry's signing keys, kept as PEM files in a
// directory shared by every replica. The current key signs access tokens
// and streaming artifacts; all of them verify, and all are published, so a
// rotation invalidates neither tokens already issued nor artifacts already
// signed. A key made by a rotation is endorsed by the key it replaces
// (<kid>.endorsement beside <kid>.pem), so nodes that trusted the old key
// trust the new one too.
type KeyRing struct {
	dir string

	mu           sync.RWMutex
	current      string
	keys         map[string]*ecdsa.PrivateKey
	endorsements map[string]string
	// public is the public half of keys, made anew (never changed in
	// place) whenever keys change, so that callers may keep and read it
	// without the lock.
	public trust.KeySet
}

// OpenKeyRing loads the keys of dir, generating the first one if there is
// none.
func OpenKeyRing(dir string) (*KeyRing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	k := &KeyRing{dir: dir}
	if err := k.load(); err != nil {
		return nil, err
	}
	if k.current == "" {
		if _, err := k.Rotate(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *KeyRing) load() error {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return err
	}
	keys := map[string]*ecdsa.PrivateKey{}
	endorsements := map[string]string{}
	for _, e := range entries {
		if kid, ok := strings.CutSuffix(e.Name(), ".endorsement"); ok {
			b, err := os.ReadFile(filepath.Join(k.dir, e.Name()))
			if err != nil {
				return err
			}
			endorsements[kid] = strings.TrimSpace(string(b))
			continue
		}
		kid, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok {
			continue
		}
		key, err := trust.ReadPrivateKey(filepath.Join(k.dir, e.Name()))
		if err != nil {
			return fmt.Errorf("key %s: %w", e.Name(), err)
		}
		keys[kid] = key
	}
	current, err := os.ReadFile(filepath.Join(k.dir, "current"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
	k.endorsements = endorsements
	k.public = publicHalves(keys)
	k.current = strings.TrimSpace(string(current))
	if _, ok := keys[k.current]; !ok {
		k.current = ""
	}
	return nil
}

// Rotate generates a new signing key, endorsed by the current one, and
// makes it current; older keys keep verifying. It returns the new key id.
func (k *KeyRing) Rotate() (string, error) {
	key, keyPEM, err := trust.GenerateKey()
	if err != nil {
		return "", err
	}
	kid, err := trust.KeyID(&key.PublicKey)
	if err != nil {
		return "", err
	}
	// The endorsement is written before the key: a key published
	// without its endorsement would look, to nodes, like a key set
	// replaced by a stranger.
	var endorsement string
	if prevKid, prev := k.signing(); prev != nil {
		if endorsement, err = trust.Endorse(prev, prevKid, &key.PublicKey); err != nil {
			return "", err
		}
		if err := atomicfile.WriteFile(filepath.Join(k.dir, kid+".endorsement"), []byte(endorsement+"\n"), 0o644); err != nil {
			return "", err
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(k.dir, kid+".pem"), keyPEM, 0o600); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(k.dir, "current"), []byte(kid+"\n"), 0o600); err != nil {
		return "", err
	}
	k.mu.Lock()
	if k.keys == nil {
		k.keys, k.endorsements = map[string]*ecdsa.PrivateKey{}, map[string]string{}
	}
	k.keys[kid] = key
	k.public = publicHalves(k.keys)
	if endorsement != "" {
		k.endorsements[kid] = endorsement
	}
	k.current = kid
	k.mu.Unlock()
	return kid, nil
}

// signing returns the current key and its id.
func (k *KeyRing) signing() (string, *ecdsa.PrivateKey) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current, k.keys[k.current]
}

// verifying returns the public key of a key id, reloading the directory
// once when the id is unknown (another replica may have rotated).
func (k *KeyRing) verifying(kid string) (*ecdsa.PublicKey, error) {
	k.mu.RLock()
	key := k.keys[kid]
	k.mu.RUnlock()
	if key == nil {
		if err := k.load(); err != nil {
			return nil, err
		}
		k.mu.RLock()
		key = k.keys[kid]
		k.mu.RUnlock()
	}
	if key == nil {
		return nil, fmt.Errorf("unknown signing key %q", kid)
	}
	return &key.PublicKey, nil
}

// JWKS is the public half of every key, with their endorsements: what
// the registry publishes for nodes to verify streaming artifacts with.
func (k *KeyRing) JWKS() (trust.JWKS, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	set := trust.JWKS{Keys: []trust.JWK{}}
	for _, kid := range k.idsLocked() {
		j, err := trust.NewJWK(&k.keys[kid].PublicKey)
		if err != nil {
			return trust.JWKS{}, fmt.Errorf("key %s: %w", kid, err)
		}
		j.Endorsement = k.endorsements[kid]
		set.Keys = append(set.Keys, j)
	}
	return set, nil
}

// PublicKeys is the public half of every key, to verify the registry's
// signatures with; callers must not change it.
func (k *KeyRing) PublicKeys() trust.KeySet {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.public
}

func publicHalves(keys map[string]*ecdsa.PrivateKey) trust.KeySet {
	set := make(trust.KeySet, len(keys))
	for kid, key := range keys {
		set[kid] = &key.PublicKey
	}
	return set
}

// SignStreaming signs, with the current key, that the streaming manifest
// was made from subject by this registry.
func (k *KeyRing) SignStreaming(subject, manifest digest.Digest) (string, error) {
	kid, key := k.signing()
	return trust.Sign(key, kid, trust.Statement{Subject: subject, Manifest: manifest})
}

// IDs lists the key ids, for tests and the CLI.
func (k *KeyRing) IDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.idsLocked()
}

func (k *KeyRing) idsLocked() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
