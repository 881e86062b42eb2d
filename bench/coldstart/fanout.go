package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/bench/internal/testbed"
	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// fanOutResult is the registry serving many nodes starting the same image
// at once.
type fanOutResult struct {
	image           string
	clients         int
	requests        int
	bytes           int64
	elapsed         time.Duration
	p50, p99        time.Duration
	errors          int
	requestsPerSec  float64
	megabytesPerSec float64
}

// fanOut replays the range reads a node recorded as it first started a
// workload (the startup profile of each streamed layer, one range request
// per chunk, as a first start fetches its misses) from n clients at once,
// each with its own connections and token, each going through the
// sequence again and again for d. The link is loopback, unshaped: what is
// measured is the registry's cost per request as clients grow.
func (e *env) fanOut(ctx context.Context, w workload, n int, d time.Duration) (fanOutResult, error) {
	type read struct {
		layer digest.Digest
		r     streaming.Range
	}
	var seq []read
	for _, l := range e.Streamed[w.Name] {
		for _, r := range e.profiles[w.Name][l] {
			seq = append(seq, read{l, r})
		}
	}
	if len(seq) == 0 {
		return fanOutResult{}, fmt.Errorf("no recorded startup profile of %s to replay (run the profiled mode)", w.Name)
	}
	var mu sync.Mutex
	var lat []time.Duration
	res := fanOutResult{image: w.Name, clients: n}
	// Each client signs in and reads once before the clock starts, as a
	// node has its token before its container's reads: what is timed is
	// serving range reads, not n logins at once.
	var ready, wg sync.WaitGroup
	begin := make(chan struct{})
	var stop time.Time
	for range n {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(e.Host, client.Options{PlainHTTP: true, Credential: client.StaticCredential(e.Host, "admin", testbed.Password)})
			readers := map[digest.Digest]*client.BlobRanges{}
			for _, l := range e.Streamed[w.Name] {
				readers[l] = c.BlobRanges(w.Name, l, e.StreamedSize[l])
			}
			first := seq[0]
			_ = readers[first.layer].ReadRange(ctx, make([]byte, first.r.Length), first.r.Offset)
			ready.Done()
			<-begin
			var mine []time.Duration
			var bytes int64
			errs := 0
			for i := 0; time.Now().Before(stop); i = (i + 1) % len(seq) {
				rd := seq[i]
				buf := make([]byte, rd.r.Length)
				t0 := time.Now()
				if err := readers[rd.layer].ReadRange(ctx, buf, rd.r.Offset); err != nil {
					errs++
					continue
				}
				mine = append(mine, time.Since(t0))
				bytes += rd.r.Length
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.bytes += bytes
			res.errors += errs
			mu.Unlock()
		}()
	}
	ready.Wait()
	start := time.Now()
	stop = start.Add(d)
	close(begin)
	wg.Wait()
	res.elapsed = time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.requests = len(lat)
	if len(lat) > 0 {
		res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	res.requestsPerSec = float64(res.requests) / res.elapsed.Seconds()
	res.megabytesPerSec = float64(res.bytes) / 1e6 / res.elapsed.Seconds()
	return res, nil
}

// parseCounts reads a list of client counts ("1,10,50,200").
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad client count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func printFanOut(w io.Writer, rs []fanOutResult) {
	fmt.Fprintf(w, "%-8s %8s %10s %10s %10s %10s %7s\n", "image", "clients", "req/s", "MB/s", "p50", "p99", "errors")
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %8d %10.0f %10.1f %10s %10s %7d\n", r.image, r.clients, r.requestsPerSec, r.megabytesPerSec,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.errors)
	}
}

func writeFanOutMarkdown(f *os.File, rs []fanOutResult) {
	fmt.Fprintf(f, "\n| image | clients | range requests/s | MB/s | p50 | p99 | errors | throughput / at 10 | p99 / at 10 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	at10 := map[string]fanOutResult{}
	for _, r := range rs {
		if r.clients == 10 {
			at10[r.image] = r
		}
	}
	for _, r := range rs {
		ratio, p99 := "-", "-"
		if b, ok := at10[r.image]; ok && b.requestsPerSec > 0 && b.p99 > 0 {
			ratio = fmt.Sprintf("%.2f", r.requestsPerSec/b.requestsPerSec)
			p99 = fmt.Sprintf("%.1f", r.p99.Seconds()/b.p99.Seconds())
		}
		fmt.Fprintf(f, "| %s | %d | %.0f | %.1f | %s | %s | %d | %s | %s |\n", r.image, r.clients, r.requestsPerSec, r.megabytesPerSec,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.errors, ratio, p99)
	}
}
