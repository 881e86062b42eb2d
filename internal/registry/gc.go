package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// GCStats says what one garbage collection pass reclaimed.
type GCStats struct {
	PurgedManifests int64
	UnlinkedBlobs   int64
	DeletedBlobs    int
	PurgedUploads   int
}

// CollectGarbage runs one pass of online garbage collection:
//  0. what was soft-deleted longer ago than the retention is purged;
//  1. links older than the grace period to blobs no manifest of their
//     repository references are removed;
//  2. blobs linked nowhere and untouched for the grace period are marked,
//     their objects deleted, then their records;
//  3. uploads idle for longer than the upload TTL are purged.
//
// A push in flight touches and links its blobs as it goes, which keeps them
// out of steps 1 and 2 for the grace period.
func (r *Registry) CollectGarbage(ctx context.Context) (GCStats, error) {
	var st GCStats
	now := r.opts.Now()
	cutoff := now.Add(-r.opts.GCGracePeriod)
	purged, err := r.meta.PurgeDeleted(ctx, now.Add(-r.opts.SoftDelete))
	if err != nil {
		return st, fmt.Errorf("purge soft-deleted manifests: %w", err)
	}
	st.PurgedManifests = purged
	n, err := r.meta.UnlinkUnreferencedBlobs(ctx, cutoff)
	if err != nil {
		return st, fmt.Errorf("unlink unreferenced blobs: %w", err)
	}
	st.UnlinkedBlobs = n
	for {
		batch, err := r.meta.MarkBlobsForCollection(ctx, cutoff, now.Add(-staleMark), 100)
		if err != nil {
			return st, fmt.Errorf("mark blobs for collection: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, d := range batch {
			if err := r.collectBlob(ctx, d); err != nil {
				return st, err
			}
			st.DeletedBlobs++
		}
	}
	stale, err := r.meta.StaleUploads(ctx, now.Add(-r.opts.UploadTTL), 1000)
	if err != nil {
		return st, fmt.Errorf("list stale uploads: %w", err)
	}
	for _, u := range stale {
		r.dropUpload(ctx, u)
		st.PurgedUploads++
	}
	orphans, err := r.purgeOrphanedParts(ctx, now.Add(-r.opts.UploadTTL))
	st.PurgedUploads += orphans
	return st, err
}

// purgeOrphanedParts deletes the parts of uploads that have no record (the
// process died between writing a part and recording it, or while dropping
// the upload) once they are older than cutoff.
func (r *Registry) purgeOrphanedParts(ctx context.Context, cutoff time.Time) (int, error) {
	ids, err := r.blobs.UploadIDs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for id, newest := range ids {
		if newest.After(cutoff) {
			continue
		}
		if known, err := r.meta.UploadExists(ctx, id); err != nil || known {
			continue
		}
		if err := r.blobs.DeleteUpload(ctx, id); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// collectBlob deletes a marked blob's object, then its record. The object
// goes first: a record without an object is harmless, since nothing links
// it, while the reverse would leave an object nobody can ever reclaim.
func (r *Registry) collectBlob(ctx context.Context, d string) error {
	ctx, cancel := context.WithTimeout(ctx, collectTimeout)
	defer cancel()
	if err := r.blobs.Delete(ctx, digest.Digest(d)); err != nil {
		return fmt.Errorf("collect blob %s: %w", d, err)
	}
	if err := r.meta.ForgetBlob(ctx, d); err != nil {
		return fmt.Errorf("collect blob %s: %w", d, err)
	}
	return nil
}

// RunGC collects garbage every GCInterval until ctx ends. It first sweeps
// temporary files that a crash may have left in a local blob store.
func (r *Registry) RunGC(ctx context.Context) {
	if r.opts.GCInterval <= 0 {
		return
	}
	if n, err := r.blobs.SweepTemporary(time.Hour); err != nil {
		r.log.Warn("sweep temporary files", "err", err)
	} else if n > 0 {
		r.log.Info("removed temporary files left by a crash", "files", n)
	}
	t := time.NewTicker(r.opts.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		st, err := r.CollectGarbage(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Error("garbage collection", "err", err)
			continue
		}
		r.log.Info("garbage collection", "purged_manifests", st.PurgedManifests, "unlinked_blobs", st.UnlinkedBlobs, "deleted_blobs", st.DeletedBlobs,
			"purged_uploads", st.PurgedUploads, "duration", time.Since(start))
	}
}
