package conversion

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/testenv"
)

// A conversion that runs out of space fails with the system's cause in the
// operation's error (and no server path there), an ERROR line in the log
// that has the file, and nothing of its output left in the store.
func TestConversionOnFullDiskKeepsTheCause(t *testing.T) {
	e := &env{t: t, dir: t.TempDir(), logs: &testenv.SyncBuffer{}}
	blobDir := filepath.Join(e.dir, "blobs")
	testenv.SmallFS(t, blobDir, 4<<20)
	e.tweak = func(o *Options) { o.MaxAttempts = 1 }
	e.open(true)
	t.Cleanup(e.close)

	// 2.5 MiB that do not compress: the image fits, its converted twin
	// does not.
	l := incompressibleLayer(t, 5<<19)
	img := e.pushImage("app", "v1", "linux", "amd64", l)
	stored := storedFiles(t, blobDir)

	op, err := e.conv.Start(context.Background(), "app", img.Digest, "test")
	if err != nil {
		t.Fatal(err)
	}
	op = e.wait("app", op.ID)
	if op.Status != metadata.StatusFailed || !strings.Contains(op.ErrorMessage, "no space left on device") {
		t.Fatalf("operation %s: %s %q; want Failed saying no space left on device", op.ID, op.Status, op.ErrorMessage)
	}
	if strings.Contains(op.ErrorMessage, e.dir) {
		t.Errorf("the operation's error names a server path: %q", op.ErrorMessage)
	}
	logged := false
	deadline := time.Now().Add(5 * time.Second)
	for !logged && time.Now().Before(deadline) {
		for _, line := range strings.Split(e.logs.(*testenv.SyncBuffer).String(), "\n") {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, "no space left on device") && strings.Contains(line, blobDir) {
				logged = true
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !logged {
		t.Errorf("no ERROR line with the cause and the path; log:\n%s", e.logs.(*testenv.SyncBuffer).String())
	}
	if got := storedFiles(t, blobDir); strings.Join(got, " ") != strings.Join(stored, " ") {
		t.Errorf("files in the blob store after the failed conversion: %v, before: %v", got, stored)
	}
}

// incompressibleLayer is a tar+gzip layer of one file of size random bytes.
func incompressibleLayer(t *testing.T, size int) layer {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: "random", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	return layer{blob: gz.Bytes(), diffID: digest.FromBytes(tarBuf.Bytes())}
}

// storedFiles lists the files under dir, relative and sorted.
func storedFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}
