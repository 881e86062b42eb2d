package blobstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file URL with a host is a relative directory made into a URL
// ("file://data/blobs" is /blobs on host "data"); the store refuses it
// rather than write where nobody meant.
func TestOpenURLRefusesFileHost(t *testing.T) {
	for _, raw := range []string{"file://data/blobs", "file://./data/blobs", "file:data/blobs", "file://localhost/srv/blobs"} {
		s, err := OpenURL(context.Background(), raw)
		if err == nil {
			s.Close()
			t.Errorf("OpenURL(%q) opened a store", raw)
			continue
		}
		if !strings.Contains(err.Error(), "file:///") {
			t.Errorf("OpenURL(%q): %v; want a hint at the absolute form", raw, err)
		}
	}
}

func TestOpenURLDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my data#1", "blobs")
	s, err := OpenURL(context.Background(), "file://"+filepath.ToSlash(strings.ReplaceAll(dir, "#", "%23")))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.root != dir {
		t.Fatalf("store root %s, want %s", s.root, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("blob directory not made: %v", err)
	}
}

// A start-up failure names the directory and the system's cause.
func TestOpenDirErrorNamesPath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "blobs")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenDir(file)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("OpenDir on a file: %v", err)
	}
}
