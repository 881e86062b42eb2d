// Command pushconvert measures artifact streaming in the registry: the time
// from the end of an image push to its conversion operation's Succeeded,
// for the Debian python3 and numpy images of bench/images/build.sh, and the
// throughput of four conversions queued at once (four distinct layers:
// the python3 layer compressed four ways, so that none is reused from the
// converted-layer cache), with one worker and with two. Each image's config
// names the command bench/coldstart runs in it, so a conversion also
// infers its startup profile and splits its layer's chunks for it, as it
// does for a real image.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/reporoot"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/client"
)

const password = "pushconvert-bench"

func main() {
	reporoot.Chdir()
	bin := flag.String("sluiced", "bin/sluiced", "sluiced binary")
	images := flag.String("images", "python3,numpy", "images for the push-to-Succeeded runs")
	queued := flag.Int("queued", 4, "conversions queued at once in the throughput runs (0 or less: no throughput runs)")
	markdown := flag.String("markdown", "", "also write the tables as markdown to this file")
	logTo := flag.String("log", "", "append sluiced's log to this file (each conversion's steps and their times)")
	flag.Parse()
	if *logTo != "" {
		f, err := os.OpenFile(*logTo, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		sluicedLog = f
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		log.Fatal(err)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "| image | layer (gzip) | push → Succeeded | conversion MB/s of tar |\n|---|---:|---:|---:|\n")
	for _, name := range strings.Split(*images, ",") {
		r := newRegistry(abs, 1)
		gz, tarSize, diffID := layer(name)
		start, done := r.pushAndWait(name, gz, diffID, commands[name])
		d := done.Sub(start)
		fmt.Fprintf(&out, "| %s | %.0f MB | %.1f s | %.0f |\n", name, float64(len(gz))/1e6, d.Seconds(), float64(tarSize)/1e6/d.Seconds())
		r.close()
	}
	if *queued > 0 {
		throughput(&out, abs, *queued)
	}
	fmt.Print(out.String())
	if *markdown != "" {
		if err := os.WriteFile(*markdown, []byte(out.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// layer returns a bench image's gzip layer, its tar size and DiffID.
func layer(name string) ([]byte, int64, digest.Digest) {
	cache := os.Getenv("SLUICE_BENCH_CACHE")
	if cache == "" {
		cache = "/var/cache/sluice-bench"
	}
	gzPath := filepath.Join(cache, "layers", name+".tar.gz")
	if _, err := os.Stat(gzPath); err != nil {
		if out, err := exec.Command("bench/images/build.sh", name).CombinedOutput(); err != nil {
			log.Fatalf("build image %s: %v\n%s", name, err, out)
		}
	}
	gz, err := os.ReadFile(gzPath)
	if err != nil {
		log.Fatal(err)
	}
	tarFile, err := os.Open(filepath.Join(cache, "layers", name+".tar"))
	if err != nil {
		log.Fatal(err)
	}
	defer tarFile.Close()
	h := digest.Canonical.Digester()
	n, err := io.Copy(h.Hash(), tarFile)
	if err != nil {
		log.Fatal(err)
	}
	return gz, n, h.Digest()
}

// throughput converts the python3 layer compressed n ways at once, with
// one worker and with two, and adds the table to out.
func throughput(out *strings.Builder, bin string, n int) {
	py, tarSize, diffID := layer("python3")
	variants := recompress(py, n)
	fmt.Fprintf(out, "\n| workers | conversions queued | total tar | all Succeeded after | throughput (MB/s of tar) |\n|---:|---:|---:|---:|---:|\n")
	for _, workers := range []int{1, 2} {
		r := newRegistry(bin, workers)
		start := time.Now()
		ops := make([]func() time.Time, 0, len(variants))
		for i, v := range variants {
			ops = append(ops, r.pushAsync(fmt.Sprintf("queued%d", i), v, diffID, commands["python3"]))
		}
		var last time.Time
		for _, wait := range ops {
			if t := wait(); t.After(last) {
				last = t
			}
		}
		total := float64(tarSize) * float64(len(variants))
		fmt.Fprintf(out, "| %d | %d | %.0f MB | %.1f s | %.0f |\n", workers, len(variants), total/1e6, last.Sub(start).Seconds(), total/1e6/last.Sub(start).Seconds())
		r.close()
	}
}

// recompress makes n distinct gzip encodings of the same tar: different
// blobs, the same DiffID.
func recompress(gz []byte, n int) [][]byte {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		log.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		log.Fatal(err)
	}
	out := make([][]byte, n)
	for i := range out {
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, 1+i%9)
		w.Header.Comment = fmt.Sprintf("variant %d", i)
		_, _ = w.Write(raw)
		_ = w.Close()
		out[i] = b.Bytes()
	}
	return out
}

type registry struct {
	cmd  *exec.Cmd
	dir  string
	host string
	c    *client.Client
}

func newRegistry(bin string, workers int) *registry {
	dir, err := os.MkdirTemp("", "pushconvert-")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--listen", host, "--data", dir)
	cmd.Env = append(os.Environ(), "SLUICE_ADMIN_PASSWORD="+password, "SLUICE_LOG_ACCESS=false", "SLUICE_GC_INTERVAL=0",
		fmt.Sprintf("SLUICE_STREAMING_WORKERS=%d", workers))
	if sluicedLog != nil {
		cmd.Stdout, cmd.Stderr = sluicedLog, sluicedLog
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	r := &registry{cmd: cmd, dir: dir, host: host, c: client.New(host, client.Options{PlainHTTP: true, Credential: client.StaticCredential(host, "admin", password)})}
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + host + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 300 {
			log.Fatal("sluiced did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

func (r *registry) close() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	_ = os.RemoveAll(r.dir)
}

func (r *registry) do(method, path string, body []byte, contentType string, want int) []byte {
	req, _ := http.NewRequest(method, r.c.URL(path), bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.c.Do(context.Background(), req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		log.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return b
}

// sluicedLog, when set, receives the log of every sluiced started.
var sluicedLog *os.File

// commands are the images' commands, those bench/coldstart runs.
var commands = map[string][]string{
	"python3": {"python3", "-c", "print('hello from python3')"},
	"numpy":   {"python3", "-c", "import numpy, scipy.linalg; print('numpy and scipy ready')"},
}

// pushAsync pushes a one-layer image running cmd into a streaming
// repository and returns a function waiting for its streaming artifact.
func (r *registry) pushAsync(repo string, gz []byte, diffID digest.Digest, cmd []string) func() time.Time {
	r.do("POST", "/acr/v1/"+repo+"/_streaming", []byte(`{"convertPushedImages":true}`), "application/json", 202)
	ld := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
	r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+ld.Digest.String(), gz, "", 201)
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		Config: ocispec.ImageConfig{Cmd: cmd, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}})
	cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+cd.Digest.String(), cfg, "", 201)
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}})
	r.do("PUT", "/v2/"+repo+"/manifests/latest", m, ocispec.MediaTypeImageManifest, 201)
	md := digest.FromBytes(m)
	return func() time.Time {
		for {
			refs, err := r.c.Referrers(context.Background(), repo, md, "application/vnd.azure.artifact.streaming.v1")
			if err == nil && len(refs) > 0 {
				return time.Now()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (r *registry) pushAndWait(repo string, gz []byte, diffID digest.Digest, cmd []string) (pushed, done time.Time) {
	wait := r.pushAsync(repo, gz, diffID, cmd)
	pushed = time.Now()
	return pushed, wait()
}
