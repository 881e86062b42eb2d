package auth

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/trust"
)

// KeyRing holds the registry's signing keys. The current key signs access
// tokens and streaming artifacts; all of them verify, and all are
// published, so a rotation invalidates neither tokens already issued nor
// artifacts already signed. A key made by a rotation is endorsed by the key
// it replaces, so nodes that trusted the old key trust the new one too.
//
// The keys live in a directory (PEM files, one registry or replicas
// sharing the directory) or, for replicas on several machines, in the
// metadata database (OpenSharedKeyRing).
type KeyRing struct {
	storage keyStorage

	mu           sync.RWMutex
	current      string
	keys         map[string]*ecdsa.PrivateKey
	endorsements map[string]string
	// public is the public half of keys, made anew (never changed in
	// place) whenever keys change, so that callers may keep and read it
	// without the lock.
	public trust.KeySet
}

// keyStorage is where a key ring keeps its keys.
type keyStorage interface {
	// load returns every key, by id, with its endorsement (PEM), and the
	// current key's id ("" for none).
	load() (keys map[string][]byte, endorsements map[string]string, current string, err error)
	// add stores a key and its endorsement and makes it current.
	add(kid string, keyPEM []byte, endorsement string) error
}

// OpenKeyRing loads the keys of dir, generating the first one if there is
// none.
func OpenKeyRing(dir string) (*KeyRing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	return openKeyRing(keyDir(dir))
}

// KeyStore keeps signing keys in the metadata database.
type KeyStore interface {
	SigningKeys(ctx context.Context) ([]metadata.SigningKey, error)
	AddSigningKey(ctx context.Context, k metadata.SigningKey) error
}

// OpenSharedKeyRing loads the keys kept in the metadata database, which
// every replica shares, generating the first one if there is none. A
// database without keys first takes those of importDir, if it has any (a
// registry that kept them in its data directory before), the current one
// staying current.
func OpenSharedKeyRing(ctx context.Context, store KeyStore, importDir string) (*KeyRing, error) {
	db := &dbKeys{store: store}
	have, err := store.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	if len(have) == 0 && importDir != "" {
		if err := importKeys(keyDir(importDir), db); err != nil {
			return nil, fmt.Errorf("import the signing keys of %s: %w", importDir, err)
		}
	}
	return openKeyRing(db)
}

func importKeys(from keyDir, to *dbKeys) error {
	if _, err := os.Stat(string(from)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	keys, endorsements, current, err := from.load()
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(keys))
	for kid := range keys {
		if kid != current {
			ids = append(ids, kid)
		}
	}
	sort.Strings(ids)
	if current != "" {
		ids = append(ids, current) // added last, so current
	}
	for _, kid := range ids {
		if err := to.add(kid, keys[kid], endorsements[kid]); err != nil {
			return err
		}
	}
	return nil
}

func openKeyRing(storage keyStorage) (*KeyRing, error) {
	k := &KeyRing{storage: storage}
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
	pems, endorsements, current, err := k.storage.load()
	if err != nil {
		return err
	}
	keys := make(map[string]*ecdsa.PrivateKey, len(pems))
	for kid, b := range pems {
		key, err := trust.ParsePrivateKey(b)
		if err != nil {
			return fmt.Errorf("key %s: %w", kid, err)
		}
		keys[kid] = key
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
	k.endorsements = endorsements
	k.public = publicHalves(keys)
	k.current = current
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
	var endorsement string
	if prevKid, prev := k.signing(); prev != nil {
		if endorsement, err = trust.Endorse(prev, prevKid, &key.PublicKey); err != nil {
			return "", err
		}
	}
	if err := k.storage.add(kid, keyPEM, endorsement); err != nil {
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

// keyDir keeps keys as files: <kid>.pem, <kid>.endorsement beside it, and
// "current" naming the current key.
type keyDir string

func (d keyDir) load() (map[string][]byte, map[string]string, string, error) {
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return nil, nil, "", err
	}
	keys := map[string][]byte{}
	endorsements := map[string]string{}
	for _, e := range entries {
		if kid, ok := strings.CutSuffix(e.Name(), ".endorsement"); ok {
			b, err := os.ReadFile(filepath.Join(string(d), e.Name()))
			if err != nil {
				return nil, nil, "", err
			}
			endorsements[kid] = strings.TrimSpace(string(b))
			continue
		}
		kid, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(string(d), e.Name()))
		if err != nil {
			return nil, nil, "", err
		}
		keys[kid] = b
	}
	current, err := os.ReadFile(filepath.Join(string(d), "current"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, "", err
	}
	return keys, endorsements, strings.TrimSpace(string(current)), nil
}

func (d keyDir) add(kid string, keyPEM []byte, endorsement string) error {
	// The endorsement is written before the key: a key published
	// without its endorsement would look, to nodes, like a key set
	// replaced by a stranger.
	if endorsement != "" {
		if err := atomicfile.WriteFile(filepath.Join(string(d), kid+".endorsement"), []byte(endorsement+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(string(d), kid+".pem"), keyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(string(d), "current"), []byte(kid+"\n"), 0o600)
}

// dbKeys keeps keys in the metadata database. A key and its endorsement
// are one row, written with the change of current key in one transaction.
type dbKeys struct{ store KeyStore }

// keyStoreTimeout bounds a read or write of the keys in the database.
const keyStoreTimeout = 10 * time.Second

func (d *dbKeys) load() (map[string][]byte, map[string]string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), keyStoreTimeout)
	defer cancel()
	rows, err := d.store.SigningKeys(ctx)
	if err != nil {
		return nil, nil, "", fmt.Errorf("read signing keys: %w", err)
	}
	keys := make(map[string][]byte, len(rows))
	endorsements := map[string]string{}
	current := ""
	for _, r := range rows {
		keys[r.ID] = r.PrivateKeyPEM
		if r.Endorsement != "" {
			endorsements[r.ID] = r.Endorsement
		}
		if r.Current {
			current = r.ID
		}
	}
	return keys, endorsements, current, nil
}

func (d *dbKeys) add(kid string, keyPEM []byte, endorsement string) error {
	ctx, cancel := context.WithTimeout(context.Background(), keyStoreTimeout)
	defer cancel()
	if err := d.store.AddSigningKey(ctx, metadata.SigningKey{ID: kid, PrivateKeyPEM: keyPEM, Endorsement: endorsement}); err != nil {
		return fmt.Errorf("store signing key %s: %w", kid, err)
	}
	return nil
}

// Reload reads the keys again, for a replica told that another rotated
// them: it signs with the new current key from then on.
func (k *KeyRing) Reload() error { return k.load() }

// signing returns the current key and its id.
func (k *KeyRing) signing() (string, *ecdsa.PrivateKey) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current, k.keys[k.current]
}

// verifying returns the public key of a key id, reloading the keys once
// when the id is unknown (another replica may have rotated).
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
