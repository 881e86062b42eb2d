// Package hostiletar writes the layers of hostile container images, for
// tests that compare what Sluice shows of a layer with what containerd
// unpacks from it: names that climb out of the root or are absolute,
// writes through symlinks, hard links outside the layer or to nothing,
// devices, duplicates, names of invalid UTF-8 or of 200 KiB, 20,000
// levels, 100,000 and 500,000 entries, truncated archives, a GiB of
// zeros, whiteouts naming parents, and more, from containerd's archive
// tests and the issues of containerd and its snapshotters (Cases lists
// them all). Everything is deterministic: a case writes the same bytes on
// every run.
//
// Names are written as raw bytes: where USTAR or PAX cannot carry a name
// as it is (invalid UTF-8, a number too large for octal), the header is
// written in the GNU format, and the few headers archive/tar refuses to
// write (an old-style regular file, an unknown type) are made by hand.
package hostiletar

import (
	"archive/tar"
	"fmt"
	"io"
	"iter"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Layer is one layer's uncompressed tar, written on demand: the largest
// are a GiB, or 500,000 headers.
type Layer struct {
	entries iter.Seq[Entry]
	// cutAt, when positive, ends the archive after that many bytes, as a
	// truncated upload would.
	cutAt int64
	// unterminated leaves out the two zero blocks that end an archive.
	unterminated bool
	// trailing is written after the end of the archive.
	trailing []byte
}

// Entry is one member of a layer: a header and its data.
type Entry struct {
	Header tar.Header
	Body   []byte
	// Zeros, when positive, is a body of that many zero bytes, written
	// without being held in memory (Body is then unused).
	Zeros int64
	// Raw, when set, is a header block written as it is, in place of
	// Header (Body follows it, padded to a block).
	Raw []byte
}

// modTime is the modification time of every entry.
var modTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// NewLayer is a layer of entries, in order.
func NewLayer(entries ...Entry) Layer { return Layer{entries: slices.Values(entries)} }

// WriteTo writes the layer's tar to w.
func (l Layer) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	var out io.Writer = cw
	if l.cutAt > 0 {
		out = &cutWriter{w: cw, left: l.cutAt}
	}
	tw := tar.NewWriter(out)
	var err error
	for e := range l.entries {
		if err = writeEntry(tw, out, e); err != nil {
			break
		}
	}
	if err == nil {
		if l.unterminated {
			err = tw.Flush()
		} else {
			err = tw.Close()
		}
	}
	if err == nil && len(l.trailing) > 0 {
		_, err = out.Write(l.trailing)
	}
	return cw.n, err
}

func writeEntry(tw *tar.Writer, out io.Writer, e Entry) error {
	if e.Raw != nil {
		// A hand-made header goes between two entries of the writer.
		if err := tw.Flush(); err != nil {
			return err
		}
		if _, err := out.Write(e.Raw); err != nil {
			return err
		}
		if _, err := out.Write(e.Body); err != nil {
			return err
		}
		_, err := out.Write(make([]byte, padding(int64(len(e.Body)))))
		return err
	}
	hdr := e.Header
	if err := tw.WriteHeader(&hdr); err != nil {
		return fmt.Errorf("header of %q: %w", abbreviate(e.Header.Name), err)
	}
	if e.Zeros > 0 {
		zeros := make([]byte, 1<<20)
		for left := e.Zeros; left > 0; left -= int64(len(zeros)) {
			if _, err := tw.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := tw.Write(e.Body)
	return err
}

func padding(n int64) int64 { return -n & 511 }

func abbreviate(name string) string {
	if len(name) > 80 {
		return fmt.Sprintf("%s…(%d bytes)", name[:60], len(name))
	}
	return name
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// cutWriter passes on its first left bytes and swallows the rest.
type cutWriter struct {
	w    io.Writer
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return len(p), nil
	}
	keep := p[:min(int64(len(p)), c.left)]
	n, err := c.w.Write(keep)
	c.left -= int64(n)
	if err != nil {
		return n, err
	}
	return len(p), nil
}

// opt adjusts an entry's header.
type opt func(*tar.Header)

func mode(m int64) opt { return func(h *tar.Header) { h.Mode = m } }

func owner(uid, gid int) opt { return func(h *tar.Header) { h.Uid, h.Gid = uid, gid } }

func names(user, group string) opt { return func(h *tar.Header) { h.Uname, h.Gname = user, group } }

// xattr records an extended attribute as GNU tar and containerd write
// them (a SCHILY.xattr. PAX record).
func xattr(name, value string) opt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+name] = value
		h.Format = tar.FormatPAX
	}
}

func gnu() opt { return func(h *tar.Header) { h.Format = tar.FormatGNU } }

func entry(typ byte, name string, perm int64, opts []opt) Entry {
	h := tar.Header{Typeflag: typ, Name: name, Mode: perm, ModTime: modTime}
	for _, o := range opts {
		o(&h)
	}
	// USTAR cannot carry raw bytes and PAX should carry UTF-8 only: a
	// name that is not valid UTF-8 goes in a GNU header, as GNU tar
	// writes it.
	if h.Format == tar.FormatUnknown && (!utf8.ValidString(h.Name) || !utf8.ValidString(h.Linkname)) {
		h.Format = tar.FormatGNU
	}
	return Entry{Header: h}
}

// File is a regular file holding body.
func File(name, body string, opts ...opt) Entry {
	e := entry(tar.TypeReg, name, 0o644, opts)
	e.Body, e.Header.Size = []byte(body), int64(len(body))
	return e
}

// Zeros is a regular file of size zero bytes.
func Zeros(name string, size int64) Entry {
	e := entry(tar.TypeReg, name, 0o644, nil)
	e.Zeros, e.Header.Size = size, size
	return e
}

// Dir is a directory; its name gets the trailing slash tar writes.
func Dir(name string, opts ...opt) Entry {
	if !strings.HasSuffix(name, "/") {
		name += "/"
	}
	return entry(tar.TypeDir, name, 0o755, opts)
}

// Symlink is a symbolic link to target.
func Symlink(name, target string, opts ...opt) Entry {
	e := entry(tar.TypeSymlink, name, 0o777, append([]opt{func(h *tar.Header) { h.Linkname = target }}, opts...))
	return e
}

// Hardlink is a hard link to target, a name in the archive.
func Hardlink(name, target string, opts ...opt) Entry {
	return entry(tar.TypeLink, name, 0o644, append([]opt{func(h *tar.Header) { h.Linkname = target }}, opts...))
}

// Device is a character (tar.TypeChar) or block (tar.TypeBlock) device.
func Device(typ byte, name string, major, minor int64, opts ...opt) Entry {
	return entry(typ, name, 0o660, append([]opt{func(h *tar.Header) { h.Devmajor, h.Devminor = major, minor }}, opts...))
}

// FIFO is a named pipe.
func FIFO(name string, opts ...opt) Entry { return entry(tar.TypeFifo, name, 0o600, opts) }

// RawEntry is an entry whose USTAR header is made by hand, for the
// typeflags archive/tar will not write (an old-style regular file '\x00',
// an unknown type); body follows it.
func RawEntry(typeflag byte, name string, perm int64, body string) Entry {
	var b [512]byte
	put := func(off, size int, s string) { copy(b[off:off+size], s) }
	octal := func(off, size int, v int64) { put(off, size, fmt.Sprintf("%0*o\x00", size-1, v)) }
	put(0, 100, name)
	octal(100, 8, perm)
	octal(108, 8, 0)
	octal(116, 8, 0)
	octal(124, 12, int64(len(body)))
	octal(136, 12, modTime.Unix())
	b[156] = typeflag
	put(257, 6, "ustar\x00")
	put(263, 2, "00")
	put(265, 32, "root")
	put(297, 32, "root")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	put(148, 8, fmt.Sprintf("%06o\x00 ", sum))
	return Entry{Raw: b[:], Body: []byte(body)}
}
