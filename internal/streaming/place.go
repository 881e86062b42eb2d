package streaming

import (
	"errors"
	"fmt"
	"hash/maphash"
	"path"
	"strings"
)

// Where the entries of a layer land. A lazily mounted layer must show the
// tree containerd's own unpack (archive.Apply onto an empty directory, the
// overlayfs snapshotter's whiteout conversion) makes of the same tar, and
// the converter must refuse what that unpack refuses. The placer replays
// the unpack on a tree of its own, entry by entry, without touching a file
// system:
//
//   - a name is cleaned (filepath.Clean); its directory is resolved from
//     the root the way continuity's fs.RootPath does, following symbolic
//     links of the layer (at most 255), ".." and absolute targets stopping
//     at the root; directories missing on the way are created (0755);
//   - a name that resolves to the root is ignored;
//   - an entry replaces what its name holds, unless both are directories,
//     which merge (the later header's attributes win);
//   - a hard link names whatever its target path holds at that point (not a
//     directory), resolved the same way;
//   - ".wh.NAME" becomes a whiteout of NAME in its directory and
//     ".wh..wh..opq" marks the directory opaque; ".wh." naming nothing, "."
//     or "..", and a whiteout of a name the layer already holds, are
//     refused.
//
// No package does this without a file system to write to, hence our own.

// Kinds of names in the placer's tree, in the top two bits of a name's
// value; the rest is a directory's number or, for the others, the entry
// shown (a hard link's target's).
const (
	kindDir uint32 = iota << 30
	kindSymlink
	kindFile // any other entry: regular file, device, fifo
	kindWhiteout

	kindMask  = 3 << 30
	indexMask = 1<<30 - 1
)

// maxSymlinks is how many symbolic links a resolution follows, as
// continuity's fs.RootPath.
const maxSymlinks = 255

// Placements of an entry.
const (
	// PlaceNone: the entry adds no name (it resolves to the root).
	PlaceNone = iota
	// PlaceName: the entry is a name in its directory: a new one, or one
	// replacing what the name held before.
	PlaceName
	// PlaceMerge: a directory that already exists takes the entry's
	// attributes.
	PlaceMerge
	// PlaceWhiteout: the entry hides the name it whites out.
	PlaceWhiteout
	// PlaceOpaque: the entry marks its directory opaque.
	PlaceOpaque
)

// Placement is where an entry landed in its layer's tree: its name is the
// last element of Entry.Path (for a whiteout, without ".wh."). Directories
// are numbered by the placer: 0 is the root.
type Placement struct {
	Kind uint8
	// Parent is the directory holding the name; Dir, for a directory, is
	// its own number.
	Parent, Dir uint32
}

// ImplicitDir is a directory the layer's tar never lists but an entry
// below it needs: created as an unpack's mkdir would (0755, root), just
// before the entry placed (index Entry).
type ImplicitDir struct {
	Entry       int
	Parent, Dir uint32
	Name        string
}

// placer replays an unpack. K keys a name in its directory: the name
// itself where the names stay in memory anyway (a node's TOC), a keyed
// hash of it where they do not (the converter, whose memory must not grow
// with the layer's names: a collision needs 2^32 names on average and the
// key of each process is random). A name costs one map slot (about 20
// bytes for a hash), a directory 4 bytes more.
type placer[K comparable] struct {
	key     func(parent uint32, name string) K
	names   map[K]uint32 // kind | index
	parents []uint32     // by directory number; the root is 0, its own parent
	// linkTarget returns a symbolic link's target by its entry index.
	linkTarget func(entry int32) string
	// implicit, if set, is told of each directory created implicitly.
	implicit func(ImplicitDir)
	current  int      // the entry being placed
	replaced int32    // the entry whose name it took, or -1
	pending  []string // resolve's work stack, kept between calls
	// The last directory path resolved and the last directory placed, by
	// path with a trailing "/": a tar lists a directory's files together,
	// and a deep tree one level at a time. Valid until a name is replaced.
	lastParent, lastDir       string
	lastParentNum, lastDirNum uint32
}

// newPlacer returns a placer for about entries names (0: unknown), its
// map sized for them so that it is not rebuilt as it grows.
func newPlacer[K comparable](key func(uint32, string) K, linkTarget func(int32) string, entries int) *placer[K] {
	return &placer[K]{key: key, names: make(map[K]uint32, entries), parents: []uint32{0}, linkTarget: linkTarget}
}

// size is the number of names and directories placed.
func (p *placer[K]) size() int { return len(p.names) + len(p.parents) }

// nameKey keys a name by itself.
type nameKey struct {
	parent uint32
	name   string
}

func byName(parent uint32, name string) nameKey { return nameKey{parent, name} }

// hashedNames returns a key function hashing names with a random key.
func hashedNames() func(uint32, string) uint64 {
	seed := maphash.MakeSeed()
	return func(parent uint32, name string) uint64 {
		var h maphash.Hash
		h.SetSeed(seed)
		var b [4]byte
		b[0], b[1], b[2], b[3] = byte(parent), byte(parent>>8), byte(parent>>16), byte(parent>>24)
		h.Write(b[:])
		h.WriteString(name)
		return h.Sum64()
	}
}

// errUnpack is an entry the unpack would refuse; the caller wraps it in its
// own sentinel.
type errUnpack struct{ msg string }

func (e *errUnpack) Error() string { return e.msg }

func refuse(format string, args ...any) error {
	return &errUnpack{msg: fmt.Sprintf(format, args...)}
}

var errMissing = errors.New("missing")

func (p *placer[K]) lookup(parent uint32, name string) (uint32, bool) {
	v, ok := p.names[p.key(parent, name)]
	return v, ok
}

func (p *placer[K]) addDir(parent uint32, name string) uint32 {
	n := uint32(len(p.parents))
	p.parents = append(p.parents, parent)
	p.names[p.key(parent, name)] = kindDir | n
	return n
}

// finish ends the replay as containerd's unpack ends: it sets the times of
// every directory a header listed, by path, and fails on one whose path
// is gone because a later entry replaced a directory above it. Only a
// node's TOC check, which has the names, runs it; the converter keeps
// none, so such a layer converts and then falls back to a download, which
// fails as containerd's unpack does.
func (p *placer[K]) finish(dirs func(yield func(name string) bool)) error {
	for name := range dirs {
		if _, err := p.resolve(path.Clean(name), false); err != nil {
			return refuse("directory %q is gone at the end: a later entry replaced a directory above it", name)
		}
	}
	return nil
}

// resolve walks a path from the root as fs.RootPath does and returns the
// name it reaches (kind | index). A missing component is created as a
// directory when create is set (mkparent), else errMissing is returned.
// Every component but the last must be a directory.
func (p *placer[K]) resolve(dirPath string, create bool) (uint32, error) {
	stack := p.pending[:0]
	defer func() { p.pending = stack[:0] }()
	stack = pushPath(stack, dirPath)
	cur := uint32(0) // a directory's number
	links := 0
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = p.parents[cur]
			continue
		}
		v, ok := p.lookup(cur, c)
		if !ok {
			if !create {
				return 0, errMissing
			}
			n := p.addDir(cur, c)
			if p.implicit != nil {
				p.implicit(ImplicitDir{Entry: p.current, Parent: cur, Dir: n, Name: c})
			}
			cur = n
			continue
		}
		switch v & kindMask {
		case kindDir:
			cur = v & indexMask
		case kindSymlink:
			if links++; links > maxSymlinks {
				return 0, refuse("more than %d symbolic links to follow", maxSymlinks)
			}
			// The target replaces the link's name, cleaned as a path
			// join cleans it: ".." goes up from the link's directory.
			target := p.linkTarget(int32(v & indexMask))
			if strings.HasPrefix(target, "/") {
				cur = 0
			}
			stack = pushPath(stack, path.Clean(target))
		default:
			if len(stack) == 0 {
				return v, nil
			}
			return 0, refuse("%q is not a directory", c)
		}
	}
	return kindDir | cur, nil
}

// pushPath pushes the components of a path on a stack, the first last.
func pushPath(stack []string, p string) []string {
	for p != "" {
		i := strings.LastIndexByte(p, '/')
		stack = append(stack, p[i+1:])
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return stack
}

// parentDir resolves the directory an entry goes in, creating what is
// missing.
func (p *placer[K]) parentDir(dirPath string) (uint32, error) {
	switch {
	case dirPath == p.lastParent && dirPath != "":
		return p.lastParentNum, nil
	case dirPath == p.lastDir && dirPath != "":
		p.lastParent, p.lastParentNum = p.lastDir, p.lastDirNum
		return p.lastDirNum, nil
	}
	v, err := p.resolve(dirPath, true)
	if err != nil {
		return 0, err
	}
	if v&kindMask != kindDir {
		return 0, refuse("%q is not a directory", strings.TrimSuffix(dirPath, "/"))
	}
	p.lastParent, p.lastParentNum = dirPath, v&indexMask
	return v & indexMask, nil
}

// place replays one entry. target is the entry whose file a hard link
// names (i itself for any other entry); replaced, the entry whose name the
// entry took (-1 if none, or if it was a directory).
func (p *placer[K]) place(i int, e *Entry) (pl Placement, target int32, err error) {
	target, p.current, p.replaced = int32(i), i, -1
	name := path.Clean(e.Name)
	dirPath, base := path.Split(name)
	if base == "" || base == "." || base == ".." {
		return Placement{}, target, nil // the root itself
	}
	parent, err := p.parentDir(dirPath)
	if err != nil {
		return Placement{}, target, err
	}
	if base == whiteoutOpaque {
		return Placement{Kind: PlaceOpaque, Parent: parent}, target, nil
	}
	if hidden, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if hidden == "" || hidden == "." || hidden == ".." {
			return Placement{}, target, refuse("invalid whiteout name %q", base)
		}
		if _, exists := p.lookup(parent, hidden); exists {
			return Placement{}, target, refuse("whiteout %q of a name the layer already holds", base)
		}
		p.names[p.key(parent, hidden)] = kindWhiteout | uint32(i)
		return Placement{Kind: PlaceWhiteout, Parent: parent}, target, nil
	}
	if old, ok := p.lookup(parent, base); ok {
		if old&kindMask == kindDir && e.Type == TypeDir {
			p.noteDir(name, old&indexMask)
			return Placement{Kind: PlaceMerge, Parent: parent, Dir: old & indexMask}, target, nil
		}
		// Replaced, and with it all below.
		delete(p.names, p.key(parent, base))
		if k := old & kindMask; k == kindFile || k == kindSymlink {
			p.replaced = int32(old & indexMask)
		}
		p.lastParent, p.lastDir = "", ""
	}
	kind := kindFile
	switch e.Type {
	case TypeDir:
		n := p.addDir(parent, base)
		p.noteDir(name, n)
		return Placement{Kind: PlaceName, Parent: parent, Dir: n}, target, nil
	case TypeSymlink:
		kind = kindSymlink
	case TypeHardlink:
		t, err := p.linkTo(e.LinkName)
		if err != nil {
			return Placement{}, target, err
		}
		target, kind = int32(t&indexMask), t&kindMask
	}
	p.names[p.key(parent, base)] = kind | uint32(target)
	return Placement{Kind: PlaceName, Parent: parent}, target, nil
}

// noteDir remembers the directory just placed, for its children.
func (p *placer[K]) noteDir(name string, n uint32) {
	p.lastDir, p.lastDirNum = name+"/", n
}

// linkTo resolves a hard link's target as containerd does: its directory
// as any path, its last element as it is.
func (p *placer[K]) linkTo(link string) (uint32, error) {
	dirPath, base := path.Split(link)
	v, err := p.resolve(dirPath, false)
	if errors.Is(err, errMissing) {
		return 0, refuse("hard link to %q, which the layer does not hold before it", link)
	}
	if err != nil {
		return 0, err
	}
	switch base {
	case "", ".":
	case "..":
		if v&kindMask == kindDir {
			v = kindDir | p.parents[v&indexMask]
		}
	default:
		if v&kindMask != kindDir {
			return 0, refuse("hard link to %q: a parent is not a directory", link)
		}
		var ok bool
		if v, ok = p.lookup(v&indexMask, base); !ok {
			return 0, refuse("hard link to %q, which the layer does not hold before it", link)
		}
	}
	switch v & kindMask {
	case kindDir:
		return 0, refuse("hard link to %q, a directory", link)
	case kindWhiteout:
		return 0, refuse("hard link to %q, a whiteout", link)
	}
	return v, nil
}

const whiteoutOpaque = ".wh..wh..opq"

// unpackCheck is the converter's placer: it refuses a layer containerd's
// unpack would refuse, as each entry is read, holding no names.
type unpackCheck struct {
	p *placer[uint64]
	// links holds the targets of the symbolic links, by entry index: the
	// only names a resolution needs again, up to maxLinks bytes.
	links               map[int32]string
	linkBytes, maxLinks int64
}

// linkBytes is how much of a conversion's memory budget the symbolic link
// targets it keeps may take: 16 MiB of the default 256 MiB, where a
// distribution's layer has tens of KiB.
func linkBytes(budget int64) int64 { return budget / 16 }

func newUnpackCheck(maxLinks int64) *unpackCheck {
	c := &unpackCheck{links: map[int32]string{}, maxLinks: maxLinks}
	c.p = newPlacer(hashedNames(), func(entry int32) string { return c.links[entry] }, 0)
	return c
}

func (c *unpackCheck) add(i int, e *Entry, lim Limits) error {
	if e.Type == TypeSymlink {
		if c.linkBytes += int64(len(e.LinkName)); c.linkBytes > c.maxLinks {
			return overLimit(LimitConversionMemory, c.maxLinks, "has more than %d bytes of symbolic link targets", c.maxLinks)
		}
		c.links[int32(i)] = strings.Clone(e.LinkName)
	}
	if _, _, err := c.p.place(i, e); err != nil {
		return fmt.Errorf("%w: %s: %v (containerd's unpack refuses it too)", ErrUnsupportedInput, abbreviate(e.Name), err)
	}
	if c.p.size() > maxTreeNodes(lim) {
		return overLimit(LimitEntries, int64(lim.MaxEntries), "has more than %d files and directories (entries and the directories they imply)", maxTreeNodes(lim))
	}
	return nil
}
