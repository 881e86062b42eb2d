package distribution_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// step is one request of a scripted exchange; path "LOC" means the
// Location the previous step answered.
type step struct {
	method    string
	path      string
	header    map[string]string
	body      string
	wantCode  int
	wantRange string
	wantError string
}

func runSteps(t *testing.T, steps []step) {
	t.Helper()
	ts := newRegistry(t)
	loc := ""
	for i, s := range steps {
		path := s.path
		if rest, ok := strings.CutPrefix(path, "LOC"); ok {
			path = loc + rest
		}
		var body []byte
		if s.body != "" {
			body = []byte(s.body)
		}
		resp := do(t, ts, request{method: s.method, path: path, header: s.header, body: body})
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != s.wantCode {
			t.Fatalf("step %d %s %s: status %d, want %d; %s", i, s.method, path, resp.StatusCode, s.wantCode, b)
		}
		if s.wantRange != "" && resp.Header.Get("Range") != s.wantRange {
			t.Fatalf("step %d: Range %q, want %q", i, resp.Header.Get("Range"), s.wantRange)
		}
		if s.wantError != "" && !strings.Contains(string(b), `"code":"`+s.wantError+`"`) {
			t.Fatalf("step %d: body %s lacks error %s", i, b, s.wantError)
		}
		if l := resp.Header.Get("Location"); l != "" && resp.StatusCode != http.StatusCreated {
			loc = l
		}
	}
}

func TestUploadFlows(t *testing.T) {
	content := "hello, chunked world"
	d := digest.FromString(content).String()
	d512 := digest.SHA512.FromString(content).String()
	blob := "/v2/r/blobs/" + d
	tests := []struct {
		name  string
		steps []step
	}{
		{"chunked with ranges", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202, wantRange: "0-0"},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "0-4"}, body: content[:5], wantCode: 202, wantRange: "0-4"},
			{method: "GET", path: "LOC", wantCode: 204, wantRange: "0-4"},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "5-9"}, body: content[5:10], wantCode: 202, wantRange: "0-9"},
			{method: "PUT", path: "LOC?digest=" + d, header: map[string]string{"Content-Range": fmt.Sprintf("10-%d", len(content)-1)}, body: content[10:], wantCode: 201},
			{method: "GET", path: blob, wantCode: 200},
		}},
		{"streamed patch then empty put", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", body: content, wantCode: 202, wantRange: fmt.Sprintf("0-%d", len(content)-1)},
			{method: "PUT", path: "LOC?digest=" + d, wantCode: 201},
			{method: "HEAD", path: blob, wantCode: 200},
		}},
		{"post then put with body", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + d, body: content, wantCode: 201},
			{method: "HEAD", path: blob, wantCode: 200},
		}},
		{"out of order chunk is 416 and recoverable", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "0-4"}, body: content[:5], wantCode: 202},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "10-14"}, body: content[10:15], wantCode: 416, wantRange: "0-4"},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "0-4"}, body: content[:5], wantCode: 416, wantRange: "0-4"},
			{method: "PUT", path: "LOC?digest=" + d, header: map[string]string{"Content-Range": "12-13"}, body: content[12:14], wantCode: 416},
			{method: "GET", path: "LOC", wantCode: 204, wantRange: "0-4"},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": fmt.Sprintf("5-%d", len(content)-1)}, body: content[5:], wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + d, wantCode: 201},
		}},
		{"first chunk not at zero", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "3-5"}, body: "abc", wantCode: 416},
		}},
		{"malformed content range", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "five-six"}, body: "abc", wantCode: 400, wantError: "BLOB_UPLOAD_INVALID"},
		}},
		{"content range disagrees with length", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", header: map[string]string{"Content-Range": "0-9"}, body: "abc", wantCode: 400, wantError: "SIZE_INVALID"},
		}},
		{"digest mismatch ends the upload", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", body: content, wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + digest.FromString("other").String(), wantCode: 400, wantError: "DIGEST_INVALID"},
			{method: "GET", path: "LOC", wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},
			{method: "HEAD", path: blob, wantCode: 404},
		}},
		{"put without digest", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PUT", path: "LOC", body: content, wantCode: 400, wantError: "DIGEST_INVALID"},
		}},
		{"cancel", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", body: content, wantCode: 202},
			{method: "DELETE", path: "LOC", wantCode: 204},
			{method: "GET", path: "LOC", wantCode: 404},
			{method: "PUT", path: "LOC?digest=" + d, wantCode: 404, wantError: "BLOB_UPLOAD_UNKNOWN"},
		}},
		{"sha512 session", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/?digest-algorithm=sha512", wantCode: 202},
			{method: "PATCH", path: "LOC", body: content[:7], wantCode: 202},
			{method: "PATCH", path: "LOC", body: content[7:], wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + d512, wantCode: 201},
			{method: "GET", path: "/v2/r/blobs/" + d512, wantCode: 200},
		}},
		{"finish with another algorithm than the session's", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PATCH", path: "LOC", body: content, wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + d512, wantCode: 201},
			{method: "HEAD", path: "/v2/r/blobs/" + d512, wantCode: 200},
		}},
		{"upload of another repository is unknown", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "GET", path: "/v2/s/blobs/uploads/ANY", wantCode: 404},
		}},
		{"empty blob", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/", wantCode: 202},
			{method: "PUT", path: "LOC?digest=" + digest.FromString("").String(), wantCode: 201},
			{method: "GET", path: "/v2/r/blobs/" + digest.FromString("").String(), wantCode: 200},
		}},
		{"blob delete", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/?digest=" + d, body: content, wantCode: 201},
			{method: "DELETE", path: blob, wantCode: 202},
			{method: "GET", path: blob, wantCode: 404, wantError: "BLOB_UNKNOWN"},
			{method: "DELETE", path: blob, wantCode: 404, wantError: "BLOB_UNKNOWN"},
		}},
		{"pushing existing content again verifies the bytes", []step{
			{method: "POST", path: "/v2/r/blobs/uploads/?digest=" + d, body: content, wantCode: 201},
			{method: "POST", path: "/v2/other/blobs/uploads/?digest=" + d, body: "not the content", wantCode: 400, wantError: "DIGEST_INVALID"},
			{method: "HEAD", path: "/v2/other/blobs/" + d, wantCode: 404},
			{method: "POST", path: "/v2/other/blobs/uploads/?digest=" + d, body: content, wantCode: 201},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.steps) })
	}
}
