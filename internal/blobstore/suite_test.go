package blobstore_test

import (
	"context"
	"testing"

	_ "gocloud.dev/blob/memblob" // registers mem://

	"github.com/sluicehq/sluice/internal/blobstore"
	"github.com/sluicehq/sluice/internal/blobstore/blobtest"
	"github.com/sluicehq/sluice/internal/testbackend"
)

func TestMain(m *testing.M) { testbackend.Main(m) }

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

// TestAzurite runs the suite on Azure Blob Storage's emulator, a new
// container for each case.
func TestAzurite(t *testing.T) {
	t.Parallel()
	testbackend.Azurite(t) // an emulator that cannot run skips or fails the test once, not each case
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		return opened(t)(blobstore.OpenURL(context.Background(), testbackend.Azurite(t)))
	})
}

// TestS3 runs the suite on an S3 server, a new bucket for each case.
func TestS3(t *testing.T) {
	t.Parallel()
	testbackend.S3(t) // a server that cannot run skips or fails the test once, not each case
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		return opened(t)(blobstore.OpenURL(context.Background(), testbackend.S3(t)))
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
