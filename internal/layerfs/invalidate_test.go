package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/streaming"
)

// refusing is a layer that can be told to fail every read, as the FUSE
// manager's source does once a layer is found bad.
type refusing struct {
	Source
	refuse atomic.Bool
	reads  atomic.Int64
}

func (r *refusing) ReadAt(ctx context.Context, e *streaming.Entry, p []byte, off int64) (int, error) {
	r.reads.Add(1)
	if r.refuse.Load() {
		return 0, errors.New("layer is bad")
	}
	return r.Source.ReadAt(ctx, e, p, off)
}

// After Invalidate, nothing the kernel read before is served: a read that
// the page cache answered before fails, and so does an O_DIRECT read.
func TestInvalidateDropsCachedPages(t *testing.T) {
	needRoot(t)
	content := bytes.Repeat([]byte("forged bytes "), 50000)
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "bin/app", Typeflag: tar.TypeReg, Mode: 0o755}, body: content},
	})
	r, _ := openLayer(t, tarball)
	src := &refusing{Source: r}
	mnt := t.TempDir()
	m, err := Mount(mnt, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, mnt, m.Server)
	path := filepath.Join(mnt, "bin/app")
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("first read: %v", err)
	}
	before := src.reads.Load()
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("second read: %v", err)
	}
	if src.reads.Load() != before {
		// Open answers ENOSYS, and a no-open file keeps its page cache.
		t.Fatalf("the second read went to the layer (%d reads), not to the pages the kernel kept: nothing to invalidate", src.reads.Load()-before)
	}

	src.refuse.Store(true)
	if n := m.Invalidate(); n < 1 {
		t.Fatalf("Invalidate dropped %d files' pages, want at least the one read", n)
	}
	if _, err := os.ReadFile(path); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after Invalidate: %v, want EIO", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20) // O_DIRECT wants aligned buffers; Go's large allocations are page-aligned
	if _, err := unix.Read(fd, buf); !errors.Is(err, syscall.EIO) {
		t.Errorf("O_DIRECT read after Invalidate: %v, want EIO", err)
	}
}
