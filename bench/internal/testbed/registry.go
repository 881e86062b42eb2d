// Package testbed runs what the node benchmarks measure against: a sluiced
// on loopback whose repositories convert what is pushed into streaming
// artifacts, the Debian images of bench/images/build.sh pushed into it,
// and fresh nodes (a containerd of their own, with a proxy snapshotter
// beside it) that pull from it. It needs root.
package testbed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/client"
)

// Password is the registry's admin password.
const Password = "sluice-bench"

// Options configure a registry.
type Options struct {
	// Name prefixes the temporary directories and the kept logs
	// ("coldstart").
	Name string
	// Keep keeps the registry's directory and each node's daemon logs
	// (in $TMPDIR) for a look at what a run did.
	Keep bool
	// AccessLog makes sluiced log every request.
	AccessLog bool
}

// Image is a benchmark image: the layers bench/images/build.sh makes of
// it, bottom first, and the command its config runs.
type Image struct {
	Name string
	// Layers are the names of its layers; none means one, named as the
	// image.
	Layers []string
	Args   []string
}

func (img Image) layers() []string {
	if len(img.Layers) == 0 {
		return []string{img.Name}
	}
	return img.Layers
}

// Registry is a sluiced the benchmark started.
type Registry struct {
	Bin  string // directory of sluiced and sluice-snapshotter
	Work string // the registry's data, logs and configuration files
	Port int
	Host string // 127.0.0.1:Port
	// Client talks to it as admin.
	Client *client.Client
	// Streamed are the streamed layers of each pushed image, bottom first,
	// and StreamedSize their sizes.
	Streamed     map[string][]digest.Digest
	StreamedSize map[digest.Digest]int64
	// SnapshotterConfig is a sluice-snapshotter configuration file with
	// the registry's credentials.
	SnapshotterConfig string

	opts    Options
	sluiced *exec.Cmd
}

// Start starts sluiced from the directory bin on a free loopback port.
func Start(ctx context.Context, bin string, opts Options) (*Registry, error) {
	if opts.Name == "" {
		opts.Name = "bench"
	}
	work, err := os.MkdirTemp("", opts.Name+"-")
	if err != nil {
		return nil, err
	}
	r := &Registry{Bin: bin, Work: work, Streamed: map[string][]digest.Digest{}, StreamedSize: map[digest.Digest]int64{}, opts: opts}
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// start starts sluiced and waits until it answers.
func (r *Registry) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.Port = ln.Addr().(*net.TCPAddr).Port
	r.Host = fmt.Sprintf("127.0.0.1:%d", r.Port)
	ln.Close()
	accessLog := ""
	if r.opts.AccessLog {
		accessLog = "1"
	}
	cmd := exec.Command(filepath.Join(r.Bin, "sluiced"), "serve", "--listen", r.Host, "--data", filepath.Join(r.Work, "registry"))
	cmd.Env = append(os.Environ(), "SLUICE_ADMIN_PASSWORD="+Password, "SLUICE_LOG_ACCESS="+accessLog, "SLUICE_LOG_FORMAT=json", "SLUICE_GC_INTERVAL=0")
	logf, err := os.Create(filepath.Join(r.Work, "sluiced.log"))
	if err != nil {
		return err
	}
	defer logf.Close() // sluiced has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	r.sluiced = cmd
	r.Client = client.New(r.Host, client.Options{PlainHTTP: true, Credential: client.StaticCredential(r.Host, "admin", Password)})
	r.SnapshotterConfig = filepath.Join(r.Work, "snapshotter.yaml")
	snCfg := fmt.Sprintf("registries:\n  %q:\n    username: admin\n    password: %s\n", r.Host, Password)
	if err := os.WriteFile(r.SnapshotterConfig, []byte(snCfg), 0o600); err != nil {
		return err
	}
	if err := WaitFor(30*time.Second, func() bool {
		resp, err := http.Get("http://" + r.Host + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}); err != nil {
		return fmt.Errorf("sluiced did not start (see %s): %w", filepath.Join(r.Work, "sluiced.log"), err)
	}
	return nil
}

// Close stops sluiced and removes its directory, unless kept.
func (r *Registry) Close() {
	if r.sluiced != nil {
		_ = r.sluiced.Process.Kill()
		_ = r.sluiced.Wait()
	}
	if r.opts.Keep {
		fmt.Fprintln(os.Stderr, "kept", r.Work)
		return
	}
	_ = os.RemoveAll(r.Work)
}

// WaitFor polls cond until it holds, for at most d.
func WaitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", d)
}

// buildCache is where bench/images/build.sh keeps the layers.
func buildCache() string {
	if c := os.Getenv("SLUICE_BENCH_CACHE"); c != "" {
		return c
	}
	return "/var/cache/sluice-bench"
}

// LayerFiles returns a layer of an image (its tar.gz and its tar), building
// the image with bench/images/build.sh when the layer is missing.
func LayerFiles(image, layer string) (gz, tarPath string, err error) {
	gz = filepath.Join(buildCache(), "layers", layer+".tar.gz")
	tarPath = filepath.Join(buildCache(), "layers", layer+".tar")
	if _, err := os.Stat(gz); err != nil {
		out, err := exec.Command("bench/images/build.sh", image).CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("build image %s: %v\n%s", image, err, out)
		}
	}
	return gz, tarPath, nil
}

// sha256File hashes a file, caching the answer beside it.
func sha256File(path string) (digest.Digest, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	memo := path + ".sha256"
	if b, err := os.ReadFile(memo); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 && f[1] == strconv.FormatInt(st.ModTime().UnixNano(), 10) {
			return digest.Digest(f[0]), nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return "", err
	}
	d := digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	_ = os.WriteFile(memo, []byte(d.String()+" "+strconv.FormatInt(st.ModTime().UnixNano(), 10)+"\n"), 0o644)
	return d, nil
}

// PushImage pushes an image as NAME:latest into a repository of its name
// that converts what is pushed, and waits for its streaming artifact.
func (r *Registry) PushImage(ctx context.Context, img Image) error {
	if err := r.mgmt(ctx, "POST", "/acr/v1/"+img.Name+"/_streaming", `{"convertPushedImages":true}`); err != nil {
		return err
	}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, name := range img.layers() {
		gz, tarPath, err := LayerFiles(img.Name, name)
		if err != nil {
			return err
		}
		diffID, err := sha256File(tarPath)
		if err != nil {
			return err
		}
		layer, err := r.pushFile(ctx, img.Name, gz)
		if err != nil {
			return err
		}
		layer.MediaType = ocispec.MediaTypeImageLayerGzip
		layers = append(layers, layer)
		diffIDs = append(diffIDs, diffID)
	}
	cfg, _ := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: img.Args},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	cd, err := r.pushBytes(ctx, img.Name, cfg)
	if err != nil {
		return err
	}
	cd.MediaType = ocispec.MediaTypeImageConfig
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers})
	req, _ := http.NewRequest("PUT", r.Client.URL("/v2/"+img.Name+"/manifests/latest"), bytes.NewReader(m))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := r.Client.Do(ctx, req, "repository:"+img.Name+":push,pull")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		return fmt.Errorf("push manifest: %s", resp.Status)
	}
	start := time.Now()
	var refs []ocispec.Descriptor
	if err := WaitFor(20*time.Minute, func() bool {
		refs, err = r.Client.Referrers(ctx, img.Name, digest.FromBytes(m), "application/vnd.azure.artifact.streaming.v1")
		return err == nil && len(refs) > 0
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: streaming artifact ready (%v after the push)\n", img.Name, time.Since(start).Round(time.Second))
	b, _, err := r.Client.GetManifest(ctx, img.Name, refs[0].Digest.String())
	if err != nil {
		return err
	}
	var sm ocispec.Manifest
	if err := json.Unmarshal(b, &sm); err != nil {
		return err
	}
	for _, l := range sm.Layers {
		r.Streamed[img.Name] = append(r.Streamed[img.Name], l.Digest)
		r.StreamedSize[l.Digest] = l.Size
	}
	return nil
}

func (r *Registry) mgmt(ctx context.Context, method, path, body string) error {
	req, _ := http.NewRequest(method, r.Client.URL(path), strings.NewReader(body))
	resp, err := r.Client.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return client.ErrorFrom(resp)
	}
	return nil
}

func (r *Registry) pushBytes(ctx context.Context, repo string, b []byte) (ocispec.Descriptor, error) {
	return r.push(ctx, repo, digest.FromBytes(b), int64(len(b)), func() io.Reader { return bytes.NewReader(b) })
}

func (r *Registry) pushFile(ctx context.Context, repo, path string) (ocispec.Descriptor, error) {
	d, err := sha256File(path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	st, _ := os.Stat(path)
	return r.push(ctx, repo, d, st.Size(), func() io.Reader {
		f, _ := os.Open(path)
		return f
	})
}

func (r *Registry) push(ctx context.Context, repo string, d digest.Digest, size int64, body func() io.Reader) (ocispec.Descriptor, error) {
	req, _ := http.NewRequest("POST", r.Client.URL("/v2/"+repo+"/blobs/uploads/?digest="+d.String()), body())
	req.ContentLength = size
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body()), nil }
	resp, err := r.Client.Do(ctx, req, "repository:"+repo+":push,pull")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		return ocispec.Descriptor{}, fmt.Errorf("push blob: %s", resp.Status)
	}
	return ocispec.Descriptor{Digest: d, Size: size}, nil
}

// BytesSent is what the registry has sent so far (its metrics' response
// bytes, the metrics' own left out).
func (r *Registry) BytesSent(ctx context.Context) (int64, error) {
	req, _ := http.NewRequest("GET", r.Client.URL("/metrics"), nil)
	resp, err := r.Client.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "sluice_http_response_bytes_total{") && !strings.Contains(line, `route="metrics"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return int64(total), sc.Err()
}
