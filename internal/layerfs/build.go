package layerfs

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/sluicehq/sluice/internal/streaming"
)

var errEOF = io.EOF

// tree builds the inode tree of a layer from its TOC.
type tree struct {
	src  Source
	opts *Options
	root *node
	dirs map[string]*node  // by path, "" is the root
	byIx map[int]*fs.Inode // regular files by TOC index, for hard links
	ctx  context.Context
}

// Build returns the root of a layer's tree without mounting it (tests walk
// it directly).
func Build(src Source, opts Options) (*node, error) {
	opts.defaults()
	t := &tree{src: src, opts: &opts, dirs: map[string]*node{}, byIx: map[int]*fs.Inode{}, ctx: context.Background()}
	t.root = &node{src: src, opts: &opts, mode: syscall.S_IFDIR | 0o755, ino: 1, nlink: 2}
	t.dirs[""] = t.root
	entries := src.Entries()
	// The root must be an inode before children can be added to it: go-fuse
	// does that when mounting, so the tree is assembled in OnAdd.
	t.root.onAdd = func() error { return t.add(entries) }
	return t.root, nil
}

// OnAdd is called by go-fuse once the root is an inode.
func (n *node) OnAdd(ctx context.Context) {
	if n.onAdd != nil {
		if err := n.onAdd(); err != nil {
			n.buildErr = err
		}
	}
}

func (t *tree) add(entries []streaming.Entry) error {
	for i := range entries {
		e := &entries[i]
		if e.Unsafe {
			continue // never shown: it would escape the layer's root
		}
		dir, base := cleanName(e.Path())
		if base == "" {
			if e.Type == streaming.TypeDir {
				t.root.entry = e
				t.root.mode = syscall.S_IFDIR | uint32(e.Mode&0o7777)
			}
			continue
		}
		parent, err := t.dir(dir)
		if err != nil {
			return err
		}
		if base == opaqueMarker {
			parent.opaque = true
			continue
		}
		if name, ok := strings.CutPrefix(base, whiteoutPrefix); ok && name != "" {
			t.addChild(parent, name, &node{src: t.src, opts: t.opts, entry: e, mode: syscall.S_IFCHR, rdev: 0, ino: ino(e), nlink: 1})
			continue
		}
		if err := t.addEntry(parent, dir, base, e); err != nil {
			return err
		}
	}
	return nil
}

func ino(e *streaming.Entry) uint64 { return uint64(e.Index()) + 2 }

func (t *tree) addEntry(parent *node, dir, base string, e *streaming.Entry) error {
	n := &node{src: t.src, opts: t.opts, entry: e, ino: ino(e), nlink: 1}
	perm := uint32(e.Mode & 0o7777)
	switch e.Type {
	case streaming.TypeDir:
		p := joinPath(dir, base)
		if existing, ok := t.dirs[p]; ok {
			// A directory listed after its children, or twice: the last
			// header's attributes win, the children stay.
			existing.entry, existing.mode = e, syscall.S_IFDIR|perm
			return nil
		}
		n.mode, n.nlink = syscall.S_IFDIR|perm, 2
		t.dirs[p] = n
	case streaming.TypeReg:
		n.mode, n.nlink = syscall.S_IFREG|perm, uint32(e.NumLink())
	case streaming.TypeHardlink:
		target := t.src.DataEntry(e)
		in, ok := t.byIx[target.Index()]
		if !ok {
			return fmt.Errorf("hard link %q to %q, which the layer does not hold before it", e.Name, target.Name)
		}
		parent.AddChild(base, in, true)
		return nil
	case streaming.TypeSymlink:
		n.mode = syscall.S_IFLNK | 0o777
	case streaming.TypeChar:
		n.mode, n.rdev = syscall.S_IFCHR|perm, mkdev(e.DevMajor, e.DevMinor)
	case streaming.TypeBlock:
		n.mode, n.rdev = syscall.S_IFBLK|perm, mkdev(e.DevMajor, e.DevMinor)
	case streaming.TypeFIFO:
		n.mode = syscall.S_IFIFO | perm
	default:
		return nil
	}
	in := t.addChild(parent, base, n)
	if e.Type == streaming.TypeReg {
		t.byIx[e.Index()] = in
	}
	return nil
}

// dir returns the directory node of a path, creating directories the tar
// did not list.
func (t *tree) dir(p string) (*node, error) {
	if d, ok := t.dirs[p]; ok {
		return d, nil
	}
	parentPath, base := cleanName(p)
	parent, err := t.dir(parentPath)
	if err != nil {
		return nil, err
	}
	d := &node{src: t.src, opts: t.opts, mode: syscall.S_IFDIR | 0o755, nlink: 2, ino: syntheticIno(len(t.dirs))}
	t.dirs[p] = d
	t.addChild(parent, base, d)
	return d, nil
}

// syntheticIno numbers directories the tar did not list, above any TOC
// position.
func syntheticIno(i int) uint64 { return 1<<40 + uint64(i) }

func (t *tree) addChild(parent *node, name string, n *node) *fs.Inode {
	in := parent.NewPersistentInode(t.ctx, n, fs.StableAttr{Mode: n.mode & syscall.S_IFMT, Ino: n.ino})
	parent.AddChild(name, in, true)
	return in
}

func joinPath(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// mkdev encodes a device number as Linux's new_encode_dev does.
func mkdev(major, minor int64) uint32 {
	return uint32((minor & 0xff) | ((major & 0xfff) << 8) | ((minor &^ 0xff) << 12))
}
