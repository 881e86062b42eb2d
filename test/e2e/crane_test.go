package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCraneCopyTagDelete drives the repository-level operations with crane:
// push from an OCI layout, copy to another repository (which must mount
// every blob instead of uploading it), append a layer, tag, list, catalog,
// digest and delete.
func TestCraneCopyTagDelete(t *testing.T) { onEachBackend(t, craneCopyTagDelete) }

func craneCopyTagDelete(t *testing.T, backend []string) {
	crane := requireTool(t, "crane")
	reg := startSluiced(t, t.TempDir(), backend...)
	cl := newClients(t)
	rng := newRand(t)
	src, dst, app := reg.addr+"/e2e/crane/src", reg.addr+"/e2e/crane/dst", reg.addr+"/e2e/crane/app"
	lines := func(out string) []string { return strings.Fields(out) }

	img := newTestImage(t, rng, 2<<10, 200<<10)
	layout := filepath.Join(cl.dir, "layout")
	img.writeLayout(t, layout, "v1")
	cl.run(crane, "push", "--insecure", layout, src+":v1")
	if got := strings.TrimSpace(cl.run(crane, "digest", "--insecure", src+":v1")); got != img.ManifestDigest.String() {
		t.Fatalf("crane digest of src:v1 is %s, want %s", got, img.ManifestDigest)
	}

	before := len(reg.accessLog())
	cl.run(crane, "copy", "--insecure", src+":v1", dst+":v1")
	if got := cl.run(crane, "manifest", "--insecure", dst+":v1"); got != string(img.Manifest) {
		t.Fatalf("dst:v1 serves manifest\n%s\nwant\n%s", got, img.Manifest)
	}
	checkMountedOnly(t, reg.accessLog()[before:], "/v2/e2e/crane/dst/", len(img.Blobs))

	// append mounts the base's layers into a third repository and uploads
	// one new layer.
	_, newLayer := tarGzipLayer(t, rng, "appended/file", 50<<10)
	layerFile := filepath.Join(cl.dir, "appended.tar.gz")
	writeFile(t, layerFile, newLayer)
	cl.run(crane, "append", "--insecure", "-b", src+":v1", "-f", layerFile, "-t", app+":v1")
	var appended ocispec.Manifest
	if err := json.Unmarshal([]byte(cl.run(crane, "manifest", "--insecure", app+":v1")), &appended); err != nil {
		t.Fatal(err)
	}
	if n := len(appended.Layers); n != len(img.Layers)+1 {
		t.Fatalf("appended image has %d layers, want %d", n, len(img.Layers)+1)
	}
	last := appended.Layers[len(img.Layers)].Digest
	if got := cl.run(crane, "blob", "--insecure", app+"@"+last.String()); !bytes.Equal([]byte(got), newLayer) {
		t.Errorf("crane blob of the appended layer %s returned %d different bytes", last, len(got))
	}

	cl.run(crane, "tag", "--insecure", dst+":v1", "v2")
	if got := lines(cl.run(crane, "ls", "--insecure", dst)); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Errorf("crane ls dst: %v, want [v1 v2]", got)
	}
	catalog := lines(cl.run(crane, "catalog", "--insecure", reg.addr))
	for _, repo := range []string{"e2e/crane/app", "e2e/crane/dst", "e2e/crane/src"} {
		if !slices.Contains(catalog, repo) {
			t.Errorf("crane catalog %v lacks %s", catalog, repo)
		}
	}

	// Deleting the manifest by digest takes both of its tags with it and
	// leaves the source repository alone.
	cl.run(crane, "delete", "--insecure", dst+"@"+img.ManifestDigest.String())
	if got := lines(cl.run(crane, "ls", "--insecure", dst)); len(got) != 0 {
		t.Errorf("crane ls dst after delete: %v, want no tags", got)
	}
	for _, ref := range []string{dst + ":v1", dst + "@" + img.ManifestDigest.String()} {
		if _, stderr, err := cl.try(crane, "manifest", "--insecure", ref); err == nil || !strings.Contains(stderr, "MANIFEST_UNKNOWN") {
			t.Errorf("crane manifest %s after delete: err %v, stderr %q; want MANIFEST_UNKNOWN", ref, err, stderr)
		}
	}
	if got := strings.TrimSpace(cl.run(crane, "digest", "--insecure", src+":v1")); got != img.ManifestDigest.String() {
		t.Errorf("src:v1 after deleting dst is %s, want %s", got, img.ManifestDigest)
	}
}

// checkMountedOnly checks, from the access log of a copy, that every blob
// reached the repository at prefix by a cross-repository mount (POST
// answered 201) and none by an upload session.
func checkMountedOnly(t *testing.T, log []accessEntry, prefix string, blobs int) {
	t.Helper()
	mounts := 0
	for _, e := range log {
		if !strings.HasPrefix(e.Path, prefix+"blobs/uploads/") {
			continue
		}
		if e.Method == http.MethodPost && e.Status == http.StatusCreated {
			mounts++
			continue
		}
		t.Errorf("copy uploaded instead of mounting: %s %s answered %d", e.Method, e.Path, e.Status)
	}
	if mounts != blobs {
		t.Errorf("copy mounted %d blobs, want all %d", mounts, blobs)
	}
}
