package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sluicehq/sluice/internal/streaming"
)

const mb = 1e6

// row is one conversion method measured on one layer.
type row struct {
	method string
	c      cost
}

func (r row) wallMBs(tar int64) float64    { return float64(tar) / mb / r.c.wall.Seconds() }
func (r row) perCoreMBs(tar int64) float64 { return float64(tar) / mb / r.c.cpu.Seconds() }

type layerResult struct {
	l                layerInfo
	rows             []row
	seekable, floor  row
	estargz          *row
	amp              amplification
	startupErr       error
	uncompressedSize int64
}

func runAll(w io.Writer, c config, layers []layerInfo) error {
	var results []layerResult
	for _, l := range layers {
		r, err := measureLayer(c, l)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Fprintf(w, "Converter options: chunk %s, large-file split %s, zstd level %d.\n\n",
		human(orDefault(c.opts.ChunkSize, streaming.DefaultChunkSize)), human(orDefault(c.opts.FileChunkSize, streaming.DefaultFileChunkSize)),
		orDefault(int64(c.opts.Level), streaming.DefaultLevel))
	fmt.Fprintln(w, "| layer | method | MB/s (wall) | MB/s per core | output MB | output / gzip layer |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Fprintf(w, "| %s (tar %.0f MB, gzip %.0f MB) | | | | | |\n", r.l.name, float64(r.uncompressedSize)/mb, float64(r.l.gzSize)/mb)
		for _, x := range r.rows {
			fmt.Fprintf(w, "| | %s | %.0f | %.0f | %.1f | %.3f |\n", x.method, x.wallMBs(r.uncompressedSize), x.perCoreMBs(r.uncompressedSize),
				float64(x.c.outSize)/mb, float64(x.c.outSize)/float64(r.l.gzSize))
		}
	}
	fmt.Fprintln(w, "\nRead amplification (seekable-zstd; bytes fetched from the blob, cold cache, TOC not counted):")
	fmt.Fprintln(w, "\n| layer | TOC | ~4 KiB file: median / p90 (files) | ~1 MiB file: median / p90 (files) | python3 start: files, content → fetched |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, r := range results {
		a := r.amp
		start := "n/a: " + fmt.Sprint(r.startupErr)
		if r.startupErr == nil {
			start = fmt.Sprintf("%d files, %.1f MB → %.1f MB", a.startupFiles, float64(a.startupContent)/mb, float64(a.startup)/mb)
		}
		fmt.Fprintf(w, "| %s | %s | %s / %s (%d) | %s / %s (%d) | %s |\n", r.l.name, human(a.tocBytes),
			human(a.small.median), human(a.small.p90), a.small.n, human(a.mib.median), human(a.mib.p90), a.mib.n, start)
	}
	printTargets(w, results)
	return nil
}

func printTargets(w io.Writer, results []layerResult) {
	fmt.Fprintln(w, "\nTargets:")
	fmt.Fprintln(w, "\n| layer | per-core speed vs eStargz (≥ 3x) | recompression floor / seekable per core (≤ 1.5x) | output / gzip (≤ 0.95) | median fetch for 4 KiB (≤ 128 KiB) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, r := range results {
		t := r.uncompressedSize
		vsE := "not measured"
		if r.estargz != nil {
			vsE = fmt.Sprintf("%.1fx", r.seekable.perCoreMBs(t)/r.estargz.perCoreMBs(t))
		}
		fmt.Fprintf(w, "| %s | %s | %.2fx | %.3f | %s |\n", r.l.name, vsE, r.floor.perCoreMBs(t)/r.seekable.perCoreMBs(t),
			float64(r.seekable.c.outSize)/float64(r.l.gzSize), human(r.amp.small.median))
	}
}

func measureLayer(c config, l layerInfo) (layerResult, error) {
	r := layerResult{l: l}
	out := filepath.Join(c.workdir, "sluice-bench-"+l.name+".szst")
	defer os.Remove(out)
	fmt.Fprintf(os.Stderr, "%s: seekable-zstd\n", l.name)
	sc, res, err := convertSeekable(l.gz, out, c.opts)
	if err != nil {
		return r, fmt.Errorf("%s: seekable-zstd: %w", l.name, err)
	}
	r.uncompressedSize = res.UncompressedSize
	r.seekable = row{"seekable-zstd (sluice)", sc}
	r.rows = append(r.rows, r.seekable)
	if c.estargz {
		for _, zc := range []bool{false, true} {
			name := map[bool]string{false: "eStargz (gzip, default level)", true: "eStargz zstd:chunked"}[zc]
			fmt.Fprintf(os.Stderr, "%s: %s\n", l.name, name)
			runtime.GC()
			ec, err := convertEStargz(l.gz, zc)
			if err != nil {
				return r, fmt.Errorf("%s: %s: %w", l.name, name, err)
			}
			r.rows = append(r.rows, row{name, ec})
			if !zc {
				r.estargz = &r.rows[len(r.rows)-1]
			}
		}
	}
	fmt.Fprintf(os.Stderr, "%s: gunzip + zstd floor\n", l.name)
	runtime.GC()
	fc, err := recompressFloor(l.gz, orDefault(c.opts.Level, streaming.DefaultLevel))
	if err != nil {
		return r, fmt.Errorf("%s: floor: %w", l.name, err)
	}
	r.floor = row{"floor: gunzip + zstd, one stream", fc}
	r.rows = append(r.rows, r.floor)
	if r.estargz != nil {
		r.estargz = &r.rows[1]
	}
	var startup []string
	startup, r.startupErr = startupFiles(l.rootfs, startupImports[l.name])
	fmt.Fprintf(os.Stderr, "%s: reads\n", l.name)
	r.amp, err = measureReads(out, res, startup)
	if err != nil {
		return r, fmt.Errorf("%s: reads: %w", l.name, err)
	}
	return r, nil
}

// runSweep converts each layer with several chunk sizes and reports size,
// speed and read amplification, to choose the defaults.
func runSweep(w io.Writer, c config, layers []layerInfo) error {
	fmt.Fprintln(w, "| layer | chunk | split | chunks | MB/s per core | output / gzip | 4 KiB fetch median / p90 | 1 MiB fetch median |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, l := range layers {
		for _, s := range strings.Split(c.sweep, ",") {
			opts := c.opts
			var err error
			if opts.ChunkSize, err = parseSize(strings.TrimSpace(s)); err != nil {
				return err
			}
			out := filepath.Join(c.workdir, "sluice-sweep.szst")
			runtime.GC()
			sc, res, err := convertSeekable(l.gz, out, opts)
			if err != nil {
				return err
			}
			a, err := measureReads(out, res, nil)
			os.Remove(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "| %s | %s | %s | %d | %.0f | %.3f | %s / %s | %s |\n", l.name, human(opts.ChunkSize),
				human(orDefault(opts.FileChunkSize, streaming.DefaultFileChunkSize)), res.Chunks,
				row{c: sc}.perCoreMBs(res.UncompressedSize), float64(res.Size)/float64(l.gzSize),
				human(a.small.median), human(a.small.p90), human(a.mib.median))
		}
	}
	return nil
}

func orDefault[T int64 | int](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

func human(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
