// Command warmread measures how fast a container reads an image lazily
// mounted by sluice-snapshotter once all of the image's data is on the
// node, against the same image unpacked by containerd's overlayfs
// snapshotter: what a lazy mount costs for as long as the container runs,
// after its start.
//
// It pushes each image to a sluiced it starts (which converts it), pulls it
// on two nodes, lazily with sluice-snapshotter on one and with overlayfs on
// the other, and mounts on each the root a container gets (an overlay of
// the image's layers under an empty upper directory). It waits until the
// FUSE manager has fetched every chunk of the lazy layers in the
// background and verified them, reads both roots whole once, then times,
// in rounds whose order of the two turns from round to round:
//
//   - sequential reads of the largest files of the image, 1 MiB a read;
//   - a walk of the whole tree in name order that opens and reads every
//     regular file under 64 KiB;
//
// each once after dropping the page cache (echo 3 > drop_caches: reads go
// to the disk, or to the FUSE manager, which serves them from its chunk
// cache) and right after again, for at least a second (hot: the page cache
// answers). Then it prints the medians and the median of the rounds' lazy
// / overlayfs ratios. Files are read with plain system calls, as a C
// program or Python reads them.
//
// To compare two builds of the snapshotter, -against DIR adds a third
// mode, lazy on a node running DIR/sluice-snapshotter, in the same rounds;
// -cache-memory and -fuse-read-ahead try the node's settings.
//
// It needs root, containerd, the images of bench/images/build.sh, and
// bin/sluiced and bin/sluice-snapshotter (make build). WARMREAD_KEEP=1
// keeps the registry's directory and the nodes' logs; -perf FILE records
// where the FUSE manager spends its CPU during the rounds (perf report -i
// FILE).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
	"github.com/sluicehq/sluice/bench/internal/testbed"
)

// images are the images warmread knows; their commands are never run.
var images = map[string]testbed.Image{
	"python3": {Name: "python3"},
	"numpy":   {Name: "numpy"},
	"webapp":  {Name: "webapp", Layers: []string{"python3", "webapp-runtime", "webapp-app"}},
}

// The reads, and the page cache states they are timed in.
const (
	readLarge = "large"
	readWalk  = "walk"

	cacheDropped = "dropped"
	cacheHot     = "hot"
)

// mode is one way a node reads the images: unpacked by overlayfs on a node
// of containerd alone, or lazily mounted by a build of sluice-snapshotter.
type mode struct {
	name        string // overlayfs, lazy, unpacked, or lazy (DIR) for -against
	snapshotter string // containerd's name for it
	build       string // the directory of its sluice-snapshotter
	// unpack: the snapshotter unpacks complete layers, and the view is
	// mounted after it has (a container created then); otherwise the
	// layers stay on FUSE, as for a container created before they were
	// complete.
	unpack bool
	node   *testbed.Node
}

func (m *mode) lazy() bool { return m.snapshotter == "sluice" }

type key struct{ image, read, cache, mode string }

// imageSet is an image's views, one a mode, and what is read of it.
type imageSet struct {
	name       string
	views      map[string]*view
	large      []string
	largeBytes int64
	// walkFiles and walkBytes are what a walk reads (the same each time).
	walkFiles int
	walkBytes int64
}

// config is what the flags ask for.
type config struct {
	images, reads, caches []string
	trials, nLarge        int
	smallMax, cacheMemory int64
	readAhead             int
	bin, against          string
	unpacked              bool
	markdown, perf        string
}

func main() {
	reporoot.Chdir()
	cfg := parseFlags()
	if os.Geteuid() != 0 {
		log.Fatal("warmread needs root (containerd, FUSE, mounts, drop_caches)")
	}
	ctx := context.Background()
	reg, err := testbed.Start(ctx, cfg.bin, testbed.Options{Name: "warmread", Keep: os.Getenv("WARMREAD_KEEP") != ""})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	if err := run(ctx, reg, cfg); err != nil {
		log.Print(err)
		// Return, so that the nodes and the registry stop.
	}
}

func parseFlags() config {
	var c config
	imageList := flag.String("images", "python3,numpy", "images to read (python3, numpy, webapp)")
	flag.IntVar(&c.trials, "trials", 5, "rounds; each reads every image every way, the modes' order turning (the median is reported)")
	flag.IntVar(&c.nLarge, "large", 20, "how many of an image's largest files the sequential reads read")
	flag.Int64Var(&c.smallMax, "small", 64<<10, "the walk reads the regular files smaller than this many bytes")
	flag.StringVar(&c.bin, "bin", "bin", "directory of sluiced and sluice-snapshotter")
	flag.BoolVar(&c.unpacked, "unpacked", true, "also read the view a container created after the snapshotter unpacked the complete layers gets (mode unpacked)")
	flag.StringVar(&c.against, "against", "", "directory of another sluice-snapshotter build, read lazily too in the same rounds")
	flag.StringVar(&c.markdown, "markdown", "", "write a markdown table to this file")
	readList := flag.String("reads", "large,walk", "reads to time: large (the largest files, sequentially), walk (every small file)")
	cacheList := flag.String("caches", "dropped,hot", "page cache states to time them in: dropped, hot (without dropped, an untimed pass warms it first)")
	flag.Int64Var(&c.cacheMemory, "cache-memory", 0, "the snapshotter's cacheMemoryBytes, its chunk cache's memory front (0: its default, 256 MiB)")
	flag.IntVar(&c.readAhead, "fuse-read-ahead", 0, "set the kernel's read-ahead of the lazy layers' FUSE mounts to this many KiB (0: as mounted, 128)")
	flag.StringVar(&c.perf, "perf", "", "record the FUSE manager's CPU profile with perf (call graphs) into this file while the rounds run")
	flag.Parse()
	c.images, c.reads, c.caches = strings.Split(*imageList, ","), strings.Split(*readList, ","), strings.Split(*cacheList, ",")
	for _, name := range c.images {
		if _, ok := images[name]; !ok {
			log.Fatalf("unknown image %q (python3, numpy, webapp)", name)
		}
	}
	for _, r := range c.reads {
		if r != readLarge && r != readWalk {
			log.Fatalf("unknown read %q (large, walk)", r)
		}
	}
	for _, cache := range c.caches {
		if cache != cacheDropped && cache != cacheHot {
			log.Fatalf("unknown page cache state %q (dropped, hot)", cache)
		}
	}
	var err error
	if c.bin, err = filepath.Abs(c.bin); err != nil {
		log.Fatal(err)
	}
	if c.against != "" {
		if c.against, err = filepath.Abs(c.against); err != nil {
			log.Fatal(err)
		}
	}
	return c
}

// run pushes the images, starts a node a mode, measures and reports.
func run(ctx context.Context, reg *testbed.Registry, cfg config) error {
	var imgs []testbed.Image
	for _, name := range cfg.images {
		if err := reg.PushImage(ctx, images[name]); err != nil {
			return err
		}
		imgs = append(imgs, images[name])
	}
	modes := []*mode{{name: "overlayfs", snapshotter: "overlayfs"}, {name: "lazy", snapshotter: "sluice", build: cfg.bin}}
	if cfg.unpacked {
		modes = append(modes, &mode{name: "unpacked", snapshotter: "sluice", build: cfg.bin, unpack: true})
	}
	if cfg.against != "" {
		modes = append(modes, &mode{name: "lazy (" + cfg.against + ")", snapshotter: "sluice", build: cfg.against})
	}
	for _, m := range modes {
		spec := testbed.NodeSpec{}
		if m.lazy() {
			var err error
			// Another build may predate unpackComplete (and never
			// unpacks); its configuration leaves the key out.
			if spec, err = reg.SluiceNodeWith(m.build, snapshotterConfig(cfg, m.unpack, m.build == cfg.bin)); err != nil {
				return err
			}
		}
		n, err := reg.StartNode(spec)
		if err != nil {
			return err
		}
		defer n.Stop()
		m.node = n
	}
	sets, err := prepare(ctx, reg, imgs, modes, cfg)
	if err != nil {
		return err
	}
	if cfg.perf != "" {
		stop, err := recordPerf(modes[1].node.ManagerPID(), cfg.perf)
		if err != nil {
			return err
		}
		defer stop()
	}
	results, err := measure(ctx, reg, modes, sets, cfg)
	if err != nil {
		return err
	}
	rs := rows(sets, modes, results, cfg)
	printTable(os.Stdout, rs, sets, cfg)
	if cfg.markdown != "" {
		f, err := os.Create(cfg.markdown)
		if err != nil {
			return err
		}
		defer f.Close()
		writeMarkdown(f, rs, sets, modes, cfg)
	}
	return nil
}

// snapshotterConfig is what the flags and the mode add to the
// snapshotter's configuration.
func snapshotterConfig(cfg config, unpack, knowsUnpack bool) string {
	extra := ""
	if knowsUnpack {
		extra = fmt.Sprintf("unpackComplete: %v\n", unpack)
	}
	if cfg.cacheMemory > 0 {
		extra += fmt.Sprintf("cacheMemoryBytes: %d\n", cfg.cacheMemory)
	}
	return extra
}

// prepare pulls and mounts each image every way, waits until the lazy
// layers are complete on their nodes and reads every view whole once.
func prepare(ctx context.Context, reg *testbed.Registry, imgs []testbed.Image, modes []*mode, cfg config) ([]*imageSet, error) {
	var sets []*imageSet
	layers := 0
	for _, img := range imgs {
		ref := reg.Host + "/" + img.Name + ":latest"
		s := &imageSet{name: img.Name, views: map[string]*view{}}
		for _, m := range modes {
			start := time.Now()
			v, err := pullAndView(ctx, m.node, ref, m.snapshotter)
			if err != nil {
				return nil, err
			}
			s.views[m.name] = v
			log.Printf("%s: pulled with %s in %v", img.Name, m.name, time.Since(start).Round(time.Millisecond))
		}
		var err error
		if s.large, s.largeBytes, err = largestFiles(s.views[modes[0].name].dir, cfg.nLarge); err != nil {
			return nil, err
		}
		layers += len(reg.Streamed[img.Name])
		sets = append(sets, s)
	}
	start := time.Now()
	for _, m := range modes {
		if !m.lazy() {
			continue
		}
		if m.unpack {
			// The view mounted at the pull holds the FUSE mounts; a
			// view mounted once the layers are unpacked is the root a
			// container created now gets.
			if err := waitUnpacked(ctx, m.node, layers, 30*time.Minute); err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			for _, s := range sets {
				v, err := newView(ctx, m.node, reg.Host+"/"+s.name+":latest", m.snapshotter)
				if err != nil {
					return nil, err
				}
				s.views[m.name] = v
			}
			continue
		}
		if err := waitComplete(ctx, m.node, layers, 30*time.Minute); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		if cfg.readAhead > 0 {
			if err := setReadAhead(m.node.Dir, cfg.readAhead); err != nil {
				return nil, err
			}
		}
	}
	log.Printf("every lazy layer fetched in the background and verified, %v after the last pull", time.Since(start).Round(time.Second))
	for _, s := range sets {
		for _, m := range modes {
			before, err := reg.BytesSent(ctx)
			if err != nil {
				return nil, err
			}
			p, err := readAll(s.views[m.name].dir)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", s.name, m.name, err)
			}
			after, err := reg.BytesSent(ctx)
			if err != nil {
				return nil, err
			}
			log.Printf("%s %s: read whole once: %d files, %.1f MB in %v; %.1f MB fetched from the registry meanwhile", s.name, m.name, p.files, float64(p.bytes)/1e6,
				p.elapsed.Round(time.Millisecond), float64(after-before)/1e6)
		}
	}
	return sets, nil
}

// trialResult is one timed measurement (its passes summed), and for lazy
// ones the FUSE manager's CPU time a pass and what the registry sent
// meanwhile.
type trialResult struct {
	pass
	runs       int // passes
	managerCPU time.Duration
	fetched    int64
}

// measure runs the rounds: in each, every image, read and mode, the modes
// in an order that turns from round to round.
func measure(ctx context.Context, reg *testbed.Registry, modes []*mode, sets []*imageSet, cfg config) (map[key][]trialResult, error) {
	results := map[key][]trialResult{}
	for i := range cfg.trials {
		order := append(slices.Clone(modes[i%len(modes):]), modes[:i%len(modes)]...)
		for _, s := range sets {
			for _, read := range cfg.reads {
				for _, m := range order {
					dir := s.views[m.name].dir
					once := func() (pass, error) { return readSequential(dir, s.large, 1<<20) }
					if read == readWalk {
						once = func() (pass, error) { return walkSmall(dir, cfg.smallMax) }
					}
					if !slices.Contains(cfg.caches, cacheDropped) {
						if _, err := once(); err != nil {
							return nil, err
						}
					}
					for _, cache := range cfg.caches {
						if cache == cacheDropped {
							if err := dropCaches(); err != nil {
								return nil, err
							}
						}
						t, err := timed(ctx, reg, m, once, cache == cacheHot)
						if err != nil {
							return nil, fmt.Errorf("%s %s %s %s: %w", s.name, read, cache, m.name, err)
						}
						if read == readWalk {
							s.walkFiles, s.walkBytes = t.files/t.runs, t.bytes/int64(t.runs)
						}
						k := key{s.name, read, cache, m.name}
						results[k] = append(results[k], t)
						log.Printf("%-7s %-5s %-7s %-9s trial %d: %7.1f MB/s %8.0f files/s (%d files, %.1f MB in %v; FUSE manager CPU %v a pass; %.1f MB fetched)",
							s.name, read, cache, m.name, i+1, t.mbPerSec(), t.filesPerSec(), t.files, float64(t.bytes)/1e6, t.elapsed.Round(time.Millisecond),
							t.managerCPU.Round(10*time.Millisecond), float64(t.fetched)/1e6)
					}
				}
			}
		}
	}
	return results, nil
}

// hotFor is how long a hot measurement reads for, at least: its passes
// take tens of milliseconds each, which the clock and the scheduler blur.
const hotFor = time.Second

// timed runs a pass, or with hot passes until they have taken hotFor, and
// notes the FUSE manager's CPU time (lazy modes) and the registry's bytes
// around them.
func timed(ctx context.Context, reg *testbed.Registry, m *mode, run func() (pass, error), hot bool) (trialResult, error) {
	pid := 0
	if m.lazy() {
		if pid = m.node.ManagerPID(); pid == 0 {
			return trialResult{}, fmt.Errorf("no FUSE manager on %s", m.node.ManagerSock)
		}
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return trialResult{}, err
	}
	sent0, err := reg.BytesSent(ctx)
	if err != nil {
		return trialResult{}, err
	}
	var p pass
	runs := 0
	for ; p.elapsed == 0 || hot && p.elapsed < hotFor; runs++ {
		one, err := run()
		if err != nil {
			return trialResult{}, err
		}
		p.files += one.files
		p.bytes += one.bytes
		p.elapsed += one.elapsed
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return trialResult{}, err
	}
	sent1, err := reg.BytesSent(ctx)
	if err != nil {
		return trialResult{}, err
	}
	return trialResult{pass: p, runs: runs, managerCPU: (cpu1 - cpu0) / time.Duration(runs), fetched: sent1 - sent0}, nil
}
