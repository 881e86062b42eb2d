// Command coldstart measures how soon a container produces its first line
// of output after its image is pulled, on a node pulling from a registry
// over a rate-limited link: a full pull with containerd's overlayfs
// snapshotter against a lazy pull with sluice-snapshotter, side by side in
// one run, with the bytes fetched from the registry before that first line.
//
// It needs root, containerd (1.6 from Debian, or any), runc, tc, the images
// of bench/images/build.sh, and bin/sluiced and bin/sluice-snapshotter
// (make build). Each trial gets a fresh containerd and snapshotter, so every
// start is cold.
//
// To compare two builds of the snapshotter, -against DIR alternates their
// trials in one run (one row each): drift in the machine's speed, which
// moves 5-trial medians here by tens of milliseconds, then falls on both.
//
// For looking into a run, these environment variables:
//
//	COLDSTART_KEEP=1        keep each node's daemon logs in $TMPDIR and the registry's directory
//	COLDSTART_ACCESS_LOG=1  make sluiced log every request (in the kept directory)
//	COLDSTART_RERUN=1       run the container a second time on the same node, all of it local
//	COLDSTART_RERUN=cold    the same after dropping the page cache, so reads go through the snapshotter
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
)

// workload is an image and the command whose first line is waited for.
type workload struct {
	name string
	args []string
}

var workloads = map[string]workload{
	"python3": {"python3", []string{"python3", "-c", "print('hello from python3')"}},
	"numpy":   {"numpy", []string{"python3", "-c", "import numpy, scipy.linalg; print('numpy and scipy ready')"}},
}

func main() {
	reporoot.Chdir()
	images := flag.String("images", "python3,numpy", "images to run (python3, numpy)")
	rates := flag.String("rates", "500mbit,100mbit", "registry link rates (tc syntax)")
	trials := flag.Int("trials", 3, "trials per image, rate and mode (the median is reported)")
	modes := flag.String("modes", "full,lazy,profiled", "full (overlayfs, download everything), lazy (sluice-snapshotter, first start anywhere), profiled (sluice-snapshotter, a later node: the registry has the first start's profile)")
	binDir := flag.String("bin", "bin", "directory of sluiced and sluice-snapshotter")
	against := flag.String("against", "", "directory of another sluice-snapshotter build: lazy and profiled trials alternate between the two, one row each (both may replace the registry's profile)")
	markdown := flag.String("markdown", "", "write a markdown table to this file")
	chart := flag.String("chart", "", "write a PNG chart to this file")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("coldstart needs root (containerd, FUSE, tc)")
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		log.Fatal(err)
	}
	builds := []string{bin}
	if *against != "" {
		other, err := filepath.Abs(*against)
		if err != nil {
			log.Fatal(err)
		}
		builds = append(builds, other)
	}
	ctx := context.Background()
	env, err := newEnv(ctx, bin)
	if err != nil {
		log.Fatal(err)
	}
	defer env.close()
	var wls []workload
	for _, name := range strings.Split(*images, ",") {
		w, ok := workloads[name]
		if !ok {
			log.Fatalf("unknown image %q (python3, numpy)", name)
		}
		if err := env.pushImage(ctx, w); err != nil {
			log.Fatal(err)
		}
		wls = append(wls, w)
	}
	var results []result
	for _, rate := range strings.Split(*rates, ",") {
		if err := shape(env.port, rate); err != nil {
			log.Fatal(err)
		}
		for _, w := range wls {
			for _, mode := range strings.Split(*modes, ",") {
				if mode == "profiled" {
					// The first start anywhere records the profile.
					if err := env.deleteProfiles(ctx, w); err != nil {
						log.Fatal(err)
					}
					r, err := env.trial(ctx, w, "record", bin)
					if err != nil {
						log.Fatalf("%s %s recording a startup profile: %v", w.name, rate, err)
					}
					log.Printf("%-8s %-8s record   : first line after %v, %.1f MB fetched (then %s)", w.name, rate,
						r.firstLine.Round(time.Millisecond), float64(r.bytes)/1e6, phases.Flush())
				}
				// With two builds, their trials alternate, so that drift in
				// the machine's speed falls on both alike.
				sns := builds
				if mode == "full" {
					sns = builds[:1]
				}
				runs := make([][]trialResult, len(sns))
				for i := range *trials {
					for k, sn := range sns {
						label := modeLabel(mode, sns, k)
						r, err := env.trial(ctx, w, mode, sn)
						if err != nil {
							log.Fatalf("%s %s %s trial %d: %v", w.name, rate, label, i+1, err)
						}
						log.Printf("%-8s %-8s %-5s trial %d: first line after %v, %.1f MB fetched (pull %v; then %s)", w.name, rate, label, i+1,
							r.firstLine.Round(time.Millisecond), float64(r.bytes)/1e6, r.pull.Round(time.Millisecond), phases.Flush())
						runs[k] = append(runs[k], r)
					}
				}
				for k := range sns {
					results = append(results, summarize(w.name, rate, modeLabel(mode, sns, k), runs[k]))
				}
			}
		}
	}
	unshape()
	printTable(os.Stdout, results)
	if *markdown != "" {
		f, err := os.Create(*markdown)
		if err != nil {
			log.Fatal(err)
		}
		writeMarkdown(f, results, *trials)
		f.Close()
	}
	if *chart != "" {
		if err := drawChart(*chart, results); err != nil {
			log.Fatal(err)
		}
	}
}

// modeLabel names a mode's row: with two snapshotter builds, the second
// one's rows carry its directory.
func modeLabel(mode string, builds []string, k int) string {
	if k == 0 {
		return mode
	}
	return mode + " (" + builds[k] + ")"
}

type trialResult struct {
	firstLine time.Duration
	pull      time.Duration
	bytes     int64
}

type result struct {
	image, rate, mode string
	firstLine         time.Duration // median
	min, max          time.Duration
	pull              time.Duration // median
	bytes             int64         // median
}

func summarize(image, rate, mode string, runs []trialResult) result {
	sort.Slice(runs, func(i, j int) bool { return runs[i].firstLine < runs[j].firstLine })
	mid := runs[len(runs)/2]
	return result{image: image, rate: rate, mode: mode, firstLine: mid.firstLine, min: runs[0].firstLine, max: runs[len(runs)-1].firstLine,
		pull: mid.pull, bytes: mid.bytes}
}

func printTable(w *os.File, rs []result) {
	fmt.Fprintf(w, "%-8s %-8s %-5s %12s %12s %12s %10s\n", "image", "rate", "mode", "first line", "(min..max)", "pull", "MB fetched")
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %-8s %-5s %12s %12s %12s %10.1f\n", r.image, r.rate, r.mode, r.firstLine.Round(time.Millisecond),
			fmt.Sprintf("%v..%v", r.min.Round(10*time.Millisecond), r.max.Round(10*time.Millisecond)), r.pull.Round(time.Millisecond), float64(r.bytes)/1e6)
	}
}

func writeMarkdown(f *os.File, rs []result, trials int) {
	fmt.Fprintf(f, "| image | link | full pull | lazy, first start | lazy, later nodes (profile) | speed-up (first / later) | MB fetched before the first line (full / first / later) |\n|---|---|---:|---:|---:|---:|---:|\n")
	byKey := map[string]map[string]result{}
	var keys []string
	for _, r := range rs {
		k := r.image + " " + r.rate
		if byKey[k] == nil {
			byKey[k] = map[string]result{}
			keys = append(keys, k)
		}
		byKey[k][r.mode] = r
	}
	speedup := func(full, r result) string {
		if full.firstLine == 0 || r.firstLine == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0fx", full.firstLine.Seconds()/r.firstLine.Seconds())
	}
	mb := func(r result) string {
		if r.firstLine == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(r.bytes)/1e6)
	}
	for _, k := range keys {
		full, lazy, prof := byKey[k]["full"], byKey[k]["lazy"], byKey[k]["profiled"]
		fmt.Fprintf(f, "| %s | %s | %s | %s | %s | %s / %s | %s / %s / %s |\n", strings.Fields(k)[0], strings.Fields(k)[1],
			fmtDur(full), fmtDur(lazy), fmtDur(prof), speedup(full, lazy), speedup(full, prof), mb(full), mb(lazy), mb(prof))
	}
	fmt.Fprintf(f, "\nMedians of %d trials (min..max in the text table); each trial starts a fresh containerd and snapshotter with an empty cache.\n", trials)
}

func fmtDur(r result) string {
	if r.firstLine == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", r.firstLine.Seconds())
}
