// Command registry benchmarks sluiced on each of its backends (SQLite and a
// directory; PostgreSQL and Azurite; PostgreSQL and an S3 server) against
// Debian's docker-registry (distribution 2.8) on the same machine, side by
// side in one run: blob push and pull throughput for small and large blobs,
// and manifest GET requests per second and latency at two concurrencies.
// It starts PostgreSQL, Azurite and versitygw itself, as the tests do
// (make test-deps installs them). It prints a table with a column per
// target and the ratios of each backend to SQLite and of SQLite to
// distribution, and with -markdown the same table for docs/benchmarks.md.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
	"github.com/sluicehq/sluice/internal/testbackend"

	"github.com/opencontainers/go-digest"
)

type target struct {
	name string
	base string
	stop func()
}

func main() {
	reporoot.Chdir()
	sluiced := flag.String("sluiced", "bin/sluiced", "sluiced binary")
	distribution := flag.String("distribution", "/usr/bin/docker-registry", "distribution 2.8 binary")
	duration := flag.Duration("duration", 5*time.Second, "duration of each manifest GET run")
	smallCount := flag.Int("small", 200, "number of 1 MiB blobs pushed and pulled")
	largeCount := flag.Int("large", 3, "number of 256 MiB blobs pushed and pulled")
	markdown := flag.Bool("markdown", false, "also print a markdown table")
	flag.Parse()
	if abs, err := filepath.Abs(*sluiced); err == nil {
		*sluiced = abs
	}

	work, err := os.MkdirTemp("", "sluice-bench-registry-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	pg, err := testbackend.StartPostgres()
	if err != nil {
		log.Fatal(err)
	}
	defer pg.Stop()
	az, err := testbackend.StartAzurite()
	if err != nil {
		log.Fatal(err)
	}
	defer az.Stop()
	s3, err := testbackend.StartS3()
	if err != nil {
		log.Fatal(err)
	}
	defer s3.Stop()

	targets := []*target{
		startSluiced(baseline, *sluiced, filepath.Join(work, "sqlite"), nil),
		startSluiced("sluiced postgres+azurite", *sluiced, filepath.Join(work, "azurite"), sharedBackend(pg, az.NewContainer())),
		startSluiced("sluiced postgres+s3", *sluiced, filepath.Join(work, "s3"), sharedBackend(pg, s3.NewBucket())),
		startDistribution(*distribution, filepath.Join(work, "distribution")),
	}
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()

	small := makeBlobs(*smallCount, 1<<20)
	large := makeBlobs(*largeCount, 256<<20)
	var rows []row
	for _, t := range targets {
		c := newClient(t.base)
		r := map[string]result{}
		r["push 1 MiB"] = c.pushAll("bench/small", small)
		r["pull 1 MiB"] = c.pullAll("bench/small", small)
		r["push 256 MiB"] = c.pushAll("bench/large", large)
		r["pull 256 MiB"] = c.pullAll("bench/large", large)
		c.pushManifest("bench/small", small[0], small[1])
		r["manifest GET c=1"] = c.getManifests("bench/small", 1, *duration)
		r["manifest GET c=32"] = c.getManifests("bench/small", 32, *duration)
		for name, res := range r {
			rows = append(rows, row{target: t.name, metric: name, res: res})
		}
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}
	ratios := [][2]string{
		{"sluiced postgres+azurite", baseline},
		{"sluiced postgres+s3", baseline},
		{baseline, "distribution"},
	}
	printTable(os.Stdout, rows, names, ratios, *markdown)
}

// baseline is the target the other backends are compared with.
const baseline = "sluiced sqlite+dir"

// blob is test content with its digest computed ahead of the timed runs.
type blob struct {
	data   []byte
	digest digest.Digest
}

func makeBlobs(n, size int) []blob {
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	out := make([]blob, n)
	for i := range out {
		b := make([]byte, size)
		for j := 0; j+8 <= size; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		out[i] = blob{data: b, digest: digest.FromBytes(b)}
	}
	return out
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startProcess(name, addr string, cmd *exec.Cmd) *target {
	logf, err := os.Create(filepath.Join(filepath.Dir(cmd.Dir), name+".log"))
	if err != nil {
		log.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		log.Fatalf("start %s: %v", name, err)
	}
	t := &target{name: name, base: "http://" + addr, stop: func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	}}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(t.base + "/v2/"); err == nil {
			resp.Body.Close()
			return t
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.stop()
	log.Fatalf("%s did not start; see its log in %s", name, logf.Name())
	return nil
}

// startSluiced runs sluiced with its data in dir and env added to its
// environment, which holds the object stores' credentials.
func startSluiced(name, bin, dir string, env []string) *target {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	addr := freeAddr()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"))
	cmd.Dir = dir
	// Like the distribution it is compared with, without authentication.
	cmd.Env = append(append(os.Environ(), "SLUICE_AUTH_ENABLED=false"), env...)
	return startProcess(name, addr, cmd)
}

// sharedBackend is the settings that put sluiced's metadata in a new
// database on pg and its blobs in the bucket at url.
func sharedBackend(pg *testbackend.PostgresServer, url string) []string {
	dsn, err := pg.NewDatabase()
	if err != nil {
		log.Fatal(err)
	}
	return []string{"SLUICE_DATABASE_DRIVER=postgres", "SLUICE_DATABASE_DSN=" + dsn, "SLUICE_STORAGE_URL=" + url}
}

func startDistribution(bin, dir string) *target {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	addr := freeAddr()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgFile)
	cmd.Dir = dir
	return startProcess("distribution", addr, cmd)
}

type client struct {
	base string
	http *http.Client
}

func newClient(base string) *client {
	tr := &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, DisableCompression: true}
	return &client{base: base, http: &http.Client{Transport: tr}}
}

func (c *client) do(method, url string, body []byte, header map[string]string) (*http.Response, error) {
	var r io.Reader = http.NoBody
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return c.http.Do(req)
}

// push uploads a blob the way docker and containerd do: POST a session,
// PATCH the content, PUT the digest.
func (c *client) push(repo string, b blob) error {
	resp, err := c.do("POST", c.base+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST: %s", resp.Status)
	}
	loc := c.abs(resp.Header.Get("Location"))
	resp, err = c.do("PATCH", loc, b.data, map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("PATCH: %s", resp.Status)
	}
	loc = c.abs(resp.Header.Get("Location"))
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp, err = c.do("PUT", loc+sep+"digest="+b.digest.String(), nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT: %s", resp.Status)
	}
	return nil
}

func (c *client) abs(loc string) string {
	if strings.HasPrefix(loc, "/") {
		return c.base + loc
	}
	return loc
}

type result struct {
	mbps       float64
	rps        float64
	p50, p99   time.Duration
	throughput bool
}

func (c *client) pushAll(repo string, blobs []blob) result {
	var total int64
	start := time.Now()
	for _, b := range blobs {
		if err := c.push(repo, b); err != nil {
			log.Fatalf("%s push: %v", c.base, err)
		}
		total += int64(len(b.data))
	}
	return result{mbps: float64(total) / 1e6 / time.Since(start).Seconds(), throughput: true}
}

func (c *client) pullAll(repo string, blobs []blob) result {
	var total int64
	start := time.Now()
	for _, b := range blobs {
		resp, err := c.do("GET", c.base+"/v2/"+repo+"/blobs/"+b.digest.String(), nil, nil)
		if err != nil {
			log.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(b.data)) {
			log.Fatalf("%s pull: %d bytes, %v", c.base, n, err)
		}
		total += n
	}
	return result{mbps: float64(total) / 1e6 / time.Since(start).Seconds(), throughput: true}
}

const manifestType = "application/vnd.oci.image.manifest.v1+json"

func (c *client) pushManifest(repo string, config, layer blob) {
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
		manifestType, config.digest, len(config.data), layer.digest, len(layer.data))
	resp, err := c.do("PUT", c.base+"/v2/"+repo+"/manifests/latest", []byte(m), map[string]string{"Content-Type": manifestType})
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		log.Fatalf("%s manifest PUT: %s", c.base, resp.Status)
	}
}

// getManifests GETs one manifest by tag from `workers` clients for d and
// returns requests per second and latency percentiles.
func (c *client) getManifests(repo string, workers int, d time.Duration) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	url := c.base + "/v2/" + repo + "/manifests/latest"
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := c.do("GET", url, nil, map[string]string{"Accept": manifestType})
				if err != nil {
					log.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					log.Fatalf("%s manifest GET: %s", c.base, resp.Status)
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return result{rps: float64(len(all)) / elapsed.Seconds(), p50: all[len(all)/2], p99: all[len(all)*99/100]}
}

type row struct {
	target, metric string
	res            result
}

// printTable prints a row per metric with a column per target, then a
// column per ratio (first target's figure over the second's).
func printTable(w io.Writer, rows []row, targets []string, ratios [][2]string, markdown bool) {
	byMetric := map[string]map[string]result{}
	var metrics []string
	for _, r := range rows {
		if byMetric[r.metric] == nil {
			byMetric[r.metric] = map[string]result{}
			metrics = append(metrics, r.metric)
		}
		byMetric[r.metric][r.target] = r.res
	}
	sort.Strings(metrics)
	format := func(r result) string {
		if r.throughput {
			return fmt.Sprintf("%.0f MB/s", r.mbps)
		}
		return fmt.Sprintf("%.0f req/s (p50 %s, p99 %s)", r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
	}
	rate := func(r result) float64 {
		if r.throughput {
			return r.mbps
		}
		return r.rps
	}

	header := append([]string{"metric"}, targets...)
	for _, q := range ratios {
		header = append(header, strings.TrimPrefix(q[0], "sluiced ")+" / "+strings.TrimPrefix(q[1], "sluiced "))
	}
	lines := [][]string{header}
	for _, m := range metrics {
		line := []string{m}
		for _, t := range targets {
			line = append(line, format(byMetric[m][t]))
		}
		for _, q := range ratios {
			line = append(line, fmt.Sprintf("%.2fx", rate(byMetric[m][q[0]])/rate(byMetric[m][q[1]])))
		}
		lines = append(lines, line)
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, line := range lines {
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	tw.Flush()
	if !markdown {
		return
	}
	fmt.Fprintln(w)
	for i, line := range lines {
		fmt.Fprintf(w, "| %s |\n", strings.Join(line, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(line)))
		}
	}
}
