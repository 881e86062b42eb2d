package blobstore

import (
	"context"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"gocloud.dev/blob"
)

// Writer writes a blob under its expected digest. The object becomes
// visible only if Commit finds the written bytes hash to that digest.
type Writer struct {
	w      *blob.Writer
	cancel context.CancelFunc
	hash   hash.Hash
	want   digest.Digest
	n      int64
}

// NewWriter starts writing the blob dgst.
func (s *Store) NewWriter(ctx context.Context, dgst digest.Digest) (*Writer, error) {
	ctx, cancel := context.WithCancel(ctx)
	w, err := s.bucket.NewWriter(ctx, BlobKey(dgst), &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("write blob %s: %w", dgst, err)
	}
	return &Writer{w: w, cancel: cancel, hash: dgst.Algorithm().Hash(), want: dgst}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.hash.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit publishes the blob if its content matches the digest, and
// otherwise discards it and returns ErrDigestMismatch.
func (w *Writer) Commit() error {
	got := digest.NewDigest(w.want.Algorithm(), w.hash)
	if got != w.want {
		w.Abort()
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, w.want)
	}
	defer w.cancel()
	if err := w.w.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", w.want, err)
	}
	return nil
}

// Abort discards what was written. It is safe after Commit.
func (w *Writer) Abort() {
	w.cancel()
	_ = w.w.Close()
}

// Assemble writes the blob dgst from upload parts, in order, checking the
// digest. A local store publishes a single verified part by renaming it, so
// the bytes are written once; partVerified says the caller has already
// checked that the parts hash to dgst.
func (s *Store) Assemble(ctx context.Context, dgst digest.Digest, parts []string, partVerified bool) error {
	if partVerified && len(parts) == 1 && s.root != "" {
		if err := s.renameLocal(parts[0], BlobKey(dgst)); err == nil {
			return nil
		}
		// Fall through to a copy; the part stays where it was.
	}
	w, err := s.NewWriter(ctx, dgst)
	if err != nil {
		return err
	}
	for _, key := range parts {
		r, err := s.bucket.NewReader(ctx, key, nil)
		if err != nil {
			w.Abort()
			return mapErr(key, err)
		}
		_, err = io.Copy(w, r)
		r.Close()
		if err != nil {
			w.Abort()
			return fmt.Errorf("assemble blob %s from %s: %w", dgst, key, err)
		}
	}
	return w.Commit()
}

// renameLocal moves an object to another key within a local store. Keys are
// made only of characters fileblob stores unescaped, which the Stat checks.
func (s *Store) renameLocal(fromKey, toKey string) error {
	from := filepath.Join(s.root, filepath.FromSlash(fromKey))
	to := filepath.Join(s.root, filepath.FromSlash(toKey))
	if _, err := os.Stat(from); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o777); err != nil {
		return err
	}
	return os.Rename(from, to)
}
