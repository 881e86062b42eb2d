// Package layerfs presents a streamed image layer as a read-only FUSE file
// system: metadata from the layer's verified TOC, file data read on demand
// through the streaming reader (only the chunks a read needs, each verified
// before use). Whiteouts appear as overlayfs expects them, so the mount can
// be a lower directory of an overlay like any unpacked layer.
//
// A mount builds only an index of the layer's directories from the TOC;
// inodes are made as the kernel looks names up or lists a directory, and
// dropped when it forgets them. Inode numbers derive from TOC positions, so
// they are the same every time a layer is mounted.
package layerfs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Source is the layer a file system shows: the streaming reader.
type Source interface {
	Entries() []streaming.Entry
	ImplicitDirs() []streaming.ImplicitDir
	DataEntry(e *streaming.Entry) *streaming.Entry
	ReadAt(ctx context.Context, e *streaming.Entry, p []byte, off int64) (int, error)
}

// Options tune a mount.
type Options struct {
	// CacheTimeout is how long the kernel may cache entries and attributes;
	// a layer never changes, so the default is long (an hour).
	CacheTimeout time.Duration
	// OverlayXattr is the prefix of overlayfs's extended attributes:
	// "trusted.overlay." (the default) or "user.overlay." for overlays
	// mounted with userxattr.
	OverlayXattr string
	// Lowers are the directories of the layers below this one, top
	// first. A directory the layer implies without listing it takes the
	// mode, owner, times and extended attributes of the same directory in
	// the topmost lower layer that has that path (none if it is not a
	// directory there), as containerd's unpack copies them; otherwise it
	// is 0755 and root's.
	Lowers []string
	// OnRead, when set, is called after every read with the bytes returned
	// and the error, if any.
	OnRead func(n int, err error)
	// Debug logs every FUSE request, to DebugLog when it is set.
	Debug    bool
	DebugLog *log.Logger
}

func (o *Options) defaults() {
	if o.CacheTimeout <= 0 {
		o.CacheTimeout = time.Hour
	}
	if o.OverlayXattr == "" {
		o.OverlayXattr = "trusted.overlay."
	}
}

// Overlayfs conventions for whiteouts in lower layers.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Mounted is a mounted layer: its FUSE server and the root of its tree.
type Mounted struct {
	*fuse.Server
	root *node
}

// Mount mounts the layer read-only at mountpoint and returns the running
// server; Unmount on it (or unmounting the directory) ends it.
func Mount(mountpoint string, src Source, opts Options) (*Mounted, error) {
	root, err := Build(src, opts)
	if err != nil {
		return nil, fmt.Errorf("layer at %s: %w", mountpoint, err)
	}
	server, err := mountRoot(mountpoint, root)
	if err != nil {
		return nil, err
	}
	return &Mounted{Server: server, root: root}, nil
}

// Invalidate drops what the kernel caches of the layer's files: their
// pages (mapped ones included) and attributes, so that every later read
// asks the source again. It is how a layer found bad stops serving bytes
// the kernel read before the verdict. It returns how many inodes it
// invalidated. Never call it from a FUSE request of this mount: the
// kernel waits for that request to end before it drops the pages.
func (m *Mounted) Invalidate() int {
	n := 0
	queue := []*fs.Inode{m.root.EmbeddedInode()}
	for len(queue) > 0 {
		in := queue[0]
		queue = queue[1:]
		if in.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG {
			if in.NotifyContent(0, 0) == 0 {
				n++
			}
			continue
		}
		for _, child := range in.Children() {
			queue = append(queue, child)
		}
	}
	return n
}

// mountRoot serves a built tree at mountpoint.
func mountRoot(mountpoint string, root *node) (*fuse.Server, error) {
	opts := root.layer.opts
	t := opts.CacheTimeout
	server, err := fs.Mount(mountpoint, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:   true,
			FsName:       "sluice",
			Name:         "sluice",
			DirectMount:  true,
			Options:      []string{"ro"},
			MaxReadAhead: 128 << 10,
			MaxWrite:     1 << 20,
			Debug:        opts.Debug,
			Logger:       opts.DebugLog,
			// A layer's symlinks never change: the kernel keeps their
			// targets instead of asking again on every path walk.
			EnableSymlinkCaching: true,
			// Reads answer from memory (ReadResultData): go-fuse's
			// attempt to splice each reply through a pipe, then its fall
			// back to writev, cost two more syscalls a READ (9% of the
			// FUSE manager's CPU in bench/warmread's walk).
			DisableSplice: true,
		},
		EntryTimeout:    &t,
		AttrTimeout:     &t,
		NegativeTimeout: &t,
		NullPermissions: true,
	})
	if err != nil {
		return nil, fmt.Errorf("mount layer at %s: %w", mountpoint, err)
	}
	return server, nil
}

// Build indexes a layer's TOC and returns the root of its tree without
// mounting it.
func Build(src Source, opts Options) (*node, error) {
	opts.defaults()
	root, err := buildIndex(src, opts.Lowers)
	if err != nil {
		return nil, err
	}
	return &node{layer: &layer{src: src, opts: &opts}, meta: root.meta()}, nil
}

// layer is what every node of a mount shares.
type layer struct {
	src  Source
	opts *Options
}

// node is what every inode of the tree embeds: what its name shows and the
// layer.
type node struct {
	fs.Inode
	layer *layer
	meta
}

var (
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeGetxattrer  = (*node)(nil)
	_ fs.NodeListxattrer = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeFlusher     = (*node)(nil)
	_ fs.NodeReader      = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)

	_ fs.NodeOpendirHandler = (*node)(nil)
)

// Lookup makes the inode of a child from the index. go-fuse keeps one
// inode per inode number, so a name looked up again, or a file's other hard
// link, gets the inode the kernel already has.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.dir == nil {
		return nil, syscall.ENOTDIR
	}
	c, ok := n.dir.lookup(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	child := &node{layer: n.layer, meta: c.meta()}
	child.fill(&out.Attr)
	return n.NewInode(ctx, child, fs.StableAttr{Mode: child.mode & syscall.S_IFMT, Ino: child.ino}), 0
}

// entries lists a directory from the index, in name order; the listing is
// made on the first open and shared by later ones (handles only read it).
func (n *node) entries() []fuse.DirEntry {
	d := n.dir
	d.listOnce.Do(func() {
		children := d.sorted()
		d.listing = make([]fuse.DirEntry, len(children))
		for i := range children {
			m := children[i].meta()
			d.listing[i] = fuse.DirEntry{Name: children[i].name, Mode: m.mode, Ino: m.ino}
		}
	})
	return d.listing
}

// dirHandle is an open directory: its listing, read from a position the
// kernel may move back (seekdir, or a readdir it retries).
type dirHandle struct {
	mu   sync.Mutex
	list []fuse.DirEntry
	pos  int
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pos >= len(d.list) {
		return nil, 0
	}
	e := d.list[d.pos]
	d.pos++
	e.Off = uint64(d.pos)
	return &e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pos = int(min(off, uint64(len(d.list))))
	return 0
}

// Getattr answers from the TOC.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *node) fill(a *fuse.Attr) {
	a.Ino = n.ino
	a.Mode = n.mode
	a.Rdev = n.rdev
	a.Nlink = n.nlink
	a.Blksize = 4096
	if e := n.entry; e != nil {
		at := e.Attributes()
		a.Uid, a.Gid = uint32(at.UID), uint32(at.GID)
		a.Mtime, a.Mtimensec = uint64(max(at.ModTime, 0)), uint32(at.ModTimeNsec)
		a.Atime, a.Atimensec = a.Mtime, a.Mtimensec
		a.Ctime, a.Ctimensec = a.Mtime, a.Mtimensec
		switch {
		case n.mode&syscall.S_IFMT == syscall.S_IFREG:
			a.Size = uint64(e.Size)
		case n.mode&syscall.S_IFMT == syscall.S_IFLNK:
			a.Size = uint64(len(e.LinkName))
		}
		a.Blocks = (a.Size + 511) / 512
	}
}

// Getxattr serves the TOC's extended attributes, and overlayfs's opaque
// marker on opaque directories.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.xattrs()[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the attribute names, NUL-terminated.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for k := range n.xattrs() {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (n *node) xattrs() map[string][]byte {
	var m map[string][]byte
	if n.entry != nil && len(n.entry.Xattrs) > 0 {
		m = unpackedXattrs(n.entry.Xattrs, n.mode&syscall.S_IFMT == syscall.S_IFLNK)
	}
	if n.dir != nil && n.dir.opaque {
		with := map[string][]byte{n.layer.opts.OverlayXattr + "opaque": []byte("y")}
		for k, v := range m {
			with[k] = v
		}
		m = with
	}
	return m
}

// unpackedXattrs are the extended attributes of a tar entry that
// containerd's unpack sets: never trusted.* ones ("admin attributes from
// archive not supported": overlayfs's own among them, which a layer must
// not smuggle in), and no user.* ones on a symbolic link (Linux refuses
// them).
func unpackedXattrs(x map[string][]byte, symlink bool) map[string][]byte {
	dropped := func(k string) bool {
		return strings.HasPrefix(k, "trusted.") || (symlink && strings.HasPrefix(k, "user."))
	}
	n := 0
	for k := range x {
		if dropped(k) {
			n++
		}
	}
	if n == 0 {
		return x
	}
	kept := make(map[string][]byte, len(x)-n)
	for k, v := range x {
		if !dropped(k) {
			kept[k] = v
		}
	}
	return kept
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.entry == nil || n.mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return []byte(n.entry.LinkName), 0
}

// Open answers ENOSYS: the kernel then stops sending OPEN, RELEASE (and,
// with Flush's ENOSYS, FLUSH) for files of this mount and keeps their pages
// across opens (FUSE's no-open mode). A container's start opens thousands of
// files; each would otherwise cost three round trips to this process. The
// mount is read-only, so the kernel refuses writes before asking.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS so that the kernel stops sending it: there is
// nothing to flush on a read-only layer.
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// OpendirHandle lets the kernel cache a directory's listing: it never
// changes.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.dir == nil {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{list: n.entries()}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// Read fetches the bytes through the streaming reader. A chunk that fails
// verification is an I/O error, never wrong bytes.
func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.entry == nil || n.mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, syscall.EISDIR
	}
	got, err := n.layer.src.ReadAt(ctx, n.entry, dest, off)
	if onRead := n.layer.opts.OnRead; onRead != nil {
		onRead(got, err)
	}
	if err != nil && !errors.Is(err, errEOF) {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// Statfs reports a read-only file system with no free space.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}
