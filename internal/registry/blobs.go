package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// StatBlob returns the size of a blob linked in repo.
func (r *Registry) StatBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	size, readable, err := r.meta.BlobSize(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return 0, fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	}
	if err == nil && !readable {
		return 0, fmt.Errorf("%w: repository %s has readEnabled: false", ErrDenied, repo)
	}
	return size, err
}

// OpenBlob opens a blob linked in repo.
func (r *Registry) OpenBlob(ctx context.Context, repo string, dgst digest.Digest) (*blobstore.Content, error) {
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return nil, err
	}
	c, err := r.blobs.Open(ctx, dgst)
	if errors.Is(err, blobstore.ErrNotFound) {
		r.log.Error("blob linked but missing from the blob store", "repository", repo, "digest", dgst)
		return nil, fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	}
	return c, err
}

// redirectExpiry is how long a blob's signed URL lets a client download
// it: long enough for a large layer on a slow link, short enough that a
// URL that leaked is soon worthless.
const redirectExpiry = 20 * time.Minute

// BlobRedirect returns, when the registry redirects downloads, a signed
// URL of the blob in the object store for a client allowed to read it from
// repo; and "" when the registry serves the bytes itself.
func (r *Registry) BlobRedirect(ctx context.Context, repo string, dgst digest.Digest) (string, error) {
	if !r.opts.Redirect || !r.blobs.SignsURLs() {
		return "", nil
	}
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return "", err
	}
	return r.blobs.SignedURL(ctx, dgst, redirectExpiry)
}

// DeleteBlob unlinks a blob from repo; garbage collection reclaims its
// storage once no repository links it.
func (r *Registry) DeleteBlob(ctx context.Context, repo string, dgst digest.Digest) error {
	err := r.meta.UnlinkBlob(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	}
	return mapMetadataErr(err)
}

// UnlinkUnreferenced removes a blob from repo unless a manifest there still
// references it: conversion uses it to take back the layers of a canceled
// operation.
func (r *Registry) UnlinkUnreferenced(ctx context.Context, repo string, dgst digest.Digest) error {
	return r.meta.UnlinkUnreferencedBlob(ctx, repo, dgst.String())
}

// LinkStoredBlob links into repo a blob stored for another repository,
// without the bytes: only for blobs the registry itself produced, such as
// layers converted once and shared by images. ErrBlobUnknown means it is
// gone.
func (r *Registry) LinkStoredBlob(ctx context.Context, repo string, dgst digest.Digest) error {
	err := r.meta.LinkStoredBlob(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	}
	return mapMetadataErr(err)
}

// MountBlob links into repo a blob that repository from holds. It returns
// ErrBlobUnknown when from does not hold it; the caller then starts an
// ordinary upload.
func (r *Registry) MountBlob(ctx context.Context, repo, from string, dgst digest.Digest) (int64, error) {
	if err := oci.ValidateName(from); err != nil {
		return 0, err
	}
	size, err := r.meta.MountBlob(ctx, repo, from, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return 0, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, dgst, from)
	}
	return size, mapMetadataErr(err)
}

// MountBlobFromAny links into repo a blob held by any repository that
// mayRead allows, for a mount request that names no source. It returns
// ErrBlobUnknown when there is none.
func (r *Registry) MountBlobFromAny(ctx context.Context, repo string, dgst digest.Digest, mayRead func(repo string) bool) (int64, error) {
	if size, err := r.StatBlob(ctx, repo, dgst); err == nil {
		return size, nil
	}
	holders, err := r.meta.RepositoriesWithBlob(ctx, dgst.String(), 100)
	if err != nil {
		return 0, err
	}
	for _, from := range holders {
		if !mayRead(from) {
			continue
		}
		size, err := r.MountBlob(ctx, repo, from, dgst)
		if !errors.Is(err, ErrBlobUnknown) {
			return size, err
		}
	}
	return 0, fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
}

// PutBlob stores body as the blob dgst in repo, in one request. The bytes
// are hashed as they arrive; a mismatch stores nothing.
func (r *Registry) PutBlob(ctx context.Context, repo string, dgst digest.Digest, body io.Reader) (int64, error) {
	if err := r.meta.CheckWritable(ctx, repo); err != nil {
		return 0, mapMetadataErr(err)
	}
	if err := r.touchBlob(ctx, dgst); err != nil {
		return 0, err
	}
	size, err := r.writeVerified(ctx, dgst, body)
	if err != nil {
		return 0, err
	}
	return size, r.link(ctx, repo, dgst, size)
}

// writeVerified consumes body and makes sure the object dgst holds it. When
// the object already exists the body is only hashed, never trusted: a
// client must send the bytes to claim a blob.
func (r *Registry) writeVerified(ctx context.Context, dgst digest.Digest, body io.Reader) (int64, error) {
	exists, err := r.blobs.Exists(ctx, dgst)
	if err != nil {
		return 0, err
	}
	if exists {
		v := dgst.Verifier()
		n, err := io.Copy(v, body)
		if err != nil {
			return n, fmt.Errorf("%w: reading body: %v", ErrUploadInvalid, err)
		}
		if !v.Verified() {
			return n, fmt.Errorf("%w: content does not match %s", oci.ErrDigestInvalid, dgst)
		}
		return n, nil
	}
	w, err := r.blobs.NewWriter(ctx, dgst)
	if err != nil {
		return 0, err
	}
	src := &clientBody{r: body}
	if _, err := io.Copy(w, src); err != nil {
		w.Abort()
		return w.Size(), src.copyError("store blob "+dgst.String(), err)
	}
	if err := w.Commit(); err != nil {
		if errors.Is(err, blobstore.ErrDigestMismatch) {
			return w.Size(), fmt.Errorf("%w: %v", oci.ErrDigestInvalid, err)
		}
		return w.Size(), err
	}
	return w.Size(), nil
}

// clientBody reads a client's request body and keeps why a read failed,
// so that a failed copy tells the client's fault (a body that broke off)
// from the registry's (a store that cannot write).
type clientBody struct {
	r   io.Reader
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// copyError is the error of a failed copy from b into the store: the
// client's ErrUploadInvalid if reading failed, else the store's error,
// which is the registry's and is not shown to the client.
func (b *clientBody) copyError(what string, err error) error {
	if b.err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrUploadInvalid, b.err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (r *Registry) link(ctx context.Context, repo string, dgst digest.Digest, size int64) error {
	if err := r.meta.LinkBlob(ctx, repo, dgst.String(), size); err != nil {
		return fmt.Errorf("link %s into %s: %w", dgst, repo, mapMetadataErr(err))
	}
	return nil
}
