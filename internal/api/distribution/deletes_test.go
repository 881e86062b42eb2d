package distribution_test

import (
	"strings"
	"testing"
)

func TestDeletes(t *testing.T) {
	ts := newRegistry(t)
	f := newFixture(t, ts)
	check := func(method, path string, want int) {
		t.Helper()
		resp := do(t, ts, request{method: method, path: path})
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
		}
	}
	// A tag delete leaves the manifest.
	pushManifest(t, ts, "test/repo", "v2", "application/vnd.oci.image.manifest.v1+json", f.imageBody)
	check("DELETE", "/v2/test/repo/manifests/v2", 202)
	check("GET", "/v2/test/repo/manifests/v2", 404)
	check("GET", "/v2/test/repo/manifests/"+f.image.String(), 200)
	check("DELETE", "/v2/test/repo/manifests/v2", 404)

	// Deleting a referrer removes it from the referrers index.
	check("DELETE", "/v2/test/repo/manifests/"+f.sbom.String(), 202)
	resp := do(t, ts, request{method: "GET", path: "/v2/test/repo/referrers/" + f.image.String()})
	if b := readAll(t, resp); !strings.Contains(b, `"manifests":[]`) {
		t.Fatalf("referrers after delete: %s", b)
	}

	// A manifest delete removes every tag pointing at it.
	check("DELETE", "/v2/test/repo/manifests/"+f.index.String(), 202)
	check("GET", "/v2/test/repo/manifests/multi", 404)
	check("DELETE", "/v2/test/repo/manifests/"+f.index.String(), 404)
	check("DELETE", "/v2/test/repo/manifests/"+f.image.String(), 202)
	check("GET", "/v2/test/repo/manifests/v1", 404)
	resp = do(t, ts, request{method: "GET", path: "/v2/test/repo/tags/list"})
	if b := readAll(t, resp); !strings.Contains(b, `"tags":[]`) {
		t.Fatalf("tags after deletes: %s", b)
	}
	// The blobs stay until garbage collection.
	check("HEAD", "/v2/test/repo/blobs/"+f.layer.Digest.String(), 200)
}
