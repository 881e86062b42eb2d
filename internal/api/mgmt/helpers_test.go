package mgmt_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/server/servertest"
)

// testRegistry is an in-process sluiced; workers run only if asked, so a
// test can see operations wait in the queue.
type testRegistry struct {
	t   *testing.T
	srv *servertest.Server
	ts  *httptest.Server
	// user and password, when set, go with every request as basic
	// credentials.
	user, password string
}

// as returns the registry seen by a client sending basic credentials.
func (tr *testRegistry) as(user, password string) *testRegistry {
	c := *tr
	c.user, c.password = user, password
	return &c
}

func newTestRegistry(t *testing.T, workers bool, tweak func(*config.Config)) *testRegistry {
	t.Helper()
	s := servertest.Start(t, func(c *config.Config) {
		c.Auth.Enabled = false // these tests are about the API; auth has its own
		if tweak != nil {
			tweak(c)
		}
	})
	tr := &testRegistry{t: t, srv: s, ts: s.TS}
	if workers {
		s.StartWorkers()
	}
	return tr
}

type response struct {
	code   int
	header http.Header
	body   string
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return v
}

func (tr *testRegistry) do(method, path, contentType string, body []byte) response {
	tr.t.Helper()
	req, err := http.NewRequest(method, tr.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		tr.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if tr.user != "" {
		req.SetBasicAuth(tr.user, tr.password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (tr *testRegistry) expect(method, path, body string, want int) response {
	tr.t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := tr.do(method, path, "application/json", b)
	if r.code != want {
		tr.t.Fatalf("%s %s: %d, want %d; %s", method, path, r.code, want, r.body)
	}
	return r
}

func (tr *testRegistry) pushBlob(repo string, b []byte) ocispec.Descriptor {
	tr.t.Helper()
	d := digest.FromBytes(b)
	r := tr.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), "application/octet-stream", b)
	if r.code != http.StatusCreated {
		tr.t.Fatalf("push blob: %d %s", r.code, r.body)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

// pushImage pushes a small runnable Linux image and returns its manifest
// descriptor.
func (tr *testRegistry) pushImage(repo, tag string, seed int) ocispec.Descriptor {
	tr.t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	content := []byte(strings.Repeat(fmt.Sprintf("file %d\n", seed), 1000))
	_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d.txt", seed), Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(1, 0)})
	_, _ = tw.Write(content)
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(tb.Bytes())
	_ = zw.Close()
	layer := tr.pushBlob(repo, gz.Bytes())
	layer.MediaType = ocispec.MediaTypeImageLayerGzip
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tb.Bytes())}}})
	cd := tr.pushBlob(repo, cfg)
	cd.MediaType = ocispec.MediaTypeImageConfig
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{layer}})
	ref := tag
	if ref == "" {
		ref = digest.FromBytes(m).String()
	}
	r := tr.do("PUT", "/v2/"+repo+"/manifests/"+ref, ocispec.MediaTypeImageManifest, m)
	if r.code != http.StatusCreated {
		tr.t.Fatalf("push manifest: %d %s", r.code, r.body)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
}

// waitOperation polls an operation's URL until it is no longer active.
func (tr *testRegistry) waitOperation(path string) map[string]any {
	tr.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		op := tr.expect("GET", path, "", http.StatusOK).json(tr.t)
		if s := op["status"]; s != "NotStarted" && s != "Running" {
			return op
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.t.Fatalf("operation %s did not finish", path)
	return nil
}

func errorCode(t *testing.T, r response) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("no error body in %q", r.body)
	}
	return e.Errors[0].Code
}

func sleep() { time.Sleep(20 * time.Millisecond) }
