package layerfs

import (
	"fmt"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sluicehq/sluice/internal/streaming"
	"golang.org/x/sys/unix"
)

var errEOF = io.EOF

// dir is one directory of a layer as the index holds it: its attributes and
// the names it shows. Nothing changes once the index is built, except the
// order of children, sorted on first use.
type dir struct {
	entry  *streaming.Entry // the last header listing it; nil if the tar never did
	mode   uint32
	ino    uint64
	opaque bool // marked opaque by a .wh..wh..opq entry

	// children are in the order the TOC added them until sorted() puts them
	// in name order, keeping the last of each name (a later tar entry
	// replaces an earlier one). Sorting waits for the first lookup or
	// listing, so a mount pays nothing for directories nobody opens.
	sortOnce sync.Once
	children []child

	listOnce sync.Once
	listing  []fuse.DirEntry // what a listing shows, made on the first
}

// child is one name in a directory.
type child struct {
	name string
	// entry is what the name shows: the file's own entry, a hard link's
	// target, a whiteout's .wh. entry; nil for a directory.
	entry    *streaming.Entry
	dir      *dir // set for a directory
	whiteout bool
}

// meta is what a name shows, derived from the index: everything an inode
// needs.
type meta struct {
	entry *streaming.Entry // nil for a directory the tar never listed
	// mode and rdev as presented: whiteouts are character devices 0:0 the
	// TOC only knows by name.
	mode  uint32
	rdev  uint32
	nlink uint32
	ino   uint64
	dir   *dir // nil unless a directory
}

func (d *dir) add(c child) { d.children = append(d.children, c) }

func (d *dir) meta() meta {
	return meta{entry: d.entry, mode: d.mode, nlink: 2, ino: d.ino, dir: d}
}

// sorted returns the children in name order, one per name.
func (d *dir) sorted() []child {
	d.sortOnce.Do(func() {
		slices.SortStableFunc(d.children, func(a, b child) int { return strings.Compare(a.name, b.name) })
		kept := d.children[:0]
		for i, c := range d.children {
			if i+1 < len(d.children) && d.children[i+1].name == c.name {
				continue
			}
			kept = append(kept, c)
		}
		clear(d.children[len(kept):])
		d.children = kept
	})
	return d.children
}

// lookup finds a child by name.
func (d *dir) lookup(name string) (child, bool) {
	children := d.sorted()
	i, ok := slices.BinarySearchFunc(children, name, func(c child, name string) int { return strings.Compare(c.name, name) })
	if !ok {
		return child{}, false
	}
	return children[i], true
}

func (c *child) meta() meta {
	if c.dir != nil {
		return c.dir.meta()
	}
	e := c.entry
	m := meta{entry: e, ino: ino(e), nlink: 1}
	if c.whiteout {
		m.mode = syscall.S_IFCHR
		return m
	}
	perm := uint32(e.Attributes().Mode & 0o7777)
	switch e.Type {
	case streaming.TypeReg:
		m.mode, m.nlink = syscall.S_IFREG|perm, uint32(e.NumLink())
	case streaming.TypeSymlink:
		m.mode, m.nlink = syscall.S_IFLNK|0o777, uint32(e.NumLink())
	case streaming.TypeChar:
		m.mode, m.rdev, m.nlink = syscall.S_IFCHR|perm, mkdev(e.DevMajor, e.DevMinor), uint32(e.NumLink())
	case streaming.TypeBlock:
		m.mode, m.rdev, m.nlink = syscall.S_IFBLK|perm, mkdev(e.DevMajor, e.DevMinor), uint32(e.NumLink())
	case streaming.TypeFIFO:
		m.mode, m.nlink = syscall.S_IFIFO|perm, uint32(e.NumLink())
	}
	return m
}

// buildIndex makes the directories of a layer from where its entries
// land (streaming.Placement: the tree containerd's unpack of the same tar
// would make) and returns the root.
func buildIndex(src Source, lowers []string) (*dir, error) {
	entries := src.Entries()
	root := &dir{mode: syscall.S_IFDIR | 0o755, ino: 1}
	implicit := src.ImplicitDirs()
	// Paths of directories by number, kept only when implied directories
	// are to take their attributes from the layers below.
	var paths map[uint32]string
	if len(implicit) > 0 && len(lowers) > 0 {
		paths = map[uint32]string{0: ""}
	}
	notePath := func(parent, n uint32, name string) {
		if paths != nil {
			paths[n] = path.Join(paths[parent], name)
		}
	}
	// Directories by the placer's number: the root, the implied ones,
	// then those the tar lists.
	dirs := make(map[uint32]*dir, len(implicit)+1)
	dirs[0] = root
	parentOf := func(n uint32) (*dir, error) {
		d, ok := dirs[n]
		if !ok {
			return nil, fmt.Errorf("layer index: directory %d placed before it exists", n)
		}
		return d, nil
	}
	next := 0 // the next implied directory
	for i := range entries {
		for ; next < len(implicit) && implicit[next].Entry <= i; next++ {
			im := implicit[next]
			parent, err := parentOf(im.Parent)
			if err != nil {
				return nil, err
			}
			d := &dir{mode: syscall.S_IFDIR | 0o755, ino: syntheticIno(next + 1)}
			dirs[im.Dir] = d
			parent.add(child{name: im.Name, dir: d})
			notePath(im.Parent, im.Dir, im.Name)
			if paths != nil {
				inheritDir(d, paths[im.Dir], lowers)
			}
		}
		e := &entries[i]
		pl := e.Placement()
		if pl.Kind == streaming.PlaceNone {
			continue
		}
		parent, err := parentOf(pl.Parent)
		if err != nil {
			return nil, err
		}
		_, name := splitPath(e.Path())
		switch pl.Kind {
		case streaming.PlaceOpaque:
			parent.opaque = true
		case streaming.PlaceWhiteout:
			parent.add(child{name: strings.TrimPrefix(name, whiteoutPrefix), entry: e, whiteout: true})
		case streaming.PlaceMerge:
			// A directory listed again, or after its children: the last
			// header's attributes win, the children stay.
			d, err := parentOf(pl.Dir)
			if err != nil {
				return nil, err
			}
			d.entry, d.mode = e, syscall.S_IFDIR|uint32(e.Mode&0o7777)
		case streaming.PlaceName:
			if e.Type == streaming.TypeDir {
				d := &dir{entry: e, mode: syscall.S_IFDIR | uint32(e.Mode&0o7777), ino: ino(e)}
				dirs[pl.Dir] = d
				parent.add(child{name: name, dir: d})
				notePath(pl.Parent, pl.Dir, name)
				continue
			}
			// A hard link shows its target's entry, so both names give
			// one inode (go-fuse finds it by inode number).
			parent.add(child{name: name, entry: src.DataEntry(e)})
		}
	}
	// The index lives as long as the mount: drop the slack that appending
	// left in large directories (up to a quarter of their children).
	for _, d := range dirs {
		if n := len(d.children); cap(d.children)-n > max(n/16, 8) {
			d.children = append(make([]child, 0, n), d.children...)
		}
	}
	return root, nil
}

func ino(e *streaming.Entry) uint64 { return uint64(e.Index()) + 2 }

// inheritDir gives a directory the layer implies the attributes of the
// same path in the topmost lower layer that has it, if a directory there
// (containerd's mkparent: a non-directory stops the search).
func inheritDir(d *dir, p string, lowers []string) {
	for _, lower := range lowers {
		full := filepath.Join(lower, p)
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return
		}
		e := &streaming.Entry{Type: streaming.TypeDir, Mode: int64(st.Mode & 0o7777), UID: int(st.Uid), GID: int(st.Gid),
			ModTime: st.Mtim.Sec, ModTimeNsec: st.Mtim.Nsec, Xattrs: lowerXattrs(full)}
		d.entry, d.mode = e, syscall.S_IFDIR|uint32(e.Mode)
		return
	}
}

// lowerXattrs reads a lower directory's extended attributes but trusted.*
// ones (overlayfs's among them), which containerd does not copy either.
func lowerXattrs(p string) map[string][]byte {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size <= 0 {
		return nil
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil
	}
	var x map[string][]byte
	for name := range strings.SplitSeq(string(buf[:size]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.") {
			continue
		}
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, v); err != nil {
			continue
		}
		if x == nil {
			x = map[string][]byte{}
		}
		x[name] = v[:n]
	}
	return x
}

// syntheticIno numbers directories the tar did not list, above any TOC
// position.
func syntheticIno(i int) uint64 { return 1<<40 + uint64(i) }

// splitPath splits a TOC path (Entry.Path: clean, relative, "." for the
// root) into its directory and base name.
func splitPath(p string) (dir, base string) {
	if p == "." || p == "" {
		return "", ""
	}
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// mkdev encodes a device number as Linux's new_encode_dev does.
func mkdev(major, minor int64) uint32 {
	return uint32((minor & 0xff) | ((major & 0xfff) << 8) | ((minor &^ 0xff) << 12))
}
