package blobstore

import (
	"cmp"
	"context"
	"errors"
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
//
// The bytes go to the bucket as they are written, as the stream of one
// upload (bucket.Upload) that ends only at Commit. No driver publishes an
// object before its stream ends: an S3 upload's single PUT or the
// completion of its multipart upload, an Azure block list's commit, a
// local file's rename all wait for it. A stream that fails instead (Abort,
// a mismatch) cancels the upload, so that nothing is published: S3's
// multipart upload is aborted, Azure's staged blocks stay uncommitted
// until the service drops them, a local temporary file is removed.
type Writer struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	// done closes when the upload has ended, with its outcome in err.
	done chan struct{}
	err  error
	hash hash.Hash
	want digest.Digest
	n    int64
}

var errAborted = errors.New("blob write aborted")

// NewWriter starts writing the blob dgst.
func (s *Store) NewWriter(ctx context.Context, dgst digest.Digest) (*Writer, error) {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	w := &Writer{pw: pw, cancel: cancel, done: make(chan struct{}), hash: dgst.Algorithm().Hash(), want: dgst}
	go func() {
		defer close(w.done)
		w.err = s.upload(ctx, BlobKey(dgst), &stream{r: pr, cancel: cancel})
		// An upload that ended early (the store failed) fails the writes
		// still to come instead of blocking them.
		pr.CloseWithError(cmp.Or(w.err, io.ErrClosedPipe))
	}()
	return w, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	w.hash.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		<-w.done
		if w.err != nil {
			err = storeErr("write blob "+w.want.String(), w.err)
		}
	}
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
	w.pw.Close()
	<-w.done
	if w.err != nil {
		return storeErr("write blob "+w.want.String(), w.err)
	}
	return nil
}

// Abort discards what was written. It is safe after Commit.
func (w *Writer) Abort() {
	w.cancel()
	w.pw.CloseWithError(errAborted)
	<-w.done
}

// upload writes the object key from src: all of it when src ends, none of
// it when src fails.
func (s *Store) upload(ctx context.Context, key string, src *stream) error {
	if s.root != "" {
		return s.uploadLocal(ctx, key, src)
	}
	err := s.bucket.Upload(ctx, key, src, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		s.abortMultipart(ctx, key, err)
	}
	return err
}

// uploadLocal is upload to a local directory. The file driver renames its
// temporary file into place on Close unless the write's context was
// cancelled, even after a write failed (the file system full): so a
// failure cancels the context before closing, and a truncated file is
// removed, never published.
func (s *Store) uploadLocal(ctx context.Context, key string, src *stream) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.bucket.NewWriter(ctx, key, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		cancel()
		_ = w.Close()
		return err
	}
	return w.Close()
}

// stream is the source of an upload. When it fails, it cancels the upload
// before the driver sees the error: a local or in-memory bucket publishes
// what it read unless its context is cancelled.
type stream struct {
	r      io.Reader
	cancel context.CancelFunc
	n      int64
	// err is the source's own failure, if any.
	err error
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
		s.cancel()
	}
	return n, err
}

// Assemble writes the blob dgst from upload parts, in order, checking the
// digest. A local store publishes a single verified part by renaming it, so
// the bytes are written once; partVerified says the caller has already
// checked that the parts hash to dgst.
//
// Object storage copies the parts through one Writer, as any assembly of
// several parts: the bytes come down and go back up once, hashed on the
// way. The service's own copy of a single verified part would spare that,
// but gocloud's Copy is S3's CopyObject, which stops at 5 GiB.
func (s *Store) Assemble(ctx context.Context, dgst digest.Digest, parts []string, partVerified bool) error {
	if partVerified && len(parts) == 1 {
		switch {
		case s.root != "":
			if err := s.renameLocal(parts[0], BlobKey(dgst)); err == nil {
				return nil
			}
		case s.s3Bucket != "":
			// S3 copies the object within the store, and the copy appears
			// whole or not at all; the bytes cross no network twice. It
			// refuses objects over 5 GiB, which are copied below.
			if err := s.bucket.Copy(ctx, BlobKey(dgst), parts[0], nil); err == nil {
				return nil
			}
		}
		// Fall through to a copy through this process; the part stays
		// where it was. (Azure's server-side copy shows the destination
		// blob while it is pending, so it is not used.)
	}
	w, err := s.NewWriter(ctx, dgst)
	if err != nil {
		return err
	}
	for _, key := range parts {
		r, err := s.bucket.NewReader(ctx, key, nil)
		if err != nil {
			w.Abort()
			return storeErr(key, err)
		}
		_, err = io.Copy(w, partReader{r: r, key: key})
		r.Close()
		if err != nil {
			w.Abort()
			return fmt.Errorf("assemble blob %s from %s: %w", dgst, key, err)
		}
	}
	return w.Commit()
}

// partReader marks the errors of reading a part, which come from the store
// as the writer's do.
type partReader struct {
	r   *blob.Reader
	key string
}

func (p partReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF {
		err = storeErr(p.key, err)
	}
	return n, err
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
