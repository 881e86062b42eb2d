package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// keyRing holds the token signing keys, kept as PEM files in a directory
// shared by every replica: the current key signs, all of them verify, so a
// rotation does not invalidate tokens already issued.
type keyRing struct {
	dir string

	mu      sync.RWMutex
	current string
	keys    map[string]*ecdsa.PrivateKey
}

// openKeyRing loads the keys of dir, generating the first one if there is
// none.
func openKeyRing(dir string) (*keyRing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	k := &keyRing{dir: dir}
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

func (k *keyRing) load() error {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return err
	}
	keys := map[string]*ecdsa.PrivateKey{}
	for _, e := range entries {
		kid, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(k.dir, e.Name()))
		if err != nil {
			return err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return fmt.Errorf("key %s: not PEM", e.Name())
		}
		key, err := x509.ParseECPrivateKey(block.Bytes)
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
	k.current = strings.TrimSpace(string(current))
	if _, ok := keys[k.current]; !ok {
		k.current = ""
	}
	return nil
}

// Rotate generates a new signing key and makes it current; older keys keep
// verifying. It returns the new key id.
func (k *keyRing) Rotate() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pub)
	kid := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
	if err := writeFileAtomic(filepath.Join(k.dir, kid+".pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(k.dir, "current"), []byte(kid+"\n"), 0o600); err != nil {
		return "", err
	}
	k.mu.Lock()
	if k.keys == nil {
		k.keys = map[string]*ecdsa.PrivateKey{}
	}
	k.keys[kid] = key
	k.current = kid
	k.mu.Unlock()
	return kid, nil
}

// signing returns the current key and its id.
func (k *keyRing) signing() (string, *ecdsa.PrivateKey) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current, k.keys[k.current]
}

// verifying returns the public key of a key id, reloading the directory
// once when the id is unknown (another replica may have rotated).
func (k *keyRing) verifying(kid string) (*ecdsa.PublicKey, error) {
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

// IDs lists the key ids, for tests and the CLI.
func (k *keyRing) IDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// writeFileAtomic writes a file under a temporary name, syncs it and
// renames it into place, so a crash never leaves half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
