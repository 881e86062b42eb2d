package hostiletar

import (
	"archive/tar"
	"fmt"
	"iter"
	"slices"
	"strings"
)

// Case is one hostile image: its layers, bottom first. The first is
// always Base(Name), an ordinary root the layers above try to climb out
// of, write through, overwrite or white out.
type Case struct {
	// Name is short and unique, usable as a tag.
	Name string
	// About says what the case tries.
	About  string
	Layers []Layer
	// Large marks the cases that write hundreds of MiB of tar or hundreds
	// of thousands of entries: they take a minute, not seconds.
	Large bool
	// Long marks the cases that take several minutes to unpack and walk
	// (500,000 entries): a test runs them when asked to.
	Long bool
}

// Escapes are the host paths a case that climbed out of the root would
// write: none may exist after a case ran.
var Escapes = []string{"/etc/sluice-pwned", "/sluice-pwned", "/tmp/sluice-pwned", "/etc/shadow-sluice-pwned"}

// Base is the first layer of every case. It holds the case's name, so
// that no two cases share a layer.
func Base(caseName string) Layer {
	return NewLayer(
		File(".case", caseName+"\n"),
		Dir("etc"),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		File("etc/group", "root:x:0:\n"),
		File("etc/hosts", "127.0.0.1 localhost\n"),
		File("etc/shadow", "root:*:19000:0:99999:7:::\n", mode(0o640), owner(0, 42)),
		Dir("victim", mode(0o700), owner(1000, 1000), xattr("user.victim", "base")),
		File("victim/keep", "keep\n"),
		File("victim/gone", "gone\n"),
		Dir("usr"),
		Dir("usr/lib"),
		File("usr/lib/os-release", "ID=sluice\n"),
		Symlink("lib", "usr/lib"),
	)
}

// capNetBindService is a security.capability value (VFS_CAP_REVISION_2,
// effective) granting CAP_NET_BIND_SERVICE.
const capNetBindService = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// Cases returns the corpus, in a fixed order.
func Cases() []Case {
	var cases []Case
	add := func(name, about string, layers ...Layer) {
		cases = append(cases, Case{Name: name, About: about, Layers: append([]Layer{Base(name)}, layers...)})
	}
	one := func(name, about string, entries ...Entry) { add(name, about, NewLayer(entries...)) }

	// Names that climb out of the root, or start at /.
	one("traversal-dotdot", "a file named ../../../../etc/sluice-pwned",
		File("../../../../etc/sluice-pwned", "pwned\n"))
	one("traversal-absolute", "absolute names: /etc/sluice-pwned, a directory /abs and a file in it",
		File("/etc/sluice-pwned", "pwned\n"), Dir("/abs"), File("/abs/f", "abs\n"))
	one("traversal-dotdot-inside", "names with .. and . that stay inside the root",
		File("etc/../etc/sluice-inside", "inside\n"), File("a/b/../../c", "c\n"), Dir("x/./y"))

	// Symlinks, and writes through them.
	one("symlink-absolute-write-through", "symlink evil -> /etc, then the file evil/sluice-pwned",
		Symlink("evil", "/etc"), File("evil/sluice-pwned", "pwned\n"))
	one("symlink-relative-escape", "symlink up -> ../../.., then the file up/etc/sluice-pwned",
		Symlink("up", "../../.."), File("up/etc/sluice-pwned", "pwned\n"))
	one("symlink-inside-write-through", "symlink lib2 -> usr/lib of this layer, then lib2/written-through",
		Dir("usr"), Dir("usr/lib"), Symlink("lib2", "usr/lib"), File("lib2/written-through", "through\n"))
	one("symlink-lower-write-through", "lib/through-lower, where lib is the base layer's symlink to usr/lib",
		File("lib/through-lower", "through\n"))
	one("symlink-chain", "dummy/etc -> /etc, localetc -> ./dummy/etc, then localetc/unbroken",
		Dir("dummy"), Symlink("dummy/etc", "/etc"), Symlink("localetc", "./dummy/etc"), File("localetc/unbroken", "unbroken\n"))
	one("symlink-truncate-through", "localetc -> /etc, then an empty localetc/hosts",
		Symlink("localetc", "/etc"), File("localetc/hosts", ""))
	one("symlink-override-path", "foo/tmp/breakout, foo replaced by a symlink to /, written again through it, then foo a directory again",
		Dir("foo"), Dir("foo/tmp"), File("foo/tmp/breakout", "012"), Symlink("foo", "/"), File("foo/tmp/breakout", "345"),
		Dir("foo"), Dir("foo/tmp"), File("foo/tmp/breakout", "678"))
	one("symlink-loop-parent", "a -> a, then a/x",
		Symlink("a", "a"), File("a/x", "x\n"))
	one("symlink-named-dotdot", "a symlink named .. -> /etc/, then a hard link through it",
		Dir("etc"), File("etc/passwd", "inside\n"), Symlink("..", "/etc/"), Hardlink("localpasswd", "/etc/passwd"))
	one("symlink-empty-name", "a symlink with an empty name -> /etc/",
		Dir("etc"), File("etc/passwd", "inside\n"), Symlink("", "/etc/"), Hardlink("localpasswd", "/etc/passwd"))
	one("symlink-name-with-dotdot", "a symlink named localetc/sub/.. -> /etc/, then localetc/localpasswd",
		Dir("etc"), File("etc/passwd", "inside\n"), Symlink("localetc/sub/..", "/etc/"), Hardlink("localetc/localpasswd", "/etc/passwd"))
	add("dir-over-lower-symlink", "layer 2 has the symlink localetc -> etc; layer 3 a directory localetc with a file",
		NewLayer(Symlink("localetc", "etc")),
		NewLayer(Dir("localetc"), File("localetc/passwd", "different\n")))
	one("symlink-long-target", "a symlink whose target is 4,000 bytes",
		Symlink("long", strings.Repeat("t/", 2000)))
	one("symlink-target-over-path-max", "a symlink whose target is 5,000 bytes, more than PATH_MAX",
		Symlink("longer", strings.Repeat("t/", 2500)))

	// Hard links.
	one("hardlink-in-layer", "a file and three hard links to it, one named with ./",
		Dir("data"), File("data/orig", "shared\n", mode(0o600), owner(7, 8)), Hardlink("data/link1", "data/orig"),
		Hardlink("other/link2", "data/orig"), Hardlink("./data/link3", "./data/orig"))
	one("hardlink-dotdot-in-layer", "a hard link to ../../../../etc/shadow, a file of this layer",
		Dir("etc"), File("etc/shadow", "layer shadow\n", mode(0o600)), Hardlink("shadow-link", "../../../../etc/shadow"))
	one("hardlink-absolute-in-layer", "a hard link to /etc/passwd, a file of this layer",
		Dir("etc"), File("etc/passwd", "inside\n"), Hardlink("localpasswd", "/etc/passwd"))
	one("hardlink-to-lower-layer", "a hard link to etc/shadow, which only the base layer holds",
		Hardlink("shadow-link", "etc/shadow"))
	one("hardlink-escape", "a hard link to ../../../../etc/shadow, which this layer does not hold",
		Hardlink("shadow-link", "../../../../etc/shadow"))
	one("hardlink-missing", "a hard link to a name no layer holds",
		Hardlink("ghost", "no/such/file"))
	one("hardlink-to-symlink", "a hard link to a symlink",
		Symlink("s", "victim/keep"), Hardlink("s2", "s"))
	one("hardlink-to-dir", "a hard link to a directory",
		Dir("d"), Hardlink("d2", "d"))
	one("hardlink-to-self", "a hard link to its own name",
		Hardlink("self", "self"))
	one("hardlink-chain", "a hard link to a hard link",
		File("h0", "h\n"), Hardlink("h1", "h0"), Hardlink("h2", "h1"))
	one("hardlink-before-target", "localpasswd -> /etc/passwd, a hard link to that symlink, then /etc/passwd",
		Dir("etc"), Symlink("localpasswd", "/etc/passwd"), Hardlink("localpasswd-dup", "localpasswd"), File("etc/passwd", "after\n"))
	one("hardlink-through-symlink", "localetc -> /etc, then a hard link to /localetc/passwd",
		Dir("etc"), File("etc/passwd", "inside\n"), Symlink("localetc", "/etc"), Hardlink("localpasswd", "/localetc/passwd"))
	one("hardlink-target-replaced", "a, a hard link b to a, then a again with other content",
		File("a", "first\n"), Hardlink("b", "a"), File("a", "second\n"))

	// Devices.
	one("devices", "character and block devices (the largest Linux numbers too) and a FIFO",
		Dir("dev"), Device(tar.TypeChar, "dev/null", 1, 3, mode(0o666)), Device(tar.TypeBlock, "dev/loop0", 7, 0),
		FIFO("dev/fifo"), Device(tar.TypeChar, "dev/largest", 4095, 1048575), Device(tar.TypeBlock, "dev/setuid", 8, 1, mode(0o4660)))
	one("device-whiteout-lookalike", "a character device 0/0 named etc/hosts, which overlayfs reads as a whiteout",
		Dir("etc"), Device(tar.TypeChar, "etc/hosts", 0, 0))

	// Duplicates.
	one("dup-file-twice", "the same file twice, with other content and mode",
		File("dup", "first\n"), File("dup", "second\n", mode(0o600)))
	one("dup-dir-then-file", "a directory, then a file of the same name",
		Dir("x"), File("x", "now a file\n"))
	one("dup-file-then-dir", "a file, then a directory of the same name and a file in it",
		File("y", "a file first\n"), Dir("y"), File("y/child", "child\n"))
	one("dup-dir-replaced-after-children", "a directory and its children, then a file of its name",
		Dir("z"), File("z/a", "a\n"), Dir("z/b"), File("z/b/c", "c\n"), File("z", "replaced\n"))
	one("dup-dir-attrs", "a directory twice, the second with another mode and owner",
		Dir("m"), File("m/f", "f\n"), Dir("m", mode(0o700), owner(7, 7)))
	one("dup-symlink-then-file", "a symlink to /etc/passwd, then a file of its name",
		Symlink("s", "/etc/passwd"), File("s", "replaces the link\n"))
	one("dup-lower-dir-as-file", "a file named as the base layer's directory victim",
		File("victim", "victim is a file now\n"))
	one("dup-ff-fe", "files named dup-\\xff and dup-\\xfe, different bytes that one replacement character would merge",
		File("dup-\xff", "ff\n"), File("dup-\xfe", "fe\n"))
	one("slash-mismatch", "a file named with a trailing slash, a directory named without one",
		RawEntry(tar.TypeReg, "notadir/", 0o644, "a file\n"), entry(tar.TypeDir, "plaindir", 0o755, nil), File("plaindir/f", "f\n"))
	one("file-then-child", "a file, then a file under it as if it were a directory",
		File("f", "a file\n"), File("f/child", "under a file\n"))

	// Names.
	one("invalid-utf8", "names and a link target that are not UTF-8",
		File("bad-\xff", "ff\n"), File("bad-\xc3\x28", "c328\n"), Dir("dir-\xfe"), File("dir-\xfe/f-\x80", "80\n"),
		Symlink("link-\xff", "target-\xfe"), File("surrogate-\xed\xa0\x80", "d800\n"), File("overlong-\xc0\xaf", "slash\n"))
	one("odd-names", "a newline, a backslash, spaces, a tab, a control character, é composed and decomposed",
		File("new\nline", "1\n"), File("back\\slash", "2\n"), File(" space ", "3\n"), File("-dash", "4\n"),
		File("col:on", "5\n"), File("caf\u00e9", "6\n"), File("cafe\u0301", "7\n"), File("tab\tname", "8\n"), File("\x01ctl", "9\n"))
	one("dot-slash-prefix", "names with ./, .// and // in them",
		File("./a", "a\n"), Dir("./b/"), File("./b/c", "c\n"), File(".//d", "d\n"), File("b//e", "e\n"), File("./b/./f", "f\n"))
	one("root-entry", "the root listed as ./ with mode 0700, owner 5:6 and an xattr, then a file",
		entry(tar.TypeDir, "./", 0o700, []opt{owner(5, 6), xattr("user.root", "1")}), File("after-root", "r\n"))
	one("root-entry-dot", "the root listed as . with mode 0750",
		entry(tar.TypeDir, ".", 0o750, nil), File("after-dot", "d\n"))
	one("name-element-300", "a name of one 300-byte element, over NAME_MAX",
		File(strings.Repeat("e", 300), "long\n"))
	one("name-200k", "a name of 200 KiB (800 elements of 255 bytes)",
		File(strings.Repeat(strings.Repeat("n", 255)+"/", 800)+"f", "deep\n"))
	one("deep-500", "a file 500 directories deep",
		File(strings.Repeat("d/", 500)+"f", "deep\n"))
	one("deep-2040", "a file 2,040 directories deep: 4,081 bytes of name, under PATH_MAX alone but not below any directory of a host",
		File(strings.Repeat("d/", 2040)+"f", "deep\n"))
	one("deep-20000", "a file 20,000 directories deep",
		File(strings.Repeat("d/", 20000)+"f", "deep\n"))

	// Whiteouts.
	add("whiteout-invalid-utf8", "cfg-\\xff and cfg-\\xfe in layer 2, the whiteout .wh.cfg-\\xff in layer 3: only cfg-\\xfe stays",
		NewLayer(File("cfg-\xff", "ff\n"), File("cfg-\xfe", "fe\n")),
		NewLayer(File(".wh.cfg-\xff", "")))
	one("whiteout-dotdot-parent", "the whiteout ../.wh.etc",
		File("../.wh.etc", ""))
	one("whiteout-dotdot", "the whiteout .wh.., naming the root's parent",
		File(".wh..", ""))
	one("whiteout-empty", "the whiteout .wh. alone, naming nothing",
		File(".wh.", ""))
	one("whiteout-parent-of-dir", "etc/.wh..., naming etc's parent",
		File("etc/.wh...", ""))
	one("whiteout-current-dir", "etc/.wh.., naming etc itself",
		File("etc/.wh..", ""))
	one("whiteout-opaque", "etc made opaque, then a new etc/group",
		File("etc/.wh..wh..opq", ""), File("etc/group", "new group\n"))
	one("whiteout-opaque-out-of-order", "etc/newfile, then etc made opaque",
		File("etc/newfile", "new\n"), File("etc/.wh..wh..opq", ""))
	one("whiteout-opaque-root", "the root made opaque, then a file",
		File(".wh..wh..opq", ""), File("only", "after an opaque root\n"))
	one("whiteout-opaque-implicit-parent", "victim/.wh..wh..opq with no entry for victim, which the base has (0700, 1000:1000, an xattr)",
		File("victim/.wh..wh..opq", ""))
	one("whiteout-dir-name", "a directory named .wh.etc holding a file",
		File(".wh.etc/somefile", "non-empty\n"))
	one("whiteout-through-lower-symlink", "lib/.wh.os-release, where lib is the base layer's symlink to usr/lib",
		File("lib/.wh.os-release", ""))
	one("whiteout-directory", "the whiteout .wh.victim, of the base's directory and its files",
		File(".wh.victim", ""))
	one("whiteout-then-recreate-dir", "the whiteout .wh.victim, then a directory victim with a new file, in one layer",
		File(".wh.victim", ""), Dir("victim", mode(0o750)), File("victim/new", "new\n"))
	one("whiteout-after-file-same-layer", "a file, then its whiteout, in one layer",
		File("gone2", "x\n"), File(".wh.gone2", ""))
	one("whiteout-before-file-same-layer", "a whiteout, then the file it names, in one layer",
		File(".wh.gone3", ""), File("gone3", "back\n"))
	one("whiteout-implicit-parent", "victim/.wh.gone with no entry for victim",
		File("victim/.wh.gone", ""))
	one("implicit-parent-lower-attrs", "victim/new with no entry for victim, which the base has (0700, 1000:1000, an xattr)",
		File("victim/new", "new\n"))
	one("whiteout-missing-parent", "nope/.wh.x, where no layer has nope",
		File("nope/.wh.x", ""))
	one("whiteout-hardlink", "a whiteout that is a hard link",
		Dir("etc"), File("etc/group-new", "g\n"), Hardlink("etc/.wh.hosts", "etc/group-new"))
	one("whiteout-with-content", "a whiteout with data in it",
		File("etc/.wh.passwd", "this whiteout has data\n"))
	one("whiteout-symlink", "a whiteout that is a symlink",
		Symlink("etc/.wh.group", "/nowhere"))
	one("whiteout-as-directory", "a whiteout that is a directory, with a file in it",
		Dir("etc/.wh.hosts"), File("etc/.wh.hosts/inside", "inside\n"))

	// Extended attributes, modes, owners.
	one("xattrs", "user.* (binary and empty values too), security.capability, trusted.*, on files, a directory and a symlink",
		File("caps", "c\n", mode(0o755), xattr("security.capability", capNetBindService)),
		File("user-x", "u\n", xattr("user.k", "v"), xattr("user.bin", "\x00\xff\x01"), xattr("user.empty", "")),
		Dir("xdir", xattr("user.dir", "d")), Symlink("xlink", "caps", xattr("user.link", "l")),
		File("trusted-x", "t\n", xattr("trusted.sluice", "t")))
	one("xattr-smuggled-opaque", "etc with the xattr trusted.overlay.opaque=y in the tar",
		Dir("etc", xattr("trusted.overlay.opaque", "y")), File("etc/mine", "m\n"))
	one("modes", "setuid, setgid, sticky, 0000 and 07777 modes, a 0000 directory with a file",
		File("setuid", "s\n", mode(0o4755), owner(1000, 1000)), File("setgid", "g\n", mode(0o2755)),
		Dir("sticky", mode(0o1777)), File("none", "n\n", mode(0)), File("all", "a\n", mode(0o7777)),
		Dir("closed", mode(0)), File("closed/inside", "i\n"))
	one("mode-type-bits", "modes with the file type bits set in the header",
		File("typed", "t\n", mode(0o100644)), Dir("typeddir", mode(0o40755)))
	one("owners", "owners other than root, on a file, a directory and a symlink; user and group names that disagree with the ids",
		File("u1000", "u\n", owner(1000, 1000)), File("nobody", "n\n", owner(65534, 65534)),
		File("named", "x\n", names("daemon", "bin")), Dir("owned-dir", owner(1234, 5678)),
		Symlink("owned-link", "u1000", owner(4321, 8765)))
	one("owners-large", "ids over the octal fields' 2,097,151 (base-256 numbers)",
		File("big-ids", "b\n", owner(3000000, 4000000), gnu()), File("huge-ids", "h\n", owner(4294967294, 4294967294), gnu()))

	// The archive itself.
	add("truncated-data", "a file of 10,000 bytes cut after 5,000",
		Layer{entries: seq(File("big", strings.Repeat("0123456789", 1000))), cutAt: 512 + 5000})
	add("truncated-header", "an archive cut in the middle of its second header",
		Layer{entries: seq(File("a", "a\n"), File("b", "b\n")), cutAt: 1024 + 256})
	add("unterminated", "no end-of-archive blocks",
		Layer{entries: seq(File("a", "a\n")), unterminated: true})
	add("trailing-garbage", "bytes after the end of the archive",
		Layer{entries: seq(File("a", "a\n")), trailing: []byte(strings.Repeat("garbage!", 128))})
	add("trailing-zeros", "10 KiB of zeros after the end of the archive, as record padding",
		Layer{entries: seq(File("a", "a\n")), trailing: make([]byte, 10<<10)})
	one("empty-archive", "an archive with no entry")
	add("zero-byte-archive", "a layer of zero bytes",
		Layer{entries: seq(), unterminated: true})
	one("pax-global-header", "a PAX global header, then a file",
		Entry{Header: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "global"}}},
		File("after-global", "g\n"))
	one("type-contiguous", "a contiguous file (typeflag '7')",
		RawEntry('7', "contiguous", 0o644, "data\n"))
	one("type-old-regular", "old-style regular files (typeflag NUL), one with a trailing slash",
		RawEntry(0, "oldreg", 0o644, "old\n"), RawEntry(0, "olddir/", 0o755, ""))
	one("type-unknown", "an unknown typeflag 'Z'",
		RawEntry('Z', "unknown", 0o644, "?\n"))

	// Large.
	cases = append(cases,
		Case{Name: "zero-bomb", About: "a file of 1 GiB of zeros", Large: true,
			Layers: []Layer{Base("zero-bomb"), NewLayer(Zeros("zeros", 1<<30))}},
		Case{Name: "many-100000", About: "100,000 empty files in 100 directories", Large: true,
			Layers: []Layer{Base("many-100000"), Many(100, 1000)}},
		Case{Name: "many-500000", About: "500,000 empty files in 500 directories", Large: true, Long: true,
			Layers: []Layer{Base("many-500000"), Many(500, 1000)}})
	return cases
}

// Many is a layer of dirs directories of files empty files each.
func Many(dirs, files int) Layer {
	return Layer{entries: func(yield func(Entry) bool) {
		for d := range dirs {
			dir := fmt.Sprintf("many/d%04d", d)
			if !yield(Dir(dir)) {
				return
			}
			for f := range files {
				if !yield(File(fmt.Sprintf("%s/f%06d", dir, f), "")) {
					return
				}
			}
		}
	}}
}

func seq(entries ...Entry) iter.Seq[Entry] { return slices.Values(entries) }
