package server

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

// Every start-up failure names the file or directory and the system's
// cause. A file where a directory is expected (or the reverse) fails for
// root too, unlike permission bits.
func TestStartupErrorsNamePathAndCause(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, data string) (path string)
		cause string
	}{
		{"data directory is a file", func(t *testing.T, data string) string {
			writeEmpty(t, data)
			return data
		}, "not a directory"},
		{"database file is a directory", func(t *testing.T, data string) string {
			return mkdir(t, filepath.Join(data, "sluice.db"))
		}, "is a directory"},
		{"blob directory is a file", func(t *testing.T, data string) string {
			mkdir(t, data)
			return writeEmpty(t, filepath.Join(data, "blobs"))
		}, "not a directory"},
		{"key directory is a file", func(t *testing.T, data string) string {
			mkdir(t, data)
			return writeEmpty(t, filepath.Join(data, "keys"))
		}, "not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Data = filepath.Join(t.TempDir(), "data")
			cfg.AdminPassword = adminPassword
			path := tc.setup(t, cfg.Data)
			srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				srv.Close()
				t.Fatal("sluiced started")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.cause) {
				t.Fatalf("error %q does not name %s and %q", err, path, tc.cause)
			}
		})
	}
}

// A data directory whose name has URL syntax in it works: the database and
// blob store both open that directory.
func TestDataDirectoryWithURLCharacters(t *testing.T) {
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "my data#1?x=%2")
	cfg.Auth.Enabled = false
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, p := range []string{"sluice.db", "blobs"} {
		if _, err := os.Stat(filepath.Join(cfg.Data, p)); err != nil {
			t.Errorf("%s not in the data directory: %v", p, err)
		}
	}
}

func writeEmpty(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mkdir(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
