// Command cluster measures what more replicas and more workers buy in the
// reference topology of deploy/local-cluster.sh (HAProxy over 3 `sluiced
// serve` replicas, 2 `sluiced worker`s, PostgreSQL and Azurite), in one
// run on one machine:
//
//   - manifest GET and 1 MiB blob GET throughput through HAProxy with 3
//     replicas and then with 1 (two stopped with SIGTERM, drained and taken
//     out by HAProxy's /readyz checks), with the CPU each process used;
//   - conversions per minute with 2 workers and then with 1;
//   - what a client doing sequential manifest GETs sees when a replica is
//     killed with SIGKILL: the longest wait between two successful
//     responses and the requests that failed.
//
// It brings the cluster up itself and down at the end, also on SIGINT.
// It prints a table, and with -markdown the same for docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
)

type options struct {
	duration   time.Duration
	clients    int
	images     int
	layers     int
	layerSize  int
	blobs      int
	failWindow time.Duration
}

func main() {
	reporoot.Chdir()
	var o options
	port := flag.Int("port", 5300, "HAProxy's port; the cluster uses the 8 above it too")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "duration of each GET run")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients of the GET runs")
	flag.IntVar(&o.images, "images", 8, "images converted with each worker count")
	flag.IntVar(&o.layers, "layers", 2, "layers per converted image")
	flag.IntVar(&o.layerSize, "layer-size", 16<<20, "uncompressed bytes per layer")
	flag.IntVar(&o.blobs, "blobs", 64, "1 MiB blobs the blob GETs pick from")
	markdown := flag.Bool("markdown", false, "also print markdown tables")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/cluster: ")
	if os.Geteuid() != 0 {
		log.Fatal("run as root: the cluster's PostgreSQL runs as the postgres user")
	}

	dir, err := os.MkdirTemp("", "sluice-bench-cluster-")
	if err != nil {
		log.Fatal(err)
	}
	c, err := clusterUp(dir, *port)
	defer c.down()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		log.Print("interrupted; bringing the cluster down")
		c.down()
		os.Exit(1)
	}()
	if err != nil {
		log.Print(err)
		return
	}
	rep, err := run(c, o)
	if err != nil {
		log.Print(err)
		c.down()
		os.Exit(1)
	}
	rep.print(os.Stdout, o, *markdown)
}

// report is everything one run measured.
type report struct {
	manifest, blob [2]result // 3 replicas, 1 replica
	manifestCPU    [2]cpuUse
	blobCPU        [2]cpuUse
	convert        [2]time.Duration // 2 workers, 1 worker
	convertCPU     [2]cpuUse
	failover       failover
}

const (
	benchRepo   = "bench/cluster"
	convertRepo = "bench/cluster-convert"
)

func run(c *cluster, o options) (*report, error) {
	ctx := context.Background()
	cl := newClient(c.base(), c.password)
	if err := cl.login(benchRepo); err != nil {
		return nil, err
	}
	log.Printf("pushing %d blobs of 1 MiB and a manifest", o.blobs)
	var blobs []string
	rng := rand.New(rand.NewPCG(1, 2))
	for range o.blobs {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		d, err := cl.pushBlob(ctx, benchRepo, b)
		if err != nil {
			return nil, err
		}
		blobs = append(blobs, "/v2/"+benchRepo+"/blobs/"+d.String())
	}
	img, err := makeImage(0, 1, 64<<10)
	if err != nil {
		return nil, err
	}
	if err := cl.pushImage(ctx, benchRepo, "latest", img.config, img.layers); err != nil {
		return nil, err
	}

	r := &report{}
	measure := func(i int) error {
		manifest := func(*rand.Rand) string { return "/v2/" + benchRepo + "/manifests/latest" }
		blob := func(rng *rand.Rand) string { return blobs[rng.IntN(len(blobs))] }
		var err error
		a := c.sampleCPU()
		if r.manifest[i], err = cl.load(o.clients, o.duration, manifest, manifestType); err != nil {
			return err
		}
		b := c.sampleCPU()
		if r.blob[i], err = cl.load(o.clients, o.duration, blob, "*/*"); err != nil {
			return err
		}
		r.manifestCPU[i], r.blobCPU[i] = cpuBetween(a, b), cpuBetween(b, c.sampleCPU())
		return nil
	}
	log.Print("GETs through HAProxy, 3 replicas")
	if err := measure(0); err != nil {
		return nil, err
	}

	log.Print("killing replica-3 (SIGKILL) under sequential manifest GETs")
	if err := cl.login(benchRepo); err != nil {
		return nil, err
	}
	if r.failover, err = measureFailover(c, cl, "replica-3"); err != nil {
		return nil, err
	}

	log.Print("stopping replica-2 (SIGTERM) and waiting until HAProxy takes it out")
	if err := c.signal("replica-2", syscall.SIGTERM); err != nil {
		return nil, err
	}
	if err := c.waitOut("replica-2", 30*time.Second); err != nil {
		return nil, err
	}
	if err := c.waitExit("replica-2", 30*time.Second); err != nil {
		return nil, err
	}
	if err := cl.login(benchRepo); err != nil {
		return nil, err
	}
	log.Print("GETs through HAProxy, 1 replica")
	if err := measure(1); err != nil {
		return nil, err
	}

	for i, workers := range []int{2, 1} {
		if workers == 1 {
			log.Print("stopping worker-2 (SIGTERM)")
			if err := c.signal("worker-2", syscall.SIGTERM); err != nil {
				return nil, err
			}
			if err := c.waitExit("worker-2", 60*time.Second); err != nil {
				return nil, err
			}
		}
		if err := cl.login(convertRepo); err != nil {
			return nil, err
		}
		log.Printf("pushing %d images of %d layers of %d MiB", o.images, o.layers, o.layerSize>>20)
		var tags []string
		for n := range o.images {
			img, err := makeImage(uint64(100*workers+n+1), o.layers, o.layerSize)
			if err != nil {
				return nil, err
			}
			tag := fmt.Sprintf("w%d-%d", workers, n)
			if err := cl.pushImage(ctx, convertRepo, tag, img.config, img.layers); err != nil {
				return nil, err
			}
			tags = append(tags, tag)
		}
		log.Printf("converting them with %d worker(s)", workers)
		a := c.sampleCPU()
		if r.convert[i], err = cl.convertAll(ctx, convertRepo, tags); err != nil {
			return nil, err
		}
		r.convertCPU[i] = cpuBetween(a, c.sampleCPU())
	}
	return r, nil
}

// failover is what a sequential client saw while a replica was killed.
type failover struct {
	requests, failed int
	longestGap       time.Duration // between two successful responses
	out              time.Duration // from the kill to HAProxy marking it down
}

// measureFailover GETs the manifest one request after another, retrying
// on errors and 5xx answers; one second in, it kills the replica with
// SIGKILL, and it goes on until HAProxy has taken the replica out and one
// more second has passed.
func measureFailover(c *cluster, cl *client, replica string) (failover, error) {
	var f failover
	path := "/v2/" + benchRepo + "/manifests/latest"
	start := time.Now()
	var killed, outAt time.Time
	last := time.Now()
	done := make(chan error, 1)
	for {
		now := time.Now()
		if killed.IsZero() && now.Sub(start) > time.Second {
			if err := c.signal(replica, syscall.SIGKILL); err != nil {
				return f, err
			}
			killed = time.Now()
			go func() { done <- c.waitOut(replica, 30*time.Second) }()
		}
		if !killed.IsZero() && outAt.IsZero() {
			select {
			case err := <-done:
				if err != nil {
					return f, err
				}
				outAt = time.Now()
				f.out = outAt.Sub(killed)
			default:
			}
		}
		if !outAt.IsZero() && now.Sub(outAt) > time.Second {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cl.get(ctx, path, manifestType)
		cancel()
		f.requests++
		if err != nil {
			f.failed++
			continue
		}
		if gap := time.Since(last); gap > f.longestGap {
			f.longestGap = gap
		}
		last = time.Now()
	}
	return f, nil
}

func (r *report) print(w io.Writer, o options, markdown bool) {
	lat := func(x result) string {
		return fmt.Sprintf("p50 %s, p99 %s", x.p50.Round(10*time.Microsecond), x.p99.Round(10*time.Microsecond))
	}
	perMin := func(d time.Duration) float64 { return float64(o.images) / d.Minutes() }
	scaling := [][]string{
		{"measurement", "more", "fewer", "more / fewer"},
		{fmt.Sprintf("manifest GET, %d clients (3 / 1 replicas)", o.clients),
			fmt.Sprintf("%.0f req/s (%s)", r.manifest[0].rps, lat(r.manifest[0])),
			fmt.Sprintf("%.0f req/s (%s)", r.manifest[1].rps, lat(r.manifest[1])),
			fmt.Sprintf("%.2fx", r.manifest[0].rps/r.manifest[1].rps)},
		{fmt.Sprintf("blob GET 1 MiB, %d clients (3 / 1 replicas)", o.clients),
			fmt.Sprintf("%.0f MB/s, %.0f req/s (%s)", r.blob[0].mbps, r.blob[0].rps, lat(r.blob[0])),
			fmt.Sprintf("%.0f MB/s, %.0f req/s (%s)", r.blob[1].mbps, r.blob[1].rps, lat(r.blob[1])),
			fmt.Sprintf("%.2fx", r.blob[0].mbps/r.blob[1].mbps)},
		{fmt.Sprintf("conversions of %d images, %d × %d MiB layers (2 / 1 workers)", o.images, o.layers, o.layerSize>>20),
			fmt.Sprintf("%.1f /min (%.1f s)", perMin(r.convert[0]), r.convert[0].Seconds()),
			fmt.Sprintf("%.1f /min (%.1f s)", perMin(r.convert[1]), r.convert[1].Seconds()),
			fmt.Sprintf("%.2fx", r.convert[1].Seconds()/r.convert[0].Seconds())},
	}
	cpuRow := func(name string, u cpuUse) []string {
		row := []string{name, fmt.Sprintf("%.2f", u.total)}
		rest := u.total
		for _, g := range cpuGroups {
			row = append(row, fmt.Sprintf("%.2f", u.cores[g]))
			rest -= u.cores[g]
		}
		return append(row, fmt.Sprintf("%.2f", max(rest, 0)), u.limit())
	}
	// "other" is what the kernel spent outside any process (loopback's
	// softirqs) and whatever else ran on the machine.
	cpu := [][]string{append(append([]string{"CPU (cores)", "all busy"}, cpuGroups...), "other", "most")}
	cpu = append(cpu,
		cpuRow("manifest GET, 3 replicas", r.manifestCPU[0]),
		cpuRow("manifest GET, 1 replica", r.manifestCPU[1]),
		cpuRow("blob GET, 3 replicas", r.blobCPU[0]),
		cpuRow("blob GET, 1 replica", r.blobCPU[1]),
		cpuRow("conversions, 2 workers", r.convertCPU[0]),
		cpuRow("conversions, 1 worker", r.convertCPU[1]),
	)
	kill := [][]string{
		{"replica killed (SIGKILL) under sequential manifest GETs", "value"},
		{"longest wait between two successful responses", r.failover.longestGap.Round(time.Millisecond).String()},
		{"requests failed (error or 5xx, retried)", fmt.Sprintf("%d of %d", r.failover.failed, r.failover.requests)},
		{"kill to HAProxy marking it DOWN", r.failover.out.Round(10 * time.Millisecond).String()},
	}
	for _, t := range [][][]string{scaling, cpu, kill} {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, line := range t {
			fmt.Fprintln(tw, strings.Join(line, "\t"))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if !markdown {
		return
	}
	for _, t := range [][][]string{scaling, cpu, kill} {
		for i, line := range t {
			fmt.Fprintf(w, "| %s |\n", strings.Join(line, " | "))
			if i == 0 {
				fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(line)))
			}
		}
		fmt.Fprintln(w)
	}
}
