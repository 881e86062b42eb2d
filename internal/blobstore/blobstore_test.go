package blobstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "gocloud.dev/blob/memblob" // registers mem://
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

// A crash leaves temporary files beside the names they were for; the
// sweep removes those old enough that no write can still own them.
func TestSweepTemporaryRemovesOldTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := time.Now().Add(-2 * time.Hour)
	files := map[string]bool{ // name: whether the sweep removes it
		"blobs/sha256/ab/abcd.123.tmp": true,
		"uploads/u1/000000-n.9.tmp":    false, // fresh
		"blobs/sha256/ab/abcd":         false, // not temporary
	}
	for name, aged := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if aged || !strings.HasSuffix(name, ".tmp") {
			_ = os.Chtimes(path, old, old)
		}
	}
	n, err := s.SweepTemporary(time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("swept %d files, want 1: %v", n, err)
	}
	for name, removed := range files {
		_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name)))
		if gone := os.IsNotExist(err); gone != removed {
			t.Errorf("%s: removed %v, want %v", name, gone, removed)
		}
	}
}

// A bucket that is not a local directory has no temporary files to sweep.
func TestSweepTemporaryOfABucket(t *testing.T) {
	s, err := OpenURL(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.SweepTemporary(0); n != 0 || err != nil {
		t.Fatalf("sweep of a bucket: %d, %v", n, err)
	}
}
