package main

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
	"github.com/sluicehq/sluice/internal/streaming"
)

const password = "coldstart-bench"

// env is the registry the trials pull from.
type env struct {
	bin     string
	work    string
	port    int
	host    string
	sluiced *exec.Cmd
	reg     *client.Client
	// streamed are the streamed layers of each workload's image, and
	// their sizes.
	streamed     map[string][]digest.Digest
	streamedSize map[digest.Digest]int64
	// snapshotterConfig is sluice-snapshotter's configuration file.
	snapshotterConfig string
	// profiles are the startup profiles a first start recorded, by
	// workload and streamed layer.
	profiles map[string]map[digest.Digest][]streaming.Range
}

func newEnv(ctx context.Context, bin string) (*env, error) {
	work, err := os.MkdirTemp("", "coldstart-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	e := &env{bin: bin, work: work, port: port, host: fmt.Sprintf("127.0.0.1:%d", port), streamed: map[string][]digest.Digest{}, streamedSize: map[digest.Digest]int64{},
		profiles: map[string]map[digest.Digest][]streaming.Range{}}
	cmd := exec.Command(filepath.Join(bin, "sluiced"), "serve", "--listen", e.host, "--data", filepath.Join(work, "registry"))
	cmd.Env = append(os.Environ(), "SLUICE_ADMIN_PASSWORD="+password, "SLUICE_LOG_ACCESS="+os.Getenv("COLDSTART_ACCESS_LOG"), "SLUICE_LOG_FORMAT=json", "SLUICE_GC_INTERVAL=0")
	logf, err := os.Create(filepath.Join(work, "sluiced.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e.sluiced = cmd
	e.reg = client.New(e.host, client.Options{PlainHTTP: true, Credential: client.StaticCredential(e.host, "admin", password)})
	e.snapshotterConfig = filepath.Join(work, "snapshotter.yaml")
	snCfg := fmt.Sprintf("registries:\n  %q:\n    username: admin\n    password: %s\n", e.host, password)
	if err := os.WriteFile(e.snapshotterConfig, []byte(snCfg), 0o600); err != nil {
		return nil, err
	}
	if err := waitFor(30*time.Second, func() bool {
		resp, err := http.Get("http://" + e.host + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}); err != nil {
		return nil, fmt.Errorf("sluiced did not start: %w", err)
	}
	return e, nil
}

func (e *env) close() {
	if e.sluiced != nil {
		_ = e.sluiced.Process.Kill()
		_ = e.sluiced.Wait()
	}
	if os.Getenv("COLDSTART_KEEP") != "" {
		fmt.Fprintln(os.Stderr, "kept", e.work)
		return
	}
	_ = os.RemoveAll(e.work)
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", d)
}

// layerFiles are the layers bench/images/build.sh makes.
func layerFiles(name string) (gz, tarPath string, err error) {
	cache := os.Getenv("SLUICE_BENCH_CACHE")
	if cache == "" {
		cache = "/var/cache/sluice-bench"
	}
	gz = filepath.Join(cache, "layers", name+".tar.gz")
	tarPath = filepath.Join(cache, "layers", name+".tar")
	if _, err := os.Stat(gz); err != nil {
		out, err := exec.Command("bench/images/build.sh", name).CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("build image %s: %v\n%s", name, err, out)
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

// pushImage pushes a workload's image into a streaming repository and
// waits for its streaming artifact.
func (e *env) pushImage(ctx context.Context, w workload) error {
	gz, tarPath, err := layerFiles(w.name)
	if err != nil {
		return err
	}
	diffID, err := sha256File(tarPath)
	if err != nil {
		return err
	}
	if err := e.mgmt(ctx, "POST", "/acr/v1/"+w.name+"/_streaming", `{"convertPushedImages":true}`); err != nil {
		return err
	}
	layer, err := e.pushFile(ctx, w.name, gz)
	if err != nil {
		return err
	}
	layer.MediaType = ocispec.MediaTypeImageLayerGzip
	cfg, _ := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: w.args},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	})
	cd, err := e.pushBytes(ctx, w.name, cfg)
	if err != nil {
		return err
	}
	cd.MediaType = ocispec.MediaTypeImageConfig
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{layer}})
	req, _ := http.NewRequest("PUT", e.reg.URL("/v2/"+w.name+"/manifests/latest"), bytes.NewReader(m))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := e.reg.Do(ctx, req, "repository:"+w.name+":push,pull")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		return fmt.Errorf("push manifest: %s", resp.Status)
	}
	start := time.Now()
	var refs []ocispec.Descriptor
	if err := waitFor(20*time.Minute, func() bool {
		refs, err = e.reg.Referrers(ctx, w.name, digest.FromBytes(m), "application/vnd.azure.artifact.streaming.v1")
		return err == nil && len(refs) > 0
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: streaming artifact ready (%v after the push)\n", w.name, time.Since(start).Round(time.Second))
	b, _, err := e.reg.GetManifest(ctx, w.name, refs[0].Digest.String())
	if err != nil {
		return err
	}
	var sm ocispec.Manifest
	if err := json.Unmarshal(b, &sm); err != nil {
		return err
	}
	for _, l := range sm.Layers {
		e.streamed[w.name] = append(e.streamed[w.name], l.Digest)
		e.streamedSize[l.Digest] = l.Size
	}
	return nil
}

// hasProfiles reports whether the registry has a startup profile of every
// streamed layer of a workload's image.
func (e *env) hasProfiles(ctx context.Context, w workload) bool {
	for _, d := range e.streamed[w.name] {
		if ranges, err := e.reg.StartupProfile(ctx, w.name, d); err != nil || ranges == nil {
			return false
		}
	}
	return true
}

// deleteProfiles makes the registry forget the startup profiles of a
// workload's image, so that the next start is a first one.
func (e *env) deleteProfiles(ctx context.Context, w workload) error {
	for _, d := range e.streamed[w.name] {
		_, _, err := e.reg.API(ctx, "DELETE", "/acr/v1/"+w.name+"/_profiles/"+d.String(), nil, nil)
		if err != nil && !client.IsStatus(err, http.StatusNotFound) {
			return err
		}
	}
	return nil
}

func (e *env) mgmt(ctx context.Context, method, path, body string) error {
	req, _ := http.NewRequest(method, e.reg.URL(path), strings.NewReader(body))
	resp, err := e.reg.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return client.ErrorFrom(resp)
	}
	return nil
}

func (e *env) pushBytes(ctx context.Context, repo string, b []byte) (ocispec.Descriptor, error) {
	return e.push(ctx, repo, digest.FromBytes(b), int64(len(b)), func() io.Reader { return bytes.NewReader(b) })
}

func (e *env) pushFile(ctx context.Context, repo, path string) (ocispec.Descriptor, error) {
	d, err := sha256File(path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	st, _ := os.Stat(path)
	return e.push(ctx, repo, d, st.Size(), func() io.Reader {
		f, _ := os.Open(path)
		return f
	})
}

func (e *env) push(ctx context.Context, repo string, d digest.Digest, size int64, body func() io.Reader) (ocispec.Descriptor, error) {
	req, _ := http.NewRequest("POST", e.reg.URL("/v2/"+repo+"/blobs/uploads/?digest="+d.String()), body())
	req.ContentLength = size
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body()), nil }
	resp, err := e.reg.Do(ctx, req, "repository:"+repo+":push,pull")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		return ocispec.Descriptor{}, fmt.Errorf("push blob: %s", resp.Status)
	}
	return ocispec.Descriptor{Digest: d, Size: size}, nil
}

// registryBytes is what the registry has sent so far.
func (e *env) registryBytes(ctx context.Context) (int64, error) {
	req, _ := http.NewRequest("GET", e.reg.URL("/metrics"), nil)
	resp, err := e.reg.Do(ctx, req)
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

// shape limits the registry's outgoing traffic on lo to rate.
func shape(port int, rate string) error {
	unshape()
	cmds := [][]string{
		{"qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20"},
		{"class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit"},
		{"class", "add", "dev", "lo", "parent", "1:1", "classid", "1:10", "htb", "rate", rate, "ceil", rate, "burst", "64k", "cburst", "64k"},
		{"class", "add", "dev", "lo", "parent", "1:1", "classid", "1:20", "htb", "rate", "100gbit"},
		{"filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "sport", strconv.Itoa(port), "0xffff", "flowid", "1:10"},
	}
	for _, c := range cmds {
		if out, err := exec.Command("tc", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("tc %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

func unshape() { _ = exec.Command("tc", "qdisc", "del", "dev", "lo", "root").Run() }

// saveProfiles keeps the startup profiles of a workload's image that the
// registry has now, for restoreProfiles.
func (e *env) saveProfiles(ctx context.Context, w workload) error {
	e.profiles[w.name] = map[digest.Digest][]streaming.Range{}
	for _, d := range e.streamed[w.name] {
		ranges, err := e.reg.StartupProfile(ctx, w.name, d)
		if err != nil {
			return err
		}
		e.profiles[w.name][d] = ranges
	}
	return nil
}

// restoreProfiles gives the registry back the saved profiles of a
// workload's image, when a first start's trial made it forget them.
func (e *env) restoreProfiles(ctx context.Context, w workload) error {
	if e.hasProfiles(ctx, w) {
		return nil
	}
	for d, ranges := range e.profiles[w.name] {
		if err := e.reg.PutStartupProfile(ctx, w.name, d, ranges); err != nil {
			return err
		}
	}
	return nil
}
