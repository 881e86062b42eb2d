package snapshotter

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
)

// PullCredentials are the registry credentials kubelet handed to the CRI
// image service with each pull (a pod's image pull secret, a credential
// provider's answer), kept for the repository of the image pulled, so that
// the lazy fetches of that image's layers use them too. They are persisted
// encrypted (AES-256-GCM) with a key of the node's own, both files
// readable by root only: a snapshotter restart or a reboot finds them
// again, and mounted layers of private images keep reading.
//
// The snapshotter writes them (its CRI proxy sees the pulls); the FUSE
// manager, a separate process, reads the same file and reloads it when it
// changes.
type PullCredentials struct {
	path, keyPath string

	mu      sync.Mutex
	key     []byte
	stamp   fileStamp
	entries map[string]PullCredential
}

// PullCredential is one repository's credentials as a pull gave them.
type PullCredential struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// IdentityToken is an OAuth2 refresh token for the registry's token
	// service.
	IdentityToken string `json:"identityToken,omitempty"`
	// RegistryToken is a bearer token sent to the registry as it is.
	RegistryToken string    `json:"registryToken,omitempty"`
	Updated       time.Time `json:"updated"`
}

// Empty says whether the credential holds nothing to authenticate with.
func (c PullCredential) Empty() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == "" && c.RegistryToken == ""
}

// auth turns the credential into what the registry client sends.
func (c PullCredential) auth() auth.Credential {
	return auth.Credential{Username: c.Username, Password: c.Password, RefreshToken: c.IdentityToken, AccessToken: c.RegistryToken}
}

// File names in the credentials directory.
const (
	pullCredentialsFile = "pull-credentials.enc"
	nodeKeyFile         = "node.key"
)

// pullCredentialsMagic starts the encrypted file and is its additional
// authenticated data: a file of another format or version is refused.
var pullCredentialsMagic = []byte("sluice-pull-credentials-v1\n")

// PullCredentialsDir is where the snapshotter under root keeps them.
func PullCredentialsDir(root string) string { return filepath.Join(root, "credentials") }

// OpenPullCredentials returns the pull credentials kept in dir, encrypted
// with the key in keyFile ("" for dir/node.key). Nothing is created until
// the first Put.
func OpenPullCredentials(dir, keyFile string) *PullCredentials {
	if keyFile == "" {
		keyFile = filepath.Join(dir, nodeKeyFile)
	}
	return &PullCredentials{path: filepath.Join(dir, pullCredentialsFile), keyPath: keyFile, entries: map[string]PullCredential{}}
}

func scopeKey(host, repository string) string { return host + "/" + repository }

// Lookup returns the credentials kept for a repository of a registry.
func (p *PullCredentials) Lookup(host, repository string) (PullCredential, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.reload(); err != nil {
		return PullCredential{}, false, err
	}
	c, ok := p.entries[scopeKey(host, repository)]
	return c, ok, nil
}

// Put keeps the credentials for a repository, replacing those it had, and
// writes the file. It returns what was there before, for Restore.
func (p *PullCredentials) Put(host, repository string, c PullCredential) (prev PullCredential, had bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.reload(); err != nil {
		return PullCredential{}, false, err
	}
	k := scopeKey(host, repository)
	prev, had = p.entries[k]
	if had && sameSecrets(prev, c) {
		return prev, had, nil
	}
	if c.Updated.IsZero() {
		c.Updated = time.Now().UTC()
	}
	p.entries[k] = c
	if err := p.write(); err != nil {
		if had {
			p.entries[k] = prev
		} else {
			delete(p.entries, k)
		}
		return PullCredential{}, false, err
	}
	return prev, had, nil
}

// Restore puts back what Put replaced (had false: removes the entry), if
// the entry still holds what Put wrote: a pull whose credentials the
// registry refused must not leave them in place of working ones.
func (p *PullCredentials) Restore(host, repository string, wrote, prev PullCredential, had bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.reload(); err != nil {
		return err
	}
	k := scopeKey(host, repository)
	if cur, ok := p.entries[k]; !ok || !sameSecrets(cur, wrote) {
		return nil
	}
	if had {
		p.entries[k] = prev
	} else {
		delete(p.entries, k)
	}
	return p.write()
}

func sameSecrets(a, b PullCredential) bool {
	return a.Username == b.Username && a.Password == b.Password && a.IdentityToken == b.IdentityToken && a.RegistryToken == b.RegistryToken
}

// reload reads the file again if it changed since it was last read (the
// other process wrote it); p.mu is held.
func (p *PullCredentials) reload() error {
	now := stamp(p.path)
	if now == p.stamp {
		return nil
	}
	if !now.ok {
		p.entries, p.stamp = map[string]PullCredential{}, now
		return nil
	}
	b, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("pull credentials: %w", err)
	}
	key, err := p.loadKey(false)
	if err != nil {
		return err
	}
	plain, err := open(key, b)
	if err != nil {
		return fmt.Errorf("pull credentials %s: %w (remove the file to start afresh; the next pulls fill it again)", p.path, err)
	}
	entries := map[string]PullCredential{}
	if err := json.Unmarshal(plain, &entries); err != nil {
		return fmt.Errorf("pull credentials %s: %w", p.path, err)
	}
	p.entries, p.stamp = entries, now
	return nil
}

// write encrypts the entries into a temporary file, syncs it and renames
// it over the file; p.mu is held.
func (p *PullCredentials) write() error {
	key, err := p.loadKey(true)
	if err != nil {
		return err
	}
	plain, err := json.Marshal(p.entries)
	if err != nil {
		return err
	}
	sealed, err := seal(key, plain)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.path, sealed); err != nil {
		return fmt.Errorf("pull credentials: %w", err)
	}
	p.stamp = stamp(p.path)
	return nil
}

// loadKey reads the node's key, creating it when create is set and there
// is none; p.mu is held.
func (p *PullCredentials) loadKey(create bool) ([]byte, error) {
	if p.key != nil {
		return p.key, nil
	}
	key, err := readKey(p.keyPath)
	if errors.Is(err, os.ErrNotExist) && create {
		key, err = createKey(p.keyPath)
	}
	if err != nil {
		return nil, err
	}
	p.key = key
	return key, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("node key %s has %d bytes, want 32", path, len(b))
	}
	return b, nil
}

// createKey makes a random 256-bit key at path, readable by root only. It
// is linked into place, so that of two processes creating it at once both
// end with the same key.
func createKey(path string) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	tmp, err := writeTemp(path, key)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return readKey(path)
		}
		return nil, fmt.Errorf("node key: %w", err)
	}
	return key, syncDir(filepath.Dir(path))
}

// writeTemp writes b to a new file (mode 0600) beside path, synced, and
// returns its name.
func writeTemp(path string, b []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	if err := f.Chmod(0o600); err == nil {
		if _, err = f.Write(b); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			return name, nil
		}
	} else {
		f.Close()
	}
	os.Remove(name)
	return "", err
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := writeTemp(path, b)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// seal encrypts plain: magic, nonce, then the AES-GCM ciphertext, with the
// magic as additional data.
func seal(key, plain []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, err
	}
	out := append(append([]byte{}, pullCredentialsMagic...), nonce...)
	return gcm.Seal(out, nonce, plain, pullCredentialsMagic), nil
}

func open(key, sealed []byte) ([]byte, error) {
	if !bytes.HasPrefix(sealed, pullCredentialsMagic) {
		return nil, errors.New("not a pull credentials file of this version")
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	rest := sealed[len(pullCredentialsMagic):]
	if len(rest) < gcm.NonceSize() {
		return nil, errors.New("truncated")
	}
	plain, err := gcm.Open(nil, rest[:gcm.NonceSize()], rest[gcm.NonceSize():], pullCredentialsMagic)
	if err != nil {
		return nil, errors.New("does not decrypt with the node key (a key of another node, or a damaged file)")
	}
	return plain, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
