package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/streaming"
)

// layerEntry is one tar entry of a generated layer.
type layerEntry struct {
	hdr  tar.Header
	body []byte
}

func buildLayer(t *testing.T, entries []layerEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 500)
		}
		h.Size = int64(len(e.body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// corruptible serves a converted blob and can flip a byte of it.
type corruptible struct {
	blob    []byte
	corrupt atomic.Bool
}

func (c *corruptible) ReadRange(ctx context.Context, p []byte, off int64) error {
	copy(p, c.blob[off:off+int64(len(p))])
	if c.corrupt.Load() {
		for i := range p {
			p[i] ^= 0xff
		}
	}
	return nil
}

func needRoot(t *testing.T) {
	t.Helper()
	testenv.FUSE(t)
}

// mountLayer converts a tar, opens it with the streaming reader and mounts
// it; the returned source can be made to corrupt its bytes.
func mountLayer(t *testing.T, tarball []byte, opts Options) (string, *corruptible) {
	t.Helper()
	needRoot(t)
	r, src := openLayer(t, tarball)
	mnt := t.TempDir()
	m, err := Mount(mnt, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, mnt, m.Server)
	return mnt, src
}

// mountedTree is a layer a test mounted, with the root of its tree.
type mountedTree struct {
	dir  string
	root *node
}

// mountTree mounts a tar as Mount does, keeping the root so tests can see
// which inodes go-fuse holds.
func mountTree(t *testing.T, tarball []byte, opts Options) *mountedTree {
	t.Helper()
	needRoot(t)
	r, _ := openLayer(t, tarball)
	root, err := Build(r, opts)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	server, err := mountRoot(mnt, root)
	if err != nil {
		t.Fatal(err)
	}
	unmountAtEnd(t, mnt, server)
	return &mountedTree{dir: mnt, root: root}
}

func unmountAtEnd(t *testing.T, mnt string, server *fuse.Server) {
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
}

// openLayer converts a tar and opens it with the streaming reader.
func openLayer(t *testing.T, tarball []byte) (*streaming.Reader, *corruptible) {
	t.Helper()
	var out bytes.Buffer
	res, err := streaming.Convert(context.Background(), bytes.NewReader(tarball), &out, streaming.Options{ChunkSize: 64 << 10, FileChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	src := &corruptible{blob: out.Bytes()}
	r, err := streaming.Open(context.Background(), src, int64(out.Len()), streaming.WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), streaming.WithChunkCache(noCache{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, src
}

// noCache makes every read go to the source, so corruption shows.
type noCache struct{}

func (noCache) Get(digest.Digest) ([]byte, bool) { return nil, false }
func (noCache) Put(digest.Digest, []byte)        {}

func TestLayerTree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(rng.IntN(256))
	}
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 0, Gid: 0}, body: []byte("root:x:0:0::/root:/bin/sh\n")},
		{hdr: tar.Header{Name: "usr/bin/big", Typeflag: tar.TypeReg, Mode: 0o755, Uid: 1000, Gid: 100}, body: big},
		{hdr: tar.Header{Name: "usr/bin/big-link", Typeflag: tar.TypeLink, Linkname: "usr/bin/big", Mode: 0o755, Uid: 1000, Gid: 100}},
		{hdr: tar.Header{Name: "usr/bin/sh", Typeflag: tar.TypeSymlink, Linkname: "big"}},
		{hdr: tar.Header{Name: "usr/bin/ping", Typeflag: tar.TypeReg, Mode: 0o4755, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}}, body: []byte("ping")},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0}},
		{hdr: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}},
		{hdr: tar.Header{Name: "var/cache/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "var/lib/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("no")},
		{hdr: tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o700}},
	})
	mnt, src := mountLayer(t, tarball, Options{})

	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := read("etc/passwd"); string(got) != "root:x:0:0::/root:/bin/sh\n" {
		t.Fatalf("passwd: %q", got)
	}
	if got := read("usr/bin/big"); !bytes.Equal(got, big) {
		t.Fatal("big file differs")
	}
	// Reads at arbitrary offsets.
	f, _ := os.Open(filepath.Join(mnt, "usr/bin/big"))
	for range 50 {
		off := rng.IntN(len(big))
		n := rng.IntN(len(big)-off) + 1
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, big[off:off+n]) {
			t.Fatalf("read at %d+%d differs", off, n)
		}
	}
	f.Close()

	st := func(p string) *syscall.Stat_t {
		var s syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mnt, p), &s); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return &s
	}
	big1, link := st("usr/bin/big"), st("usr/bin/big-link")
	if big1.Ino != link.Ino || big1.Nlink != 2 || big1.Uid != 1000 || big1.Gid != 100 || big1.Mode != syscall.S_IFREG|0o755 || big1.Size != int64(len(big)) {
		t.Fatalf("big %+v, link ino %d", big1, link.Ino)
	}
	if st("usr").Mode != syscall.S_IFDIR|0o700 {
		t.Fatalf("directory listed after its children: mode %o", st("usr").Mode)
	}
	if target, _ := os.Readlink(filepath.Join(mnt, "usr/bin/sh")); target != "big" {
		t.Fatalf("symlink target %q", target)
	}
	if s := st("usr/bin/ping"); s.Mode != syscall.S_IFREG|0o4755 {
		t.Fatalf("setuid lost: %o", s.Mode)
	}
	capb := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(mnt, "usr/bin/ping"), "security.capability", capb)
	if err != nil || string(capb[:n]) != "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Fatalf("security.capability: %q %v", capb[:max(n, 0)], err)
	}
	if s := st("dev/null"); s.Mode != syscall.S_IFCHR|0o666 || unix.Major(s.Rdev) != 1 || unix.Minor(s.Rdev) != 3 {
		t.Fatalf("char device: %o %d:%d", s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	if s := st("dev/sda"); s.Mode != syscall.S_IFBLK|0o660 || unix.Major(s.Rdev) != 8 {
		t.Fatalf("block device: %o", s.Mode)
	}
	if s := st("run/fifo"); s.Mode != syscall.S_IFIFO|0o600 {
		t.Fatalf("fifo: %o", s.Mode)
	}
	// Whiteouts as overlayfs expects them.
	if s := st("var/lib/gone"); s.Mode&syscall.S_IFMT != syscall.S_IFCHR || s.Rdev != 0 {
		t.Fatalf("whiteout: mode %o rdev %d", s.Mode, s.Rdev)
	}
	opq := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(mnt, "var/cache"), "trusted.overlay.opaque", opq); err != nil || string(opq[:n]) != "y" {
		t.Fatalf("opaque marker: %q %v", opq[:max(n, 0)], err)
	}
	names, _ := os.ReadDir(filepath.Join(mnt, "var/cache"))
	if len(names) != 0 {
		t.Fatalf("opaque marker listed: %v", names)
	}
	// A name above the root lands in it, as containerd unpacks it.
	if got := read("escape"); string(got) != "no" {
		t.Fatalf("../escape shows %q at escape, want its data", got)
	}
	// Read-only.
	if err := os.WriteFile(filepath.Join(mnt, "etc/passwd"), []byte("x"), 0o644); err == nil {
		t.Fatal("write succeeded")
	}
	// A chunk that fails verification is an I/O error, never wrong bytes.
	src.corrupt.Store(true)
	_, err = os.ReadFile(filepath.Join(mnt, "etc/passwd"))
	if !errors.Is(err, syscall.EIO) {
		// The kernel may have cached the pages; a file never read fails.
		_, err = os.ReadFile(filepath.Join(mnt, "usr/bin/ping"))
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("corrupt chunk read: %v", err)
		}
	}
}

func TestOverlayOnTop(t *testing.T) {
	needRoot(t)
	lowerTar := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "a/keep", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("keep")},
		{hdr: tar.Header{Name: "a/drop", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("drop")},
		{hdr: tar.Header{Name: "b/old", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("old")},
	})
	upperTar := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "a/.wh.drop", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "b/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "b/new", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("new")},
	})
	lower, _ := mountLayer(t, lowerTar, Options{})
	upper, _ := mountLayer(t, upperTar, Options{})
	merged := t.TempDir()
	err := syscall.Mount("overlay", merged, "overlay", syscall.MS_RDONLY, "lowerdir="+upper+":"+lower)
	testenv.Need(t, err == nil, "overlayfs over FUSE lower layers is not available here: %v", err)
	defer syscall.Unmount(merged, syscall.MNT_DETACH)
	var names []string
	for _, d := range []string{"a", "b"} {
		es, err := os.ReadDir(filepath.Join(merged, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			names = append(names, d+"/"+e.Name())
		}
	}
	if got := strings.Join(names, " "); got != "a/keep b/new" {
		t.Fatalf("merged view: %s (want the whiteout and the opaque directory honoured)", got)
	}
	if out, err := exec.Command("cat", filepath.Join(merged, "a/keep")).Output(); err != nil || string(out) != "keep" {
		t.Fatalf("read through overlay: %q %v", out, err)
	}
}
