// Package blobstore keeps content-addressed blobs and upload parts in a
// gocloud.dev/blob bucket: a local directory by default, an Azure Blob
// Storage container (azblob://) or an S3 bucket (s3://), or any other bucket
// URL gocloud can open.
//
// A blob is written under its digest's key only through a Writer that checks
// the digest before the object becomes visible; a mismatch leaves nothing
// behind. The store does not decide who may see a blob: that is the
// metadata's links, kept by the registry service.
//
// Errors say what a caller acts on: ErrNotFound for what is not stored,
// ErrUnavailable for an object store that cannot be reached or cannot serve
// now.
package blobstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sluicehq/sluice/internal/atomicfile"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

var (
	// ErrNotFound is returned for a blob or part that is not stored.
	ErrNotFound = errors.New("not found in blob store")
	// ErrDigestMismatch is returned when written bytes do not hash to the
	// digest they were written for.
	ErrDigestMismatch = errors.New("content does not match digest")
	// ErrUnavailable is returned, wrapping the cause, when the object store
	// could not be reached (refused, reset, timed out) or answered that it
	// cannot serve now (throttled, a server error): the same request may
	// succeed later.
	ErrUnavailable = errors.New("blob store unavailable")
)

// Store is a content-addressed blob store over a gocloud bucket.
type Store struct {
	bucket *blob.Bucket
	// root is the bucket's directory when it is the local file driver,
	// which enables renames and sendfile; empty otherwise.
	root string
	// s3Bucket is the bucket's name when it is S3's.
	s3Bucket string
}

// OpenDir opens (creating) a store in a local directory. Temporary files are
// written next to their final names so that the rename that publishes them
// never crosses file systems.
func OpenDir(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob directory %s: %w", dir, err)
	}
	// Made here so that the error is the system's own, which names the
	// directory and the cause ("mkdir /srv/blobs: permission denied").
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	b, err := fileblob.OpenBucket(abs, &fileblob.Options{
		CreateDir: true,
		NoTempDir: true,
		Metadata:  fileblob.MetadataDontWrite,
	})
	if err != nil {
		return nil, fmt.Errorf("open blob directory %s: %w", abs, err)
	}
	return &Store{bucket: b, root: abs}, nil
}

// OpenURL opens a store from a gocloud bucket URL; file:// URLs get the
// local optimisations of OpenDir. An Azure container or S3 bucket that does
// not exist is created, with credentials from the environment as the
// cloud's SDK reads them.
func OpenURL(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("blob store URL %q: %w", rawURL, err)
	}
	if u.Scheme == "file" {
		// "file://data/blobs" is the directory /blobs on host "data": a
		// relative path made into a URL. Refuse it rather than write
		// outside the directory the operator meant.
		if u.Host != "" || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("blob store URL %q: a file URL takes an absolute directory and no host, as in file:///var/lib/sluice/blobs", rawURL)
		}
		return OpenDir(filepath.FromSlash(u.Path))
	}
	if u.Scheme == "" {
		return OpenDir(rawURL)
	}
	b, err := blob.OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("open blob store %s: %w", u.Redacted(), err)
	}
	if err := ensureBucket(ctx, b, u); err != nil {
		b.Close()
		return nil, err
	}
	s := &Store{bucket: b}
	if u.Scheme == "s3" {
		s.s3Bucket = u.Host
	}
	return s, nil
}

// Ping checks that the store answers and its bucket is there, for a
// readiness probe.
func (s *Store) Ping(ctx context.Context) error {
	if s.root != "" {
		// The file driver answers true whatever the directory's state.
		if fi, err := os.Stat(s.root); err != nil || !fi.IsDir() {
			return fmt.Errorf("blob directory %s: %w", s.root, cmp.Or(err, errors.New("not a directory")))
		}
		return nil
	}
	ok, err := s.bucket.IsAccessible(ctx)
	if err != nil {
		return storeErr("blob store", err)
	}
	if !ok {
		return errors.New("blob store: the bucket is not there")
	}
	return nil
}

// Close releases the bucket.
func (s *Store) Close() error { return s.bucket.Close() }

// BlobKey is where the content of dgst lives: blobs/<algorithm>/<first two
// hex digits>/<hex>, so that no directory grows too large.
func BlobKey(dgst digest.Digest) string {
	enc := dgst.Encoded()
	return "blobs/" + string(dgst.Algorithm()) + "/" + enc[:2] + "/" + enc
}

// PartKey is where part n of an upload lives.
func PartKey(uploadID string, n int, nonce string) string {
	return fmt.Sprintf("uploads/%s/%06d-%s", uploadID, n, nonce)
}

// Exists reports whether the blob's object is stored.
func (s *Store) Exists(ctx context.Context, dgst digest.Digest) (bool, error) {
	key := BlobKey(dgst)
	ok, err := s.bucket.Exists(ctx, key)
	if err != nil {
		return false, storeErr(key, err)
	}
	return ok, nil
}

// ErrNoSignedURLs is returned by SignedURL of a store that cannot make
// them: a local directory.
var ErrNoSignedURLs = errors.New("the blob store cannot sign URLs (a local directory)")

// SignsURLs reports whether SignedURL works: the store is object storage.
func (s *Store) SignsURLs() bool { return s.root == "" }

// SignedURL returns a URL that lets whoever holds it GET the blob dgst
// (ranges included) straight from the object store until expiry passes.
func (s *Store) SignedURL(ctx context.Context, dgst digest.Digest, expiry time.Duration) (string, error) {
	if !s.SignsURLs() {
		return "", ErrNoSignedURLs
	}
	key := BlobKey(dgst)
	u, err := s.bucket.SignedURL(ctx, key, &blob.SignedURLOptions{Expiry: expiry, Method: http.MethodGet})
	if err != nil {
		return "", storeErr("sign a URL of "+key, err)
	}
	return u, nil
}

// Content is an open blob. When the store is a local directory, ReadSeeker
// is an *os.File so that HTTP responses can use sendfile; on object storage
// it asks the store for the bytes from where it was sought to, so that a
// range costs only its own bytes.
type Content struct {
	io.ReadSeeker
	io.Closer
	Size    int64
	ModTime time.Time
}

// Open opens a blob for reading and seeking.
func (s *Store) Open(ctx context.Context, dgst digest.Digest) (*Content, error) {
	return s.openKey(ctx, BlobKey(dgst))
}

func (s *Store) openKey(ctx context.Context, key string) (*Content, error) {
	if s.root == "" {
		return openObject(ctx, s.bucket, key)
	}
	var file *os.File
	r, err := s.bucket.NewReader(ctx, key, &blob.ReaderOptions{BeforeRead: func(as func(any) bool) error {
		as(&file)
		return nil
	}})
	if err != nil {
		return nil, storeErr(key, err)
	}
	c := &Content{ReadSeeker: r, Closer: r, Size: r.Size(), ModTime: r.ModTime()}
	if file != nil {
		c.ReadSeeker = file
	}
	return c, nil
}

// Delete removes a blob's object. Deleting what is not there is not an error.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	return s.DeleteKey(ctx, BlobKey(dgst))
}

// DeleteKey removes an object by key; a missing object is not an error.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	err := s.bucket.Delete(ctx, key)
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return storeErr("delete "+key, err)
	}
	return nil
}

// WritePart stores r under key (an upload part) and returns its length.
// On error nothing is left under key. An error of r's is returned as r gave
// it; one of the store's is marked as such (ErrUnavailable, say).
func (s *Store) WritePart(ctx context.Context, key string, r io.Reader) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := &stream{r: r, cancel: cancel}
	err := s.upload(ctx, key, src)
	switch {
	case src.err != nil:
		return src.n, src.err
	case err != nil:
		return src.n, storeErr("write "+key, err)
	}
	return src.n, nil
}

// SweepTemporary removes, in a local store, temporary files older than
// maxAge that a crash left behind. They were never visible as objects.
func (s *Store) SweepTemporary(maxAge time.Duration) (int, error) {
	if s.root == "" {
		return 0, nil
	}
	cutoff := time.Now().Add(-maxAge)
	removed := 0
	err := filepath.WalkDir(s.root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".tmp") {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(cutoff) {
			if os.Remove(path) == nil {
				removed++
			}
		}
		return nil
	})
	return removed, err
}

// DeleteUpload removes every part of an upload, recorded or not: a part
// whose write finished just before a crash may never have been recorded.
func (s *Store) DeleteUpload(ctx context.Context, uploadID string) error {
	it := s.bucket.List(&blob.ListOptions{Prefix: "uploads/" + uploadID + "/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return storeErr("list parts of upload "+uploadID, err)
		}
		if err := s.DeleteKey(ctx, obj.Key); err != nil {
			return err
		}
	}
}

// UploadIDs lists the uploads that have parts stored, with the time of
// their newest part.
func (s *Store) UploadIDs(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	it := s.bucket.List(&blob.ListOptions{Prefix: "uploads/"})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, storeErr("list upload parts", err)
		}
		id, _, ok := strings.Cut(strings.TrimPrefix(obj.Key, "uploads/"), "/")
		if !ok {
			continue
		}
		if obj.ModTime.After(out[id]) {
			out[id] = obj.ModTime
		}
	}
}

// ProbeWrite checks that the store can take writes now. A local directory
// is probed with atomicfile.Probe (a crash leaves its file to
// SweepTemporary); its error names the file and the system's cause. Object
// storage does not fill up: it is not probed.
func (s *Store) ProbeWrite(ctx context.Context) error {
	if s.root == "" {
		return nil
	}
	return atomicfile.Probe(ctx, s.root)
}

// Dir is the directory of a local store, empty for object storage.
func (s *Store) Dir() string { return s.root }
