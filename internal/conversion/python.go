package conversion

import (
	"bytes"
	"debug/elf"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
)

// Python's imports. Before a Python program prints anything it has
// imported what its code names at the top level, and what those modules
// name at theirs, depth first: numpy and scipy's start reads hundreds of
// compiled modules and extension libraries that the image config does not
// name. The converter follows the same imports statically: it reads the
// program (the -c code, the script, or the -m module), finds each imported
// module on the interpreter's path as the import system would (packages,
// modules, extension modules, namespace packages), adds the file CPython
// reads for it (the compiled .pyc in __pycache__ where the image has one,
// the source otherwise; an extension module and the libraries it needs)
// and reads the module's source for its own imports (or, for an
// extension module Cython compiled, the module names in its string table).
// Imports inside functions and under `if TYPE_CHECKING:` run later or
// never, and are left out; conditional and fallback imports are followed, and those the image
// cannot satisfy are skipped. What this gets wrong costs bytes or round
// trips, never correctness: a node verifies every chunk it prefetches, and
// its first recorded start replaces the inferred profile.
//
// Hand-written because no Go library parses Python: only the statements
// that import are recognized, on logical lines with strings, comments,
// brackets and continuations accounted for.

const (
	// maxPythonModules bounds the modules followed (numpy and
	// scipy.linalg import about 600).
	maxPythonModules = 2000
	// maxPythonSourceBytes bounds the source read of one module.
	maxPythonSourceBytes = 1 << 20
)

var pythonExe = regexp.MustCompile(`^python(\d)\.(\d+)$`)

// cpython is a CPython installation, found from its interpreter's path.
type cpython struct {
	major, minor string // "3", "11"
	prefix       string // /usr for /usr/bin/python3.11
	lib          string // its standard library: /usr/lib/python3.11
}

// findCPython reads a CPython installation from its interpreter's
// resolved path; false when exe is not named like one.
func findCPython(exe string) (cpython, bool) {
	m := pythonExe.FindStringSubmatch(path.Base(exe))
	if m == nil {
		return cpython{}, false
	}
	prefix := path.Dir(path.Dir("/" + exe))
	return cpython{major: m[1], minor: m[2], prefix: prefix, lib: path.Join(prefix, "lib", "python"+m[1]+"."+m[2])}, true
}

// tag is the tag of its compiled files: cpython-311.
func (c cpython) tag() string { return "cpython-" + c.major + c.minor }

// siteDirs are its site directories, in the order of sys.path (Debian's
// dist-packages, then upstream's site-packages).
func (c cpython) siteDirs() []string {
	ver := c.major + "." + c.minor
	return []string{
		path.Join(c.prefix, "local", "lib", "python"+ver, "dist-packages"),
		path.Join(c.prefix, "lib", "python"+c.major, "dist-packages"),
		path.Join(c.prefix, "lib", "python"+ver, "dist-packages"),
		path.Join(c.lib, "site-packages"),
	}
}

// addModule adds the file CPython reads for the module whose source is
// src: its compiled file in __pycache__ where the image has one, the source
// otherwise.
func (s *startupSet) addModule(c cpython, src string) {
	dir, file := path.Split(src)
	if _, _, ok := s.add(path.Join(dir, "__pycache__", strings.TrimSuffix(file, ".py")+"."+c.tag()+".pyc")); !ok {
		s.add(src)
	}
}

// addPython adds what CPython reads before running anything: the
// encodings package's startup modules, the modules versions before 3.11
// did not freeze into the interpreter, sitecustomize, and the .pth files
// of its site directories.
func (s *startupSet) addPython(c cpython) {
	modules := []string{"encodings/__init__", "encodings/aliases", "encodings/utf_8", "sitecustomize"}
	if v, _ := strconv.Atoi(c.minor); v < 11 {
		modules = append(modules, "abc", "codecs", "io", "_collections_abc", "_sitebuiltins", "genericpath", "os", "posixpath", "site", "stat")
	}
	for _, mod := range modules {
		s.addModule(c, path.Join(c.lib, mod)+".py")
	}
	for _, site := range c.siteDirs() {
		for _, p := range s.filesIn(strings.TrimPrefix(site, "/"), ".pth") {
			s.add("/" + p)
		}
	}
}

// pyImporter follows a Python program's imports through an image.
type pyImporter struct {
	s        *startupSet
	c        cpython
	platform ocispec.Platform
	suffixes []string // extension modules' file suffixes, most specific first
	path     []string // sys.path
	done     map[string]bool
	pkgs     map[string][]string // a package's __path__
}

// addPythonImports adds what the program that args (the interpreter's
// arguments) run imports at its start.
func (s *startupSet) addPythonImports(c cpython, args []string, env map[string]string, workDir string, p ocispec.Platform) {
	py := &pyImporter{s: s, c: c, platform: p, done: map[string]bool{}, pkgs: map[string][]string{}}
	if arch, ok := multiarch[p.Architecture]; ok {
		py.suffixes = append(py.suffixes, ".cpython-"+c.major+c.minor+"-"+arch+".so")
	}
	py.suffixes = append(py.suffixes, ".abi3.so", ".so")

	code, script, module := pythonArgs(args)
	if workDir == "" {
		workDir = "/"
	}
	first := workDir // sys.path[0]: the script's directory, or the working directory
	if script != "" {
		if !path.IsAbs(script) {
			script = path.Join(workDir, script)
		}
		first = path.Dir(script)
	}
	py.path = append(py.path, first)
	for _, d := range strings.Split(env["PYTHONPATH"], ":") {
		if d != "" {
			py.path = append(py.path, d)
		}
	}
	py.path = append(py.path, c.lib, path.Join(c.lib, "lib-dynload"))
	py.path = append(py.path, c.siteDirs()...)

	switch {
	case code != "":
		py.follow([]byte(code), "")
	case module != "":
		py.load(module)
		if _, ok := py.pkgs[module]; ok {
			py.load(module + ".__main__")
		}
	case script != "":
		if ra, _, ok := s.add(script); ok {
			py.follow(readSource(ra), "")
		}
	}
}

// pythonArgs finds what the interpreter's arguments run: -c code, a -m
// module or a script (a missing one: the interactive prompt or stdin).
func pythonArgs(args []string) (code, script, module string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return "", args[i+1], ""
			}
			return "", "", ""
		case a == "-" || !strings.HasPrefix(a, "-"):
			if a == "-" {
				return "", "", ""
			}
			return "", a, ""
		case strings.HasPrefix(a, "--"):
			if a == "--check-hash-based-pycs" {
				i++
			}
			continue
		}
		for j := 1; j < len(a); j++ {
			switch a[j] {
			case 'c', 'm':
				rest := a[j+1:]
				if rest == "" && i+1 < len(args) {
					rest = args[i+1]
				}
				if a[j] == 'c' {
					return rest, "", ""
				}
				return "", "", rest
			case 'W', 'X':
				if j == len(a)-1 {
					i++ // the option's value is the next argument
				}
				j = len(a)
			}
		}
	}
	return "", "", ""
}

// load imports a module by its full name, its parent packages first.
func (py *pyImporter) load(name string) {
	if name == "" || py.done[name] || len(py.done) >= maxPythonModules {
		return
	}
	py.done[name] = true
	dirs := py.path
	base := name
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		parent := name[:i]
		py.load(parent)
		var ok bool
		if dirs, ok = py.pkgs[parent]; !ok {
			return // not a package the image has: nothing below it either
		}
		base = name[i+1:]
	}
	var namespace []string
	for _, d := range dirs {
		dir := path.Join(d, base)
		if ra, ok := py.file(path.Join(dir, "__init__.py")); ok {
			py.pkgs[name] = []string{dir}
			py.source(ra, path.Join(dir, "__init__.py"), name)
			return
		}
		if ra, ok := py.file(dir + ".py"); ok {
			py.source(ra, dir+".py", name[:max(strings.LastIndexByte(name, '.'), 0)])
			return
		}
		for _, suffix := range py.suffixes {
			if ra, resolved, ok := py.s.addIfNew(dir + suffix); ok {
				if resolved != "" {
					py.s.addELF(ra, resolved, py.platform, "", true)
					py.cythonImports(ra)
				}
				return
			}
		}
		if _, e, _, ok := py.s.t.resolve(dir); ok && e.Type == streaming.TypeDir {
			namespace = append(namespace, dir)
		}
	}
	if namespace != nil {
		py.pkgs[name] = namespace
	}
}

// maxRodataBytes bounds what of an extension module's read-only data is
// searched for the names it imports.
const maxRodataBytes = 8 << 20

// cythonImports follows what an extension module that Cython compiled
// imports when it is initialised: its `import` statements and the modules
// whose C functions it cimports (scipy.linalg's cython_blas and
// cython_lapack) are names in its string table, which its read-only data
// holds as NUL-terminated strings. Every such string that names a module
// is taken: a dotted name that resolves on the path, or a single name that
// is a module of the standard library (secrets, for numpy.random, and
// through it hashlib and libcrypto). A name the module uses for something
// else costs the files of a module the start does not import, at most.
func (py *pyImporter) cythonImports(ra readerAt) {
	f, err := elf.NewFile(ra)
	if err != nil {
		return
	}
	defer f.Close()
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size > maxRodataBytes {
		return
	}
	data, err := sec.Data()
	// Cython's modules create a module named cython_runtime.
	if err != nil || !bytes.Contains(data, []byte("\x00cython_runtime\x00")) {
		return
	}
	for str := range bytes.SplitSeq(data, []byte{0}) {
		name := string(str)
		if !moduleName.MatchString(name) {
			continue
		}
		if strings.Contains(name, ".") || py.stdlib(name) {
			py.load(name)
		}
	}
}

// moduleName is a Python module's full name.
var moduleName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// stdlib reports whether a top-level module is in the standard library:
// a module, package or extension module of its directory or lib-dynload.
func (py *pyImporter) stdlib(name string) bool {
	for _, p := range []string{path.Join(py.c.lib, name+".py"), path.Join(py.c.lib, name, "__init__.py")} {
		if _, ok := py.file(p); ok {
			return true
		}
	}
	for _, suffix := range py.suffixes {
		if _, ok := py.file(path.Join(py.c.lib, "lib-dynload", name+suffix)); ok {
			return true
		}
	}
	return false
}

// file opens the regular file at p, if the image has one.
func (py *pyImporter) file(p string) (readerAt, bool) {
	layer, e, _, ok := py.s.t.resolve(p)
	if !ok || e.Type != streaming.TypeReg {
		return readerAt{}, false
	}
	return readerAt{py.s.t, layer, e}, true
}

// source adds the file CPython reads for the module whose source, at src,
// ra reads, and follows the source's imports; pkg is the package relative
// imports start from.
func (py *pyImporter) source(ra readerAt, src, pkg string) {
	py.s.addModule(py.c, src)
	py.follow(readSource(ra), pkg)
}

// readSource reads a module's source, at most maxPythonSourceBytes of it.
func readSource(ra readerAt) []byte {
	b, err := io.ReadAll(io.NewSectionReader(ra, 0, min(ra.e.Size, maxPythonSourceBytes)))
	if err != nil {
		return nil
	}
	return b
}

// follow imports what a module's source imports; pkg is the package its
// relative imports start from ("" for a script or -c code).
func (py *pyImporter) follow(src []byte, pkg string) {
	for _, imp := range pythonImports(src) {
		mod := imp.module
		if imp.level > 0 {
			base := pkg
			for range imp.level - 1 {
				i := strings.LastIndexByte(base, '.')
				if i < 0 {
					base = ""
					break
				}
				base = base[:i]
			}
			if base == "" {
				continue // beyond the top-level package
			}
			mod = strings.TrimSuffix(base+"."+mod, ".")
		}
		py.load(mod)
		if _, ok := py.pkgs[mod]; ok {
			for _, n := range imp.names {
				py.load(mod + "." + n) // a submodule, when it is one
			}
		}
	}
}

// pyImport is one import statement: `import module` (names empty) or
// `from module import names` (level: its leading dots).
type pyImport struct {
	module string
	names  []string
	level  int
}

// pythonImports lists a module's import statements, in order, leaving out
// those in function bodies and under `if TYPE_CHECKING:`.
func pythonImports(src []byte) []pyImport {
	var out []pyImport
	skipBelow := -1 // the indentation of a def or TYPE_CHECKING block being skipped
	for _, l := range logicalLines(src) {
		if skipBelow >= 0 {
			if l.indent > skipBelow {
				continue
			}
			skipBelow = -1
		}
		for stmt := range strings.SplitSeq(l.text, ";") {
			stmt = strings.TrimSpace(stmt)
			switch {
			case strings.HasPrefix(stmt, "def ") || strings.HasPrefix(stmt, "async def "),
				stmt == "if TYPE_CHECKING:" || stmt == "if typing.TYPE_CHECKING:":
				skipBelow = l.indent
			case strings.HasPrefix(stmt, "import "):
				for part := range strings.SplitSeq(stmt[len("import "):], ",") {
					if f := strings.Fields(part); len(f) > 0 {
						out = append(out, pyImport{module: f[0]})
					}
				}
			case strings.HasPrefix(stmt, "from "):
				mod, names, ok := strings.Cut(stmt[len("from "):], " import ")
				if !ok {
					continue
				}
				mod = strings.TrimSpace(mod)
				imp := pyImport{module: strings.TrimLeft(mod, "."), level: len(mod) - len(strings.TrimLeft(mod, "."))}
				names = strings.Trim(strings.TrimSpace(names), "()")
				for part := range strings.SplitSeq(names, ",") {
					if f := strings.Fields(part); len(f) > 0 && f[0] != "*" {
						imp.names = append(imp.names, f[0])
					}
				}
				out = append(out, imp)
			}
		}
	}
	return out
}

// logicalLine is a Python logical line with strings blanked and comments
// removed, and the indentation of its first physical line.
type logicalLine struct {
	text   string
	indent int
}

// logicalLines splits Python source into logical lines: a line continues
// inside brackets and after a backslash; strings (triple-quoted ones across
// lines) become "" and comments go.
func logicalLines(src []byte) []logicalLine {
	var out []logicalLine
	var b strings.Builder
	depth, indent, atStart := 0, 0, true
	emit := func() {
		if t := strings.TrimSpace(b.String()); t != "" {
			out = append(out, logicalLine{text: t, indent: indent})
		}
		b.Reset()
		atStart = true
		indent = 0
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if atStart {
			switch c {
			case ' ':
				indent++
				continue
			case '\t':
				indent = indent/8*8 + 8
				continue
			case '\n', '\r', '\f':
				indent = 0
				continue
			}
			atStart = false
		}
		switch {
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			i--
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			i++
			b.WriteByte(' ')
		case c == '\'' || c == '"':
			quote := string(c)
			if i+2 < len(src) && src[i+1] == c && src[i+2] == c {
				quote = strings.Repeat(quote, 3)
			}
			j := i + len(quote)
			for j < len(src) && !bytes.HasPrefix(src[j:], []byte(quote)) {
				if src[j] == '\\' {
					j++
				} else if src[j] == '\n' && len(quote) == 1 {
					j -= len(quote) // an unterminated string ends before its line's end
					break
				}
				j++
			}
			i = min(j+len(quote), len(src)) - 1
			b.WriteString(`""`)
		case c == '(' || c == '[' || c == '{':
			depth++
			b.WriteByte(c)
		case c == ')' || c == ']' || c == '}':
			depth = max(depth-1, 0)
			b.WriteByte(c)
		case c == '\n':
			if depth > 0 {
				b.WriteByte(' ')
			} else {
				emit()
			}
		default:
			b.WriteByte(c)
		}
	}
	emit()
	return out
}
