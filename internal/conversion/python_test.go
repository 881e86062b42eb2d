package conversion

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/testenv"
)

func TestPythonImports(t *testing.T) {
	src := `"""A docstring that says
import not_this
"""
import os, sys as system
import json.decoder  # a comment: import nor_this
from . import _utils, core as c
from .lib import (
    helpers,   # one
    more,
)
from ..up import x
from collections import *
try:
    import fast
except ImportError:
    import slow
if TYPE_CHECKING:
    import typing_only
x = "import inside_a_string"; import after_semicolon
s = 'it''s' \
    + "import continued"
def f():
    import lazy
    if True:
        import lazier
class C:
    import in_class_body
    def m(self):
        import in_method
import last
`
	want := []pyImport{
		{module: "os"}, {module: "sys"}, {module: "json.decoder"},
		{module: "", names: []string{"_utils", "core"}, level: 1},
		{module: "lib", names: []string{"helpers", "more"}, level: 1},
		{module: "up", names: []string{"x"}, level: 2},
		{module: "collections"},
		{module: "fast"}, {module: "slow"},
		{module: "after_semicolon"},
		{module: "in_class_body"},
		{module: "last"},
	}
	if got := pythonImports([]byte(src)); !reflect.DeepEqual(got, want) {
		t.Errorf("pythonImports:\n got %+v\nwant %+v", got, want)
	}
}

func TestPythonArgs(t *testing.T) {
	for _, tt := range []struct {
		args                 []string
		code, script, module string
	}{
		{[]string{"-c", "import numpy"}, "import numpy", "", ""},
		{[]string{"-uBc", "print(1)"}, "print(1)", "", ""},
		{[]string{"-cprint(2)"}, "print(2)", "", ""},
		{[]string{"-m", "http.server", "8000"}, "", "", "http.server"},
		{[]string{"-X", "importtime", "-W", "ignore", "/app/main.py", "-c"}, "", "/app/main.py", ""},
		{[]string{"-Ximporttime", "app.py"}, "", "app.py", ""},
		{[]string{"--check-hash-based-pycs", "never", "app.py"}, "", "app.py", ""},
		{[]string{"-u"}, "", "", ""},
		{[]string{"-"}, "", "", ""},
		{[]string{"--", "-weird.py"}, "", "-weird.py", ""},
	} {
		code, script, module := pythonArgs(tt.args)
		if code != tt.code || script != tt.script || module != tt.module {
			t.Errorf("pythonArgs(%q) = %q, %q, %q; want %q, %q, %q", tt.args, code, script, module, tt.code, tt.script, tt.module)
		}
	}
}

// TestInferredPythonImports converts an image whose command runs a Python
// script, and checks that the inferred profile covers what its imports
// load (a module beside the script, a package's compiled __init__ and a
// submodule named by `from … import`, a relative import, an extension
// module and the library it needs, a namespace package, a module on
// PYTHONPATH) and not what a function or a TYPE_CHECKING block imports.
func TestInferredPythonImports(t *testing.T) {
	exe := hostFile(t, "/bin/true")
	libc := hostFile(t, "/usr/lib/x86_64-linux-gnu/libc.so.6")
	ext := hostFile(t, "/usr/lib/x86_64-linux-gnu/libm.so.6") // an ELF object that needs libc
	// Random bytes: files read at start take 512 KiB (a profile covers
	// half a layer at most), those that must stay out 3 MiB.
	random := func(seed uint64, size int) []byte {
		rng := rand.New(rand.NewPCG(seed, seed))
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	read := func(seed uint64) []byte { return random(seed, 512<<10) }
	unread := func(seed uint64) []byte { return random(seed, 3<<20) }
	dist := "usr/lib/python3/dist-packages/"
	l := treeLayer(t, []treeEntry{
		{name: "usr/bin/python3", link: "python3.11"},
		{name: "usr/bin/python3.11", data: exe},
		{name: "usr/lib/x86_64-linux-gnu/libc.so.6", data: libc},
		{name: "usr/lib/python3.11/json/__init__.py", data: []byte("from .decoder import JSONDecoder\n")},
		{name: "usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc", data: read(1)},
		{name: "usr/lib/python3.11/json/decoder.py", data: []byte("import re\n")},
		{name: "usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc", data: read(2)},
		{name: "usr/lib/python3.11/re.py", data: []byte("def compile():\n    import lazy_stdlib\n")},
		{name: "usr/lib/python3.11/lazy_stdlib.py", data: unread(3)},
		{name: dist + "pkg/__init__.py", data: []byte("from . import _speedups, _cy\nfrom .sub import thing\n")},
		// A module Cython compiled: what it imports and cimports are
		// names in its read-only data.
		{name: dist + "pkg/_cy.cpython-311-x86_64-linux-gnu.so", data: rodataELF(t, "\x00cython_runtime\x00secrets\x00pkg.capi\x00notstd\x00x.y z\x00")},
		{name: dist + "pkg/capi.cpython-311-x86_64-linux-gnu.so", data: ext},
		{name: dist + "notstd.py", data: unread(11)},
		{name: "usr/lib/python3.11/secrets.py", data: []byte("import base64\n")},
		{name: "usr/lib/python3.11/__pycache__/secrets.cpython-311.pyc", data: read(12)},
		// Not Cython's: its strings are not imports.
		{name: dist + "plain.cpython-311-x86_64-linux-gnu.so", data: rodataELF(t, "\x00notcython\x00json\x00notstd2\x00")},
		{name: dist + "notstd2.py", data: unread(13)},
		{name: dist + "pkg/__pycache__/__init__.cpython-311.pyc", data: read(4)},
		{name: dist + "pkg/sub.py", data: []byte("if TYPE_CHECKING:\n    import typing_only\nTHING = 1\n")},
		{name: dist + "pkg/_speedups.cpython-311-x86_64-linux-gnu.so", data: ext},
		{name: dist + "pkg/tool.py", data: read(5)},
		{name: dist + "typing_only.py", data: unread(6)},
		{name: dist + "ns/"},
		{name: dist + "ns/part.py", data: read(7)},
		{name: "opt/extra/onpath.py", data: read(8)},
		{name: "app/main.py", data: []byte("import json, helper, plain\nfrom pkg import tool\nfrom ns import part\nimport onpath\n\ndef later():\n    import lazy_app\n")},
		{name: "app/helper.py", data: read(9)},
		{name: "app/lazy_app.py", data: unread(10)},
	})
	e := newEnv(t, true)
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{l.diffID}},
		Config: ocispec.ImageConfig{Cmd: []string{"python3", "-u", "main.py"}, WorkingDir: "/app", Env: []string{"PATH=/usr/bin", "PYTHONPATH=/opt/extra"}}}
	m := convertImage(t, e, "py", cfg, l)
	got := inferredCoverage(t, e, m.Layers[0])
	for _, p := range []string{
		"app/main.py", "app/helper.py",
		"usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc", "usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc",
		dist + "pkg/__pycache__/__init__.cpython-311.pyc", dist + "pkg/tool.py",
		dist + "pkg/_speedups.cpython-311-x86_64-linux-gnu.so", "usr/lib/x86_64-linux-gnu/libc.so.6",
		dist + "ns/part.py", "opt/extra/onpath.py",
		dist + "pkg/capi.cpython-311-x86_64-linux-gnu.so", "usr/lib/python3.11/__pycache__/secrets.cpython-311.pyc",
	} {
		if c := got[p]; c[1] == 0 || c[0] != c[1] {
			t.Errorf("%s: %d of its %d chunks in the profile, want all", p, c[0], c[1])
		}
	}
	for _, p := range []string{"usr/lib/python3.11/lazy_stdlib.py", dist + "typing_only.py", "app/lazy_app.py", dist + "notstd.py", dist + "notstd2.py"} {
		// Its first chunk may be shared with a small file's.
		if c := got[p]; c[0] > 1 {
			t.Errorf("%s, imported only later or never: %d of its %d chunks in the profile", p, c[0], c[1])
		}
	}
}

// TestELFLoadedParts: a large library's inferred parts hold what loading
// it reads (its symbols, its data) and not its code; a small one is whole.
func TestELFLoadedParts(t *testing.T) {
	const lib = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
	f, err := elf.Open(lib)
	testenv.Need(t, err == nil, "the host's %s (%v)", lib, err)
	defer f.Close()
	st, err := os.Stat(lib)
	if err != nil {
		t.Fatal(err)
	}
	parts := elfLoadedParts(f, max(st.Size(), elfWholeBytes+1))
	in := func(sec string) bool {
		s := f.Section(sec)
		if s == nil {
			t.Fatalf("%s has no %s", lib, sec)
		}
		for _, p := range parts {
			if int64(s.Offset) >= p[0] && int64(s.Offset+s.FileSize) <= p[1] {
				return true
			}
		}
		return false
	}
	for _, sec := range []string{".dynsym", ".dynstr", ".gnu.hash", ".rela.dyn", ".data.rel.ro", ".got"} {
		if !in(sec) {
			t.Errorf("%s is not in the parts %v", sec, parts)
		}
	}
	for _, sec := range []string{".text", ".rodata", ".eh_frame"} {
		if in(sec) {
			t.Errorf("%s is in the parts %v", sec, parts)
		}
	}
	if p := elfLoadedParts(f, elfWholeBytes); p != nil {
		t.Errorf("a library of %d bytes is not whole: %v", elfWholeBytes, p)
	}
}

// rodataELF is an ELF shared object holding only a .rodata section with
// the given bytes.
func rodataELF(t *testing.T, rodata string) []byte {
	t.Helper()
	const ehsize, shsize = 64, 64
	shstrtab := "\x00.rodata\x00.shstrtab\x00"
	shoff := (ehsize + len(rodata) + len(shstrtab) + 7) &^ 7
	var b bytes.Buffer
	hdr := elf.Header64{Type: uint16(elf.ET_DYN), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: uint64(shoff), Ehsize: ehsize, Phentsize: 56, Shentsize: shsize, Shnum: 3, Shstrndx: 2}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: ehsize, Size: uint64(len(rodata)), Addralign: 1},
		{Name: 9, Type: uint32(elf.SHT_STRTAB), Off: uint64(ehsize + len(rodata)), Size: uint64(len(shstrtab)), Addralign: 1},
	}
	if err := binary.Write(&b, binary.LittleEndian, hdr); err != nil {
		t.Fatal(err)
	}
	b.WriteString(rodata)
	b.WriteString(shstrtab)
	b.Write(make([]byte, shoff-b.Len()))
	if err := binary.Write(&b, binary.LittleEndian, sections); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
