package main

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// target is the lazy / overlayfs throughput the project asks for.
const target = 0.8

// row is one line of the table: one read of one image with the page cache
// dropped or hot, by overlayfs and by one lazy mode.
type row struct {
	image, read, cache, mode string
	overlay, lazy            trialResult // medians by throughput
	// ratio is the median of the rounds' lazy / overlayfs throughputs,
	// the two of a round measured close together.
	ratio, ratioMin, ratioMax float64
	lazyCPU                   time.Duration // the FUSE manager's a pass, median
	fetched                   int64         // over every lazy pass of the row
}

func rows(sets []*imageSet, modes []*mode, results map[key][]trialResult, cfg config) []row {
	var out []row
	for _, s := range sets {
		for _, read := range cfg.reads {
			for _, cache := range cfg.caches {
				ov := results[key{s.name, read, cache, modes[0].name}]
				for _, m := range modes[1:] {
					lz := results[key{s.name, read, cache, m.name}]
					r := row{image: s.name, read: read, cache: cache, mode: m.name, overlay: median(ov), lazy: median(lz)}
					var ratios []float64
					var cpus []time.Duration
					for i := range min(len(ov), len(lz)) {
						ratios = append(ratios, lz[i].mbPerSec()/ov[i].mbPerSec())
						cpus = append(cpus, lz[i].managerCPU)
						r.fetched += lz[i].fetched
					}
					sort.Float64s(ratios)
					sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
					if len(ratios) > 0 {
						r.ratio, r.ratioMin, r.ratioMax = ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1]
						r.lazyCPU = cpus[len(cpus)/2]
					}
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// median returns the measurement of median throughput.
func median(ts []trialResult) trialResult {
	if len(ts) == 0 {
		return trialResult{}
	}
	s := append([]trialResult(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i].mbPerSec() < s[j].mbPerSec() })
	return s[len(s)/2]
}

// throughput shows a measurement as its read is judged: MB/s for
// sequential reads, files/s and MB/s for the walk.
func throughput(read string, t trialResult) string {
	if t.elapsed == 0 {
		return "-"
	}
	if read == readWalk {
		return fmt.Sprintf("%.0f files/s (%.1f MB/s)", t.filesPerSec(), t.mbPerSec())
	}
	return fmt.Sprintf("%.0f MB/s", t.mbPerSec())
}

func verdict(r row) string {
	if r.ratio >= target {
		return "met"
	}
	return "missed"
}

func printTable(w io.Writer, rs []row, sets []*imageSet, cfg config) {
	fmt.Fprintf(w, "%-8s %-6s %-8s %-10s %27s %27s %8s %12s %9s %10s\n", "image", "read", "cache", "mode", "overlayfs", "lazy", "lazy/ovl", "(min..max)", "FUSE CPU", "MB fetched")
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %-6s %-8s %-10s %27s %27s %8.2f %12s %9v %10.1f\n", r.image, r.read, r.cache, r.mode, throughput(r.read, r.overlay), throughput(r.read, r.lazy),
			r.ratio, fmt.Sprintf("%.2f..%.2f", r.ratioMin, r.ratioMax), r.lazyCPU.Round(10*time.Millisecond), float64(r.fetched)/1e6)
	}
	fmt.Fprintf(w, "\nMedians of %d rounds. %s\n", cfg.trials, describeSets(sets, cfg))
}

func describeSets(sets []*imageSet, cfg config) string {
	s := ""
	for _, set := range sets {
		s += fmt.Sprintf("%s: the %d largest files (%.0f MB); the walk reads %d files under %d KiB (%.1f MB). ", set.name, len(set.large),
			float64(set.largeBytes)/1e6, set.walkFiles, cfg.smallMax>>10, float64(set.walkBytes)/1e6)
	}
	return s
}

func writeMarkdown(w io.Writer, rs []row, sets []*imageSet, modes []*mode, cfg config) {
	names := map[string]string{readLarge: "largest files, sequential", readWalk: fmt.Sprintf("walk, every file < %d KiB", cfg.smallMax>>10)}
	build := ""
	if len(modes) > 2 {
		build = " mode |"
	}
	fmt.Fprintf(w, "| image | read | page cache |%s overlayfs | lazy mount | lazy / overlayfs (min..max) | FUSE manager CPU a pass | target ≥ %.1f |\n", build, target)
	fmt.Fprintf(w, "|---|---|---|%s---:|---:|---:|---:|---|\n", map[bool]string{true: "---|", false: ""}[build != ""])
	var fetched int64
	for _, r := range rs {
		cell := ""
		if build != "" {
			cell = " " + r.mode + " |"
		}
		fmt.Fprintf(w, "| %s | %s | %s |%s %s | %s | %.2f (%.2f..%.2f) | %.2f s | %s |\n", r.image, names[r.read], r.cache, cell, throughput(r.read, r.overlay),
			throughput(r.read, r.lazy), r.ratio, r.ratioMin, r.ratioMax, r.lazyCPU.Seconds(), verdict(r))
		fetched += r.fetched
	}
	fmt.Fprintf(w, "\nMedians of %d rounds, the modes' order turning from round to round; the ratio is the median of the rounds' own ratios. %s"+
		"FUSE manager CPU: its user and system time during a lazy pass. The registry sent %.1f MB during the timed passes.\n",
		cfg.trials, describeSets(sets, cfg), float64(fetched)/1e6)
}
