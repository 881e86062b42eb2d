package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/testenv"
)

// A registry whose disk is full starts, serves pulls, refuses pushes with
// 507 and a message that names no server path, keeps nothing of them, and
// says which store cannot write in /healthz (still 200) and in
// sluice_store_writable; once space is freed, pushes work again.
//
// The image is pushed by a registry in this process, stopped cleanly (as
// an operator's restart does); then the disk is filled and the sluiced
// binary started on it.
func TestFullDiskStartsAndServesPulls(t *testing.T) {
	work := t.TempDir()
	mnt := filepath.Join(work, "fs")
	testenv.SmallFS(t, mnt, 8<<20)
	data := filepath.Join(mnt, "data")

	layer := make([]byte, 256<<10)
	rand.Read(layer)
	cfgBlob := []byte(`{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["` + digest.FromBytes(layer).String() + `"]}}`)
	manifest := imageManifest(cfgBlob, layer)
	pushWithRoom(t, data, map[string][]byte{"layer": layer, "config": cfgBlob}, manifest)
	blobsBefore := filesUnder(t, filepath.Join(data, "blobs"))

	fill := testenv.Fill(t, mnt)
	bin := t.TempDir()
	testenv.Build(t, bin, "github.com/sluicehq/sluice/cmd/sluiced")
	host := testenv.StartSluiced(t, filepath.Join(bin, "sluiced"), data, adminPassword)
	base := "http://" + host
	call := func(method, path string, header map[string]string, body []byte) resp {
		t.Helper()
		h := basic("admin", adminPassword)
		for k, v := range header {
			h[k] = v
		}
		return doHTTP(t, method, base+path, h, body)
	}

	// Pulls.
	if r := call("GET", "/v2/app/manifests/v1", map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json"}, nil); r.code != 200 || r.body != string(manifest) {
		t.Fatalf("pull manifest on a full disk: %d %s", r.code, r.body)
	}
	if r := call("GET", "/v2/app/blobs/"+digest.FromBytes(layer).String(), nil, nil); r.code != 200 || r.body != string(layer) {
		t.Fatalf("pull layer on a full disk: %d (%d bytes)", r.code, len(r.body))
	}

	// Pushes: a new blob (monolithic, and by session), a manifest that
	// needs no new blob.
	other := make([]byte, 64<<10)
	rand.Read(other)
	otherManifest := imageManifest(cfgBlob, layer)
	otherManifest = bytes.Replace(otherManifest, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":2,"annotations":{"n":"2"}`), 1)
	refused := []struct {
		name, method, path string
		header             map[string]string
		body               []byte
	}{
		{"monolithic blob", "POST", "/v2/app/blobs/uploads/?digest=" + digest.FromBytes(other).String(), nil, other},
		{"upload session", "POST", "/v2/app/blobs/uploads/", nil, nil},
		{"manifest", "PUT", "/v2/app/manifests/v2", map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, otherManifest},
	}
	for _, tc := range refused {
		r := call(tc.method, tc.path, tc.header, tc.body)
		if r.code != http.StatusInsufficientStorage {
			t.Errorf("%s on a full disk: %d %s; want 507", tc.name, r.code, r.body)
			continue
		}
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(r.body), &body); err != nil || len(body.Errors) != 1 {
			t.Errorf("%s: body %q is not one OCI error", tc.name, r.body)
			continue
		}
		e := body.Errors[0]
		if e.Code != "INSUFFICIENT_STORAGE" || !strings.Contains(e.Message, "full") || strings.Contains(e.Message, mnt) || strings.Contains(e.Message, "sluice.db") {
			t.Errorf("%s: error %+v; want INSUFFICIENT_STORAGE saying the storage is full, naming no server path", tc.name, e)
		}
	}
	if got := filesUnder(t, filepath.Join(data, "blobs")); !slices.Equal(got, blobsBefore) {
		t.Errorf("files in the blob store after the refused pushes:\n%s\nbefore:\n%s", strings.Join(got, "\n"), strings.Join(blobsBefore, "\n"))
	}
	if r := call("GET", "/v2/app/tags/list", nil, nil); r.code != 200 || !strings.Contains(r.body, `"tags":["v1"]`) {
		t.Errorf("tags after the refused pushes: %d %s", r.code, r.body)
	}

	// Health and the gauge.
	r := doHTTP(t, "GET", base+"/healthz", nil, nil)
	for _, store := range []string{"metadata", "blobs"} {
		if r.code != 200 || !strings.Contains(r.body, store+": not writable (no space left on device)") {
			t.Errorf("healthz on a full disk: %d %q; want 200 saying %s is not writable", r.code, r.body, store)
		}
	}
	if strings.Contains(r.body, mnt) {
		t.Errorf("healthz names a server path: %q", r.body)
	}
	metrics := call("GET", "/metrics", nil, nil)
	for _, store := range []string{"metadata", "blobs"} {
		if want := `sluice_store_writable{store="` + store + `"} 0`; !strings.Contains(metrics.body, want) {
			t.Errorf("metrics on a full disk lack %s", want)
		}
	}

	// Space freed: health says nothing is wrong, pushes work.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := doHTTP(t, "GET", base+"/healthz", nil, nil)
		if r.code == 200 && r.body == "ok\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz once space is freed: %d %q", r.code, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := call(refused[0].method, refused[0].path, nil, other); r.code != http.StatusCreated {
		t.Errorf("push once space is freed: %d %s", r.code, r.body)
	}
	metrics = call("GET", "/metrics", nil, nil)
	if want := `sluice_store_writable{store="blobs"} 1`; !strings.Contains(metrics.body, want) {
		t.Errorf("metrics once space is freed lack %s", want)
	}
}

// pushWithRoom pushes the blobs and the manifest (as app:v1) with a
// registry in this process on data, then stops it.
func pushWithRoom(t *testing.T, data string, blobs map[string][]byte, manifest []byte) {
	t.Helper()
	cfg := config.Default()
	cfg.Data = data
	cfg.AdminPassword = adminPassword
	cfg.Log.Access = false
	srv, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer func() {
		ts.Close()
		srv.Close()
	}()
	for name, b := range blobs {
		if r := doHTTP(t, "POST", ts.URL+"/v2/app/blobs/uploads/?digest="+digest.FromBytes(b).String(), basic("admin", adminPassword), b); r.code != 201 {
			t.Fatalf("push %s: %d %s", name, r.code, r.body)
		}
	}
	h := basic("admin", adminPassword)
	h["Content-Type"] = "application/vnd.oci.image.manifest.v1+json"
	if r := doHTTP(t, "PUT", ts.URL+"/v2/app/manifests/v1", h, manifest); r.code != 201 {
		t.Fatalf("push manifest: %d %s", r.code, r.body)
	}
}

func imageManifest(cfg, layer []byte) []byte {
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(layer), len(layer))
}

func doHTTP(t *testing.T, method, url string, header map[string]string, body []byte) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, header: r.Header, body: string(b)}
}

// filesUnder lists the files under dir (relative paths, sorted).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
