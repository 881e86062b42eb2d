package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// rawTar writes entries in the GNU format, which keeps names as bytes
// (PAX records must be UTF-8).
func rawTar(t *testing.T, entries []testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if h.PAXRecords == nil {
			h.Format = tar.FormatGNU
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing header %q: %v", h.Name, err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	return buf.Bytes()
}

// placedTree lists what each path of a layer shows once placed: the
// entry's type and name (a hard link shows its target), "whiteout",
// "dir*" for a directory the tar does not list, and "opaque" on an opaque
// directory's path.
func placedTree(t *testing.T, r *Reader) map[string]string {
	t.Helper()
	dirPath := map[uint32]string{0: ""}
	tree := map[string]string{}
	join := func(dir uint32, name string) string {
		p, ok := dirPath[dir]
		if !ok {
			t.Fatalf("directory %d used before it is placed", dir)
		}
		if p == "" {
			return name
		}
		return p + "/" + name
	}
	// Replacing a directory hides everything below it.
	remove := func(p string) {
		for k := range tree {
			if k == p || strings.HasPrefix(k, p+"/") {
				delete(tree, k)
			}
		}
	}
	entries := r.Entries()
	implicit := r.ImplicitDirs()
	next := 0
	for i := range entries {
		for ; next < len(implicit) && implicit[next].Entry <= i; next++ {
			d := implicit[next]
			p := join(d.Parent, d.Name)
			dirPath[d.Dir] = p
			tree[p] = "dir*"
		}
		e := &entries[i]
		pl := e.Placement()
		name := e.Path()[strings.LastIndexByte(e.Path(), '/')+1:]
		switch pl.Kind {
		case PlaceNone:
		case PlaceOpaque:
			tree[dirPath[pl.Parent]+" opaque"] = "opaque"
		case PlaceWhiteout:
			p := join(pl.Parent, strings.TrimPrefix(name, whiteoutPrefix))
			remove(p)
			tree[p] = "whiteout"
		case PlaceMerge:
			p := dirPath[pl.Dir]
			tree[p] = "dir " + e.Name
		case PlaceName:
			p := join(pl.Parent, name)
			remove(p)
			d := r.DataEntry(e)
			tree[p] = string(d.Type) + " " + d.Name
			if e.Type == TypeDir {
				dirPath[pl.Dir] = p
			}
		}
	}
	return tree
}

func dir(name string) testEntry {
	return testEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}
func file(name, data string) testEntry {
	return testEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte(data)}
}
func symlink(name, target string) testEntry {
	return testEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}
func hardlink(name, target string) testEntry {
	return testEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// TestPlacementAsContainerdUnpacks checks that entries land where
// containerd's archive.Apply puts them, names escaping the root and paths
// through the layer's own symbolic links included.
func TestPlacementAsContainerdUnpacks(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries []testEntry
		want    map[string]string
	}{
		{"traversal and absolute names land inside the root",
			[]testEntry{file("../../../../etc/sluice-pwned", "a"), file("/etc/abs", "b"), file("./rel", "c")},
			map[string]string{"etc": "dir*", "etc/sluice-pwned": "reg ../../../../etc/sluice-pwned", "etc/abs": "reg /etc/abs", "rel": "reg ./rel"}},
		{"a write through the layer's symbolic link lands at its target",
			[]testEntry{symlink("evil", "/etc"), file("evil/sluice-pwned", "x")},
			map[string]string{"evil": "symlink evil", "etc": "dir*", "etc/sluice-pwned": "reg evil/sluice-pwned"}},
		{"relative links stop at the root",
			[]testEntry{dir("a/"), symlink("a/up", "../../.."), file("a/up/x", "x"), symlink("a/chain", "up"), file("a/chain/y", "y")},
			map[string]string{"a": "dir a/", "a/up": "symlink a/up", "a/chain": "symlink a/chain", "x": "reg a/up/x", "y": "reg a/chain/y"}},
		{"a hard link above the root names the file inside it",
			[]testEntry{file("etc/shadow", "s"), hardlink("stolen", "../../../../etc/shadow"), hardlink("sym-link", "etc/shadow")},
			map[string]string{"etc": "dir*", "etc/shadow": "reg etc/shadow", "stolen": "reg etc/shadow", "sym-link": "reg etc/shadow"}},
		{"a hard link names the file its path holds then",
			[]testEntry{file("f", "v1"), hardlink("l", "f"), file("f", "v2"), symlink("s", "f"), hardlink("s2", "s")},
			map[string]string{"f": "reg f", "l": "reg f", "s": "symlink s", "s2": "symlink s"}},
		{"a file replaces a directory and all below it",
			[]testEntry{dir("a/"), file("a/b", "b"), file("a", "file"), dir("c/"), file("c/d", "d"), dir("c/")},
			map[string]string{"a": "reg a", "c": "dir c/", "c/d": "reg c/d"}},
		{"a directory replaces a file; a symbolic link replaces a directory",
			[]testEntry{file("b", "x"), dir("b/"), file("b/in", "i"), dir("d/"), symlink("d", "b"), file("d/via", "v")},
			map[string]string{"b": "dir b/", "b/in": "reg b/in", "b/via": "reg d/via", "d": "symlink d"}},
		{"whiteouts, in a directory and above the root",
			[]testEntry{file("var/.wh.gone", ""), file("var/cache/.wh..wh..opq", ""), file("../.wh.etc", ""), file(".wh.x", ""), file("x", "back")},
			map[string]string{"var": "dir*", "var/gone": "whiteout", "var/cache": "dir*", "var/cache opaque": "opaque", "etc": "whiteout", "x": "reg x"}},
		{"the root itself is not a name",
			[]testEntry{dir("./"), dir("/"), dir(".."), file("a/..", ""), file("f", "f")},
			map[string]string{"f": "reg f"}},
		{"names are bytes",
			[]testEntry{file("dup-\xff", "ff"), file("dup-\xfe", "fe"), symlink("l-\xfd", "t-\xfc"), file("dir-\xfb/f", "")},
			map[string]string{"dup-\xff": "reg dup-\xff", "dup-\xfe": "reg dup-\xfe", "l-\xfd": "symlink l-\xfd", "dir-\xfb": "dir*", "dir-\xfb/f": "reg dir-\xfb/f"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			blob, res := convertBytes(t, rawTar(t, tt.entries), Options{})
			r, _ := openBytes(t, blob, res)
			got := placedTree(t, r)
			if !maps.Equal(got, tt.want) {
				t.Errorf("tree:\n%s\nwant:\n%s", showTree(got), showTree(tt.want))
			}
		})
	}
}

func showTree(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\t%q: %s\n", k, m[k])
	}
	return b.String()
}

// TestUnpackRefusals checks that what containerd's unpack refuses, the
// converter refuses, naming the entry and why.
func TestUnpackRefusals(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries []testEntry
		want    string
	}{
		{"hard link to a missing file", []testEntry{hardlink("l", "nothing")}, `hard link to "nothing", which the layer does not hold`},
		{"hard link above the root to a missing file", []testEntry{hardlink("l", "../../../../etc/shadow")}, `hard link to "../../../../etc/shadow", which the layer does not hold`},
		{"hard link to a directory", []testEntry{dir("d/"), hardlink("l", "d")}, `hard link to "d", a directory`},
		{"hard link to itself", []testEntry{hardlink("l", "l")}, `which the layer does not hold`},
		{"hard link to a whiteout's name", []testEntry{file("etc/.wh.passwd", ""), hardlink("etc/passwd-", "etc/.wh.passwd")}, `which the layer does not hold`},
		{"whiteout naming nothing", []testEntry{file("a/.wh.", "")}, `invalid whiteout name ".wh."`},
		{"whiteout naming its parent", []testEntry{file("a/.wh..", "")}, `invalid whiteout name ".wh.."`},
		{"whiteout of a name the layer holds", []testEntry{file("a", "x"), file(".wh.a", "")}, `whiteout ".wh.a" of a name the layer already holds`},
		{"a file as a directory", []testEntry{file("f", "x"), file("f/g", "y")}, `"f" is not a directory`},
		{"a file as a directory deeper", []testEntry{file("f", "x"), file("f/g/h", "y")}, `"f" is not a directory`},
		{"a symbolic link loop", []testEntry{symlink("a", "a"), file("a/x", "")}, "more than 255 symbolic links"},
		{"a symbolic link to a file as a directory", []testEntry{file("f", ""), symlink("s", "f"), file("s/x", "")}, `is not a directory`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Convert(context.Background(), bytes.NewReader(rawTar(t, tt.entries)), &bytes.Buffer{}, Options{})
			if !errors.Is(err, ErrUnsupportedInput) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "containerd's unpack refuses it too") {
				t.Fatalf("Convert: %v, want %v naming %q", err, ErrUnsupportedInput, tt.want)
			}
		})
	}
}

// TestRawNamesRoundTrip checks that names which are not UTF-8 survive the
// TOC's JSON whole, and that a TOC carrying a UTF-8 name as raw is refused.
func TestRawNamesRoundTrip(t *testing.T) {
	entries := []testEntry{
		{hdr: tar.Header{Name: "x-\xff", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.\xfe": "v"}}, data: []byte("ff")},
		file("x-\xfe", "fe"),
		symlink("s", "target-\xfd"),
		hardlink("h-\xfc", "x-\xff"),
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		h.Format = tar.FormatGNU
		if h.PAXRecords != nil {
			// Go writes PAX records only as UTF-8: write this header by
			// hand as a PAX one with a raw key.
			writeRawPAX(t, &buf, h, e.data)
			continue
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
		tw.Flush()
	}
	tw.Close()
	blob, res := convertBytes(t, buf.Bytes(), Options{})
	r, _ := openBytes(t, blob, res)
	got := r.Entries()
	if len(got) != 4 || got[0].Name != "x-\xff" || got[1].Name != "x-\xfe" || got[2].LinkName != "target-\xfd" || got[3].Name != "h-\xfc" || got[3].LinkName != "x-\xff" {
		t.Fatalf("entries after the round trip: %q %q %q %q", got[0].Name, got[1].Name, got[2].LinkName, got[3].Name)
	}
	if v, ok := got[0].Xattrs["user.\xfe"]; !ok || string(v) != "v" {
		t.Fatalf("xattrs after the round trip: %q", got[0].Xattrs)
	}
	if r.DataEntry(&got[3]) != &got[0] {
		t.Fatal("the hard link with a raw target does not name its file")
	}
	for i := range got {
		if got[i].Raw != nil {
			t.Fatalf("entry %d keeps its raw names after decoding", i)
		}
	}

	bad := Entry{Name: "ok", Type: TypeReg, Raw: &RawNames{Name: []byte("utf8")}}
	if err := bad.restoreRaw(); !errors.Is(err, ErrInvalidFormat) {
		t.Fatalf("a UTF-8 raw name: %v, want %v", err, ErrInvalidFormat)
	}
}

// writeRawPAX writes a PAX extended header with the records as given
// (keys may be any bytes), then the entry's own header and data.
func writeRawPAX(t *testing.T, buf *bytes.Buffer, h tar.Header, data []byte) {
	t.Helper()
	var recs bytes.Buffer
	for k, v := range h.PAXRecords {
		body := " " + k + "=" + v + "\n"
		n := len(body)
		for size := len(fmt.Sprint(n)) + n; ; size++ {
			if len(fmt.Sprint(size))+n == size {
				n = size
				break
			}
		}
		fmt.Fprintf(&recs, "%d%s", n, body)
	}
	block := func(name string, typ byte, size int) {
		var b [512]byte
		copy(b[0:], name)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		var sum int
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		buf.Write(b[:])
	}
	pad := func(n int) { buf.Write(make([]byte, (512-n%512)%512)) }
	block("PaxHeader", tar.TypeXHeader, recs.Len())
	buf.Write(recs.Bytes())
	pad(recs.Len())
	block(h.Name, tar.TypeReg, len(data))
	buf.Write(data)
	pad(len(data))
}

// BenchmarkPlace measures the converter's placer on a distribution-like
// layer: 200 files per directory.
func BenchmarkPlace(b *testing.B) {
	const n = 100_000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{Name: fmt.Sprintf("usr/share/pkg-%05d/doc/file-%04d.txt", i/200, i%200), Type: TypeReg}
	}
	b.ReportAllocs()
	for b.Loop() {
		c := newUnpackCheck(linkBytes(DefaultMemoryBudget))
		for i := range entries {
			if err := c.add(i, &entries[i], DefaultLimits); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
}

// TestPlacerBounds checks the two bounds of the unpack check's memory:
// the directories a layer implies and the symbolic link targets it keeps.
func TestPlacerBounds(t *testing.T) {
	var deep []testEntry
	for i := range 100 {
		deep = append(deep, file(fmt.Sprintf("a%d/b/c/d/e/f/g/h/i/j/k/l/m/f", i), ""))
	}
	_, err := Convert(context.Background(), bytes.NewReader(rawTar(t, deep)), &bytes.Buffer{}, Options{Limits: Limits{MaxEntries: 100}})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitEntries || !strings.Contains(err.Error(), "directories they imply") {
		t.Fatalf("a layer implying more directories than its entry limit allows: %v", err)
	}

	target := strings.Repeat("t/", 2000)
	var links []testEntry
	for i := range int(linkBytes(DefaultMemoryBudget))/len(target) + 1 {
		links = append(links, symlink(fmt.Sprintf("l%d", i), target))
	}
	_, err = Convert(context.Background(), bytes.NewReader(rawTar(t, links)), &bytes.Buffer{}, Options{})
	if !errors.As(err, &le) || le.Limit != LimitConversionMemory || !strings.Contains(err.Error(), "symbolic link targets") {
		t.Fatalf("a layer of %d MiB of symbolic link targets: %v", linkBytes(DefaultMemoryBudget)>>20, err)
	}
}

// TestUnpackRefusesDirectoriesGoneAtTheEnd: containerd's unpack sets the
// times of every directory a header listed, by path, once the tar is read,
// and fails on one a later entry removed by replacing a directory above
// it. The node refuses such a TOC (it falls back to a download, which
// fails as containerd's does).
func TestUnpackRefusesDirectoriesGoneAtTheEnd(t *testing.T) {
	blob, res := convertBytes(t, rawTar(t, []testEntry{dir("z/"), dir("z/b/"), file("z", "file")}), Options{})
	_, err := Open(context.Background(), ReaderAtRanges(bytes.NewReader(blob)), int64(len(blob)), WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize))
	if !errors.Is(err, ErrInvalidFormat) || !strings.Contains(err.Error(), `directory "z/b/" is gone`) {
		t.Fatalf("Open: %v", err)
	}
	// The directory itself replaced, or its path made again: fine.
	for _, ok := range [][]testEntry{
		{dir("z/"), file("z", "file")},
		{dir("z/"), dir("z/b/"), file("z", "file"), dir("z/"), dir("z/b/")},
	} {
		blob, res := convertBytes(t, rawTar(t, ok), Options{})
		openBytes(t, blob, res)
	}
}

// TestNamesCountAndLinkAttributes checks the link count of an inode whose
// first name a later entry took, and that a hard link's header gives the
// inode it shares its owner and mode, as containerd's unpack does.
func TestNamesCountAndLinkAttributes(t *testing.T) {
	a := file("a", "v1")
	a.hdr.Uid, a.hdr.Mode = 7, 0o600
	l := hardlink("b", "a")
	l.hdr.Uid, l.hdr.Mode = 0, 0o644
	blob, res := convertBytes(t, rawTar(t, []testEntry{a, l, file("a", "v2"), file("empty-name-is-the-root", "")}), Options{})
	r, _ := openBytes(t, blob, res)
	e := r.Entries()
	if first := &e[0]; first.NumLink() != 1 || first.Attributes().UID != 0 || first.Attributes().Mode != 0o644 {
		t.Fatalf("the first a, named b only: nlink %d, attributes uid %d mode %o", first.NumLink(), first.Attributes().UID, first.Attributes().Mode)
	}
	if e[2].NumLink() != 1 || e[2].Attributes() != &e[2] {
		t.Fatalf("the second a: nlink %d", e[2].NumLink())
	}
}

// TestEmptyNameAndContiguousFiles: containerd's unpack takes an empty name
// for the root (and ignores it) and refuses tar type '7'.
func TestEmptyNameAndContiguousFiles(t *testing.T) {
	if _, err := Convert(context.Background(), bytes.NewReader(rawTar(t, []testEntry{symlink("", "x"), file("f", "f")})), &bytes.Buffer{}, Options{}); err != nil {
		t.Fatalf("Convert of an entry with an empty name: %v", err)
	}
	cont := file("c", "contiguous")
	cont.hdr.Typeflag = tar.TypeCont
	if _, err := Convert(context.Background(), bytes.NewReader(rawTar(t, []testEntry{cont})), &bytes.Buffer{}, Options{}); !errors.Is(err, ErrUnsupportedInput) {
		t.Fatalf("Convert of a contiguous file: %v", err)
	}
}

// FuzzPlacers replays a sequence of entries, drawn from names that
// collide, escape and pass through links, with the node's placer (names
// as keys) and the converter's (hashed names): both must agree on every
// placement and on whether the layer is refused, and neither may panic.
func FuzzPlacers(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{9, 2, 17, 33, 12, 4, 40, 1, 66, 5})
	f.Add([]byte{3, 3, 3, 35, 67, 99, 131, 8})
	names := []string{"a", "b", "a/b", "../a", "/x", "l", "l/x", ".wh.a", "a/.wh..wh..opq", "..", ".", "a/b/c", "l/../b", "x/y", ".wh..", "", "b/.wh.c"}
	types := []EntryType{TypeReg, TypeDir, TypeSymlink, TypeHardlink}
	targets := []string{"a", "/x", "..", "l", "a/b", "../../b", "missing", "x/y/.."}
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []Entry
		for i := 0; i+1 < len(data) && len(entries) < 64; i += 2 {
			e := Entry{Name: names[int(data[i])%len(names)], Type: types[int(data[i+1])%len(types)]}
			if e.Type == TypeSymlink || e.Type == TypeHardlink {
				e.LinkName = targets[int(data[i+1]>>2)%len(targets)]
			}
			entries = append(entries, e)
		}
		byNames := newPlacer(byName, func(i int32) string { return entries[i].LinkName }, len(entries))
		check := newUnpackCheck(linkBytes(DefaultMemoryBudget))
		for i := range entries {
			e := &entries[i]
			pl, target, err := byNames.place(i, e)
			if e.Type == TypeSymlink {
				check.links[int32(i)] = e.LinkName
			}
			pl2, target2, err2 := check.p.place(i, e)
			if (err == nil) != (err2 == nil) || pl != pl2 || target != target2 {
				t.Fatalf("entry %d %s %q: the node's placer says %+v %d %v, the converter's %+v %d %v", i, e.Type, e.Name, pl, target, err, pl2, target2, err2)
			}
			if err != nil {
				return
			}
		}
	})
}
