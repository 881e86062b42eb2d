package conversion

import (
	"cmp"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/streaming"
)

// An inferred startup profile. The first start of an image anywhere has no
// recorded profile to prefetch, so each chunk it misses costs a round trip
// of its own, one after another. What a program loads before its first
// instruction can be read from the image alone: the user and group files
// runc reads, the entrypoint's executable, its ELF interpreter, the shared
// libraries it needs (transitively) and the dynamic linker's cache; for
// CPython, the locale and time zone the C library loads for it, the
// modules it imports before running anything (the encodings package,
// sitecustomize and the .pth files of its site directories) and those the
// program imports (python.go). The converter stores those
// files' chunks as the startup profile of each layer that holds them,
// marked inferred, where the layer has no profile yet; nodes prefetch it
// like a recorded one and replace it with the first start they record.
// Nothing here is trusted by a node beyond any profile: it names chunks,
// each verified as it is read.

const (
	// maxInferredFiles and maxInferredFileBytes bound what is inferred: a
	// start loads tens of files, a Python program's imports hundreds, and
	// a library of hundreds of MB is not read whole to start.
	maxInferredFiles     = 2048
	maxInferredFileBytes = 32 << 20
	// maxSymlinkHops bounds a path's resolution, as Linux's 40.
	maxSymlinkHops = 40
)

// imageTree is the merged file tree of an image's streaming layers, for
// reading the files a start loads.
type imageTree struct {
	ctx    context.Context
	layers []*streaming.Reader // bottom first
	open   []io.Closer         // the layers' blobs
}

func (t *imageTree) close() {
	for _, r := range t.layers {
		r.Close()
	}
	for _, c := range t.open {
		c.Close()
	}
}

// lookup finds a clean relative path in the topmost layer that has it;
// deleted is set when a layer above whites it out.
func (t *imageTree) lookup(p string) (layer int, e *streaming.Entry, deleted bool) {
	dir, base := path.Split(p)
	for i := len(t.layers) - 1; i >= 0; i-- {
		r := t.layers[i]
		if e, err := r.Lookup(p); err == nil {
			return i, e, false
		}
		if _, err := r.Lookup(dir + ".wh." + base); err == nil {
			return 0, nil, true
		}
	}
	return 0, nil, false
}

// resolve follows symbolic links in every element of an absolute path,
// within the image, and returns the entry it names (a hard link's data
// entry) and its resolved path.
func (t *imageTree) resolve(p string) (int, *streaming.Entry, string, bool) {
	todo := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := ""
	for hops := 0; len(todo) > 0; {
		el := todo[0]
		todo = todo[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			cur = path.Dir("/" + cur)[1:]
			continue
		}
		next := strings.TrimPrefix(cur+"/"+el, "/")
		layer, e, deleted := t.lookup(next)
		switch {
		case deleted:
			return 0, nil, "", false
		case e == nil && len(todo) > 0:
			// A directory the tars imply without listing it.
			cur = next
			continue
		case e == nil:
			return 0, nil, "", false
		}
		if e.Type == streaming.TypeSymlink {
			if hops++; hops > maxSymlinkHops {
				return 0, nil, "", false
			}
			target := e.LinkName
			if strings.HasPrefix(target, "/") {
				cur = ""
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if len(todo) == 0 {
			return layer, t.layers[layer].DataEntry(e), next, true
		}
		if e.Type != streaming.TypeDir {
			return 0, nil, "", false
		}
		cur = next
	}
	return 0, nil, "", false
}

// readerAt reads a file of the image through its layer's verified reader.
type readerAt struct {
	t     *imageTree
	layer int
	e     *streaming.Entry
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	return r.t.layers[r.layer].ReadAt(r.t.ctx, r.e, p, off)
}

// startupSet collects the files a start loads, in the order it loads them.
type startupSet struct {
	t     *imageTree
	files []startupFile
	seen  map[string]bool
}

type startupFile struct {
	layer int
	e     *streaming.Entry
	// parts, when set, are the byte ranges [from, to) of the file a start
	// reads (a large library's loaded parts); otherwise all of it.
	parts [][2]int64
}

// add adds the file at an absolute path if the image has it, returning it.
func (s *startupSet) add(p string) (readerAt, string, bool) {
	layer, e, resolved, ok := s.t.resolve(p)
	if !ok || e.Type != streaming.TypeReg {
		return readerAt{}, "", false
	}
	if !s.seen[resolved] && len(s.files) < maxInferredFiles {
		s.seen[resolved] = true
		s.files = append(s.files, startupFile{layer: layer, e: e})
	}
	return readerAt{s.t, layer, e}, resolved, true
}

// inferStartup infers what the image's entrypoint loads, splits the chunks
// of each layer holding some of it that mix those files with others
// (replacing the layer in layers), and gives each such layer its inferred
// profile. It never fails the conversion: what it cannot infer or split is
// logged.
func (j *job) inferStartup(ctx context.Context, img *image, layers []ocispec.Descriptor) {
	set, err := j.startupFiles(ctx, img, layers)
	if set != nil {
		defer set.t.close()
	}
	if err != nil {
		j.s.log.Info("no startup profile inferred", "repository", j.op.Repository, "reason", err)
		return
	}
	keep := map[int][]*streaming.Entry{}
	for _, f := range set.files {
		keep[f.layer] = append(keep[f.layer], f.e)
	}
	for i, files := range keep {
		if ctx.Err() != nil {
			return // the job ends: nothing is stored for it
		}
		d, r, c, err := j.splitForStart(ctx, layers[i], set.t.layers[i], files)
		if err != nil {
			j.s.log.Warn("could not split a layer's chunks for its start", "repository", j.op.Repository, "layer", layers[i].Digest, "err", err)
			continue
		}
		if r != nil {
			set.t.layers[i].Close()
			set.t.open[i].Close()
			set.t.layers[i], set.t.open[i], layers[i] = r, c, d
			for k, f := range set.files {
				if f.layer == i {
					set.files[k].e = &r.Entries()[f.e.Index()]
				}
			}
		}
	}
	byLayer := map[int][]streaming.Range{}
	for _, f := range set.files {
		byLayer[f.layer] = append(byLayer[f.layer], fileChunks(set.t.layers[f.layer], f.e, f.parts)...)
	}
	for i, ranges := range byLayer {
		ranges = dedupeRanges(ranges)
		ranges = streaming.FitProfile(ranges, layers[i].Size)
		if len(ranges) == 0 {
			continue
		}
		if err := j.s.reg.PutInferredStartupProfile(ctx, j.op.Repository, layers[i].Digest, ranges); err != nil {
			j.s.log.Warn("could not store an inferred startup profile", "repository", j.op.Repository, "layer", layers[i].Digest, "err", err)
			continue
		}
		var total int64
		for _, r := range ranges {
			total += r.Length
		}
		j.s.log.Info("startup profile inferred", "repository", j.op.Repository, "layer", layers[i].Digest, "chunks", len(ranges), "bytes", total)
	}
}

// splitForStart rewrites a layer this job converted so that the files of
// the start (keep) share no chunk with other files (streaming.Split): the
// profile then names little else, and a node that prefetches it fetches
// little else (the benchmark images' first starts fetch 10 to 20% fewer
// bytes). The split form replaces the first in the cache of converted
// layers; the first, referenced by no manifest, goes with the garbage
// collector's next pass (not at once: a conversion of another image may
// have taken it from the cache meanwhile).
//
// A layer from that cache is left as it is: it is shared with the images
// converted before (a base image's layer under hundreds of images), and a
// copy split for each one's start would multiply its storage. So a job
// that dies between a layer's conversion and its split leaves the unsplit
// form cached, and its retry streams that: a valid layer, fetched as
// before splits existed.
//
// It returns the layer to use and its reader and blob, or no reader when
// the layer is left as it is.
func (j *job) splitForStart(ctx context.Context, l ocispec.Descriptor, r *streaming.Reader, keep []*streaming.Entry) (ocispec.Descriptor, *streaming.Reader, io.Closer, error) {
	src := digest.Digest(l.Annotations[streaming.AnnotationSourceDigest])
	if f, ok := j.fresh[src]; !ok || f.Digest != l.Digest || !streaming.NeedsSplit(r, keep) {
		return l, nil, nil, nil
	}
	mem := min(splitMemory, j.s.opts.Streaming.MemoryBudget)
	if err := j.s.memory.Acquire(ctx, mem); err != nil {
		return l, nil, nil, err
	}
	defer j.s.memory.Release(mem)
	start := time.Now()
	res, err := j.pushStream(ctx, func(w io.Writer) (*streaming.Result, error) {
		return streaming.Split(ctx, r, w, keep, j.s.opts.Streaming)
	})
	if err != nil {
		return l, nil, nil, err
	}
	res.SourceDigest = src
	d := res.Descriptor()
	nr, c, err := j.openStreamed(ctx, d)
	if err != nil {
		return l, nil, nil, err
	}
	if err := j.rememberConverted(ctx, d); err != nil {
		nr.Close()
		c.Close()
		return l, nil, nil, err
	}
	j.fresh[src] = d
	j.s.log.Info("layer split for its start", "repository", j.op.Repository, "layer", l.Digest, "split", d.Digest,
		"chunks", res.Chunks, "size", d.Size, "took", time.Since(start).Round(time.Millisecond))
	return d, nr, c, nil
}

// splitMemory is what a split holds at most: a batch of frames read at
// once, a chunk decoded and its pieces compressed.
const splitMemory = 32 << 20

// startupFiles opens the image's streaming layers and collects the files
// its entrypoint loads; nil when the config names no command.
func (j *job) startupFiles(ctx context.Context, img *image, layers []ocispec.Descriptor) (*startupSet, error) {
	argv := append(slices.Clone(img.config.Config.Entrypoint), img.config.Config.Cmd...)
	if len(argv) == 0 {
		return nil, errors.New("the image config names no entrypoint or command")
	}
	t := &imageTree{ctx: ctx}
	s := &startupSet{t: t, seen: map[string]bool{}}
	for _, l := range layers {
		r, c, err := j.openStreamed(ctx, l)
		if err != nil {
			return s, err
		}
		t.layers, t.open = append(t.layers, r), append(t.open, c)
	}
	env := envMap(img.config.Config.Env)
	exe := argv[0]
	if !strings.HasPrefix(exe, "/") {
		exe = s.lookPath(exe, env["PATH"])
		if exe == "" {
			return s, fmt.Errorf("the entrypoint %q is not in the image's PATH", argv[0])
		}
	}
	// Before the entrypoint runs, runc looks up the process's user and
	// groups in the container's own files.
	s.add("/etc/passwd")
	s.add("/etc/group")
	ra, resolved, ok := s.add(exe)
	if !ok {
		return s, fmt.Errorf("the entrypoint %s is not a file of the image", exe)
	}
	s.addELF(ra, resolved, img.platform, env["LD_LIBRARY_PATH"], false)
	if py, ok := findCPython(resolved); ok {
		s.addCLocale(env, img.platform, true)
		s.addPython(py)
		s.addPythonImports(py, argv[1:], env, img.config.Config.WorkingDir, img.platform)
	}
	return s, nil
}

// openStreamed opens a streaming layer stored in the repository; the
// caller closes the reader, then the blob.
func (j *job) openStreamed(ctx context.Context, l ocispec.Descriptor) (*streaming.Reader, io.Closer, error) {
	c, err := j.s.reg.OpenBlob(ctx, j.op.Repository, l.Digest)
	if err != nil {
		return nil, nil, err
	}
	rr := &seekerRanges{rs: c}
	off, _ := strconv.ParseInt(l.Annotations[streaming.AnnotationTOCOffset], 10, 64)
	size, _ := strconv.ParseInt(l.Annotations[streaming.AnnotationTOCSize], 10, 64)
	opts := []streaming.ReaderOption{streaming.WithLimits(j.s.opts.Streaming.Limits)}
	if d, err := digest.Parse(l.Annotations[streaming.AnnotationTOCDigest]); err == nil && size > 0 {
		opts = append(opts, streaming.WithTOC(d, off, size))
	}
	r, err := streaming.Open(ctx, rr, c.Size, opts...)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("open streaming layer %s: %w", l.Digest, err)
	}
	return r, c, nil
}

// seekerRanges reads ranges of a seekable blob, one at a time.
type seekerRanges struct {
	mu sync.Mutex
	rs io.ReadSeeker
}

func (s *seekerRanges) ReadRange(_ context.Context, p []byte, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.rs.Seek(off, io.SeekStart); err != nil {
		return err
	}
	_, err := io.ReadFull(s.rs, p)
	return err
}

func envMap(env []string) map[string]string {
	m := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// lookPath finds a command in PATH as a shell would.
func (s *startupSet) lookPath(name, pathEnv string) string {
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			continue
		}
		p := path.Join(dir, name)
		if _, e, _, ok := s.t.resolve(p); ok && e.Type == streaming.TypeReg && e.Mode&0o111 != 0 {
			return p
		}
	}
	return ""
}

// addCLocale adds what the C library reads for a program that sets its
// character type from the environment, as CPython does first thing: the
// LC_CTYPE locale LC_ALL, LC_CTYPE or LANG names (C.UTF-8, where they name
// none or the C locale, when coerce: PEP 538), in the locale archive or
// its own directory; the gconv modules cache; and the time zone, TZ's or
// /etc/localtime.
func (s *startupSet) addCLocale(env map[string]string, p ocispec.Platform, coerce bool) {
	name := cmp.Or(env["LC_ALL"], env["LC_CTYPE"], env["LANG"])
	if name == "C" || name == "POSIX" {
		name = ""
	}
	if name == "" && coerce {
		name = "C.UTF-8"
	}
	if name != "" && !strings.Contains(name, "/") {
		s.add("/usr/lib/locale/locale-archive")
		// glibc also tries the codeset normalized: C.UTF-8 is C.utf8.
		lang, codeset, _ := strings.Cut(name, ".")
		codeset, modifier, _ := strings.Cut(codeset, "@")
		norm := strings.ToLower(strings.ReplaceAll(codeset, "-", ""))
		dirs := []string{name}
		if norm != "" {
			dirs = append(dirs, lang+"."+norm+strings.TrimSuffix("@"+modifier, "@"))
		}
		for _, dir := range dirs {
			if _, _, ok := s.add(path.Join("/usr/lib/locale", dir, "LC_CTYPE")); ok {
				break
			}
		}
		if arch, ok := multiarch[p.Architecture]; ok {
			s.add(path.Join("/usr/lib", arch, "gconv/gconv-modules.cache"))
		}
	}
	switch tz := strings.TrimPrefix(env["TZ"], ":"); {
	case tz == "":
		if _, ok := env["TZ"]; !ok {
			s.add("/etc/localtime")
		}
	case path.IsAbs(tz):
		s.add(tz)
	case !strings.Contains(tz, ".."):
		s.add(path.Join("/usr/share/zoneinfo", tz))
	}
}

// multiarch is the Debian library directory of an architecture.
var multiarch = map[string]string{
	"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf",
	"386": "i386-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu", "riscv64": "riscv64-linux-gnu",
}

// addELF adds an ELF executable's interpreter and the libraries it needs,
// breadth first as the dynamic linker loads them, searching as it does:
// DT_RPATH (without DT_RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH, then the
// system directories (those of /etc/ld.so.conf.d included). The linker's
// cache is read first whenever a library is searched.
//
// A large library (lib: exe is one too) is added as the parts loading it
// reads (elfLoadedParts), not whole.
func (s *startupSet) addELF(exe readerAt, exePath string, p ocispec.Platform, ldLibraryPath string, lib bool) {
	f, err := elf.NewFile(exe)
	if err != nil {
		return // a script, or not an executable the converter can read
	}
	defer f.Close()
	if lib {
		s.setParts(exe.e, elfLoadedParts(f, exe.e.Size))
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err == nil {
				s.add(strings.TrimRight(string(b), "\x00"))
			}
		}
	}
	system := s.systemDirs(p)
	queue := []elfObject{{f, path.Dir("/" + exePath)}}
	needed := false
	for len(queue) > 0 && len(s.files) < maxInferredFiles {
		obj := queue[0]
		queue = queue[1:]
		libs, _ := obj.f.ImportedLibraries()
		if len(libs) > 0 && !needed {
			needed = true
			s.add("/etc/ld.so.cache")
		}
		dirs := searchDirs(obj, ldLibraryPath, system)
		for _, lib := range libs {
			var found readerAt
			var at string
			ok := false
			for _, d := range dirs {
				if found, at, ok = s.addIfNew(path.Join(d, lib)); ok {
					break
				}
			}
			if !ok || at == "" {
				continue
			}
			if lf, err := elf.NewFile(found); err == nil {
				s.setParts(found.e, elfLoadedParts(lf, found.e.Size))
				queue = append(queue, elfObject{lf, path.Dir("/" + at)})
			}
		}
		if obj.f != f {
			obj.f.Close()
		}
	}
}

type elfObject struct {
	f      *elf.File
	origin string
}

// setParts limits what of an added file the profile holds.
func (s *startupSet) setParts(e *streaming.Entry, parts [][2]int64) {
	for i := len(s.files) - 1; i >= 0; i-- {
		if s.files[i].e == e {
			s.files[i].parts = parts
			return
		}
	}
}

// addIfNew adds a file, returning its resolved path only the first time.
func (s *startupSet) addIfNew(p string) (readerAt, string, bool) {
	_, _, resolved, ok := s.t.resolve(p)
	if !ok {
		return readerAt{}, "", false
	}
	if s.seen[resolved] {
		return readerAt{}, "", true
	}
	ra, resolved, ok := s.add(p)
	return ra, resolved, ok
}

func searchDirs(obj elfObject, ldLibraryPath string, system []string) []string {
	var dirs []string
	expand := func(list string) {
		for _, d := range strings.Split(list, ":") {
			if d != "" {
				dirs = append(dirs, strings.NewReplacer("$ORIGIN", obj.origin, "${ORIGIN}", obj.origin).Replace(d))
			}
		}
	}
	runpath, _ := obj.f.DynString(elf.DT_RUNPATH)
	if len(runpath) == 0 {
		rpath, _ := obj.f.DynString(elf.DT_RPATH)
		for _, r := range rpath {
			expand(r)
		}
	}
	expand(ldLibraryPath)
	for _, r := range runpath {
		expand(r)
	}
	return append(dirs, system...)
}

// systemDirs are the directories the dynamic linker searches by default:
// those /etc/ld.so.conf.d lists, the multiarch ones and the classic ones.
func (s *startupSet) systemDirs(p ocispec.Platform) []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		if d = path.Clean(d); !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, conf := range s.confFiles() {
		_, e, _, ok := s.t.resolve(conf.path)
		if !ok || e.Size > 64<<10 {
			continue
		}
		b := make([]byte, e.Size)
		if _, err := conf.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "/") {
				add(line)
			}
		}
	}
	if m := multiarch[p.Architecture]; m != "" {
		add("/lib/" + m)
		add("/usr/lib/" + m)
	}
	for _, d := range []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"} {
		add(d)
	}
	return dirs
}

type confFile struct {
	readerAt
	path string
}

// confFiles lists /etc/ld.so.conf.d/*.conf in the image, in name order.
func (s *startupSet) confFiles() []confFile {
	names := map[string]bool{}
	for _, r := range s.t.layers {
		for i := range r.Entries() {
			e := &r.Entries()[i]
			p := e.Path()
			if dir, base := path.Split(p); dir == "etc/ld.so.conf.d/" && strings.HasSuffix(base, ".conf") {
				names[p] = true
			}
		}
	}
	var out []confFile
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	}) {
		layer, e, _, ok := s.t.resolve(p)
		if ok && e.Type == streaming.TypeReg {
			out = append(out, confFile{readerAt{s.t, layer, e}, p})
		}
	}
	return out
}

// filesIn lists the names ending in suffix directly in a directory of any
// layer, in name order.
func (s *startupSet) filesIn(dir, suffix string) []string {
	var out []string
	for _, r := range s.t.layers {
		for i := range r.Entries() {
			p := r.Entries()[i].Path()
			if d, base := path.Split(p); d == dir+"/" && strings.HasSuffix(base, suffix) && !strings.HasPrefix(base, ".wh.") {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// fileChunks are the ranges of the blob chunks holding a file's data (at
// most maxInferredFileBytes of it), or the parts of it given.
func fileChunks(r *streaming.Reader, e *streaming.Entry, parts [][2]int64) []streaming.Range {
	size := e.DataSize() // a sparse file's is shorter than the file
	if size == 0 {
		return nil
	}
	if parts == nil || e.Sparse != nil {
		parts = [][2]int64{{0, min(size, maxInferredFileBytes)}}
	}
	var out []streaming.Range
	chunks := r.TOC().Chunks
	for _, part := range parts {
		start, end := e.Offset+part[0], e.Offset+min(part[1], size)
		i := sort.Search(len(chunks), func(i int) bool {
			return chunks[i].UncompressedOffset+chunks[i].UncompressedSize > start
		})
		for ; i < len(chunks) && chunks[i].UncompressedOffset < end; i++ {
			out = append(out, streaming.Range{Offset: chunks[i].Offset, Length: chunks[i].Size})
		}
	}
	return out
}

// elfWholeBytes is the size up to which a library is prefetched whole.
const elfWholeBytes = 2 << 20

// elfLoadedParts returns the parts of a large shared library that loading
// it reads, from its section headers: everything the dynamic linker maps
// that is not code or read-only data (symbols, hashes, versions,
// relocations, the dynamic section and the data relocations write). Its
// code and constants are read page by page as they run, far less than the
// whole of a large library (numpy's OpenBLAS is 36 MB, mostly kernels for
// other processors); the first recorded start captures those pages. nil,
// read whole, for a small library or one without section headers.
func elfLoadedParts(f *elf.File, size int64) [][2]int64 {
	if size <= elfWholeBytes || len(f.Sections) == 0 {
		return nil
	}
	parts := [][2]int64{{0, min(size, 4096)}} // the ELF and program headers
	for _, sec := range f.Sections {
		switch {
		case sec.Flags&elf.SHF_ALLOC == 0, sec.Type == elf.SHT_NOBITS, sec.Flags&elf.SHF_EXECINSTR != 0,
			sec.Name == ".rodata" || strings.HasPrefix(sec.Name, ".rodata.") || strings.HasPrefix(sec.Name, ".eh_frame") || sec.Name == ".gcc_except_table":
			continue
		}
		parts = append(parts, [2]int64{int64(sec.Offset), int64(sec.Offset + sec.FileSize)})
	}
	return parts
}

// dedupeRanges keeps the first of equal ranges, in order.
func dedupeRanges(rs []streaming.Range) []streaming.Range {
	seen := map[int64]bool{}
	out := rs[:0]
	for _, r := range rs {
		if !seen[r.Offset] {
			seen[r.Offset] = true
			out = append(out, r)
		}
	}
	return out
}
