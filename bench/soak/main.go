// Command soak runs sluiced under mixed load on loopback for a long while
// (20 minutes by default) and watches whether it leaks: 50 clients pulling
// images, 10 pushing new ones (and deleting their old ones), conversions
// of the pushes to a repository with auto-streaming, and lazy readers
// reading streaming layers as a node does (the TOC, then the chunks a
// file's read needs, by HTTP range requests). Every minute it prints the
// throughput, p99 latency and errors of each kind of work, and the
// process's resident memory (VmRSS) and open file descriptors; at the end
// a table and a verdict: after the warm-up, neither RSS nor descriptors
// may grow more than 10%.
//
//	go run -C bench ./soak -duration 20m
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/bench/internal/reporoot"
)

const (
	adminPassword = "soak-admin-password"
	pullRepo      = "soak/pull"
	pushRepo      = "soak/push"
	streamRepo    = "soak/stream"
	manifestType  = "application/vnd.oci.image.manifest.v1+json"
	// artifactType marks a streaming manifest among an image's referrers.
	artifactType = "application/vnd.azure.artifact.streaming.v1"
)

func main() {
	reporoot.Chdir()
	sluiced := flag.String("sluiced", "bin/sluiced", "sluiced binary (make build)")
	duration := flag.Duration("duration", 20*time.Minute, "how long the load runs")
	warmup := flag.Duration("warmup", 3*time.Minute, "the first part of the run, not judged")
	interval := flag.Duration("interval", time.Minute, "how often a line is printed")
	pullers := flag.Int("pullers", 50, "clients pulling images")
	pushers := flag.Int("pushers", 10, "clients pushing images")
	readers := flag.Int("readers", 8, "lazy readers of streaming layers")
	workers := flag.Int("workers", 2, "conversion workers of sluiced")
	pushEvery := flag.Duration("push-every", time.Second, "each pusher pushes an image this often")
	layerKiB := flag.Int("layer-kib", 512, "size of each pushed layer's tar")
	markdown := flag.Bool("markdown", false, "also print the table in markdown")
	flag.Parse()
	if abs, err := filepath.Abs(*sluiced); err == nil {
		*sluiced = abs
	}

	work, err := os.MkdirTemp("", "sluice-soak-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	srv := startSluiced(*sluiced, work, *workers)
	defer srv.stop()

	c := newClient(srv.base)
	if err := c.enableStreaming(streamRepo); err != nil {
		log.Fatal(err)
	}
	images := make([]image, 8)
	for i := range images {
		images[i] = makeImage(rand.New(rand.NewPCG(uint64(i), 7)), 2, *layerKiB<<10)
		if err := c.pushImage(pullRepo, "v"+strconv.Itoa(i), images[i]); err != nil {
			log.Fatalf("seed %s: %v", pullRepo, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	st := newStats("pull", "push", "delete", "range")
	shared := &streamed{}
	var wg sync.WaitGroup
	for i := range *pullers {
		wg.Go(func() { puller(ctx, c, st, images, uint64(i)) })
	}
	for i := range *pushers {
		wg.Go(func() { pusher(ctx, c, st, shared, i, *pushEvery, *layerKiB<<10) })
	}
	for i := range *readers {
		wg.Go(func() { reader(ctx, c, st, shared, uint64(i)) })
	}

	fmt.Printf("soak: %s of load on sluiced (pid %d): %d pullers, %d pushers (one image every %s each, %d KiB layers), %d lazy readers, %d conversion workers; warm-up %s\n",
		*duration, srv.pid, *pullers, *pushers, *pushEvery, *layerKiB, *readers, *workers, *warmup)
	rows := monitor(ctx, srv.pid, c, st, *interval)
	cancel()
	wg.Wait()

	fmt.Println()
	printTable(os.Stdout, rows, *markdown)
	ok := verdict(os.Stdout, rows, *warmup)
	if !ok {
		os.Exit(1)
	}
}

// server is the sluiced under load.
type server struct {
	base string
	pid  int
	stop func()
}

func startSluiced(bin, work string, workers int) *server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logf, err := os.Create(filepath.Join(work, "sluiced.log"))
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", filepath.Join(work, "data"))
	cmd.Env = append(os.Environ(), "SLUICE_AUTH_ENABLED=true", "SLUICE_ADMIN_PASSWORD="+adminPassword,
		"SLUICE_LOG_ACCESS=false", "SLUICE_STREAMING_WORKERS="+strconv.Itoa(workers),
		// Garbage collection runs during the soak, on what the pushers
		// deleted a while ago.
		"SLUICE_GC_INTERVAL=2m", "SLUICE_GC_GRACE_PERIOD=2m")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start sluiced: %v", err)
	}
	s := &server{base: "http://" + addr, pid: cmd.Process.Pid, stop: func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	log.Fatalf("sluiced did not start; its log is %s", logf.Name())
	return nil
}

// client talks to the registry as the admin, with basic credentials.
type client struct {
	base string
	auth string
	http *http.Client
}

func newClient(base string) *client {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	return &client{base: base, auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+adminPassword)),
		http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

func (c *client) do(ctx context.Context, method, path string, body []byte, header map[string]string) (*http.Response, error) {
	var r io.Reader = http.NoBody
	if body != nil {
		r = bytes.NewReader(body)
	}
	url := path
	if strings.HasPrefix(path, "/") {
		url = c.base + path
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", c.auth)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return c.http.Do(req)
}

// call makes a request, wants the status, and returns the body.
func (c *client) call(ctx context.Context, method, path string, body []byte, header map[string]string, want int) ([]byte, http.Header, error) {
	resp, err := c.do(ctx, method, path, body, header)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != want {
		return b, resp.Header, fmt.Errorf("%s %s: %s: %.200s", method, path, resp.Status, b)
	}
	return b, resp.Header, nil
}

func (c *client) enableStreaming(repo string) error {
	_, _, err := c.call(context.Background(), "POST", "/acr/v1/"+repo+"/_streaming", []byte(`{"convertPushedImages":true}`),
		map[string]string{"Content-Type": "application/json"}, http.StatusAccepted)
	return err
}

// blob is content with its digest.
type blob struct {
	data   []byte
	digest digest.Digest
}

func newBlob(b []byte) blob { return blob{data: b, digest: digest.FromBytes(b)} }

// image is a config, its layers (tar+gzip) and the manifest naming them.
type image struct {
	config   blob
	layers   []blob
	manifest blob
}

// makeImage builds an image of n layers, each a tar of a few files of
// about size bytes in all, half random and half text, so that it
// compresses as real layers do.
func makeImage(rng *rand.Rand, n, size int) image {
	var img image
	var diffIDs []string
	for l := range n {
		var tarBuf bytes.Buffer
		tw := tar.NewWriter(&tarBuf)
		files := 8
		for f := range files {
			data := make([]byte, size/files)
			for i := range data {
				if i < len(data)/2 {
					data[i] = byte(rng.Uint32())
				} else {
					data[i] = "sluice soak layer text "[i%23]
				}
			}
			name := fmt.Sprintf("layer%d/dir%d/file%d", l, f%3, f)
			_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)})
			_, _ = tw.Write(data)
		}
		_ = tw.Close()
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		_, _ = zw.Write(tarBuf.Bytes())
		_ = zw.Close()
		img.layers = append(img.layers, newBlob(gz.Bytes()))
		diffIDs = append(diffIDs, digest.FromBytes(tarBuf.Bytes()).String())
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{"Cmd": []string{"/bin/true"}}})
	img.config = newBlob(cfg)
	type desc struct {
		MediaType string        `json:"mediaType"`
		Digest    digest.Digest `json:"digest"`
		Size      int           `json:"size"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, manifestType, desc{"application/vnd.oci.image.config.v1+json", img.config.digest, len(img.config.data)}, nil}
	for _, l := range img.layers {
		m.Layers = append(m.Layers, desc{"application/vnd.oci.image.layer.v1.tar+gzip", l.digest, len(l.data)})
	}
	mb, _ := json.Marshal(m)
	img.manifest = newBlob(mb)
	return img
}

// pushImage pushes an image's blobs (POST, PATCH, PUT, as docker and
// containerd do) and its manifest under tag.
func (c *client) pushImage(repo, tag string, img image) error {
	ctx := context.Background()
	for _, b := range append([]blob{img.config}, img.layers...) {
		if err := c.pushBlob(ctx, repo, b); err != nil {
			return err
		}
	}
	_, _, err := c.call(ctx, "PUT", "/v2/"+repo+"/manifests/"+tag, img.manifest.data, map[string]string{"Content-Type": manifestType}, http.StatusCreated)
	return err
}

func (c *client) pushBlob(ctx context.Context, repo string, b blob) error {
	_, h, err := c.call(ctx, "POST", "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	_, h, err = c.call(ctx, "PATCH", h.Get("Location"), b.data, map[string]string{"Content-Type": "application/octet-stream"}, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc := h.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	_, _, err = c.call(ctx, "PUT", loc+sep+"digest="+b.digest.String(), nil, nil, http.StatusCreated)
	return err
}

// puller pulls the seeded images, whole, one after another.
func puller(ctx context.Context, c *client, st *stats, images []image, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for ctx.Err() == nil {
		i := rng.IntN(len(images))
		start := time.Now()
		n, err := c.pull(ctx, pullRepo, "v"+strconv.Itoa(i), images[i])
		st.record(ctx, "pull", time.Since(start), n, err)
	}
}

// pull fetches a manifest by tag and every blob it names, checking each.
func (c *client) pull(ctx context.Context, repo, tag string, img image) (int64, error) {
	m, _, err := c.call(ctx, "GET", "/v2/"+repo+"/manifests/"+tag, nil, map[string]string{"Accept": manifestType}, http.StatusOK)
	if err != nil {
		return 0, err
	}
	if digest.FromBytes(m) != img.manifest.digest {
		return 0, fmt.Errorf("manifest %s:%s does not match what was pushed", repo, tag)
	}
	n := int64(len(m))
	for _, b := range append([]blob{img.config}, img.layers...) {
		resp, err := c.do(ctx, "GET", "/v2/"+repo+"/blobs/"+b.digest.String(), nil, nil)
		if err != nil {
			return n, err
		}
		v := b.digest.Verifier()
		k, err := io.Copy(v, resp.Body)
		resp.Body.Close()
		n += k
		if err != nil {
			return n, err
		}
		if resp.StatusCode != http.StatusOK || !v.Verified() {
			return n, fmt.Errorf("blob %s: %s, %d bytes, verified %v", b.digest, resp.Status, k, v.Verified())
		}
	}
	return n, nil
}

// streamed is what the pushers pushed to the streaming repository, for
// the lazy readers to find the conversions of.
type streamed struct {
	mu      sync.Mutex
	digests []digest.Digest
}

func (s *streamed) add(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.digests = append(s.digests, d)
	if len(s.digests) > 200 {
		s.digests = s.digests[len(s.digests)-200:]
	}
}

func (s *streamed) remove(d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.digests {
		if x == d {
			s.digests = append(s.digests[:i], s.digests[i+1:]...)
			return
		}
	}
}

func (s *streamed) pick(rng *rand.Rand) (digest.Digest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.digests) == 0 {
		return "", false
	}
	return s.digests[rng.IntN(len(s.digests))], true
}

// keptPerPusher is how many of its images a pusher keeps; older ones are
// deleted, so that the registry's content stays about the same size and
// garbage collection has work.
const keptPerPusher = 20

// pusher pushes a new image every period, every other one to the
// streaming repository (converted on push), and deletes its older ones.
func pusher(ctx context.Context, c *client, st *stats, s *streamed, id int, period time.Duration, layerSize int) {
	rng := rand.New(rand.NewPCG(uint64(id), 2))
	type pushed struct {
		repo string
		d    digest.Digest
	}
	var mine []pushed
	tick := time.NewTicker(period)
	defer tick.Stop()
	for n := 0; ctx.Err() == nil; n++ {
		img := makeImage(rng, 1, layerSize)
		repo := pushRepo
		if n%2 == 0 {
			repo = streamRepo
		}
		start := time.Now()
		err := c.pushImage(repo, fmt.Sprintf("p%d-%d", id, n), img)
		st.record(ctx, "push", time.Since(start), int64(len(img.layers[0].data)+len(img.config.data)+len(img.manifest.data)), err)
		if err == nil {
			mine = append(mine, pushed{repo, img.manifest.digest})
			if repo == streamRepo {
				s.add(img.manifest.digest)
			}
		}
		for len(mine) > keptPerPusher {
			old := mine[0]
			mine = mine[1:]
			s.remove(old.d)
			start := time.Now()
			_, _, err := c.call(ctx, "DELETE", "/v2/"+old.repo+"/manifests/"+old.d.String(), nil, nil, http.StatusAccepted)
			st.record(ctx, "delete", time.Since(start), 0, err)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// reader reads streaming layers lazily, as a node's file system does: it
// finds an image's streaming artifact among its referrers, fetches the
// TOC by range from the layer's annotations, then reads a few files'
// bytes by range requests, each a few chunks.
func reader(ctx context.Context, c *client, st *stats, s *streamed, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	for ctx.Err() == nil {
		d, ok := s.pick(rng)
		if !ok {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		layer, err := c.streamingLayer(ctx, d)
		if errors.Is(err, errNotConverted) || errors.Is(err, errGone) {
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		if err != nil {
			st.record(ctx, "range", 0, 0, err)
			continue
		}
		// The TOC, then four reads of 64 KiB at random places in the data
		// section, as reads of files spread over the layer.
		reads := [][2]int64{{layer.tocOffset, layer.tocSize}}
		data := layer.tocOffset
		for range 4 {
			n := min(int64(64<<10), data)
			reads = append(reads, [2]int64{rng.Int64N(data - n + 1), n})
		}
		for _, r := range reads {
			start := time.Now()
			n, err := c.readRange(ctx, layer.digest, r[0], r[1])
			if errors.Is(err, errGone) {
				break
			}
			st.record(ctx, "range", time.Since(start), n, err)
		}
	}
}

var (
	errNotConverted = errors.New("not converted yet")
	// errGone is an image (or its artifact) deleted by its pusher while
	// it was being read: not an error of the registry's.
	errGone = errors.New("deleted meanwhile")
)

type streamingLayer struct {
	digest             digest.Digest
	size               int64
	tocOffset, tocSize int64
}

// streamingLayer finds the first layer of the streaming artifact of image
// d in the streaming repository.
func (c *client) streamingLayer(ctx context.Context, d digest.Digest) (streamingLayer, error) {
	b, _, err := c.call(ctx, "GET", "/v2/"+streamRepo+"/referrers/"+d.String()+"?artifactType="+artifactType, nil, nil, http.StatusOK)
	if err != nil {
		return streamingLayer{}, err
	}
	var idx struct {
		Manifests []struct {
			Digest       digest.Digest `json:"digest"`
			ArtifactType string        `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return streamingLayer{}, err
	}
	if len(idx.Manifests) == 0 {
		return streamingLayer{}, errNotConverted
	}
	resp, err := c.do(ctx, "GET", "/v2/"+streamRepo+"/manifests/"+idx.Manifests[0].Digest.String(), nil, map[string]string{"Accept": manifestType})
	if err != nil {
		return streamingLayer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return streamingLayer{}, errGone
	}
	var m struct {
		Layers []struct {
			Digest      digest.Digest     `json:"digest"`
			Size        int64             `json:"size"`
			Annotations map[string]string `json:"annotations"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		return streamingLayer{}, fmt.Errorf("streaming manifest of %s: %s, %v", d, resp.Status, err)
	}
	l := m.Layers[0]
	off, err1 := strconv.ParseInt(l.Annotations["io.sluice.streaming.toc.offset"], 10, 64)
	size, err2 := strconv.ParseInt(l.Annotations["io.sluice.streaming.toc.size"], 10, 64)
	if err1 != nil || err2 != nil || off <= 0 || size <= 0 {
		return streamingLayer{}, fmt.Errorf("streaming layer %s has no TOC annotations", l.Digest)
	}
	return streamingLayer{digest: l.Digest, size: l.Size, tocOffset: off, tocSize: size}, nil
}

// readRange GETs n bytes at off of a blob in the streaming repository.
func (c *client) readRange(ctx context.Context, d digest.Digest, off, n int64) (int64, error) {
	resp, err := c.do(ctx, "GET", "/v2/"+streamRepo+"/blobs/"+d.String(), nil, map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, off+n-1)})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	k, err := io.Copy(io.Discard, resp.Body)
	switch {
	case err != nil:
		return k, err
	case resp.StatusCode == http.StatusNotFound:
		return k, errGone
	case resp.StatusCode != http.StatusPartialContent || k != n:
		return k, fmt.Errorf("range %d+%d of %s: %s, %d bytes", off, n, d, resp.Status, k)
	}
	return k, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// stats gathers, per kind of work, what was done in the current interval.
type stats struct {
	mu    sync.Mutex
	kinds []string
	cur   map[string]*kindStats
	// lastErr keeps one error per kind, to show what failed.
	lastErr map[string]string
}

type kindStats struct {
	ops, errs int
	bytes     int64
	lat       []time.Duration
}

func newStats(kinds ...string) *stats {
	s := &stats{kinds: kinds, lastErr: map[string]string{}}
	s.reset()
	return s
}

func (s *stats) reset() map[string]*kindStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur
	s.cur = map[string]*kindStats{}
	for _, k := range s.kinds {
		s.cur[k] = &kindStats{}
	}
	return old
}

// record counts one operation of kind; one cut short by the end of the run
// counts for nothing.
func (s *stats) record(ctx context.Context, kind string, d time.Duration, n int64, err error) {
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.cur[kind]
	if err != nil {
		k.errs++
		s.lastErr[kind] = err.Error()
		return
	}
	k.ops++
	k.bytes += n
	k.lat = append(k.lat, d)
}

// row is one interval of the run.
type row struct {
	end               time.Duration
	kinds             map[string]*kindStats
	secs              float64
	rssMiB, rssMaxMiB float64
	fds, fdsMax       float64
	heapMiB           float64
	goroutines        float64
	conversions       float64
}

// monitor samples the process every 5 seconds and prints a line per
// interval until ctx ends; it returns the intervals.
func monitor(ctx context.Context, pid int, c *client, st *stats, interval time.Duration) []row {
	start := time.Now()
	lastLine := start
	// Lines fall on whole intervals from the start, however long a sample
	// takes.
	next := start.Add(interval)
	var rows []row
	var rss, fds, heap, gor []float64
	convBefore := processMetrics(c)["conversions"]
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	line := func() {
		now := time.Now()
		r := row{end: now.Sub(start).Round(time.Second), kinds: st.reset(), secs: now.Sub(lastLine).Seconds()}
		r.rssMiB, r.rssMaxMiB = meanMax(rss)
		r.fds, r.fdsMax = meanMax(fds)
		r.heapMiB, _ = meanMax(heap)
		r.goroutines, _ = meanMax(gor)
		conv := processMetrics(c)["conversions"]
		r.conversions = conv - convBefore
		convBefore = conv
		rss, fds, heap, gor = nil, nil, nil, nil
		lastLine = now
		rows = append(rows, r)
		fmt.Println(formatRow(r))
		for _, k := range st.kinds {
			st.mu.Lock()
			e := st.lastErr[k]
			delete(st.lastErr, k)
			st.mu.Unlock()
			if e != "" {
				fmt.Printf("    last %s error: %s\n", k, e)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			if time.Since(lastLine) > interval/4 && len(rss) > 0 {
				line()
			}
			return rows
		case <-tick.C:
			if m, err := vmRSS(pid); err == nil {
				rss = append(rss, m)
			}
			if n, err := openFDs(pid); err == nil {
				fds = append(fds, n)
			}
			if m := processMetrics(c); len(m) > 0 {
				heap = append(heap, m["heap"]/(1<<20))
				gor = append(gor, m["goroutines"])
			}
			if !time.Now().Before(next) {
				next = next.Add(interval)
				line()
			}
		}
	}
}

func meanMax(v []float64) (mean, maxv float64) {
	for _, x := range v {
		mean += x
		maxv = max(maxv, x)
	}
	if len(v) > 0 {
		mean /= float64(len(v))
	}
	return mean, maxv
}

// vmRSS is the process's resident set in MiB, from /proc/PID/status.
func vmRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// openFDs counts the process's open file descriptors.
func openFDs(pid int) (float64, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return float64(len(entries)), err
}

// processMetrics reads from the registry's metrics how many conversions
// ended successfully ("conversions"), the Go heap in use ("heap", bytes)
// and the goroutines ("goroutines"): what tells a leak of Go memory or of
// goroutines from memory outside the Go heap.
func processMetrics(c *client) map[string]float64 {
	b, _, err := c.call(context.Background(), "GET", "/metrics", nil, nil, http.StatusOK)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(l, "sluice_operations_ended_total{") && strings.Contains(l, `kind="ArtifactStreamingConversion"`) && strings.Contains(l, `outcome="Succeeded"`):
			out["conversions"] += v
		case strings.HasPrefix(l, "go_memstats_heap_inuse_bytes{"):
			out["heap"] = v
		case strings.HasPrefix(l, "go_goroutines{"):
			out["goroutines"] = v
		}
	}
	return out
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[min(len(lat)-1, len(lat)*99/100)]
}

func formatRow(r row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6s", r.end)
	for _, k := range []string{"pull", "push", "delete", "range"} {
		ks := r.kinds[k]
		fmt.Fprintf(&b, "  %s %.1f/s %.1f MB/s p99 %s err %d", k, float64(ks.ops)/r.secs, float64(ks.bytes)/1e6/r.secs, p99(ks.lat).Round(time.Millisecond), ks.errs)
	}
	fmt.Fprintf(&b, "  conversions %.0f  RSS %.0f MiB (max %.0f)  Go heap %.0f MiB  goroutines %.0f  fds %.0f (max %.0f)", r.conversions, r.rssMiB, r.rssMaxMiB, r.heapMiB, r.goroutines, r.fds, r.fdsMax)
	return b.String()
}

func printTable(w io.Writer, rows []row, markdown bool) {
	header := []string{"minute", "pulls/s", "pull MB/s", "pull p99", "pushes/s", "push p99", "deletes/s", "ranges/s", "range p99", "conversions", "errors", "RSS MiB (max)", "Go heap MiB", "goroutines", "fds (max)"}
	var lines [][]string
	for _, r := range rows {
		errs := 0
		for _, ks := range r.kinds {
			errs += ks.errs
		}
		pull, push, del, rng := r.kinds["pull"], r.kinds["push"], r.kinds["delete"], r.kinds["range"]
		lines = append(lines, []string{
			r.end.String(),
			fmt.Sprintf("%.1f", float64(pull.ops)/r.secs), fmt.Sprintf("%.0f", float64(pull.bytes)/1e6/r.secs), p99(pull.lat).Round(time.Millisecond).String(),
			fmt.Sprintf("%.1f", float64(push.ops)/r.secs), p99(push.lat).Round(time.Millisecond).String(),
			fmt.Sprintf("%.1f", float64(del.ops)/r.secs),
			fmt.Sprintf("%.1f", float64(rng.ops)/r.secs), p99(rng.lat).Round(time.Millisecond).String(),
			fmt.Sprintf("%.0f", r.conversions), strconv.Itoa(errs),
			fmt.Sprintf("%.0f (%.0f)", r.rssMiB, r.rssMaxMiB), fmt.Sprintf("%.0f", r.heapMiB), fmt.Sprintf("%.0f", r.goroutines), fmt.Sprintf("%.0f (%.0f)", r.fds, r.fdsMax),
		})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, l := range lines {
		fmt.Fprintln(tw, strings.Join(l, "\t")+"\t")
	}
	tw.Flush()
	if !markdown {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---:|", len(header)))
	for _, l := range lines {
		fmt.Fprintf(w, "| %s |\n", strings.Join(l, " | "))
	}
	fmt.Fprintln(w)
}

// verdict compares the mean RSS and descriptors of the first intervals
// after the warm-up with those of the last ones (three of each, fewer in
// a short run, so that one busy or quiet minute does not decide): neither
// may have grown more than 10%.
func verdict(w io.Writer, rows []row, warmup time.Duration) bool {
	var after []row
	for _, r := range rows {
		// Intervals that started once the warm-up was over.
		if r.end-time.Duration(r.secs*float64(time.Second)) >= warmup-5*time.Second {
			after = append(after, r)
		}
	}
	if len(after) < 2 {
		fmt.Fprintf(w, "verdict: none (the run ended less than two intervals after its %s warm-up)\n", warmup)
		return true
	}
	n := min(3, len(after)/2)
	mean := func(rs []row, f func(row) float64) float64 {
		t := 0.0
		for _, r := range rs {
			t += f(r)
		}
		return t / float64(len(rs))
	}
	first, last := after[:n], after[len(after)-n:]
	rss := func(r row) float64 { return r.rssMiB }
	fds := func(r row) float64 { return r.fds }
	heap := func(r row) float64 { return r.heapMiB }
	gor := func(r row) float64 { return r.goroutines }
	rssGrowth := mean(last, rss)/mean(first, rss) - 1
	fdGrowth := mean(last, fds)/mean(first, fds) - 1
	ok := rssGrowth <= 0.10 && fdGrowth <= 0.10
	word := "PASS"
	if !ok {
		word = "FAIL"
	}
	fmt.Fprintf(w, "verdict: %s: the first %d intervals after the %s warm-up (to %s) against the last %d (to %s): RSS %.0f -> %.0f MiB (%+.1f%%), fds %.0f -> %.0f (%+.1f%%), limit +10%%; Go heap %.0f -> %.0f MiB, goroutines %.0f -> %.0f\n",
		word, n, warmup, first[n-1].end, n, last[n-1].end,
		mean(first, rss), mean(last, rss), 100*rssGrowth, mean(first, fds), mean(last, fds), 100*fdGrowth,
		mean(first, heap), mean(last, heap), mean(first, gor), mean(last, gor))
	return ok
}
