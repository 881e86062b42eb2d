// Package migrate moves a registry's state to other stores: its blobs to
// another blob store and its metadata to another database, as a
// single-machine registry does to move to the shared backends (SQLite and
// a directory to PostgreSQL and a bucket) without pushing anything again.
//
// A run copies the blobs first, each checked against its digest as it is
// written, then the metadata, so that the destination never records a blob
// it does not hold. What the destination holds already is kept and
// skipped, so a run cut short is run again and goes on.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/metadata"
)

// Stores are a registry's two stores.
type Stores struct {
	Meta  *metadata.Store
	Blobs *blobstore.Store
}

// Report says what a run did.
type Report struct {
	// BlobsCopied were written to the destination; BlobsPresent were there
	// already; BlobBytes is the size of those copied.
	BlobsCopied, BlobsPresent int
	BlobBytes                 int64
	// BlobsMissing are recorded in the source's metadata but absent from
	// its blob store: lost before the migration, they are not copied.
	BlobsMissing []string
	// Rows is how many rows of each table the destination took.
	Rows map[string]int64
}

// Run copies everything from one registry's stores to the other's. The
// source must not change meanwhile: stop the registry that uses it.
func Run(ctx context.Context, from, to Stores, log *slog.Logger) (*Report, error) {
	rep := &Report{Rows: map[string]int64{}}
	last := time.Now()
	err := from.Meta.LiveBlobs(ctx, func(d string, size int64) error {
		dgst, err := digest.Parse(d)
		if err != nil {
			return fmt.Errorf("blob %q in the source's metadata: %w", d, err)
		}
		copied, err := copyBlob(ctx, from.Blobs, to.Blobs, dgst, size)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			log.Warn("blob recorded in the source's metadata is missing from its blob store; not copied", "digest", d)
			rep.BlobsMissing = append(rep.BlobsMissing, d)
		case err != nil:
			return err
		case copied:
			rep.BlobsCopied++
			rep.BlobBytes += size
		default:
			rep.BlobsPresent++
		}
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			log.Info("copying blobs", "copied", rep.BlobsCopied, "present", rep.BlobsPresent, "bytes", rep.BlobBytes)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("copy blobs: %w", err)
	}
	log.Info("blobs copied", "copied", rep.BlobsCopied, "present", rep.BlobsPresent, "bytes", rep.BlobBytes, "missing", len(rep.BlobsMissing))
	err = from.Meta.CopyTo(ctx, to.Meta, func(table string, rows int64) {
		rep.Rows[table] = rows
		if time.Since(last) > 5*time.Second {
			last = time.Now()
			log.Info("copying metadata", "table", table, "rows", rows)
		}
	})
	if err != nil {
		return rep, fmt.Errorf("copy metadata: %w", err)
	}
	log.Info("metadata copied", "rows", rep.Rows)
	return rep, nil
}

// copyBlob writes the blob dgst into to unless it is there with its size,
// and reports whether it wrote it. The write checks the digest before the
// blob becomes visible.
func copyBlob(ctx context.Context, from, to *blobstore.Store, dgst digest.Digest, size int64) (bool, error) {
	if c, err := to.Open(ctx, dgst); err == nil {
		have := c.Size
		c.Close()
		if have == size {
			return false, nil
		}
	} else if !errors.Is(err, blobstore.ErrNotFound) {
		return false, fmt.Errorf("look for %s in the destination: %w", dgst, err)
	}
	src, err := from.Open(ctx, dgst)
	if err != nil {
		return false, err
	}
	defer src.Close()
	w, err := to.NewWriter(ctx, dgst)
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(w, src); err != nil {
		w.Abort()
		return false, fmt.Errorf("copy %s: %w", dgst, err)
	}
	if err := w.Commit(); err != nil {
		return false, fmt.Errorf("copy %s: %w", dgst, err)
	}
	return true, nil
}
