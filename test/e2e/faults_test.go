package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sluicehq/sluice/internal/testbackend"
)

// TestPostgresRestartDuringPushes restarts sluiced's PostgreSQL server
// while 20 clients push images, each retrying a step the registry answers
// 503 (the only failure allowed, with a Retry-After) or does not answer.
// Every push the registry acknowledged is there afterwards, and sluiced
// serves again without being restarted itself.
func TestPostgresRestartDuringPushes(t *testing.T) {
	pg := testbackend.OwnPostgres(t)
	reg := startSluiced(t, t.TempDir(), "SLUICE_DATABASE_DRIVER=postgres", "SLUICE_DATABASE_DSN="+pg.DSN)
	oc := newOCIClient(t, reg.addr)
	const clients, perClient = 20, 6
	rng := newRand(t)
	images := make([][]*testImage, clients)
	for i := range images {
		for range perClient {
			images[i] = append(images[i], newTestImage(t, rng, 1<<10, 32<<10))
		}
	}

	var retried atomic.Int64
	var mu sync.Mutex
	var acked []string // "tag digest" of every acknowledged manifest PUT
	var failures []error
	// retry runs a step until it succeeds, allowing only 503 answers and
	// lost connections meanwhile, for at most a minute.
	retry := func(step string, do func() error) error {
		deadline := time.Now().Add(time.Minute)
		for {
			err := do()
			if err == nil {
				return nil
			}
			var se *statusError
			if errors.As(err, &se) && se.Got != http.StatusServiceUnavailable {
				return fmt.Errorf("%s: %w", step, err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: still failing after a minute: %w", step, err)
			}
			retried.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
	}
	ctx := context.Background()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for n, img := range images[c] {
				err := func() error {
					for d, b := range img.Blobs {
						if err := retry("push blob "+d.String(), func() error { _, err := oc.pushBlob(ctx, "e2e/restart", b, 2); return err }); err != nil {
							return err
						}
					}
					tag := fmt.Sprintf("c%d-%d", c, n)
					err := retry("push manifest "+tag, func() error {
						return oc.putManifest(ctx, "e2e/restart", tag, "application/vnd.oci.image.manifest.v1+json", img.Manifest)
					})
					if err == nil {
						mu.Lock()
						acked = append(acked, tag+" "+img.ManifestDigest.String())
						mu.Unlock()
					}
					return err
				}()
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	close(start)
	time.Sleep(300 * time.Millisecond)
	pg.Restart(t, 2*time.Second)
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if retried.Load() == 0 {
		t.Error("no request failed while PostgreSQL was down: the restart did not happen during the pushes")
	}
	if len(acked) != clients*perClient && len(failures) == 0 {
		t.Errorf("%d pushes acknowledged, want %d", len(acked), clients*perClient)
	}
	for _, a := range acked {
		var tag, dgst string
		fmt.Sscan(a, &tag, &dgst)
		h, body, err := oc.getManifest(ctx, "e2e/restart", tag, "application/vnd.oci.image.manifest.v1+json")
		if err != nil || h.Get("Docker-Content-Digest") != dgst {
			t.Errorf("acknowledged push %s (%s) lost: %v", tag, dgst, err)
			continue
		}
		_ = body
	}
	// Served again, by the same process.
	img := images[0][0]
	for d := range img.Blobs {
		got, err := oc.getBlob(ctx, "e2e/restart", d)
		if err != nil || !bytes.Equal(got, img.Blobs[d]) {
			t.Errorf("blob %s after the restart: %v", d, err)
		}
	}
	t.Logf("%d requests retried while PostgreSQL restarted", retried.Load())
	if t.Failed() {
		for _, l := range strings.Split(reg.logText(), "\n") {
			if strings.Contains(l, `"ERROR"`) {
				t.Log(l)
			}
		}
	}
}

// TestObjectStoreUnreachable cuts sluiced off its S3 server for ten
// seconds: requests that need the store are answered 503 with a
// Retry-After, a push refused meanwhile leaves no blob behind, and once
// the store answers again sluiced serves and takes pushes without a
// restart.
func TestObjectStoreUnreachable(t *testing.T) {
	bucket, err := url.Parse(testbackend.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	q := bucket.Query()
	endpoint, err := url.Parse(q.Get("endpoint"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, endpoint.Host)
	endpoint.Host = proxy.addr
	q.Set("endpoint", endpoint.String())
	bucket.RawQuery = q.Encode()
	reg := startSluiced(t, t.TempDir(), sharedBackend(testbackend.Postgres(t), bucket.String())...)
	oc := newOCIClient(t, reg.addr)
	ctx := context.Background()
	rng := newRand(t)
	before := newTestImage(t, rng, 1<<10, 64<<10)
	oc.pushImage(t, "e2e/outage", "before", before)

	proxy.cut(true)
	cutAt := time.Now()
	during := randomBytes(rng, 256<<10)
	want503 := func(step string, err error) {
		t.Helper()
		var se *statusError
		if !errors.As(err, &se) || se.Got != http.StatusServiceUnavailable || !strings.Contains(se.Body, "UNAVAILABLE") {
			t.Errorf("%s while the store is unreachable: %v, want 503 UNAVAILABLE", step, err)
		}
	}
	_, err = oc.pushBlob(ctx, "e2e/outage", during, 2)
	want503("push", err)
	for d := range before.Blobs {
		_, err := oc.getBlob(ctx, "e2e/outage", d)
		want503("pull", err)
		break
	}
	// The answer says when to come back.
	h, err := rawStatus(ctx, oc, "/v2/e2e/outage/blobs/uploads/?digest="+digest.FromBytes(during).String(), during)
	if err != nil || h.status != http.StatusServiceUnavailable || h.header.Get("Retry-After") == "" {
		t.Errorf("monolithic push while the store is unreachable: %d, Retry-After %q (%v)", h.status, h.header.Get("Retry-After"), err)
	}
	if code := getStatus(t, reg.url("/readyz")); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the store is unreachable: %d, want 503", code)
	}
	time.Sleep(time.Until(cutAt.Add(10 * time.Second)))
	proxy.cut(false)
	if code := getStatus(t, reg.url("/readyz")); code != http.StatusOK {
		t.Errorf("/readyz once the store answers again: %d, want 200", code)
	}

	if _, _, err := oc.do(ctx, http.MethodHead, "/v2/e2e/outage/blobs/"+digest.FromBytes(during).String(), nil, nil, http.StatusNotFound); err != nil {
		t.Errorf("the push refused during the outage left a blob: %v", err)
	}
	for d, b := range before.Blobs {
		got, err := oc.getBlob(ctx, "e2e/outage", d)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("blob %s after the outage: %v", d, err)
		}
	}
	if _, err := oc.pushBlob(ctx, "e2e/outage", during, 2); err != nil {
		t.Fatalf("push after the outage: %v", err)
	}
}

type statusAndHeader struct {
	status int
	header http.Header
}

// rawStatus POSTs body to path and returns the answer's status and header,
// whatever the status.
func rawStatus(ctx context.Context, oc *ociClient, path string, body []byte) (statusAndHeader, error) {
	u, err := oc.base.Parse(path)
	if err != nil {
		return statusAndHeader{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return statusAndHeader{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := oc.hc.Do(req)
	if err != nil {
		return statusAndHeader{}, err
	}
	resp.Body.Close()
	return statusAndHeader{resp.StatusCode, resp.Header}, nil
}

// cutProxy forwards TCP connections to a server until it is cut: then it
// drops the connections it carries and every new one, as a network
// partition or a server that went away does.
type cutProxy struct {
	addr string
	mu   sync.Mutex
	down bool
	open map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String(), open: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.cut(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn, target string) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.open[c] = true
	p.mu.Unlock()
	s, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.open[s] = true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	_, _ = io.Copy(c, s)
	c.Close()
}

// cut drops every connection and refuses new ones (down) or lets them
// through again.
func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.open {
			c.Close()
		}
		p.open = map[net.Conn]bool{}
	}
}

// getStatus GETs url and returns the answer's status.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
