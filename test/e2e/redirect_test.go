package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/sluicehq/sluice/internal/testbackend"
)

// TestBlobRedirect turns storage.redirect on: a blob GET is answered 307
// with a signed URL of the object store, which serves the blob and its
// ranges to a client that follows it; HEAD is answered by sluiced; a blob
// the repository does not hold is refused, with no URL.
func TestBlobRedirect(t *testing.T) {
	for _, b := range objectStores {
		t.Run(b.name, func(t *testing.T) {
			backend := append(sharedBackend(testbackend.Postgres(t), b.bucket(t)), "SLUICE_STORAGE_REDIRECT=true")
			reg := startSluiced(t, t.TempDir(), backend...)
			oc := newOCIClient(t, reg.addr)
			ctx := context.Background()
			content := randomBytes(newRand(t), 1<<20+3)
			dgst, err := oc.pushBlob(ctx, "e2e/redirect", content, 1)
			if err != nil {
				t.Fatal(err)
			}
			path := "/v2/e2e/redirect/blobs/" + dgst.String()

			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := noFollow.Get(reg.url(path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusTemporaryRedirect || loc == nil || loc.Host == reg.addr || loc.Host == "" {
				t.Fatalf("GET: %s, Location %q; want 307 to the object store", resp.Status, resp.Header.Get("Location"))
			}

			got, err := oc.getBlob(ctx, "e2e/redirect", dgst)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("following the redirect: %d bytes (%v), want the %d pushed", len(got), err, len(content))
			}
			req, _ := http.NewRequest(http.MethodGet, reg.url(path), nil)
			req.Header.Set("Range", "bytes=1000-1999")
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			part, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, content[1000:2000]) {
				t.Errorf("range through the redirect: %s, %d bytes", resp.Status, len(part))
			}

			h, _, err := oc.do(ctx, http.MethodHead, path, nil, nil, http.StatusOK)
			if err != nil || h.Get("Content-Length") != "1048579" {
				t.Errorf("HEAD: Content-Length %q (%v)", h.Get("Content-Length"), err)
			}
			resp, err = noFollow.Get(reg.url("/v2/e2e/elsewhere/blobs/" + dgst.String()))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
				t.Errorf("GET from a repository without the blob: %s, Location %q; want 404 and no URL", resp.Status, resp.Header.Get("Location"))
			}
		})
	}
}
