package metadata

import (
	"context"
	"database/sql"
	"errors"
	"path"
	"path/filepath"
	"testing"
)

// TestProfilesMigrateToEveryRepositoryHoldingTheBlob opens a database at
// schema version 4, where startup profiles were kept per blob, and finds
// each profile again in every repository that holds its blob, and not in
// one that does not.
func TestProfilesMigrateToEveryRepositoryHoldingTheBlob(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "meta.db")
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`)
	for v, name := range []string{"0001_registry.sql", "0002_streaming.sql", "0003_auth.sql", "0004_profiles.sql"} {
		body, err := migrations.ReadFile(path.Join("migrations", "sqlite", name))
		if err != nil {
			t.Fatal(err)
		}
		exec(string(body))
		exec(`INSERT INTO schema_migrations(version, applied_at) VALUES (?, 0)`, v+1)
	}
	const layer = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	exec(`INSERT INTO repositories(id, name, created_at, updated_at) VALUES (1, 'team/a', 0, 0), (2, 'team/b', 0, 0), (3, 'team/c', 0, 0)`)
	exec(`INSERT INTO blobs(digest, size, state, touched_at) VALUES (?, 1000, 0, 0)`, layer)
	exec(`INSERT INTO repository_blobs(repository_id, digest, created_at) VALUES (1, ?, 0), (2, ?, 0)`, layer, layer)
	exec(`INSERT INTO startup_profiles(digest, ranges, updated_at) VALUES (?, '[[0,100]]', 42)`, layer)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := OpenSQLite(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, repo := range []string{"team/a", "team/b"} {
		ranges, updated, err := s.StartupProfile(ctx, repo, layer)
		if err != nil || string(ranges) != "[[0,100]]" || updated.UnixNano() != 42 {
			t.Errorf("%s: profile %s of %v after the migration, %v; want [[0,100]] of 42 ns", repo, ranges, updated.UnixNano(), err)
		}
	}
	if _, _, err := s.StartupProfile(ctx, "team/c", layer); !errors.Is(err, ErrNotFound) {
		t.Errorf("team/c does not hold the blob but has its profile: %v", err)
	}
}
