package metadata_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/conversion"
	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/metadata/storetest"
	"github.com/sluicehq/sluice/internal/registry"
)

// The SQLite store is every consumer's store.
var (
	_ registry.Store     = (*metadata.Store)(nil)
	_ conversion.Store   = (*metadata.Store)(nil)
	_ auth.IdentityStore = (*metadata.Store)(nil)
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, openSQLite)
}

func openSQLite(t *testing.T, now func() time.Time) storetest.Store {
	s, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "metadata.db"), metadata.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A database that cannot be opened is named, with the system's cause.
func TestOpenSQLiteErrorNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	_, err := metadata.OpenSQLite(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("opening a directory as the database: %v", err)
	}
}
