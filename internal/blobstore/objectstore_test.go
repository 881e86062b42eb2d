package blobstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/opencontainers/go-digest"
	"gocloud.dev/blob/memblob"
	"gocloud.dev/gcerrors"

	"github.com/sluicehq/sluice/internal/testbackend"
	"github.com/sluicehq/sluice/internal/testenv"
)

// objectStores are the object storage backends, each giving the URL of a
// container or bucket that does not exist yet.
var objectStores = []struct {
	name string
	url  func(t testing.TB) string
}{
	{"azurite", testbackend.Azurite},
	{"s3", testbackend.S3},
}

// A deployment names a container or bucket that is not there yet: the
// store makes it and says so once.
func TestOpenURLCreatesTheContainer(t *testing.T) {
	for _, backend := range objectStores {
		t.Run(backend.name, func(t *testing.T) {
			raw := backend.url(t)
			logs := captureLog(t)
			ctx := context.Background()
			s, err := OpenURL(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.UploadIDs(ctx); err != nil {
				t.Fatalf("listing the new container: %v", err)
			}
			d := writeBlob(t, s, []byte("kept"))
			s.Close()
			if n := strings.Count(logs.String(), "created blob container"); n != 1 || !strings.Contains(logs.String(), raw) {
				t.Fatalf("log after the first open, want one line naming %s:\n%s", raw, logs)
			}

			s, err = OpenURL(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if ok, err := s.Exists(ctx, d); !ok || err != nil {
				t.Fatalf("the blob after opening again: %v, %v", ok, err)
			}
			if n := strings.Count(logs.String(), "created blob container"); n != 1 {
				t.Fatalf("opening an existing container logged a creation:\n%s", logs)
			}
		})
	}
}

// A Range answer seeks to the range and reads its length: the store asks
// the object store for the bytes from there, once, and never for the
// object from its start.
func TestRangeReadAsksOnlyFromTheOffset(t *testing.T) {
	for _, backend := range objectStores {
		t.Run(backend.name, func(t *testing.T) {
			raw, requests := throughProxy(t, backend.url(t))
			ctx := context.Background()
			s, err := OpenURL(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			content := bytes.Repeat([]byte("0123456789"), 100_000)
			d := writeBlob(t, s, content)

			requests.reset()
			c, err := s.Open(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if end, _ := c.Seek(0, io.SeekEnd); end != int64(len(content)) {
				t.Fatalf("size %d, want %d", end, len(content))
			}
			_, _ = c.Seek(0, io.SeekStart)
			_, _ = c.Seek(654_321, io.SeekStart)
			got := make([]byte, 5)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "12345" {
				t.Fatalf("read %q, %v", got, err)
			}
			want := []string{"HEAD", "GET bytes=654321-"}
			if got := requests.list(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("requests for the blob %q, want %q", got, want)
			}
		})
	}
}

// A store that cannot be reached says so with ErrUnavailable, which the
// registry answers with 503 and Retry-After.
func TestUnreachableStoreIsUnavailable(t *testing.T) {
	t.Parallel() // the SDKs retry for seconds before they give up
	for _, backend := range objectStores {
		t.Run(backend.name, func(t *testing.T) {
			t.Parallel()
			// The backend's credentials, for a port that refuses.
			raw := backend.url(t)
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			raw = regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAllString(raw, closedAddr(t))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			s, err := OpenURL(ctx, raw)
			if err == nil {
				s.Close()
				t.Fatalf("opened %s", u.Host)
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("OpenURL of a closed port: %v; want ErrUnavailable with the cause", err)
			}
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}

// A write that fails after S3 took parts of it (an Abort, a digest
// mismatch, a source that breaks) leaves no multipart upload behind, whose
// parts would take space unseen.
func TestFailedWritesLeaveNoMultipartUpload(t *testing.T) {
	raw := testbackend.S3(t)
	ctx := context.Background()
	s, err := OpenURL(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var c *s3.Client
	if !s.bucket.As(&c) {
		t.Fatal("no S3 client")
	}
	uploads := func() int {
		t.Helper()
		out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.s3Bucket})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Uploads)
	}
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // two parts
	d := digest.FromBytes(content)

	w, _ := s.NewWriter(ctx, d)
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	// The first part is read; S3 hears of the upload a moment later.
	for deadline := time.Now().Add(10 * time.Second); uploads() != 1; {
		if time.Now().After(deadline) {
			t.Fatal("no multipart upload while writing: the test writes too little")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.Abort()
	if n := uploads(); n != 0 {
		t.Fatalf("%d multipart uploads after Abort", n)
	}

	w, _ = s.NewWriter(ctx, d)
	_, _ = w.Write(content[1:])
	if err := w.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit: %v", err)
	}
	broken := io.MultiReader(bytes.NewReader(content), iotest.ErrReader(errors.New("connection reset")))
	if _, err := s.WritePart(ctx, PartKey("u", 0, "n"), broken); err == nil {
		t.Fatal("WritePart of a failing reader succeeded")
	}
	if n := uploads(); n != 0 {
		t.Fatalf("%d multipart uploads after a mismatch and a failed part", n)
	}
}

func TestStoreErrMarksWhatCallersActOn(t *testing.T) {
	status := func(code int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: errors.New("answer")}
	}
	_, missing := memblob.OpenBucket(nil).NewReader(context.Background(), "blobs/x", nil)
	refused := &url.Error{Op: "Get", URL: "http://127.0.0.1:1/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name                  string
		err                   error
		notFound, unavailable bool
	}{
		{name: "not found", err: missing, notFound: true},
		{name: "connection refused", err: fmt.Errorf("operation: %w", refused), unavailable: true},
		{name: "timeout", err: context.DeadlineExceeded, unavailable: true},
		{name: "S3 slow down", err: status(503), unavailable: true},
		{name: "S3 internal error", err: status(500), unavailable: true},
		{name: "Azure server busy", err: &azcore.ResponseError{StatusCode: 503, ErrorCode: "ServerBusy"}, unavailable: true},
		{name: "too many requests", err: &azcore.ResponseError{StatusCode: 429}, unavailable: true},
		{name: "access denied", err: status(403)},
		{name: "the caller went away", err: &url.Error{Op: "Get", URL: "http://store/", Err: context.Canceled}},
		{name: "other", err: errors.New("bad digest header")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := storeErr("blobs/x", tc.err)
			if got := errors.Is(err, ErrNotFound); got != tc.notFound {
				t.Errorf("ErrNotFound %v, want %v: %v", got, tc.notFound, err)
			}
			if got := errors.Is(err, ErrUnavailable); got != tc.unavailable {
				t.Errorf("ErrUnavailable %v, want %v: %v", got, tc.unavailable, err)
			}
			if !strings.HasPrefix(err.Error(), "blobs/x: ") {
				t.Errorf("error %q does not name what failed", err)
			}
			if tc.unavailable && !errors.Is(err, tc.err) {
				t.Errorf("error %q lost its cause", err)
			}
		})
	}
	if gcerrors.Code(missing) != gcerrors.NotFound {
		t.Fatalf("a missing object's error: %v", missing)
	}
}

func writeBlob(t *testing.T, s *Store, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	w, err := s.NewWriter(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return d
}

// captureLog sends the default logger's lines to a buffer for the test.
func captureLog(t *testing.T) *testenv.SyncBuffer {
	var b testenv.SyncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&b, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return &b
}

// throughProxy puts a proxy before the object store of raw and returns
// raw pointed at it, with the requests it sees for blobs' objects.
func throughProxy(t *testing.T, raw string) (string, *requestLog) {
	addr := regexp.MustCompile(`127\.0\.0\.1:\d+`).FindString(raw)
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	log := &requestLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			log.add(r)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(raw, addr, srv.Listener.Addr().String(), 1), log
}

type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *requestLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := r.Method
	// Azure names the range in its own header.
	if rng := cmp.Or(r.Header.Get("Range"), r.Header.Get("X-Ms-Range")); rng != "" {
		line += " " + rng
	}
	l.reqs = append(l.reqs, line)
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = nil
}

func (l *requestLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A local file's error is no outage, though its syscall.Errno has a
// Timeout method as network errors do; a closed connection is one.
func TestUnavailableIsTheNetworks(t *testing.T) {
	local := &fs.PathError{Op: "stat", Path: "/srv/blobs/blobs/sha256", Err: syscall.ENOTDIR}
	if unavailable(local) {
		t.Errorf("%v counted as the store being unavailable", local)
	}
	closed := &url.Error{Op: "Put", URL: "http://127.0.0.1:1/b/k", Err: io.EOF}
	if !unavailable(closed) {
		t.Errorf("%v not counted as the store being unavailable", closed)
	}
}
