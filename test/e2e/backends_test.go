package e2e

import (
	"testing"

	"github.com/sluicehq/sluice/internal/testbackend"
)

// onEachBackend runs a test with sluiced on each place its state can live:
// the embedded defaults (SQLite and a directory), and the shared backends
// a cluster of registries runs on, PostgreSQL with Azure Blob Storage (the
// Azurite emulator) and with S3 (versitygw). backend is the settings to
// give startSluiced; the servers are the test binary's, each test gets its
// own database and bucket.
func onEachBackend(t *testing.T, test func(t *testing.T, backend []string)) {
	t.Run("embedded", func(t *testing.T) { test(t, nil) })
	for _, b := range objectStores {
		t.Run("postgres+"+b.name, func(t *testing.T) {
			test(t, sharedBackend(testbackend.Postgres(t), b.bucket(t)))
		})
	}
}

// objectStores are the object stores sluiced is tested on, each with what
// gives a test a bucket of its own.
var objectStores = []struct {
	name   string
	bucket func(testing.TB) string
}{{"azblob", testbackend.Azurite}, {"s3", testbackend.S3}}

// sharedBackend is the settings that put sluiced's metadata in the
// PostgreSQL database dsn and its blobs in the bucket at url.
func sharedBackend(dsn, url string) []string {
	return []string{"SLUICE_DATABASE_DRIVER=postgres", "SLUICE_DATABASE_DSN=" + dsn, "SLUICE_STORAGE_URL=" + url}
}
