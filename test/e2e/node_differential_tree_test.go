//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// fsTree is what a mounted root file system shows, by path: names as raw
// bytes joined with "/", "." for the root.
type fsTree map[string]*fsEntry

// fsEntry is what TestNodeDifferential compares of one name.
type fsEntry struct {
	mode     uint32 // file type and permission bits
	uid, gid uint32
	nlink    uint64
	size     int64
	rdev     uint64
	target   string            // a symlink's
	xattrs   map[string]string // but overlayfs's own (trusted.overlay.*)
	sum      string            // a regular file's sha256
	links    []string          // the other names of a non-directory's inode
	problem  string            // what could not be read
	dev, ino uint64
}

// walkTree reads the tree below root without following a symlink, each
// name relative to its directory's descriptor (a path can be longer than
// PATH_MAX). Directories are read by a few goroutines at once: a FUSE
// mount answers one request at a time per reader.
func walkTree(root string) (fsTree, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parent, err := unix.Open(root+"/..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	defer unix.Close(parent)
	w := &treeWalker{tree: fsTree{}, slots: make(chan struct{}, 4)}
	w.tree["."] = readEntry(parent, root[strings.LastIndexByte(root, '/')+1:])
	w.wg.Add(1)
	w.walkDir(fd, ".")
	w.wg.Wait()
	groupLinks(w.tree)
	return w.tree, nil
}

// treeWalker reads a tree; each directory's descriptor is closed by
// whoever walks it.
type treeWalker struct {
	mu    sync.Mutex
	tree  fsTree
	slots chan struct{} // one per goroutine walking besides the first
	wg    sync.WaitGroup
}

func (w *treeWalker) walkDir(dirfd int, dir string) {
	defer w.wg.Done()
	defer unix.Close(dirfd)
	dup, err := unix.Dup(dirfd)
	if err != nil {
		w.setProblem(dir, "dup: "+err.Error())
		return
	}
	f := os.NewFile(uintptr(dup), dir)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		w.setProblem(dir, "readdir: "+err.Error())
		return
	}
	slices.Sort(names)
	for i, name := range names {
		p := name
		if dir != "." {
			p = dir + "/" + name
		}
		if i > 0 && names[i-1] == name {
			w.setProblem(p, "listed twice in its directory")
			continue
		}
		e := readEntry(dirfd, name)
		w.mu.Lock()
		w.tree[p] = e
		w.mu.Unlock()
		if e.mode&unix.S_IFMT != unix.S_IFDIR || e.problem != "" {
			continue
		}
		child, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			w.setProblem(p, "open: "+err.Error())
			continue
		}
		w.wg.Add(1)
		select {
		case w.slots <- struct{}{}:
			go func() {
				defer func() { <-w.slots }()
				w.walkDir(child, p)
			}()
		default:
			w.walkDir(child, p)
		}
	}
}

func (w *treeWalker) setProblem(p, problem string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tree[p] == nil {
		w.tree[p] = &fsEntry{}
	}
	w.tree[p].problem = problem
}

// readEntry reads what is compared of name in the directory dirfd.
func readEntry(dirfd int, name string) *fsEntry {
	e := &fsEntry{}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		e.problem = "stat: " + err.Error()
		return e
	}
	e.mode, e.uid, e.gid, e.nlink, e.size, e.rdev = st.Mode, st.Uid, st.Gid, uint64(st.Nlink), st.Size, st.Rdev
	e.dev, e.ino = st.Dev, st.Ino
	var problems []string
	// The l*xattr calls take a path: this one is short whatever the depth.
	path := fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
	var err error
	if e.xattrs, err = readXattrs(path); err != nil {
		problems = append(problems, "xattrs: "+err.Error())
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		buf := make([]byte, 64<<10)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			problems = append(problems, "readlink: "+err.Error())
		}
		e.target = string(buf[:max(n, 0)])
	case unix.S_IFREG:
		// An empty file is not opened: hundreds of thousands of them
		// would cost minutes over FUSE, and its size says it all.
		e.sum = emptySHA256
		if st.Size > 0 {
			if e.sum, err = hashAt(dirfd, name); err != nil {
				problems = append(problems, "read: "+err.Error())
			}
		}
	}
	e.problem = strings.Join(problems, "; ")
	return e
}

// emptySHA256 is the sha256 of no bytes.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func readXattrs(path string) (map[string]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(path, buf); err != nil {
		return nil, err
	}
	var out map[string]string
	for _, key := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if key == "" || strings.HasPrefix(key, "trusted.overlay.") {
			continue
		}
		vsize, err := unix.Lgetxattr(path, key, nil)
		if err != nil {
			return out, fmt.Errorf("%s: %w", key, err)
		}
		value := make([]byte, vsize)
		if vsize, err = unix.Lgetxattr(path, key, value); err != nil {
			return out, fmt.Errorf("%s: %w", key, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[key] = string(value[:vsize])
	}
	return out, nil
}

func hashAt(dirfd int, name string) (string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// groupLinks records, for each non-directory whose inode has several
// names, its other names.
func groupLinks(tree fsTree) {
	groups := map[[2]uint64][]string{}
	for p, e := range tree {
		if e.problem == "" && e.mode&unix.S_IFMT != unix.S_IFDIR && e.nlink > 1 {
			k := [2]uint64{e.dev, e.ino}
			groups[k] = append(groups[k], p)
		}
	}
	for _, names := range groups {
		if len(names) < 2 {
			continue
		}
		slices.Sort(names)
		for _, p := range names {
			tree[p].links = slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == p })
		}
	}
}

// compareTrees lists, path by path, how got (the lazy view) differs from
// want (containerd's unpack).
func compareTrees(want, got fsTree) []string {
	paths := sortedKeys(want)
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var diffs []string
	for _, p := range paths {
		w, g := want[p], got[p]
		switch {
		case g == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in containerd's unpack: %s", quotePath(p), w))
		case w == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in the lazy view: %s", quotePath(p), g))
		default:
			for _, d := range compareEntries(w, g) {
				diffs = append(diffs, fmt.Sprintf("%s: %s", quotePath(p), d))
			}
		}
	}
	return diffs
}

func compareEntries(w, g *fsEntry) []string {
	var out []string
	differ := func(what string, a, b any) {
		if a != b {
			out = append(out, fmt.Sprintf("%s: containerd %v, lazy view %v", what, a, b))
		}
	}
	differ("problem", w.problem, g.problem)
	if typeName(w.mode) != typeName(g.mode) {
		return append(out, fmt.Sprintf("type: containerd %s, lazy view %s", w, g))
	}
	if w.mode&unix.S_IFMT != unix.S_IFLNK {
		differ("mode", fmt.Sprintf("%04o", w.mode&0o7777), fmt.Sprintf("%04o", g.mode&0o7777))
	}
	differ("owner", fmt.Sprintf("%d:%d", w.uid, w.gid), fmt.Sprintf("%d:%d", g.uid, g.gid))
	switch w.mode & unix.S_IFMT {
	case unix.S_IFREG:
		differ("size", w.size, g.size)
		differ("sha256", w.sum, g.sum)
	case unix.S_IFLNK:
		differ("target", strconv.Quote(w.target), strconv.Quote(g.target))
	case unix.S_IFCHR, unix.S_IFBLK:
		differ("device", devString(w.rdev), devString(g.rdev))
	}
	if w.mode&unix.S_IFMT != unix.S_IFDIR {
		differ("links", w.nlink, g.nlink)
		differ("other names of the inode", quotePaths(w.links), quotePaths(g.links))
	}
	differ("xattrs", xattrString(w.xattrs), xattrString(g.xattrs))
	return out
}

func (e *fsEntry) String() string {
	if e.problem != "" && e.mode == 0 {
		return "unreadable (" + e.problem + ")"
	}
	s := fmt.Sprintf("%s %04o %d:%d", typeName(e.mode), e.mode&0o7777, e.uid, e.gid)
	switch e.mode & unix.S_IFMT {
	case unix.S_IFREG:
		s += fmt.Sprintf(" %d bytes", e.size)
	case unix.S_IFLNK:
		s += " -> " + strconv.Quote(e.target)
	case unix.S_IFCHR, unix.S_IFBLK:
		s += " " + devString(e.rdev)
	}
	return s
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %o", mode&unix.S_IFMT)
}

func devString(rdev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)) }

// quotePath quotes a path for a report, shortened if long: bytes that are
// not printable UTF-8 show as escapes.
func quotePath(p string) string {
	if len(p) > 200 {
		return strconv.Quote(p[:80]) + fmt.Sprintf("…(%d bytes)…", len(p)) + strconv.Quote(p[len(p)-80:])
	}
	return strconv.Quote(p)
}

func quotePaths(ps []string) string {
	q := make([]string, len(ps))
	for i, p := range ps {
		q[i] = quotePath(p)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func xattrString(x map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(x) {
		parts = append(parts, k+"="+strconv.Quote(x[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}
