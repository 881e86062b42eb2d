package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

var typeOf = map[byte]EntryType{
	tar.TypeReg: TypeReg, tar.TypeDir: TypeDir, tar.TypeSymlink: TypeSymlink, tar.TypeLink: TypeHardlink,
	tar.TypeChar: TypeChar, tar.TypeBlock: TypeBlock, tar.TypeFifo: TypeFIFO, tar.TypeGNUSparse: TypeReg,
}

// checkDecompress checks that the blob is an ordinary zstd stream of
// exactly the original tar.
func checkDecompress(t *testing.T, blob []byte, tarBytes io.Reader) {
	t.Helper()
	dec, err := zstd.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	want, got := digest.SHA256.Digester(), digest.SHA256.Digester()
	if _, err := io.Copy(got.Hash(), dec); err != nil {
		t.Fatalf("decompressing the converted layer: %v", err)
	}
	io.Copy(want.Hash(), tarBytes)
	if got.Digest() != want.Digest() {
		t.Fatalf("converted layer decompresses to %s, original tar is %s", got.Digest(), want.Digest())
	}
}

// checkEntries walks the original tar and checks every entry and every
// file's content (whole, and at random offsets) through the reader.
func checkEntries(t *testing.T, r *Reader, tarStream io.Reader, seed uint64) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 1))
	tr := tar.NewReader(tarStream)
	contents := map[string][]byte{}
	entries := r.Entries()
	k := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if k >= len(entries) {
			t.Fatalf("tar has more entries than the TOC's %d", len(entries))
		}
		e := &entries[k]
		k++
		checkHeader(t, e, h)
		var want []byte
		switch e.Type {
		case TypeReg:
			want = readAll(t, tr)
			contents[e.Path()] = want
		case TypeHardlink:
			want = contents[cleanPath(h.Linkname)]
			if d := r.DataEntry(e); d.Type != TypeReg || d.NumLink() < 2 {
				t.Errorf("%q: hard link resolves to %q (%s, %d links)", e.Name, d.Name, d.Type, d.NumLink())
			}
			contents[e.Path()] = want
		default:
			continue
		}
		checkContent(t, ctx, r, e, want, rng)
	}
	if k != len(entries) {
		t.Fatalf("TOC has %d entries, tar %d", len(entries), k)
	}
}

func checkHeader(t *testing.T, e *Entry, h *tar.Header) {
	t.Helper()
	want := Entry{Name: h.Name, Type: typeOf[h.Typeflag], Mode: h.Mode & 07777, UID: h.Uid, GID: h.Gid,
		Uname: h.Uname, Gname: h.Gname, ModTime: h.ModTime.Unix(), ModTimeNsec: int64(h.ModTime.Nanosecond())}
	if want.Type == TypeReg {
		want.Size = h.Size
	}
	if want.Type == TypeSymlink || want.Type == TypeHardlink {
		want.LinkName = h.Linkname
	}
	if want.Type == TypeChar || want.Type == TypeBlock {
		want.DevMajor, want.DevMinor = h.Devmajor, h.Devminor
	}
	got := *e
	got.Xattrs, got.Offset, got.Sparse, got.Unsafe = nil, 0, nil, false
	got.index, got.target, got.nlink = 0, 0, 0
	if !equalEntry(got, want) {
		t.Errorf("entry %q:\n got  %+v\n want %+v", h.Name, got, want)
	}
	for k, v := range h.PAXRecords {
		if name, ok := cutXattr(k); ok && string(e.Xattrs[name]) != v {
			t.Errorf("%q: xattr %s = %q, want %q", h.Name, name, e.Xattrs[name], v)
		}
	}
	if unsafe := unsafeName(h.Name) || (h.Typeflag == tar.TypeLink && unsafeName(h.Linkname)); e.Unsafe != unsafe {
		t.Errorf("%q: Unsafe = %v, want %v", h.Name, e.Unsafe, unsafe)
	}
}

func cutXattr(k string) (string, bool) {
	const p = "SCHILY.xattr."
	if len(k) > len(p) && k[:len(p)] == p {
		return k[len(p):], true
	}
	return "", false
}

func equalEntry(a, b Entry) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID &&
		a.Uname == b.Uname && a.Gname == b.Gname && a.Size == b.Size && a.ModTime == b.ModTime &&
		a.ModTimeNsec == b.ModTimeNsec && a.LinkName == b.LinkName && a.DevMajor == b.DevMajor && a.DevMinor == b.DevMinor
}

// checkContent reads a file whole and at a few random offsets.
func checkContent(t *testing.T, ctx context.Context, r *Reader, e *Entry, want []byte, rng *rand.Rand) {
	t.Helper()
	got := make([]byte, len(want)+1)
	n, err := r.ReadAt(ctx, e, got, 0)
	if n != len(want) || (err != io.EOF && !(err == nil && n == len(got))) || !bytes.Equal(got[:n], want) {
		t.Fatalf("%q: ReadAt whole = %d, %v; content equal %v", e.Name, n, err, bytes.Equal(got[:n], want))
	}
	for range 3 {
		if len(want) == 0 {
			break
		}
		off := rng.IntN(len(want))
		l := rng.IntN(min(len(want)-off, 256<<10)) + 1
		p := make([]byte, l)
		if n, err := r.ReadAt(ctx, e, p, int64(off)); n != l || (err != nil && err != io.EOF) || !bytes.Equal(p, want[off:off+l]) {
			t.Fatalf("%q: ReadAt(%d, %d) = %d, %v, equal %v", e.Name, off, l, n, err, bytes.Equal(p, want[off:off+l]))
		}
	}
}

// checkLayer checks a converted layer against the tar it holds: as a zstd
// stream, entry by entry through a reader (which it returns), and whole.
func checkLayer(t *testing.T, blob []byte, res *Result, raw []byte, seed uint64) *Reader {
	t.Helper()
	checkDecompress(t, blob, bytes.NewReader(raw))
	if out, ok := zstdCLI(t, blob); ok && !bytes.Equal(out, raw) {
		t.Fatalf("zstd -d output differs from the original tar")
	}
	r, _ := openBytes(t, blob, res)
	checkEntries(t, r, bytes.NewReader(raw), seed)
	var whole bytes.Buffer
	if err := r.WriteTo(context.Background(), &whole); err != nil || !bytes.Equal(whole.Bytes(), raw) {
		t.Fatalf("WriteTo: %v, equal %v", err, bytes.Equal(whole.Bytes(), raw))
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	layers := map[string][]testEntry{
		"every-entry-type": everyEntryType(),
		"many-small-files": manySmallFiles(300),
		"empty":            nil,
	}
	for name, entries := range layers {
		raw := buildTar(t, entries)
		for _, comp := range []Compression{CompressionNone, CompressionGzip, CompressionZstd} {
			for _, opts := range []Options{{}, smallOpts} {
				t.Run(name+"/"+string(comp), func(t *testing.T) {
					blob, res := convertBytes(t, compress(t, comp, raw), opts)
					if res.SourceCompression != comp || res.DiffID != digest.FromBytes(raw) || res.UncompressedSize != int64(len(raw)) {
						t.Fatalf("result %+v: want compression %s, DiffID %s", res, comp, digest.FromBytes(raw))
					}
					if res.Digest != digest.FromBytes(blob) {
						t.Fatalf("result digest %s, blob is %s", res.Digest, digest.FromBytes(blob))
					}
					checkLayer(t, blob, res, raw, 1)
				})
			}
		}
	}
}

func TestEntryDetails(t *testing.T) {
	raw := buildTar(t, everyEntryType())
	blob, res := convertBytes(t, raw, smallOpts)
	r, _ := openBytes(t, blob, res)
	if len(res.UnsafeNames) != 3 {
		t.Errorf("UnsafeNames = %q, want the three escaping names", res.UnsafeNames)
	}
	tests := []struct {
		name     string
		check    func(e *Entry) bool
		describe string
	}{
		{"usr/bin/ping", func(e *Entry) bool { return len(e.Xattrs["security.capability"]) == 20 }, "security.capability kept"},
		{"./usr/bin/4k-link2", func(e *Entry) bool { return r.DataEntry(e).Name == "usr/bin/4k" && r.DataEntry(e).NumLink() == 3 }, "hard link chain resolved"},
		{"etc/.wh.hostname", func(e *Entry) bool { k, p := e.Whiteout(); return k == WhiteoutFile && p == "etc/hostname" }, "file whiteout"},
		{"var/.wh..wh..opq", func(e *Entry) bool { k, _ := e.Whiteout(); return k == WhiteoutOpaque }, "opaque whiteout"},
		{"times/old", func(e *Entry) bool { return e.ModTime == -1000000000 }, "negative mtime"},
		{"times/nanos", func(e *Entry) bool { return e.ModTimeNsec == 123456789 }, "nanosecond mtime"},
		{"dev/sda", func(e *Entry) bool { return e.Type == TypeBlock && e.DevMajor == 8 }, "block device"},
		{"escape", func(e *Entry) bool { return e.Unsafe && e.Name == "../escape" }, "escaping name flagged, clamped"},
		{"/abs/path", func(e *Entry) bool { return e.Unsafe }, "absolute name flagged"},
		{"link-out", func(e *Entry) bool { return e.Unsafe }, "hard link to an escaping name flagged"},
		{"dup", func(e *Entry) bool { return e.Mode == 0600 }, "last duplicate wins"},
		{".", func(e *Entry) bool { return e.Type == TypeDir }, "root directory"},
	}
	for _, tt := range tests {
		t.Run(tt.describe, func(t *testing.T) {
			e, err := r.Lookup(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(e) {
				t.Errorf("%q: %s: got %+v", tt.name, tt.describe, *e)
			}
		})
	}
	if _, err := r.Lookup("no/such/file"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a missing name: %v, want ErrNotFound", err)
	}
}
