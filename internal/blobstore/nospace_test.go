package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/testenv"
)

// On a full file system a write fails with the system's cause, names the
// file it could not write, and leaves nothing behind: no object under the
// blob's or the part's key (the file driver would otherwise rename its
// truncated temporary file into place), no temporary file. The write
// probe says so too, and recovers once space is freed.
func TestFullFileSystem(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fs")
	testenv.SmallFS(t, dir, 1<<20)
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.ProbeWrite(ctx); err != nil {
		t.Fatalf("probe of an empty file system: %v", err)
	}

	big := make([]byte, 2<<20)
	rand.Read(big)
	dgst := digest.FromBytes(big)
	checkNoSpace := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: 2 MiB written on a 1 MiB file system", what)
		}
		if !errors.Is(NoSpace(err), syscall.ENOSPC) {
			t.Fatalf("%s: %v; want ENOSPC found by NoSpace", what, err)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: %v does not name the file under %s", what, err, dir)
		}
	}

	w, err := s.NewWriter(ctx, dgst)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Write(big)
	if err == nil {
		err = w.Commit()
	} else {
		w.Abort()
	}
	checkNoSpace("blob", err)
	if ok, err := s.Exists(ctx, dgst); err != nil || ok {
		t.Errorf("after the failed write the blob exists: %v %v", ok, err)
	}

	_, err = s.WritePart(ctx, PartKey("u1", 0, "n"), bytes.NewReader(big))
	checkNoSpace("part", err)
	if _, err := s.Open(ctx, dgst); !errors.Is(err, ErrNotFound) {
		t.Errorf("open after the failed write: %v", err)
	}
	assertEmpty(t, dir)

	fill := testenv.Fill(t, dir)
	err = s.ProbeWrite(ctx)
	if !errors.Is(NoSpace(err), syscall.ENOSPC) || !strings.Contains(err.Error(), dir) {
		t.Errorf("probe of a full file system: %v; want ENOSPC naming the file", err)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if err := s.ProbeWrite(ctx); err != nil {
		t.Errorf("probe once space is freed: %v", err)
	}
	assertEmpty(t, dir)
}

// assertEmpty fails unless dir holds no files (directories may stay).
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left behind: %s", path)
		}
		return nil
	})
}
