package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// ReadPrivateKey reads a P-256 private key from a PEM file ("EC PRIVATE
// KEY" or PKCS #8 "PRIVATE KEY", as openssl writes them).
func ReadPrivateKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ParsePrivateKey reads the first private key of PEM bytes.
func ParsePrivateKey(b []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%w: no EC PRIVATE KEY or PRIVATE KEY block", ErrMalformed)
		}
		var key any
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w private key: %v", ErrMalformed, err)
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w private key: %T, want EC P-256", ErrMalformed, key)
		}
		if err := checkCurve(&ec.PublicKey); err != nil {
			return nil, err
		}
		return ec, nil
	}
}

// ReadPublicKeys reads every P-256 public key of a PEM file: "PUBLIC KEY"
// blocks, or the public half of a private key.
func ReadPublicKeys(path string) (KeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ks := KeySet{}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var pub *ecdsa.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w public key: %v", path, ErrMalformed, err)
			}
			ec, ok := k.(*ecdsa.PublicKey)
			if !ok {
				return nil, fmt.Errorf("%s: %w public key: %T, want EC P-256", path, ErrMalformed, k)
			}
			pub = ec
		case "EC PRIVATE KEY", "PRIVATE KEY":
			k, err := ParsePrivateKey(pem.EncodeToMemory(block))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			pub = &k.PublicKey
		default:
			continue
		}
		if _, err := ks.Add(pub); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if len(ks) == 0 {
		return nil, fmt.Errorf("%s: %w: no PUBLIC KEY block", path, ErrMalformed)
	}
	return ks, nil
}

// PublicPEM encodes a public key as a "PUBLIC KEY" PEM block.
func PublicPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// GenerateKey makes a P-256 signing key and its "EC PRIVATE KEY" PEM
// encoding.
func GenerateKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// LoadOrCreatePrivateKey reads the key at path, or, when there is no file,
// generates one and writes it there (mode 0600, directories 0700). Either
// way its public key is beside it in path + ".pub", written again when it
// is missing or is not the key's. created says which.
func LoadOrCreatePrivateKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	key, created, err = loadOrCreatePrivateKey(path)
	if err != nil {
		return nil, false, err
	}
	if err := writePublicBeside(path, key); err != nil {
		return nil, false, err
	}
	return key, created, nil
}

// writePublicBeside writes the public half of key to path + ".pub" unless
// that file already holds it: the file nodes are given to trust.
func writePublicBeside(path string, key *ecdsa.PrivateKey) error {
	kid, err := KeyID(&key.PublicKey)
	if err != nil {
		return err
	}
	if ks, err := ReadPublicKeys(path + ".pub"); err == nil && len(ks) == 1 && ks[kid] != nil {
		return nil
	}
	pub, err := PublicPEM(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path+".pub", pub, 0o644); err != nil {
		return fmt.Errorf("write the public key beside %s: %w", path, err)
	}
	return nil
}

func loadOrCreatePrivateKey(path string) (*ecdsa.PrivateKey, bool, error) {
	key, err := ReadPrivateKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return key, false, err
	}
	key, keyPEM, err := GenerateKey()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	// Written whole under a temporary name, then linked into place: a
	// crash never leaves half a key, and of two first uses at once the
	// second finds the first's key instead of replacing it.
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-key-*")
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(keyPEM)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, err
	}
	if err := os.Link(f.Name(), path); errors.Is(err, os.ErrExist) {
		key, err = ReadPrivateKey(path)
		return key, false, err
	} else if err != nil {
		return nil, false, err
	}
	return key, true, nil
}
