package distribution_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/server/servertest"
)

// newRegistry serves a fresh registry over temporary stores.
func newRegistry(t *testing.T) *httptest.Server {
	t.Helper()
	return servertest.Start(t, func(c *config.Config) {
		c.Auth.Enabled = false // these tests are about the API; auth has its own
	}).TS
}

type request struct {
	method string
	path   string
	header map[string]string
	body   []byte
}

func do(t *testing.T, ts *httptest.Server, r request) *http.Response {
	t.Helper()
	req, err := http.NewRequest(r.method, ts.URL+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.body == nil {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// pushBlob uploads content monolithically and fails the test on error.
func pushBlob(t *testing.T, ts *httptest.Server, repo string, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	resp := do(t, ts, request{method: "POST", path: "/v2/" + repo + "/blobs/uploads/?digest=" + d.String(), body: content})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob: %s", resp.Status)
	}
	return d
}

func pushManifest(t *testing.T, ts *httptest.Server, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	resp := do(t, ts, request{method: "PUT", path: "/v2/" + repo + "/manifests/" + ref, header: map[string]string{"Content-Type": mediaType}, body: body})
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("push manifest %s: %s %s", ref, resp.Status, b)
	}
	return digest.Digest(resp.Header.Get("Docker-Content-Digest"))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func imageManifest(config, layer ocispec.Descriptor, extra func(*ocispec.Manifest)) []byte {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	if extra != nil {
		extra(&m)
	}
	return mustJSON(m)
}

// fixture is a repository holding an image, an index of it and a referrer.
type fixture struct {
	config, layer         ocispec.Descriptor
	image, index, sbom    digest.Digest
	imageBody, indexBody  []byte
	configBody, layerBody []byte
}

func newFixture(t *testing.T, ts *httptest.Server) *fixture {
	f := &fixture{configBody: []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`), layerBody: bytes.Repeat([]byte("layer"), 1000)}
	f.config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: pushBlob(t, ts, "test/repo", f.configBody), Size: int64(len(f.configBody))}
	f.layer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: pushBlob(t, ts, "test/repo", f.layerBody), Size: int64(len(f.layerBody))}
	f.imageBody = imageManifest(f.config, f.layer, nil)
	f.image = pushManifest(t, ts, "test/repo", "v1", ocispec.MediaTypeImageManifest, f.imageBody)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: f.image, Size: int64(len(f.imageBody)), Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}}}
	idx.SchemaVersion = 2
	f.indexBody = mustJSON(idx)
	f.index = pushManifest(t, ts, "test/repo", "multi", ocispec.MediaTypeImageIndex, f.indexBody)
	empty := pushBlob(t, ts, "test/repo", []byte("{}"))
	sbom := imageManifest(ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: empty, Size: 2}, f.layer, func(m *ocispec.Manifest) {
		m.ArtifactType = "application/spdx+json"
		m.Subject = &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: f.image, Size: int64(len(f.imageBody))}
		m.Annotations = map[string]string{"org.example": "yes"}
	})
	f.sbom = pushManifest(t, ts, "test/repo", digest.FromBytes(sbom).String(), ocispec.MediaTypeImageManifest, sbom)
	pushBlob(t, ts, "alpha/repo", f.configBody)
	pushBlob(t, ts, "alpha/repo", f.layerBody)
	pushManifest(t, ts, "alpha/repo", "v1", ocispec.MediaTypeImageManifest, f.imageBody)
	return f
}

// TestEndpoints checks every endpoint's statuses, headers and error codes.
func TestEndpoints(t *testing.T) {
	ts := newRegistry(t)
	f := newFixture(t, ts)
	missing := digest.FromString("missing")
	sha512Body := []byte("sha512 content")
	sha512Digest := digest.SHA512.FromBytes(sha512Body)
	badJSON := []byte("{not json")
	missingBlobManifest := imageManifest(f.config, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: missing, Size: 3}, nil)
	wrongSize := imageManifest(f.config, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: f.layer.Digest, Size: 1}, nil)
	foreign := imageManifest(f.config, ocispec.Descriptor{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Digest: missing, Size: 3, URLs: []string{"https://example.com/layer"}}, nil)
	orphanIndex := mustJSON(map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex, "manifests": []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: missing, Size: 3}}})
	docker := mustJSON(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f.config.Digest, "size": f.config.Size},
		"layers": []any{map[string]any{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": f.layer.Digest, "size": f.layer.Size}}})
	dockerNoType := mustJSON(map[string]any{"schemaVersion": 2, "config": f.config, "layers": []any{f.layer}})
	schema1 := []byte(`{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}`)
	huge := append([]byte(`{"schemaVersion":2,"annotations":{"x":"`), bytes.Repeat([]byte("a"), 4<<20)...)
	huge = append(huge, []byte(`"}}`)...)

	tests := []struct {
		name       string
		req        request
		wantCode   int
		wantHeader map[string]string
		wantError  string // OCI error code in the body
		wantBody   string // substring of the body
	}{
		{name: "version check", req: request{method: "GET", path: "/v2/"}, wantCode: 200, wantHeader: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"}, wantBody: "{}"},
		{name: "version check HEAD", req: request{method: "HEAD", path: "/v2/"}, wantCode: 200},
		{name: "unknown endpoint", req: request{method: "GET", path: "/v2/test/repo/nothing"}, wantCode: 404},
		{name: "method not allowed", req: request{method: "POST", path: "/v2/test/repo/tags/list"}, wantCode: 405, wantError: "UNSUPPORTED"},
		{name: "invalid name", req: request{method: "GET", path: "/v2/Test/Repo/tags/list"}, wantCode: 400, wantError: "NAME_INVALID"},

		// Manifests.
		{name: "manifest by tag", req: request{method: "GET", path: "/v2/test/repo/manifests/v1"}, wantCode: 200,
			wantHeader: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest, "Docker-Content-Digest": f.image.String()}, wantBody: string(f.imageBody)},
		{name: "manifest by digest", req: request{method: "GET", path: "/v2/test/repo/manifests/" + f.image.String()}, wantCode: 200,
			wantHeader: map[string]string{"Content-Length": fmt.Sprint(len(f.imageBody))}},
		{name: "manifest HEAD", req: request{method: "HEAD", path: "/v2/test/repo/manifests/v1"}, wantCode: 200,
			wantHeader: map[string]string{"Docker-Content-Digest": f.image.String(), "Content-Length": fmt.Sprint(len(f.imageBody))}},
		{name: "manifest accepted type", req: request{method: "GET", path: "/v2/test/repo/manifests/multi", header: map[string]string{"Accept": ocispec.MediaTypeImageManifest + ", " + ocispec.MediaTypeImageIndex}}, wantCode: 200,
			wantHeader: map[string]string{"Content-Type": ocispec.MediaTypeImageIndex}},
		{name: "manifest type not accepted", req: request{method: "GET", path: "/v2/test/repo/manifests/multi", header: map[string]string{"Accept": ocispec.MediaTypeImageManifest}}, wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "manifest wildcard accept", req: request{method: "GET", path: "/v2/test/repo/manifests/multi", header: map[string]string{"Accept": "*/*"}}, wantCode: 200},
		{name: "manifest not modified", req: request{method: "GET", path: "/v2/test/repo/manifests/v1", header: map[string]string{"If-None-Match": `"` + f.image.String() + `"`}}, wantCode: 304},
		{name: "manifest unknown tag", req: request{method: "GET", path: "/v2/test/repo/manifests/nope"}, wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "manifest unknown digest", req: request{method: "GET", path: "/v2/test/repo/manifests/" + missing.String()}, wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "manifest unknown repository", req: request{method: "GET", path: "/v2/other/repo/manifests/v1"}, wantCode: 404, wantError: "MANIFEST_UNKNOWN"},
		{name: "manifest invalid reference", req: request{method: "GET", path: "/v2/test/repo/manifests/-bad"}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "manifest invalid digest", req: request{method: "GET", path: "/v2/test/repo/manifests/sha256:abc"}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "put manifest invalid JSON", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: badJSON}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put manifest wrong media type", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageIndex}, body: f.imageBody}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put manifest unknown media type", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": "text/plain"}, body: dockerNoType}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put docker manifest without mediaType", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}, body: dockerNoType}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put docker schema 1", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, body: schema1}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put manifest missing blob", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: missingBlobManifest}, wantCode: 400, wantError: "MANIFEST_BLOB_UNKNOWN"},
		{name: "put manifest blob of another repository", req: request{method: "PUT", path: "/v2/other/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: f.imageBody}, wantCode: 400, wantError: "MANIFEST_BLOB_UNKNOWN"},
		{name: "put manifest wrong blob size", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: wrongSize}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put index missing child", req: request{method: "PUT", path: "/v2/test/repo/manifests/bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageIndex}, body: orphanIndex}, wantCode: 400, wantError: "MANIFEST_BLOB_UNKNOWN"},
		{name: "put manifest digest mismatch", req: request{method: "PUT", path: "/v2/test/repo/manifests/" + missing.String(), header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: f.imageBody}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "put manifest too large", req: request{method: "PUT", path: "/v2/test/repo/manifests/big", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: huge}, wantCode: 413, wantError: "MANIFEST_INVALID"},
		{name: "put manifest invalid tag", req: request{method: "PUT", path: "/v2/test/repo/manifests/.bad", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: f.imageBody}, wantCode: 400, wantError: "MANIFEST_INVALID"},
		{name: "put foreign layer not present", req: request{method: "PUT", path: "/v2/test/repo/manifests/foreign", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: foreign}, wantCode: 201},
		{name: "put docker manifest", req: request{method: "PUT", path: "/v2/test/repo/manifests/docker", header: map[string]string{"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}, body: docker}, wantCode: 201,
			wantHeader: map[string]string{"Docker-Content-Digest": digest.FromBytes(docker).String(), "Location": "/v2/test/repo/manifests/" + digest.FromBytes(docker).String()}},
		{name: "put manifest by digest with tag parameters", req: request{method: "PUT", path: "/v2/test/repo/manifests/" + f.image.String() + "?tag=p1&tag=p2", header: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}, body: f.imageBody}, wantCode: 201,
			wantHeader: map[string]string{"OCI-Tag": "p1"}},

		// Blobs.
		{name: "blob GET", req: request{method: "GET", path: "/v2/test/repo/blobs/" + f.layer.Digest.String()}, wantCode: 200,
			wantHeader: map[string]string{"Docker-Content-Digest": f.layer.Digest.String(), "Content-Length": fmt.Sprint(f.layer.Size)}, wantBody: string(f.layerBody)},
		{name: "blob HEAD", req: request{method: "HEAD", path: "/v2/test/repo/blobs/" + f.layer.Digest.String()}, wantCode: 200,
			wantHeader: map[string]string{"Content-Length": fmt.Sprint(f.layer.Size)}},
		{name: "blob range", req: request{method: "GET", path: "/v2/test/repo/blobs/" + f.layer.Digest.String(), header: map[string]string{"Range": "bytes=5-9"}}, wantCode: 206,
			wantHeader: map[string]string{"Content-Range": fmt.Sprintf("bytes 5-9/%d", f.layer.Size), "Content-Length": "5"}, wantBody: "layer"},
		{name: "blob suffix range", req: request{method: "GET", path: "/v2/test/repo/blobs/" + f.layer.Digest.String(), header: map[string]string{"Range": "bytes=-3"}}, wantCode: 206, wantBody: "yer"},
		{name: "blob unsatisfiable range", req: request{method: "GET", path: "/v2/test/repo/blobs/" + f.layer.Digest.String(), header: map[string]string{"Range": "bytes=999999-"}}, wantCode: 416},
		{name: "blob unknown", req: request{method: "GET", path: "/v2/test/repo/blobs/" + missing.String()}, wantCode: 404, wantError: "BLOB_UNKNOWN"},
		{name: "blob HEAD unknown", req: request{method: "HEAD", path: "/v2/test/repo/blobs/" + missing.String()}, wantCode: 404},
		{name: "blob of another repository", req: request{method: "GET", path: "/v2/other/repo/blobs/" + f.layer.Digest.String()}, wantCode: 404, wantError: "BLOB_UNKNOWN"},
		{name: "blob invalid digest", req: request{method: "GET", path: "/v2/test/repo/blobs/sha256:xyz"}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "blob unsupported algorithm", req: request{method: "GET", path: "/v2/test/repo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "monolithic sha512 push", req: request{method: "POST", path: "/v2/test/repo/blobs/uploads/?digest=" + sha512Digest.String(), body: sha512Body}, wantCode: 201,
			wantHeader: map[string]string{"Docker-Content-Digest": sha512Digest.String(), "Location": "/v2/test/repo/blobs/" + sha512Digest.String()}},
		{name: "monolithic push digest mismatch", req: request{method: "POST", path: "/v2/test/repo/blobs/uploads/?digest=" + missing.String(), body: []byte("other")}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "mount from repository", req: request{method: "POST", path: "/v2/mounted/repo/blobs/uploads/?mount=" + f.layer.Digest.String() + "&from=test/repo"}, wantCode: 201,
			wantHeader: map[string]string{"Location": "/v2/mounted/repo/blobs/" + f.layer.Digest.String()}},
		{name: "mount of unknown blob starts upload", req: request{method: "POST", path: "/v2/mounted/repo/blobs/uploads/?mount=" + missing.String() + "&from=test/repo"}, wantCode: 202},
		{name: "mount without source", req: request{method: "POST", path: "/v2/anon/repo/blobs/uploads/?mount=" + f.config.Digest.String()}, wantCode: 201},
		{name: "mount invalid source name", req: request{method: "POST", path: "/v2/mounted/repo/blobs/uploads/?mount=" + missing.String() + "&from=BAD"}, wantCode: 400, wantError: "NAME_INVALID"},
		{name: "upload unsupported algorithm", req: request{method: "POST", path: "/v2/test/repo/blobs/uploads/?digest-algorithm=md5"}, wantCode: 400, wantError: "DIGEST_INVALID"},
		{name: "upload status unknown", req: request{method: "GET", path: "/v2/test/repo/blobs/uploads/nope"}, wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},
		{name: "patch unknown upload", req: request{method: "PATCH", path: "/v2/test/repo/blobs/uploads/nope", body: []byte("x")}, wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},
		{name: "put unknown upload", req: request{method: "PUT", path: "/v2/test/repo/blobs/uploads/nope?digest=" + missing.String()}, wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},
		{name: "cancel unknown upload", req: request{method: "DELETE", path: "/v2/test/repo/blobs/uploads/nope"}, wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},

		// Listings.
		{name: "tags list", req: request{method: "GET", path: "/v2/test/repo/tags/list"}, wantCode: 200, wantBody: `"tags":["docker","foreign","multi","p1","p2","v1"]`},
		{name: "tags list page", req: request{method: "GET", path: "/v2/test/repo/tags/list?n=2"}, wantCode: 200, wantBody: `"tags":["docker","foreign"]`,
			wantHeader: map[string]string{"Link": `</v2/test/repo/tags/list?last=foreign&n=2>; rel="next"`}},
		{name: "tags list after", req: request{method: "GET", path: "/v2/test/repo/tags/list?n=10&last=p2"}, wantCode: 200, wantBody: `"tags":["v1"]`},
		{name: "tags list zero", req: request{method: "GET", path: "/v2/test/repo/tags/list?n=0"}, wantCode: 200, wantBody: `"tags":[]`},
		{name: "tags list bad n", req: request{method: "GET", path: "/v2/test/repo/tags/list?n=-1"}, wantCode: 400, wantError: "PAGINATION_NUMBER_INVALID"},
		{name: "tags list unknown repository", req: request{method: "GET", path: "/v2/nothing/here/tags/list"}, wantCode: 404, wantError: "NAME_UNKNOWN"},
		// Only repositories holding a manifest are listed.
		{name: "catalog", req: request{method: "GET", path: "/v2/_catalog"}, wantCode: 200, wantBody: `"repositories":["alpha/repo","test/repo"]`},
		{name: "catalog page", req: request{method: "GET", path: "/v2/_catalog?n=1"}, wantCode: 200, wantBody: `"repositories":["alpha/repo"]`,
			wantHeader: map[string]string{"Link": `</v2/_catalog?last=alpha%2Frepo&n=1>; rel="next"`}},
		{name: "catalog last page", req: request{method: "GET", path: "/v2/_catalog?n=1&last=alpha/repo"}, wantCode: 200, wantBody: `"repositories":["test/repo"]`},

		// Referrers.
		{name: "referrers", req: request{method: "GET", path: "/v2/test/repo/referrers/" + f.image.String()}, wantCode: 200,
			wantHeader: map[string]string{"Content-Type": ocispec.MediaTypeImageIndex}, wantBody: `"annotations":{"org.example":"yes"},"artifactType":"application/spdx+json"`},
		{name: "referrers filtered", req: request{method: "GET", path: "/v2/test/repo/referrers/" + f.image.String() + "?artifactType=application/spdx%2Bjson"}, wantCode: 200,
			wantHeader: map[string]string{"OCI-Filters-Applied": "artifactType"}, wantBody: f.sbom.String()},
		{name: "referrers filtered out", req: request{method: "GET", path: "/v2/test/repo/referrers/" + f.image.String() + "?artifactType=application/other"}, wantCode: 200, wantBody: `"manifests":[]`},
		{name: "referrers none", req: request{method: "GET", path: "/v2/test/repo/referrers/" + missing.String()}, wantCode: 200, wantBody: `"manifests":[]`},
		{name: "referrers invalid digest", req: request{method: "GET", path: "/v2/test/repo/referrers/latest"}, wantCode: 400, wantError: "DIGEST_INVALID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(t, ts, tc.req)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.wantCode, body)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tc.wantError != "" {
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
					t.Fatalf("error body %q: %v", body, err)
				}
				if e.Errors[0].Code != tc.wantError {
					t.Errorf("error code %s, want %s (%s)", e.Errors[0].Code, tc.wantError, e.Errors[0].Message)
				}
				if e.Errors[0].Message == "" {
					t.Error("error without message")
				}
			}
			if tc.wantBody != "" && !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body %s does not contain %s", body, tc.wantBody)
			}
		})
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
