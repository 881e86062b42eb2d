package ocidir

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxJSONBlob bounds manifests, indexes and configs read from a layout.
const maxJSONBlob = 16 << 20

func (l layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.Dir, "blobs", d.Algorithm().String(), d.Encoded())
}

func (l layout) index() (*ocispec.Index, error) {
	if _, err := os.Stat(filepath.Join(l.Dir, ocispec.ImageLayoutFile)); err != nil {
		return nil, fmt.Errorf("%w: %s is not an OCI image layout (no %s)", ErrNotFound, l.Dir, ocispec.ImageLayoutFile)
	}
	b, err := os.ReadFile(filepath.Join(l.Dir, ocispec.ImageIndexFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", ocispec.ImageIndexFile, err)
	}
	return &idx, nil
}

// readJSON reads a small blob, checks its digest and decodes it.
func (l layout) readJSON(d ocispec.Descriptor, v any) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor digest %q: %w", d.Digest, err)
	}
	f, err := os.Open(l.blobPath(d.Digest))
	if err != nil {
		return fmt.Errorf("%w: blob %s: %v", ErrNotFound, d.Digest, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSONBlob+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSONBlob {
		return fmt.Errorf("blob %s is over %d bytes: not a manifest or config", d.Digest, maxJSONBlob)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return fmt.Errorf("blob %s hashes to %s: the layout is corrupt", d.Digest, got)
	}
	return json.Unmarshal(b, v)
}

// writeBlob writes a blob through a temporary file renamed into place.
func (l layout) writeBlob(d digest.Digest, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Join(l.Dir, "blobs"), ".writing-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	return l.place(tmp.Name(), d)
}

// place renames a finished temporary file to its blob path.
func (l layout) place(tmp string, d digest.Digest) error {
	dst := l.blobPath(d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// addToIndex records the streaming manifests in index.json (once each),
// replacing the file atomically.
func (l layout) addToIndex(cs []Converted) error {
	idx, err := l.index()
	if err != nil {
		return err
	}
	have := map[digest.Digest]bool{}
	for _, m := range idx.Manifests {
		have[m.Digest] = true
	}
	for _, c := range cs {
		if !have[c.Manifest.Digest] {
			idx.Manifests = append(idx.Manifests, c.Manifest)
			have[c.Manifest.Digest] = true
		}
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(l.Dir, ".index-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(l.Dir, ocispec.ImageIndexFile))
}
