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
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
	"github.com/sluicehq/sluice/bench/internal/testbed"
)

// workload is an image and the command whose first line is waited for.
type workload = testbed.Image

var workloads = map[string]workload{
	"python3": {Name: "python3", Args: []string{"python3", "-c", "print('hello from python3')"}},
	"numpy":   {Name: "numpy", Args: []string{"python3", "-c", "import numpy, scipy.linalg; print('numpy and scipy ready')"}},
	// Three layers, as most images have: the python3 image's layer as a
	// shared base, a runtime layer of web libraries that whites out the
	// base's package lists and cache, and an app layer.
	"webapp": {Name: "webapp", Layers: []string{"python3", "webapp-runtime", "webapp-app"}, Args: []string{"python3", "/app/main.py"}},
}

func main() {
	reporoot.Chdir()
	images := flag.String("images", "python3,numpy,webapp", "images to run (python3, numpy, webapp)")
	rates := flag.String("rates", "500mbit,100mbit", "registry link rates (tc syntax; unshaped: loopback as it is)")
	trials := flag.Int("trials", 3, "trials per image, rate and mode (the median is reported)")
	modes := flag.String("modes", "full,lazy,profiled,estargz,estargz-opt,estargz-opt-async,soci,soci-prefetch",
		"full (overlayfs, download everything), lazy (sluice-snapshotter, first start anywhere: only the registry's inferred profile), noprofile (the same without it), profiled (sluice-snapshotter, a later node: the registry has the first start's profile), "+
			"estargz, estargz-opt, estargz-opt-async (stargz-snapshotter on eStargz, optimized by its analyzer, and with prefetch_async_size), soci, soci-prefetch (soci-snapshotter on a SOCI index v2, and with a prefetch list)")
	binDir := flag.String("bin", "bin", "directory of sluiced and sluice-snapshotter")
	against := flag.String("against", "", "directory of another sluice-snapshotter build: lazy and profiled trials alternate between the two, one row each (both may replace the registry's profile)")
	markdown := flag.String("markdown", "", "write a markdown table to this file")
	fanout := flag.String("fanout", "", "after the trials, replay the recorded first start's range reads from this many concurrent clients (1,10,50,200), unshaped (needs the profiled mode)")
	fanoutFor := flag.Duration("fanout-duration", 10*time.Second, "how long each fan-out run lasts")
	jsonOut := flag.String("json", "", "write the results as JSON to this file: one object per image, rate and mode")
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
	env, err := newEnv(ctx, bin, testbed.Options{Name: "coldstart", Keep: os.Getenv("COLDSTART_KEEP") != "", AccessLog: os.Getenv("COLDSTART_ACCESS_LOG") != ""})
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	var wls []workload
	for _, name := range strings.Split(*images, ",") {
		w, ok := workloads[name]
		if !ok {
			log.Fatalf("unknown image %q (python3, numpy, webapp)", name)
		}
		if err := env.PushImage(ctx, w); err != nil {
			log.Fatal(err)
		}
		// What the registry inferred at conversion, for first starts.
		if env.inferred[w.Name], err = env.currentProfiles(ctx, w); err != nil {
			log.Fatal(err)
		}
		wls = append(wls, w)
	}
	modeList := strings.Split(*modes, ",")
	for _, m := range modeList {
		if _, ok := peerModes[m]; !ok && m != "full" && m != "lazy" && m != "noprofile" && m != "profiled" {
			log.Fatalf("unknown mode %q", m)
		}
	}
	for _, w := range wls {
		if err := env.preparePeers(ctx, w, modeList); err != nil {
			log.Fatal(err)
		}
	}
	var results []result
	shaped := false // lo's queueing is ours to change only once we shaped it
	for _, rate := range strings.Split(*rates, ",") {
		if rate == "unshaped" {
			if shaped {
				unshape()
				shaped = false
			}
		} else {
			if err := shape(env.Port, rate); err != nil {
				log.Fatal(err)
			}
			shaped = true
		}
		for _, w := range wls {
			if slices.Contains(modeList, "profiled") {
				// A start with no profile records the profile; later
				// nodes' trials get it back, whatever a first start's
				// trial left.
				r, err := env.trial(ctx, w, "record", bin)
				if err != nil {
					log.Fatalf("%s %s recording a startup profile: %v", w.Name, rate, err)
				}
				log.Printf("%-8s %-8s record   : first line after %v, %.1f MB fetched (then %s)", w.Name, rate,
					r.firstLine.Round(time.Millisecond), float64(r.bytes)/1e6, phases.Flush())
				if env.profiles[w.Name], err = env.currentProfiles(ctx, w); err != nil {
					log.Fatal(err)
				}
			}
			// Each trial round runs every mode once, so that drift in the
			// machine's speed falls on all alike; with two builds, theirs
			// alternate too.
			type row struct {
				mode, label, sn string
				runs            []trialResult
			}
			var rows []*row
			for _, mode := range modeList {
				sns := builds
				if mode == "full" || peerModes[mode].snapshotter != "" {
					sns = builds[:1]
				}
				for k, sn := range sns {
					rows = append(rows, &row{mode: mode, label: modeLabel(mode, sns, k), sn: sn})
				}
			}
			for i := range *trials {
				for _, r := range rows {
					var t trialResult
					var err error
					if _, peer := peerModes[r.mode]; peer {
						t, err = env.peerTrial(ctx, w, r.mode)
					} else {
						t, err = env.trial(ctx, w, r.mode, r.sn)
					}
					if err != nil {
						log.Fatalf("%s %s %s trial %d: %v", w.Name, rate, r.label, i+1, err)
					}
					log.Printf("%-8s %-8s %-17s trial %d: first line after %v, %.1f MB fetched (pull %v; then %s)", w.Name, rate, r.label, i+1,
						t.firstLine.Round(time.Millisecond), float64(t.bytes)/1e6, t.pull.Round(time.Millisecond), phases.Flush())
					r.runs = append(r.runs, t)
				}
			}
			for _, r := range rows {
				results = append(results, summarize(w.Name, rate, r.label, r.runs))
			}
		}
	}
	if shaped {
		unshape()
	}
	counts, err := parseCounts(*fanout)
	if err != nil {
		log.Fatal(err)
	}
	var fan []fanOutResult
	for _, w := range wls {
		for _, n := range counts {
			r, err := env.fanOut(ctx, w, n, *fanoutFor)
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("%-8s fan-out %3d clients: %.0f range requests/s, %.1f MB/s, p99 %v, %d errors", w.Name, n, r.requestsPerSec, r.megabytesPerSec, r.p99.Round(10*time.Microsecond), r.errors)
			fan = append(fan, r)
		}
	}
	printTable(os.Stdout, results)
	if len(fan) > 0 {
		fmt.Println()
		printFanOut(os.Stdout, fan)
	}
	if *markdown != "" {
		f, err := os.Create(*markdown)
		if err != nil {
			log.Fatal(err)
		}
		writeMarkdown(f, results, *trials)
		if len(fan) > 0 {
			writeFanOutMarkdown(f, fan)
		}
		f.Close()
	}
	if *jsonOut != "" {
		if err := writeJSON(*jsonOut, results); err != nil {
			log.Fatal(err)
		}
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
	bytes     int64 // sent by the registry before the first line
	// read is what the container read of the streamed layers before its
	// first line (Sluice modes), warm the first line of a second start
	// on the same node with everything local (profiled).
	read int64
	warm time.Duration
}

type result struct {
	image, rate, mode string
	firstLine         time.Duration // median
	min, max          time.Duration
	pull              time.Duration // median
	bytes             int64         // median
	read              int64         // median
	warm              time.Duration // median
	trials            []trialResult // in the order run
}

func summarize(image, rate, mode string, runs []trialResult) result {
	inOrder := slices.Clone(runs)
	sort.Slice(runs, func(i, j int) bool { return runs[i].firstLine < runs[j].firstLine })
	mid := runs[len(runs)/2]
	reads := slices.Sorted(func(yield func(int64) bool) {
		for _, r := range runs {
			yield(r.read)
		}
	})
	warms := slices.Sorted(func(yield func(time.Duration) bool) {
		for _, r := range runs {
			yield(r.warm)
		}
	})
	return result{image: image, rate: rate, mode: mode, firstLine: mid.firstLine, min: runs[0].firstLine, max: runs[len(runs)-1].firstLine,
		pull: mid.pull, bytes: mid.bytes, read: reads[len(reads)/2], warm: warms[len(warms)/2], trials: inOrder}
}

func printTable(w *os.File, rs []result) {
	fmt.Fprintf(w, "%-8s %-8s %-17s %12s %12s %12s %10s %8s %10s\n", "image", "rate", "mode", "first line", "(min..max)", "pull", "MB fetched", "MB read", "warm start")
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %-8s %-17s %12s %12s %12s %10.1f %8.1f %10s\n", r.image, r.rate, r.mode, r.firstLine.Round(time.Millisecond),
			fmt.Sprintf("%v..%v", r.min.Round(10*time.Millisecond), r.max.Round(10*time.Millisecond)), r.pull.Round(time.Millisecond), float64(r.bytes)/1e6,
			float64(r.read)/1e6, r.warm.Round(time.Millisecond))
	}
}

// writeMarkdown writes a table of every mode side by side (median first
// line, and MB fetched before it), then the ratios the project tracks.
func writeMarkdown(f *os.File, rs []result, trials int) {
	type key struct{ image, rate string }
	var keys []key
	var modes []string
	byKey := map[key]map[string]result{}
	for _, r := range rs {
		k := key{r.image, r.rate}
		if byKey[k] == nil {
			byKey[k] = map[string]result{}
			keys = append(keys, k)
		}
		if !slices.Contains(modes, r.mode) {
			modes = append(modes, r.mode)
		}
		byKey[k][r.mode] = r
	}
	fmt.Fprintf(f, "| image | link | %s |\n|---|---|%s\n", strings.Join(modes, " | "), strings.Repeat("---:|", len(modes)))
	for _, k := range keys {
		var cells []string
		for _, m := range modes {
			r, ok := byKey[k][m]
			if !ok {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%s (%.1f MB)", fmtDur(r), float64(r.bytes)/1e6))
		}
		fmt.Fprintf(f, "| %s | %s | %s |\n", k.image, k.rate, strings.Join(cells, " | "))
	}
	fmt.Fprintf(f, "\nMedians of %d trials, trials alternating mode by mode; in parentheses the MB the registry sent before the first line. Each trial starts a fresh containerd and snapshotter with an empty cache.\n", trials)
	ratio := func(k key, a, b string, bytes bool) string {
		ra, oka := byKey[k][a]
		rb, okb := byKey[k][b]
		if !oka || !okb || rb.firstLine == 0 {
			return "-"
		}
		if bytes {
			return fmt.Sprintf("%.2f", float64(ra.bytes)/float64(rb.bytes))
		}
		return fmt.Sprintf("%.2f", ra.firstLine.Seconds()/rb.firstLine.Seconds())
	}
	best := func(k key, candidates ...string) string {
		b := ""
		for _, c := range candidates {
			if r, ok := byKey[k][c]; ok && (b == "" || r.firstLine < byKey[k][b].firstLine) {
				b = c
			}
		}
		return b
	}
	// The later node against what its link allows: the bytes the
	// container read, at the link's rate, plus a start with everything
	// local.
	ideal := func(k key) string {
		r, ok := byKey[k]["profiled"]
		bps, err := rateBits(k.rate)
		if !ok || err != nil || r.warm == 0 {
			return "-"
		}
		floor := float64(r.read)*8/bps + r.warm.Seconds()
		return fmt.Sprintf("%.2f (%.1f MB read, warm %.2f s)", r.firstLine.Seconds()/floor, float64(r.read)/1e6, r.warm.Seconds())
	}
	fmt.Fprintf(f, "\n| image | link | lazy / profiled | lazy / estargz-opt | profiled / best eStargz-opt | best Sluice / best SOCI | MB: lazy / estargz-opt | profiled / (read ÷ link + warm) |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range keys {
		bestEs := best(k, "estargz-opt", "estargz-opt-async")
		bestSoci := best(k, "soci", "soci-prefetch")
		bestSluice := best(k, "lazy", "profiled")
		fmt.Fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", k.image, k.rate, ratio(k, "lazy", "profiled", false), ratio(k, "lazy", "estargz-opt", false),
			ratio(k, "profiled", bestEs, false), ratio(k, bestSluice, bestSoci, false), ratio(k, "lazy", "estargz-opt", true), ideal(k))
	}
}

// writeJSON writes one object per image, rate and mode.
func writeJSON(path string, rs []result) error {
	type trial struct {
		FirstLine float64 `json:"first_line_s"`
		Pull      float64 `json:"pull_s"`
		MB        float64 `json:"mb_fetched"`
		MBRead    float64 `json:"mb_read,omitempty"`
		Warm      float64 `json:"warm_s,omitempty"`
	}
	type row struct {
		Image     string  `json:"image"`
		Rate      string  `json:"rate"`
		Mode      string  `json:"mode"`
		Median    float64 `json:"median_s"`
		Min       float64 `json:"min_s"`
		Max       float64 `json:"max_s"`
		MBFetched float64 `json:"mb_fetched"`
		MBRead    float64 `json:"mb_read,omitempty"`
		Warm      float64 `json:"warm_s,omitempty"`
		Trials    []trial `json:"trials"`
	}
	var out []row
	for _, r := range rs {
		o := row{Image: r.image, Rate: r.rate, Mode: r.mode, Median: r.firstLine.Seconds(), Min: r.min.Seconds(), Max: r.max.Seconds(), MBFetched: float64(r.bytes) / 1e6,
			MBRead: float64(r.read) / 1e6, Warm: r.warm.Seconds()}
		for _, t := range r.trials {
			o.Trials = append(o.Trials, trial{FirstLine: t.firstLine.Seconds(), Pull: t.pull.Seconds(), MB: float64(t.bytes) / 1e6,
				MBRead: float64(t.read) / 1e6, Warm: t.warm.Seconds()})
		}
		out = append(out, o)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func fmtDur(r result) string {
	if r.firstLine == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", r.firstLine.Seconds())
}
