package blobstore_test

import (
	"context"
	"testing"

	_ "gocloud.dev/blob/memblob" // registers mem://

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/blobstore/blobtest"
)

func TestDirectory(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		return opened(t)(blobstore.OpenDir(t.TempDir()))
	})
}

// TestBucket runs the suite on a bucket that is not a local directory, as
// object storage is: no renames, no files.
func TestBucket(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		return opened(t)(blobstore.OpenURL(context.Background(), "mem://"))
	})
}

func opened(t *testing.T) func(*blobstore.Store, error) *blobstore.Store {
	return func(s *blobstore.Store, err error) *blobstore.Store {
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}
