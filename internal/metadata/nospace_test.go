package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/testenv"
)

// A database on a full file system opens and serves reads; a write fails
// with ErrDatabaseFull, its error naming the database file; the write
// probe fails too; freeing space makes both work again.
func TestSQLiteOnFullFileSystem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fs")
	testenv.SmallFS(t, dir, 2<<20)
	file := filepath.Join(dir, "sluice.db")
	ctx := context.Background()
	s, err := metadata.OpenSQLite(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutScopeMap(ctx, &metadata.ScopeMap{Name: "kept", Actions: []string{"repositories/*/content/read"}}, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fill := testenv.Fill(t, dir)

	s, err = metadata.OpenSQLite(ctx, file)
	if err != nil {
		t.Fatalf("open on a full file system: %v", err)
	}
	defer s.Close()
	if m, err := s.GetScopeMap(ctx, "kept"); err != nil || m.Actions[0] != "repositories/*/content/read" {
		t.Fatalf("read on a full file system: %v %v", m, err)
	}
	// SQLite may fit a few rows in pages it holds already: write until the
	// file system's limit shows.
	for i := 0; ; i++ {
		err = s.PutScopeMap(ctx, &metadata.ScopeMap{Name: fmt.Sprintf("new-%d", i), Actions: []string{strings.Repeat("x", 1000)}}, false)
		if err != nil || i == 1000 {
			break
		}
	}
	if !errors.Is(metadata.NoSpace(err), metadata.ErrDatabaseFull) {
		t.Fatalf("write on a full file system: %v; want ErrDatabaseFull found by NoSpace", err)
	}
	if !strings.Contains(err.Error(), file) {
		t.Errorf("write error %q does not name %s", err, file)
	}
	if err := s.ProbeWrite(ctx); metadata.NoSpace(err) == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("probe on a full file system: %v; want no space, naming the file", err)
	}

	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if err := s.ProbeWrite(ctx); err != nil {
		t.Errorf("probe once space is freed: %v", err)
	}
	if err := s.PutScopeMap(ctx, &metadata.ScopeMap{Name: "after", Actions: []string{"repositories/*/content/read"}}, false); err != nil {
		t.Errorf("write once space is freed: %v", err)
	}
}
