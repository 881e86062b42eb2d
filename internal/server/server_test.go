package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/config"
)

// testServer is a Server on a fresh data directory, without
// authentication, served over HTTP for the test at base; get answers a
// GET's status and body.
func testServer(t *testing.T, logs io.Writer) (srv *Server, cfg config.Config, base string, get func(path string) (int, string)) {
	t.Helper()
	cfg = config.Default()
	cfg.Data = t.TempDir()
	cfg.Auth.Enabled = false
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	get = func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	return srv, cfg, ts.URL, get
}

func TestHealthAndMetrics(t *testing.T) {
	var logs bytes.Buffer
	_, _, base, get := testServer(t, &logs)
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	resp, err := http.Post(base+"/v2/app/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "application/octet-stream", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	get("/v2/app/manifests/missing")
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`sluice_http_requests_total{code="201",method="POST",route="v2_uploads"} 1`,
		`sluice_http_requests_total{code="404",method="GET",route="v2_manifest"} 1`,
		`sluice_http_request_bytes_total{route="v2_uploads"} 5`,
		`sluice_http_request_duration_seconds_bucket{code="200",method="GET",route="healthz",le="+Inf"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), "path=/v2/app/manifests/missing route=v2_manifest status=404") {
		t.Errorf("no access log line: %s", logs.String())
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
}

// /readyz answers 200 while the stores answer and the process is not
// draining, and 503 otherwise; /healthz (liveness) stays 200 throughout.
func TestReadiness(t *testing.T) {
	srv, cfg, _, get := testServer(t, io.Discard)
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("readyz: %d %q", code, body)
	}
	// The blob directory gone: not ready, but alive.
	blobs := filepath.Join(cfg.Data, "blobs")
	if err := os.Rename(blobs, blobs+".away"); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "blob store") {
		t.Errorf("readyz without the blob store: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz without the blob store: %d", code)
	}
	if err := os.Rename(blobs+".away", blobs); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("readyz with the blob store back: %d %q", code, body)
	}
	srv.drain()
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("readyz while draining: %d %q", code, body)
	}
}
