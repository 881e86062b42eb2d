package streaming

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	fastjson "github.com/goccy/go-json"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// EntryType is the kind of a TOC entry.
type EntryType string

// Entry types (docs/format.md, "Entries").
const (
	TypeReg      EntryType = "reg"
	TypeDir      EntryType = "dir"
	TypeSymlink  EntryType = "symlink"
	TypeHardlink EntryType = "hardlink"
	TypeChar     EntryType = "char"
	TypeBlock    EntryType = "block"
	TypeFIFO     EntryType = "fifo"
)

// TOC is the table of contents of a seekable-zstd layer: every tar entry and
// the chunk table. It is stored as JSON (docs/format.md, "TOC").
type TOC struct {
	Version int `json:"version"`
	// DiffID is the sha256 of the whole uncompressed tar stream.
	DiffID digest.Digest `json:"diffID"`
	// UncompressedSize is the size of the uncompressed tar stream.
	UncompressedSize int64   `json:"uncompressedSize"`
	Chunks           []Chunk `json:"chunks"`
	Entries          []Entry `json:"entries"`

	byPath   map[string]int // entry index by Path(), last one wins
	implicit []ImplicitDir  // directories the entries imply
}

// ImplicitDirs lists the directories the layer's entries need but its tar
// does not list, in the order an unpack creates them (set when the TOC is
// validated).
func (t *TOC) ImplicitDirs() []ImplicitDir { return t.implicit }

// Chunk is one independent zstd frame of the data section.
type Chunk struct {
	// Offset and Size locate the compressed frame in the blob.
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// UncompressedOffset and UncompressedSize locate its bytes in the tar.
	UncompressedOffset int64 `json:"uncompressedOffset"`
	UncompressedSize   int64 `json:"uncompressedSize"`
	// Digest is the sha256 of the uncompressed bytes.
	Digest digest.Digest `json:"digest"`

	sum [sha256.Size]byte // Digest, decoded when the TOC is validated
}

// Fragment is a run of data in a sparse file: Length bytes at logical
// Offset. Everything outside the fragments reads as zeros.
type Fragment struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Entry is one file of the layer, as its tar header describes it.
type Entry struct {
	// Name is the tar name exactly (PAX and GNU long names resolved).
	Name string    `json:"name"`
	Type EntryType `json:"type"`
	// Mode holds the permission bits and setuid, setgid and sticky (07777).
	Mode  int64  `json:"mode"`
	UID   int    `json:"uid"`
	GID   int    `json:"gid"`
	Uname string `json:"uname,omitempty"`
	Gname string `json:"gname,omitempty"`
	// Size is the logical size of a regular file.
	Size int64 `json:"size,omitempty"`
	// ModTime is seconds since the Unix epoch (may be negative);
	// ModTimeNsec the nanoseconds when the tar records them.
	ModTime     int64  `json:"mtime"`
	ModTimeNsec int64  `json:"mtimeNsec,omitempty"`
	LinkName    string `json:"linkName,omitempty"`
	DevMajor    int64  `json:"devMajor,omitempty"`
	DevMinor    int64  `json:"devMinor,omitempty"`
	// Xattrs maps an extended attribute name to its raw value (base64 in
	// JSON).
	Xattrs map[string][]byte `json:"xattrs,omitempty"`
	// Offset is where the file's data starts in the uncompressed tar.
	Offset int64 `json:"offset,omitempty"`
	// Sparse lists the data fragments of a sparse file, stored back to back
	// from Offset; nil for an ordinary file.
	Sparse []Fragment `json:"sparse,omitzero"`
	// Unsafe is set when Name (or a hard link's LinkName) is absolute or
	// has a ".." element: consumers must not create it outside their root.
	Unsafe bool `json:"unsafe,omitempty"`

	// Raw holds the names that are not UTF-8: names are bytes in a tar,
	// but a JSON string holds only UTF-8. Name, LinkName and Xattrs then
	// show them with U+FFFD, for readers that do not know this field.
	Raw *RawNames `json:"raw,omitempty"`

	index  int    // position in TOC.Entries
	target int    // the entry whose inode a hard link names (itself for others)
	nlink  int    // the names the entry's inode has in the layer's tree
	attr   *Entry // the last hard link naming the entry, whose attributes it shows
	path   string // Path(), computed once when the TOC is validated
	place  Placement
}

// RawNames are an entry's names that are not UTF-8, whole (base64 in
// JSON).
type RawNames struct {
	Name     []byte     `json:"name,omitempty"`
	LinkName []byte     `json:"linkName,omitempty"`
	Xattrs   []RawXattr `json:"xattrs,omitempty"`
}

// RawXattr is an extended attribute whose name is not UTF-8.
type RawXattr struct {
	Name  []byte `json:"name"`
	Value []byte `json:"value"`
}

// Placement is where the entry lands in its layer's tree, as containerd's
// unpack would put it (set when the TOC is validated).
func (e *Entry) Placement() Placement { return e.place }

// forJSON returns the entry as the TOC stores it: names that are not UTF-8
// moved to the Raw fields.
func (e *Entry) forJSON() *Entry {
	if utf8.ValidString(e.Name) && utf8.ValidString(e.LinkName) && xattrNamesValid(e.Xattrs) {
		return e
	}
	c := *e
	c.Raw = &RawNames{}
	if !utf8.ValidString(c.Name) {
		c.Raw.Name, c.Name = []byte(c.Name), strings.ToValidUTF8(c.Name, "\uFFFD")
	}
	if !utf8.ValidString(c.LinkName) {
		c.Raw.LinkName, c.LinkName = []byte(c.LinkName), strings.ToValidUTF8(c.LinkName, "\uFFFD")
	}
	if !xattrNamesValid(c.Xattrs) {
		c.Xattrs = make(map[string][]byte, len(e.Xattrs))
		for k, v := range e.Xattrs {
			if utf8.ValidString(k) {
				c.Xattrs[k] = v
			} else {
				c.Raw.Xattrs = append(c.Raw.Xattrs, RawXattr{Name: []byte(k), Value: v})
			}
		}
		slices.SortFunc(c.Raw.Xattrs, func(a, b RawXattr) int { return bytes.Compare(a.Name, b.Name) })
	}
	return &c
}

func xattrNamesValid(x map[string][]byte) bool {
	for k := range x {
		if !utf8.ValidString(k) {
			return false
		}
	}
	return true
}

// restoreRaw puts the raw names back into the fields they stand for.
func (e *Entry) restoreRaw() error {
	r := e.Raw
	if r == nil {
		return nil
	}
	e.Raw = nil
	if r.Name != nil {
		if utf8.Valid(r.Name) {
			return invalid("raw name %q is UTF-8: it belongs in name", r.Name)
		}
		e.Name = string(r.Name)
	}
	if r.LinkName != nil {
		if utf8.Valid(r.LinkName) {
			return invalid("raw linkName %q is UTF-8: it belongs in linkName", r.LinkName)
		}
		e.LinkName = string(r.LinkName)
	}
	for _, x := range r.Xattrs {
		if utf8.Valid(x.Name) {
			return invalid("raw xattr name %q is UTF-8: it belongs in xattrs", x.Name)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[string(x.Name)] = x.Value
	}
	return nil
}

// Path is the entry's name relative to the layer root: cleaned, without a
// leading "./" or "/" or a trailing "/"; "." for the root itself. Names that
// would escape the root are clamped to it (and flagged Unsafe).
func (e *Entry) Path() string {
	if e.path != "" {
		return e.path
	}
	return cleanPath(e.Name)
}

// Index is the entry's position in the TOC.
func (e *Entry) Index() int { return e.index }

// NumLink is the number of names the entry's inode has in its layer: its
// own and those of hard links to it, less those later entries took.
func (e *Entry) NumLink() int { return max(e.nlink, 1) }

// Attributes is the entry whose owner, mode and times the entry's inode
// shows: the last hard link to it, if any, else the entry itself.
func (e *Entry) Attributes() *Entry {
	if e.attr != nil {
		return e.attr
	}
	return e
}

// DataSize is the number of data bytes the entry has in the tar, from
// Offset: its size, or for a sparse file its fragments' lengths.
func (e *Entry) DataSize() int64 {
	if e.Sparse == nil {
		return e.Size
	}
	var n int64
	for _, f := range e.Sparse {
		n += f.Length
	}
	return n
}

// Whiteout kinds, for overlay-style layers (AUFS whiteouts in the tar).
const (
	WhiteoutNone   = iota
	WhiteoutFile   // ".wh.NAME": NAME is deleted
	WhiteoutOpaque // ".wh..wh..opq": the directory hides lower layers
)

// Whiteout reports whether the entry is an AUFS whiteout and, for a file
// whiteout, the path it deletes.
func (e *Entry) Whiteout() (kind int, deleted string) {
	p := e.Path()
	dir, base := path.Split(p)
	switch {
	case base == ".wh..wh..opq":
		return WhiteoutOpaque, ""
	case strings.HasPrefix(base, ".wh.") && len(base) > len(".wh."):
		return WhiteoutFile, path.Join(dir, strings.TrimPrefix(base, ".wh."))
	}
	return WhiteoutNone, ""
}

func cleanPath(name string) string {
	if p, ok := alreadyClean(name); ok {
		return p
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// alreadyClean returns the cleaned form of the names tar writers usually
// produce ("usr/bin/x", "./usr/bin/x", "usr/lib/"), without path.Clean's
// allocations: a layer's TOC has tens of thousands of them. It reports
// false for anything path.Clean would change further.
func alreadyClean(name string) (string, bool) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || n[0] == '/' {
		return "", false
	}
	for rest := n; ; {
		el, after, more := strings.Cut(rest, "/")
		if el == "" || el == "." || el == ".." {
			return "", false
		}
		if !more {
			return n, true
		}
		rest = after
	}
}

// unsafeName reports whether a tar name is absolute or has a ".." element.
func unsafeName(name string) bool {
	if strings.HasPrefix(name, "/") {
		return true
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return true
		}
	}
	return false
}

// DecodeTOC parses a TOC frame (the bytes at toc.offset, toc.size) and checks
// it against the limits and against itself: chunks contiguous and inside
// dataSize compressed bytes, entries' data inside the tar, hard links
// resolvable. It does not check the frame's digest; callers do that first.
func DecodeTOC(frame []byte, dataSize int64, lim Limits) (*TOC, error) {
	return decodeTOC(frame, dataSize, lim, 0)
}

// decodeTOC is DecodeTOC told the size of the TOC's JSON (the footer's
// word for it, 0 when unknown), so that the JSON is decompressed into one
// buffer of that size instead of one grown by doubling: a node loads the
// TOC on a container's critical path, and the garbage of the doubling
// would add up to twice the JSON to the load's peak.
func decodeTOC(frame []byte, dataSize int64, lim Limits, jsonSize int64) (*TOC, error) {
	lim = lim.withDefaults()
	if int64(len(frame)) > lim.MaxTOCSize {
		return nil, fmt.Errorf("%w: TOC frame is %d bytes, limit %d", ErrLimitExceeded, len(frame), lim.MaxTOCSize)
	}
	payload, err := skippablePayload(skippableTOCMagic, frame)
	if err != nil {
		return nil, fmt.Errorf("TOC: %w", err)
	}
	js, err := decompressSized(payload, lim.MaxTOCUncompressedSize, jsonSize)
	if err != nil {
		return nil, fmt.Errorf("TOC: %w", err)
	}
	toc := new(TOC)
	// The entries are decoded into a slice of their number, when the JSON
	// says it as writers write it (each entry's object opening with its
	// name; quotes inside a string are escaped, so a name cannot fake
	// one): the decoder then grows nothing, which halves what a large TOC
	// costs while it loads. The count is only a hint, capped by the limit.
	if n := bytes.Count(js, []byte(`{"name":`)); n > 0 {
		toc.Entries = make([]Entry, 0, min(n, lim.MaxEntries+1))
	}
	if err := fastjson.Unmarshal(js, toc); err != nil {
		return nil, fmt.Errorf("%w: TOC JSON: %v", ErrInvalidFormat, err)
	}
	js = nil
	toc.compact()
	if err := toc.validate(dataSize, lim); err != nil {
		return nil, err
	}
	return toc, nil
}

// compact trims what decoding left around the entries, which a node holds
// for as long as the layer is mounted: the slack capacity the decoder grew
// the slice to (up to a quarter more), and one string per entry for each
// of the few types and owner names a layer repeats.
func (t *TOC) compact() {
	if n := len(t.Entries); cap(t.Entries)-n > n/16 {
		t.Entries = append(make([]Entry, 0, n), t.Entries...)
	}
	names := map[string]string{}
	intern := func(s string) string {
		if s == "" || len(s) > 32 {
			return s
		}
		if v, ok := names[s]; ok {
			return v
		}
		if len(names) < 256 {
			names[s] = s
		}
		return s
	}
	for i := range t.Entries {
		e := &t.Entries[i]
		e.Type = EntryType(intern(string(e.Type)))
		e.Uname, e.Gname = intern(e.Uname), intern(e.Gname)
	}
}

// decompressBounded decodes a zstd payload refusing more than max bytes.
func decompressBounded(payload []byte, max int64) ([]byte, error) {
	return decompressSized(payload, max, 0)
}

// decompressSized is decompressBounded into a buffer of sizeHint bytes,
// when it is positive.
func decompressSized(payload []byte, max, sizeHint int64) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(max)), zstd.WithDecoderMaxWindow(uint64(min(max, 1<<27))))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var dst []byte
	if sizeHint > 0 {
		dst = make([]byte, 0, min(sizeHint, max))
	}
	out, err := dec.DecodeAll(payload, dst)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", ErrInvalidFormat, err)
	}
	if int64(len(out)) > max {
		return nil, fmt.Errorf("%w: decompresses to more than %d bytes", ErrLimitExceeded, max)
	}
	return out, nil
}
