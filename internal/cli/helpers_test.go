package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/lazypull"
	"github.com/sluicehq/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/internal/trust"
)

// isolatedEnv is an environment with its own home, configuration and
// docker configuration directories, and nothing else.
func isolatedEnv(t *testing.T) func(string) string {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"HOME":          dir,
		"SLUICE_CONFIG": filepath.Join(dir, "sluice", "config.yaml"),
		"DOCKER_CONFIG": filepath.Join(dir, "docker"),
	}
	return func(k string) string { return env[k] }
}

// withCredentials is getenv with $SLUICE_USERNAME and $SLUICE_PASSWORD set.
func withCredentials(getenv func(string) string, user, pass string) func(string) string {
	return func(k string) string {
		switch k {
		case "SLUICE_USERNAME":
			return user
		case "SLUICE_PASSWORD":
			return pass
		}
		return getenv(k)
	}
}

// Credentials of the test registry's admin.
const (
	adminUser     = "admin"
	adminPassword = "golden-admin-password"
)

// testRegistry is an in-process sluiced with authentication on, served
// over loopback HTTP, and a sluice configuration logged in to it as
// "golden".
type testRegistry struct {
	t      *testing.T
	srv    *servertest.Server
	ts     *httptest.Server
	host   string
	getenv func(string) string
	ids    map[string]string // operation ids seen, by their stable names
	vars   map[string]string // values saved by earlier commands
	// onResponse, when set, sees every response sluice receives.
	onResponse func(*http.Request)
	// pull stands in for containerd in sluice pull.
	pull func(ctx context.Context, ref string, o lazypull.Options) (*lazypull.Result, error)
}

// RoundTrip carries sluice's requests, showing each to onResponse.
func (tr *testRegistry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && tr.onResponse != nil {
		tr.onResponse(req)
	}
	return resp, err
}

// waitReferrer waits until the image repo:tag has a streaming artifact.
func (tr *testRegistry) waitReferrer(repo, tag string) {
	tr.t.Helper()
	resp, _ := tr.do("HEAD", "/v2/"+repo+"/manifests/"+tag, "", nil)
	dgst := resp.Header.Get("Docker-Content-Digest")
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		_, body := tr.do("GET", "/v2/"+repo+"/referrers/"+dgst+"?artifactType=application/vnd.azure.artifact.streaming.v1", "", nil)
		var idx ocispec.Index
		if json.Unmarshal(body, &idx) == nil && len(idx.Manifests) > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.t.Fatalf("%s:%s has no streaming artifact after a minute", repo, tag)
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	s := servertest.Start(t, func(c *config.Config) {
		c.AdminPassword = adminPassword
		c.SoftDelete.Enabled = true
		c.GC.Interval = 0
		installSigningKey(t, filepath.Join(c.Data, "keys"), "testdata/signing-key.pem")
	})
	tr := &testRegistry{t: t, srv: s, ts: s.TS, host: s.Host, getenv: isolatedEnv(t), ids: map[string]string{}, vars: map[string]string{}}
	s.StartWorkers()
	return tr
}

// installSigningKey makes the key in file the registry's current signing
// key, so that the signatures of streaming artifacts, and the digests of
// the artifacts that carry them, are the same in every run.
func installSigningKey(t *testing.T, dir, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	key, err := trust.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := trust.KeyID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, kid+".pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "current"), []byte(kid+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// result is one run of sluice.
type result struct {
	stdout, stderr string
	code           int
	value          any // the printed result, normalized
	table          tableFunc
}

// run runs sluice in-process against the registry; {name} in args is a
// value saved in tr.vars.
func (tr *testRegistry) run(args ...string) result {
	tr.t.Helper()
	for i, a := range args {
		for k, v := range tr.vars {
			a = strings.ReplaceAll(a, "{"+k+"}", v)
		}
		args[i] = a
	}
	var out, errOut bytes.Buffer
	var res result
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: tr.getenv, Transport: tr, normalize: tr.normalize, pull: tr.pull}
	a.record = func(v any, table tableFunc) { res.value, res.table = v, table }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res.code = Execute(ctx, a, NewRootCommand(a, NewPullCommand), args)
	res.stdout, res.stderr = out.String(), errOut.String()
	return res
}

// must runs sluice and fails the test unless it succeeds.
func (tr *testRegistry) must(args ...string) result {
	tr.t.Helper()
	r := tr.run(args...)
	if r.code != 0 {
		tr.t.Fatalf("sluice %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// login logs the configuration in to the registry as "golden", the
// default registry.
func (tr *testRegistry) login() {
	tr.t.Helper()
	tr.must("login", "golden", "--url", tr.ts.URL, "-u", adminUser, "-p", adminPassword)
}

var (
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
)

// normalize makes a result stable across runs: times, the registry's
// address, operation ids (numbered in the order seen) and generated
// passwords.
func (tr *testRegistry) normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if name, _ := x["name"].(string); k == "value" && strings.HasPrefix(name, "password") {
				x[k] = "<PASSWORD>"
				continue
			}
			x[k] = tr.normalize(val)
		}
	case []any:
		for i := range x {
			x[i] = tr.normalize(x[i])
		}
	case string:
		return tr.normalizeText(x)
	}
	return v
}

func (tr *testRegistry) normalizeText(s string) string {
	s = strings.ReplaceAll(s, tr.getenv("SLUICE_CONFIG"), "<CONFIG>")
	s = strings.ReplaceAll(s, tr.host, "<REGISTRY>")
	s = timeRE.ReplaceAllString(s, "<TIME>")
	return uuidRE.ReplaceAllStringFunc(s, func(id string) string {
		if n, ok := tr.ids[id]; ok {
			return n
		}
		n := fmt.Sprintf("<ID%d>", len(tr.ids)+1)
		tr.ids[id] = n
		return n
	})
}

// do sends an authenticated request to the registry.
func (tr *testRegistry) do(method, path, contentType string, body []byte) (*http.Response, []byte) {
	tr.t.Helper()
	req, err := http.NewRequest(method, tr.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		tr.t.Fatal(err)
	}
	req.SetBasicAuth(adminUser, adminPassword)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (tr *testRegistry) pushBlob(repo string, b []byte, mediaType string) ocispec.Descriptor {
	tr.t.Helper()
	d := digest.FromBytes(b)
	if resp, body := tr.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), "application/octet-stream", b); resp.StatusCode != http.StatusCreated {
		tr.t.Fatalf("push blob: %d %s", resp.StatusCode, body)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

func (tr *testRegistry) pushManifest(repo, ref, mediaType string, v any) ocispec.Descriptor {
	tr.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tr.t.Fatal(err)
	}
	if resp, body := tr.do("PUT", "/v2/"+repo+"/manifests/"+ref, mediaType, b); resp.StatusCode != http.StatusCreated {
		tr.t.Fatalf("push manifest %s:%s: %d %s", repo, ref, resp.StatusCode, body)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// layerTar is a deterministic tar of files.
func layerTar(files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(1, 0)})
		_, _ = tw.Write([]byte(files[n]))
	}
	_ = tw.Close()
	return buf.Bytes()
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// pushImage pushes a one-layer Linux image of files for arch and tags it
// (tag "" pushes it by digest only).
func (tr *testRegistry) pushImage(repo, tag, arch string, files map[string]string) ocispec.Descriptor {
	tr.t.Helper()
	raw := layerTar(files)
	layer := tr.pushBlob(repo, gzipBytes(raw), ocispec.MediaTypeImageLayerGzip)
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(raw)}}})
	cd := tr.pushBlob(repo, cfg, ocispec.MediaTypeImageConfig)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{layer}}
	b, _ := json.Marshal(m)
	ref := tag
	if ref == "" {
		ref = digest.FromBytes(b).String()
	}
	d := tr.pushManifest(repo, ref, ocispec.MediaTypeImageManifest, m)
	d.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
	return d
}

// pushIndex pushes an index of the given manifests under tag.
func (tr *testRegistry) pushIndex(repo, tag string, manifests ...ocispec.Descriptor) ocispec.Descriptor {
	tr.t.Helper()
	return tr.pushManifest(repo, tag, ocispec.MediaTypeImageIndex,
		ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests})
}
