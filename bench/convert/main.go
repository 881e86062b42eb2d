// Command convert benchmarks the seekable-zstd converter against the eStargz
// builder and the gunzip+zstd recompression floor on the same layers, and
// measures read amplification of the converted layers.
//
//	go run ./bench/convert [-images python3,numpy] [-markdown FILE]
//
// The layers come from bench/images/build.sh (built when missing, which
// needs root and the Debian mirror).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/sluicehq/sluice/bench/internal/reporoot"

	"github.com/sluicehq/sluice/internal/streaming"
)

type config struct {
	cache, images, markdown, sweep, workdir, buildScript string
	build, estargz                                       bool
	opts                                                 streaming.Options
}

// startupImports is what each image's python3 imports at start.
var startupImports = map[string]string{
	"python3": "",
	"numpy":   "import numpy, scipy.linalg",
}

func main() {
	reporoot.Chdir()
	var c config
	cacheDefault := os.Getenv("SLUICE_BENCH_CACHE")
	if cacheDefault == "" {
		cacheDefault = "/var/cache/sluice-bench"
	}
	flag.StringVar(&c.cache, "cache", cacheDefault, "directory bench/images/build.sh builds into")
	flag.StringVar(&c.images, "images", "python3,numpy", "images to measure (python3, numpy)")
	flag.StringVar(&c.markdown, "markdown", "", "also write the tables as markdown to this file")
	flag.StringVar(&c.sweep, "sweep", "", "instead, sweep chunk sizes (e.g. 64K,128K,256K) for the seekable converter")
	flag.StringVar(&c.workdir, "workdir", os.TempDir(), "where converted layers are written")
	flag.StringVar(&c.buildScript, "build-script", "bench/images/build.sh", "script that builds missing layers")
	flag.BoolVar(&c.build, "build", true, "build missing layers with -build-script")
	flag.BoolVar(&c.estargz, "estargz", true, "measure the eStargz builder (slow: ~20 MB/s)")
	var chunk, fileChunk string
	flag.StringVar(&chunk, "chunk-size", "", "seekable-zstd chunk size (default: the library's)")
	flag.StringVar(&fileChunk, "file-chunk-size", "", "seekable-zstd large-file split size (default: the library's)")
	flag.IntVar(&c.opts.Level, "level", 0, "zstd level (default: the library's)")
	flag.IntVar(&c.opts.Concurrency, "concurrency", 0, "seekable-zstd compressors (default: the library's)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/convert:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	var err error
	if c.opts.ChunkSize, err = parseSize(chunk); err == nil {
		c.opts.FileChunkSize, err = parseSize(fileChunk)
	}
	if err == nil {
		err = run(c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/convert:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(c config) error {
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "Machine: %d cores (GOMAXPROCS %d), %s/%s, %s\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	var layers []layerInfo
	for _, name := range strings.Split(c.images, ",") {
		l, err := findLayer(c, strings.TrimSpace(name))
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	var err error
	if c.sweep != "" {
		err = runSweep(w, c, layers)
	} else {
		err = runAll(w, c, layers)
	}
	if err != nil {
		return err
	}
	if c.markdown != "" {
		return os.WriteFile(c.markdown, []byte(out.String()), 0o644)
	}
	return nil
}

type layerInfo struct {
	name, gz, rootfs string
	gzSize, tarSize  int64
}

func findLayer(c config, name string) (layerInfo, error) {
	l := layerInfo{name: name, gz: filepath.Join(c.cache, "layers", name+".tar.gz"), rootfs: filepath.Join(c.cache, "rootfs", name)}
	if _, err := os.Stat(l.gz); err != nil && c.build {
		cmd := exec.Command(c.buildScript, name)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "SLUICE_BENCH_CACHE="+c.cache)
		if err := cmd.Run(); err != nil {
			return l, fmt.Errorf("building layer %s with %s: %w", name, c.buildScript, err)
		}
	}
	st, err := os.Stat(l.gz)
	if err != nil {
		return l, fmt.Errorf("layer %s: %w (run %s %s)", name, err, c.buildScript, name)
	}
	l.gzSize = st.Size()
	if st, err := os.Stat(filepath.Join(c.cache, "layers", name+".tar")); err == nil {
		l.tarSize = st.Size()
	}
	// Read the layer once so every method starts from a warm page cache.
	f, err := os.Open(l.gz)
	if err != nil {
		return l, err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return l, err
}

func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q (use 256K, 1M or bytes)", s)
	}
	return n * mult, nil
}
