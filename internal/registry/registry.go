// Package registry is the registry service: repositories, blobs, uploads,
// manifests, tags, the referrers index, deletes and garbage collection. Every
// writer goes through it (pushes over /v2, and later imports and conversion
// workers), so the rules live in one place: a blob becomes visible only after
// its digest is verified, a manifest only once everything it references is
// present in its repository.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/keyedmutex"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// Options tune garbage collection and upload expiry.
type Options struct {
	// GCInterval is how often garbage collection runs; zero disables it.
	GCInterval time.Duration
	// GCGracePeriod protects blobs written or linked recently from
	// collection, so a push in flight (layers first, manifest last) never
	// loses a blob it is about to reference.
	GCGracePeriod time.Duration
	// UploadTTL is how long an upload may sit idle before it is purged.
	UploadTTL time.Duration
	// SoftDelete keeps deleted manifests and tags restorable for this long;
	// zero deletes at once.
	SoftDelete time.Duration
	// Now is the clock; nil means time.Now. Tests age records with it.
	Now func() time.Time
	// Redirect sends blob downloads to a signed URL of the object store
	// (BlobRedirect) instead of through the registry.
	Redirect bool
}

// StreamingHooks connect the registry to artifact streaming without the
// registry knowing how conversion works.
type StreamingHooks interface {
	// OperationFor returns the conversion to enqueue when a manifest is
	// pushed to (or restored in) a streaming repository, or nil when the
	// manifest is not something to convert.
	OperationFor(repo string, dgst digest.Digest, m *oci.Manifest) *metadata.Operation
	// Enqueued is told that a push or restore committed, possibly with an
	// operation, so that idle workers look at the queue now.
	Enqueued()
	// Deleted is told which manifests were deleted, so that conversions of
	// them stop.
	Deleted(ctx context.Context, repo string, digests []string)
}

// DefaultOptions are the settings used when none are given.
func DefaultOptions() Options {
	return Options{GCInterval: time.Hour, GCGracePeriod: 24 * time.Hour, UploadTTL: 24 * time.Hour}
}

// staleMark is how long a collection mark may stand before another process
// assumes its collector died and finishes the deletion itself. A collector
// gives up on a blob well before this (collectTimeout).
const (
	staleMark      = 10 * time.Minute
	collectTimeout = time.Minute
)

// Registry is the registry service.
type Registry struct {
	meta  Store
	blobs *blobstore.Store
	opts  Options
	log   *slog.Logger

	repoLocks   keyedmutex.Mutex
	uploadLocks keyedmutex.Mutex
	hooks       StreamingHooks
}

// SetStreamingHooks installs the conversion service's hooks.
func (r *Registry) SetStreamingHooks(h StreamingHooks) { r.hooks = h }

// New returns a registry service over the given stores.
func New(meta Store, blobs *blobstore.Store, opts Options, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Registry{meta: meta, blobs: blobs, opts: opts, log: log}
}

// mapMetadataErr turns the metadata's attribute and state errors into the
// registry's.
func mapMetadataErr(err error) error {
	switch {
	case errors.Is(err, metadata.ErrDenied):
		return fmt.Errorf("%w: %v", ErrDenied, err)
	case errors.Is(err, metadata.ErrManifestDeleted), errors.Is(err, metadata.ErrRestoreRefused):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// Unavailable reports whether err is a store's failure to answer (the
// metadata database or the blob store down or unreachable), which a
// client may retry after a while, rather than an error of the request or
// of the registry.
func Unavailable(err error) bool {
	return errors.Is(err, blobstore.ErrUnavailable) || metadata.Unavailable(err)
}

// Stores, as NoSpace names them.
const (
	StoreMetadata = "metadata"
	StoreBlobs    = "blobs"
)

// NoSpace reports whether err is a write that failed because a store is
// out of space: which store (StoreMetadata or StoreBlobs) and the system's
// cause ("no space left on device", "database or disk is full"), which
// names no server file and can be told to clients. It returns "", nil for
// any other error. A store that is full still serves reads.
func NoSpace(err error) (store string, cause error) {
	// The database's own report first: its file system's errno would
	// pass for the blob store's.
	if cause := metadata.NoSpace(err); errors.Is(cause, metadata.ErrDatabaseFull) {
		return StoreMetadata, cause
	}
	if cause := blobstore.NoSpace(err); cause != nil {
		return StoreBlobs, cause
	}
	return "", nil
}

// touchBlob protects dgst from collection before its object is written or
// linked. If a collection of it is under way it waits for that to finish,
// or finishes it when the collector's mark is stale.
func (r *Registry) touchBlob(ctx context.Context, dgst digest.Digest) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		markedAt, err := r.meta.TouchBlob(ctx, dgst.String())
		if !errors.Is(err, metadata.ErrBlobDeleting) {
			return err
		}
		if r.opts.Now().Sub(markedAt) > staleMark {
			if err := r.collectBlob(ctx, dgst.String()); err != nil {
				return err
			}
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", dgst, ErrBusy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
