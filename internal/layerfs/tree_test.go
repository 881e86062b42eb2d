package layerfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"golang.org/x/sys/unix"
)

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var s syscall.Stat_t
	if err := syscall.Lstat(p, &s); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &s
}

// waitFor polls cond until it holds or five seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dirOrder lists a directory in the order the file system returns it.
func dirOrder(t *testing.T, p string) []fs.DirEntry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	es, err := f.ReadDir(-1)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestLargeDirectory(t *testing.T) {
	const files = 5000
	wantType := map[string]fs.FileMode{}
	var entries []layerEntry
	add := func(h tar.Header, shown string, typ fs.FileMode) {
		entries = append(entries, layerEntry{hdr: h})
		wantType[shown] = typ
	}
	// The TOC holds the names out of order, interleaved with another
	// directory's.
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(files) {
		name := fmt.Sprintf("f%05d", i)
		add(tar.Header{Name: "big/" + name, Typeflag: tar.TypeReg, Mode: 0o644}, name, 0)
		if i%1000 == 0 {
			entries = append(entries, layerEntry{hdr: tar.Header{Name: fmt.Sprintf("other/o%d", i), Typeflag: tar.TypeReg, Mode: 0o644}})
		}
	}
	add(tar.Header{Name: "big/sub/x", Typeflag: tar.TypeReg, Mode: 0o644}, "sub", fs.ModeDir)
	add(tar.Header{Name: "big/link", Typeflag: tar.TypeSymlink, Linkname: "f00001"}, "link", fs.ModeSymlink)
	add(tar.Header{Name: "big/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, "fifo", fs.ModeNamedPipe)
	add(tar.Header{Name: "big/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644}, "gone", fs.ModeDevice|fs.ModeCharDevice)
	// A later entry replaces an earlier one of the same name: listed once.
	add(tar.Header{Name: "big/f00002", Typeflag: tar.TypeSymlink, Linkname: "f00003"}, "f00002", fs.ModeSymlink)
	m := mountTree(t, buildLayer(t, entries), Options{})
	big := filepath.Join(m.dir, "big")

	// Lookups and listings racing on a directory nobody opened yet.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < files; i += 97 {
				if _, err := os.Lstat(filepath.Join(big, fmt.Sprintf("f%05d", i))); err != nil {
					t.Error(err)
				}
			}
			if es, err := os.ReadDir(big); err != nil || len(es) != len(wantType) {
				t.Errorf("concurrent listing: %d names, %v", len(es), err)
			}
		})
	}
	wg.Wait()

	first := dirOrder(t, big)
	var names []string
	for _, e := range first {
		names = append(names, e.Name())
		want, ok := wantType[e.Name()]
		if !ok {
			t.Fatalf("unexpected name %q", e.Name())
		}
		if e.Type() != want {
			t.Errorf("%s: type %v, want %v", e.Name(), e.Type(), want)
		}
	}
	if len(names) != len(wantType) {
		t.Fatalf("%d names listed, want %d", len(names), len(wantType))
	}
	if !slices.IsSorted(names) {
		t.Fatal("names not listed in name order")
	}
	again := dirOrder(t, big)
	if !slices.EqualFunc(first, again, func(a, b fs.DirEntry) bool { return a.Name() == b.Name() }) {
		t.Fatal("a second listing gives another order")
	}
	if s := lstat(t, filepath.Join(big, "f00002")); s.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("replaced name: mode %o, want the later symlink", s.Mode)
	}
	// A missing name, twice: the second answer may come from the kernel's
	// negative cache.
	for range 2 {
		if _, err := os.Lstat(filepath.Join(big, "f99999")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("missing name: %v", err)
		}
	}
}

func TestLookupAfterForget(t *testing.T) {
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o750}},
		{hdr: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 7}, body: []byte("data")},
		{hdr: tar.Header{Name: "d/l", Typeflag: tar.TypeLink, Linkname: "d/f"}},
		{hdr: tar.Header{Name: "d/sub/g", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("g")},
	})
	m := mountTree(t, tarball, Options{})
	paths := []string{"d", "d/f", "d/l", "d/sub", "d/sub/g"}
	before := map[string]syscall.Stat_t{}
	for _, p := range paths {
		before[p] = *lstat(t, filepath.Join(m.dir, p))
	}
	if m.root.GetChild("d") == nil {
		t.Fatal("go-fuse holds no inode for a directory the kernel looked up")
	}
	// Drop the kernel's entry for d: with nothing holding them, it forgets
	// d and everything under it, and go-fuse drops the inodes.
	if errno := m.root.NotifyEntry("d"); errno != 0 {
		t.Fatalf("invalidate d: %v", errno)
	}
	waitFor(t, "the kernel to forget d", func() bool { return m.root.GetChild("d") == nil })

	for _, p := range paths {
		if got, want := *lstat(t, filepath.Join(m.dir, p)), before[p]; got.Ino != want.Ino || got.Mode != want.Mode || got.Nlink != want.Nlink || got.Uid != want.Uid || got.Size != want.Size {
			t.Errorf("%s after forget: %+v, before %+v", p, got, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(m.dir, "d/l")); err != nil || string(b) != "data" {
		t.Fatalf("read after forget: %q %v", b, err)
	}
	if es, err := os.ReadDir(filepath.Join(m.dir, "d")); err != nil || len(es) != 3 {
		t.Fatalf("listing after forget: %v %v", es, err)
	}
}

func TestHardLinksOneInode(t *testing.T) {
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "a/f", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("shared")},
		// A link's header gives the inode its attributes, as
		// containerd's unpack (which chmods the link's path) does; tar
		// writers give it the file's own.
		{hdr: tar.Header{Name: "b/l1", Typeflag: tar.TypeLink, Linkname: "a/f", Mode: 0o644}},
		{hdr: tar.Header{Name: "a/l2", Typeflag: tar.TypeLink, Linkname: "b/l1", Mode: 0o644}},
	})
	m := mountTree(t, tarball, Options{})
	// Links first, the file's own name last.
	var inos []uint64
	for _, p := range []string{"b/l1", "a/l2", "a/f"} {
		s := lstat(t, filepath.Join(m.dir, p))
		if s.Nlink != 3 || s.Mode != syscall.S_IFREG|0o644 || s.Size != int64(len("shared")) {
			t.Fatalf("%s: %+v", p, s)
		}
		inos = append(inos, s.Ino)
	}
	if inos[0] != inos[1] || inos[1] != inos[2] {
		t.Fatalf("inode numbers %v, want one", inos)
	}
	a, b := m.root.GetChild("a"), m.root.GetChild("b")
	if f, l1, l2 := a.GetChild("f"), b.GetChild("l1"), a.GetChild("l2"); f == nil || f != l1 || f != l2 {
		t.Fatalf("go-fuse inodes %p %p %p, want one", f, l1, l2)
	}
}

func TestUnlistedDirectories(t *testing.T) {
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "a/b/c/d/e/file", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("deep")},
		{hdr: tar.Header{Name: "x/y/.wh.z", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "p/q/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "a/b/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 5}},
	})
	// Directories the tar never listed are numbered in the order they
	// were needed, after the root (1<<40 + 1 is a); the file's number is
	// its TOC position + 2. "a/b" keeps its number when listed later but
	// takes the header's attributes.
	want := []struct {
		path string
		ino  uint64
		mode uint32
		uid  uint32
		list []string
	}{
		{"a", 1<<40 + 1, syscall.S_IFDIR | 0o755, 0, []string{"b"}},
		{"a/b", 1<<40 + 2, syscall.S_IFDIR | 0o700, 5, []string{"c"}},
		{"a/b/c", 1<<40 + 3, syscall.S_IFDIR | 0o755, 0, []string{"d"}},
		{"a/b/c/d", 1<<40 + 4, syscall.S_IFDIR | 0o755, 0, []string{"e"}},
		{"a/b/c/d/e", 1<<40 + 5, syscall.S_IFDIR | 0o755, 0, []string{"file"}},
		{"a/b/c/d/e/file", 2, syscall.S_IFREG | 0o644, 0, nil},
		{"x", 1<<40 + 6, syscall.S_IFDIR | 0o755, 0, []string{"y"}},
		{"x/y", 1<<40 + 7, syscall.S_IFDIR | 0o755, 0, []string{"z"}},
		{"x/y/z", 3, syscall.S_IFCHR, 0, nil},
		{"p/q", 1<<40 + 9, syscall.S_IFDIR | 0o755, 0, []string{}},
	}
	// Twice: the numbers do not depend on what the kernel looked up first.
	for range 2 {
		m := mountTree(t, tarball, Options{})
		for _, w := range want {
			p := filepath.Join(m.dir, w.path)
			if s := lstat(t, p); s.Ino != w.ino || s.Mode != w.mode || s.Uid != w.uid {
				t.Errorf("%s: ino %#x mode %o uid %d, want %#x %o %d", w.path, s.Ino, s.Mode, s.Uid, w.ino, w.mode, w.uid)
			}
			if w.list == nil {
				continue
			}
			var names []string
			for _, e := range dirOrder(t, p) {
				names = append(names, e.Name())
			}
			if strings.Join(names, " ") != strings.Join(w.list, " ") {
				t.Errorf("%s lists %q, want %q", w.path, names, w.list)
			}
		}
		if b, err := os.ReadFile(filepath.Join(m.dir, "a/b/c/d/e/file")); err != nil || string(b) != "deep" {
			t.Fatalf("deep file: %q %v", b, err)
		}
		opq := make([]byte, 8)
		if n, err := unix.Lgetxattr(filepath.Join(m.dir, "p/q"), "trusted.overlay.opaque", opq); err != nil || string(opq[:n]) != "y" {
			t.Fatalf("opaque marker on an unlisted directory: %q %v", opq[:max(n, 0)], err)
		}
		slices.Reverse(want)
	}
}

// syncBuffer is a log sink tests read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count counts the requests of kind op, leaving out those on go-fuse's own
// probe file (the highest node ID), which it opens once while mounting.
func (b *syncBuffer) count(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, line := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(line, ": "+op+" ") && !strings.Contains(line, fmt.Sprintf(" n%d ", uint64(math.MaxUint64))) {
			n++
		}
	}
	return n
}

func TestOpensStayInTheKernel(t *testing.T) {
	var entries []layerEntry
	for i := range 300 {
		entries = append(entries, layerEntry{hdr: tar.Header{Name: fmt.Sprintf("d/f%03d", i), Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte(fmt.Sprint(i))})
	}
	entries = append(entries, layerEntry{hdr: tar.Header{Name: "d/link", Typeflag: tar.TypeSymlink, Linkname: "f001"}})
	var reqs syncBuffer
	m := mountTree(t, buildLayer(t, entries), Options{Debug: true, DebugLog: log.New(&reqs, "", 0)})
	d := filepath.Join(m.dir, "d")

	for range 20 {
		for _, name := range []string{"f007", "link"} {
			b, err := os.ReadFile(filepath.Join(d, name))
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]string{"f007": "7", "link": "1"}[name]; string(b) != want {
				t.Fatalf("%s reads %q, want %q", name, b, want)
			}
		}
	}
	// The first open answers ENOSYS; from then on the kernel opens, flushes
	// and releases files by itself and keeps symlink targets.
	for op, most := range map[string]int{"OPEN": 1, "FLUSH": 1, "RELEASE": 0, "READLINK": 1} {
		if n := reqs.count(op); n > most {
			t.Errorf("%d %s requests for 40 opens of two files, want at most %d", n, op, most)
		}
	}
	if _, err := os.OpenFile(filepath.Join(d, "f001"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("open for writing: %v, want EROFS", err)
	}

	// A listing read in small pieces, rewound and read again, comes out
	// whole both times; later listings come from the kernel's cache.
	f, err := os.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var first []string
	for {
		es, err := f.ReadDir(7)
		for _, e := range es {
			first = append(first, e.Name())
		}
		if err != nil {
			break
		}
	}
	if len(first) != 301 || !slices.IsSorted(first) {
		t.Fatalf("listing: %d names (sorted: %v), want 301 in order", len(first), slices.IsSorted(first))
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	again, err := f.Readdirnames(-1)
	if err != nil || !slices.Equal(again, first) {
		t.Fatalf("listing after a rewind: %d names, %v", len(again), err)
	}
	before := reqs.count("READDIRPLUS") + reqs.count("READDIR")
	for range 5 {
		if es, err := os.ReadDir(d); err != nil || len(es) != 301 {
			t.Fatalf("listing: %d names, %v", len(es), err)
		}
	}
	if n := reqs.count("READDIRPLUS") + reqs.count("READDIR") - before; n > 0 {
		t.Errorf("%d listing requests for a directory the kernel has cached", n)
	}
}

// TestImpliedDirectoriesTakeLowerAttributes: a directory the layer implies
// without listing it takes the attributes of the same directory in the
// topmost lower layer that has the path, as containerd's unpack copies
// them; a lower non-directory stops the search.
func TestImpliedDirectoriesTakeLowerAttributes(t *testing.T) {
	testenv.Root(t, "the lower layers' directories are chowned")
	top, bottom := t.TempDir(), t.TempDir()
	mk := func(p string, mode os.FileMode, uid int) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Lchown(p, uid, uid)
	}
	mk(filepath.Join(bottom, "etc"), 0o700, 1000)
	if err := unix.Lsetxattr(filepath.Join(bottom, "etc"), "user.victim", []byte("v"), 0); err != nil {
		t.Logf("no user xattrs on %s: %v", bottom, err)
	}
	mk(filepath.Join(top, "srv"), 0o750, 33)
	mk(filepath.Join(bottom, "srv"), 0o700, 1)
	os.WriteFile(filepath.Join(top, "file"), nil, 0o644)
	mk(filepath.Join(bottom, "file"), 0o700, 2)
	tarball := buildLayer(t, []layerEntry{
		{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")},
		{hdr: tar.Header{Name: "srv/www/index", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("y")},
		{hdr: tar.Header{Name: "file/under", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("z")},
		{hdr: tar.Header{Name: "new/x", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("w")},
	})
	m := mountTree(t, tarball, Options{Lowers: []string{top, bottom}})
	for _, c := range []struct {
		path string
		mode uint32
		uid  uint32
	}{{"etc", 0o700, 1000}, {"srv", 0o750, 33}, {"srv/www", 0o755, 0}, {"file", 0o755, 0}, {"new", 0o755, 0}} {
		s := lstat(t, filepath.Join(m.dir, c.path))
		if s.Mode != syscall.S_IFDIR|c.mode || s.Uid != c.uid {
			t.Errorf("%s: mode %o uid %d, want %o %d", c.path, s.Mode, s.Uid, syscall.S_IFDIR|c.mode, c.uid)
		}
	}
	v := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(bottom, "etc"), "user.victim", v); err == nil {
		if n2, err := unix.Lgetxattr(filepath.Join(m.dir, "etc"), "user.victim", v); err != nil || string(v[:n2]) != string(v[:n]) {
			t.Errorf("etc's user.victim: %v", err)
		}
	}
}
