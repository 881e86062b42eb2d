package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// ociClient speaks the push and pull side of the OCI distribution protocol
// over plain HTTP, one request per method, so that tests can stop between
// any two steps (the crash test records what was acknowledged).
type ociClient struct {
	base *url.URL
	hc   *http.Client
	// user and password, when set, go with every request as basic
	// credentials (sluiced accepts them on every route when auth is on).
	user, password string
}

func newOCIClient(t *testing.T, addr string) *ociClient {
	base, _ := url.Parse("http://" + addr)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64 // the crash test pushes from many goroutines
	t.Cleanup(tr.CloseIdleConnections)
	return &ociClient{base: base, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// as returns a client of the same registry that sends basic credentials.
func (c *ociClient) as(user, password string) *ociClient {
	auth := *c
	auth.user, auth.password = user, password
	return &auth
}

// statusError is an answer other than the one the protocol step expects.
type statusError struct {
	Method, URL string
	Want, Got   int
	Body        string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d, want %d: %s", e.Method, e.URL, e.Got, e.Want, strings.TrimSpace(e.Body))
}

// do sends a request to a path or Location (relative or absolute) and
// checks the status; the caller gets the header of a matching answer and
// its body.
func (c *ociClient) do(ctx context.Context, method, ref string, header http.Header, body []byte, want int) (http.Header, []byte, error) {
	u, err := c.base.Parse(ref)
	if err != nil {
		return nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading answer: %w", method, u, err)
	}
	if resp.StatusCode != want {
		return nil, nil, &statusError{Method: method, URL: u.String(), Want: want, Got: resp.StatusCode, Body: string(b)}
	}
	return resp.Header, b, nil
}

// startUpload opens an upload session in repo and returns its Location.
func (c *ociClient) startUpload(ctx context.Context, repo string) (string, error) {
	h, _, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	return locationOf(h)
}

// patchChunk sends the bytes of an upload from offset; the registry
// acknowledges with 202 and the upload's next Location.
func (c *ociClient) patchChunk(ctx context.Context, loc string, offset int64, chunk []byte) (string, error) {
	hdr := http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {fmt.Sprintf("%d-%d", offset, offset+int64(len(chunk))-1)},
	}
	h, _, err := c.do(ctx, http.MethodPatch, loc, hdr, chunk, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	return locationOf(h)
}

// finishUpload closes an upload as the blob dgst, with last as the final
// bytes (nil for none); the registry acknowledges with 201.
func (c *ociClient) finishUpload(ctx context.Context, loc string, dgst digest.Digest, last []byte) error {
	u, err := c.base.Parse(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", dgst.String())
	u.RawQuery = q.Encode()
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	_, _, err = c.do(ctx, http.MethodPut, u.String(), hdr, last, http.StatusCreated)
	return err
}

// uploadOffset asks where an upload stands: how many bytes it holds, from
// the Range header of GET on its Location.
func (c *ociClient) uploadOffset(ctx context.Context, loc string) (int64, error) {
	h, _, err := c.do(ctx, http.MethodGet, loc, nil, nil, http.StatusNoContent)
	if err != nil {
		return 0, err
	}
	r := h.Get("Range")
	start, end, ok := strings.Cut(r, "-")
	if !ok || start != "0" {
		return 0, fmt.Errorf("upload status of %s: Range %q is not 0-<end>", loc, r)
	}
	n, err := strconv.ParseInt(end, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("upload status of %s: Range %q: %w", loc, r, err)
	}
	// The registry answers "0-0" for an empty upload as well as for one
	// byte; tests never stop after exactly one byte.
	if n == 0 {
		return 0, nil
	}
	return n + 1, nil
}

// pushBlob uploads b to repo with POST + PUT (chunks <= 1) or with POST,
// chunks-1 PATCHes and a PUT that carries the last chunk.
func (c *ociClient) pushBlob(ctx context.Context, repo string, b []byte, chunks int) (digest.Digest, error) {
	dgst := digest.FromBytes(b)
	loc, err := c.startUpload(ctx, repo)
	if err != nil {
		return "", err
	}
	parts := splitChunks(b, max(chunks, 1))
	var off int64
	for _, p := range parts[:len(parts)-1] {
		if loc, err = c.patchChunk(ctx, loc, off, p); err != nil {
			return "", err
		}
		off += int64(len(p))
	}
	return dgst, c.finishUpload(ctx, loc, dgst, parts[len(parts)-1])
}

// splitChunks cuts b into n pieces of nearly equal length.
func splitChunks(b []byte, n int) [][]byte {
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, b[len(b)*i/n:len(b)*(i+1)/n])
	}
	return out
}

// putManifest stores a manifest under ref (a tag or digest).
func (c *ociClient) putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	_, _, err := c.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, body, http.StatusCreated)
	return err
}

// pushImage uploads an image's blobs monolithically and its manifest by tag.
func (c *ociClient) pushImage(t *testing.T, repo, tag string, img *testImage) {
	t.Helper()
	ctx := context.Background()
	for d, b := range img.Blobs {
		if _, err := c.pushBlob(ctx, repo, b, 1); err != nil {
			t.Fatalf("push blob %s: %v", d, err)
		}
	}
	if err := c.putManifest(ctx, repo, tag, "application/vnd.oci.image.manifest.v1+json", img.Manifest); err != nil {
		t.Fatalf("push manifest %s:%s: %v", repo, tag, err)
	}
}

// pushIndex uploads every image of an index (manifests by digest), then
// the index by tag.
func (c *ociClient) pushIndex(t *testing.T, repo, tag string, ix *testIndex) {
	t.Helper()
	for _, img := range ix.Images {
		c.pushImage(t, repo, img.ManifestDigest.String(), img)
	}
	if err := c.putManifest(context.Background(), repo, tag, "application/vnd.oci.image.index.v1+json", ix.Index); err != nil {
		t.Fatalf("push index %s:%s: %v", repo, tag, err)
	}
}

// getManifest fetches a manifest by tag or digest, accepting mediaTypes.
func (c *ociClient) getManifest(ctx context.Context, repo, ref string, mediaTypes ...string) (http.Header, []byte, error) {
	return c.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": mediaTypes}, nil, http.StatusOK)
}

// getBlob fetches a blob and checks that it hashes to its digest.
func (c *ociClient) getBlob(ctx context.Context, repo string, dgst digest.Digest) ([]byte, error) {
	_, b, err := c.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), nil, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	if got := dgst.Algorithm().FromBytes(b); got != dgst {
		return nil, fmt.Errorf("GET blob %s in %s: the %d bytes served hash to %s", dgst, repo, len(b), got)
	}
	return b, nil
}

func locationOf(h http.Header) (string, error) {
	loc := h.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("answer has no Location header")
	}
	return loc, nil
}
