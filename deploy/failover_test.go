package deploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// pushThroughKill runs 20 clients, each pushing images through the load
// balancer and retrying a request that fails (a connection cut, a 502 or
// 503), as skopeo and containerd do, while a replica is killed with
// SIGKILL. Every push must complete, and every acknowledged manifest must
// be there afterwards with blobs whose bytes match their digests.
func (c *cluster) pushThroughKill(reg *registry, victim process) {
	t := c.t
	t.Helper()
	const clients, perClient = 20, 5
	var retried atomic.Int64
	var mu sync.Mutex
	acked := map[string][]byte{} // tag → manifest
	blobs := map[string][]byte{} // digest → content
	var failures []error
	send := func(method, target string, header http.Header, body []byte, want int) (*http.Response, error) {
		deadline := time.Now().Add(time.Minute)
		for {
			u, err := url.Parse(target)
			if err != nil {
				return nil, err
			}
			u = (&url.URL{Scheme: "http", Host: strings.TrimPrefix(reg.base, "http://")}).ResolveReference(u)
			req, _ := http.NewRequest(method, u.String(), bytes.NewReader(body))
			for k, v := range header {
				req.Header[k] = v
			}
			req.Header.Set("Authorization", "Bearer "+reg.token)
			resp, err := reg.client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == want {
					return resp, nil
				}
				if resp.StatusCode < 500 {
					return nil, fmt.Errorf("%s %s: %s, want %d", method, u.Path, resp.Status, want)
				}
				err = fmt.Errorf("%s %s: %s", method, u.Path, resp.Status)
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("still failing after a minute: %w", err)
			}
			retried.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
	}
	// pushBlob pushes as containerd does: HEAD the blob (there already:
	// done), else post a session and put the bytes, each step retried,
	// and from the HEAD again if the PUT still fails. The session lives in
	// the shared stores, so the PUT may reach any replica; one sent again
	// after a replica completed the upload and was killed before answering
	// is answered 201 too.
	pushBlob := func(repo string, b []byte) (string, error) {
		dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		var last error
		for range 5 {
			if _, err := send(http.MethodHead, "/v2/"+repo+"/blobs/"+dgst, nil, nil, http.StatusOK); err == nil {
				return dgst, nil
			}
			resp, err := send(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
			if err != nil {
				return "", err
			}
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				return "", err
			}
			q := loc.Query()
			q.Set("digest", dgst)
			loc.RawQuery = q.Encode()
			if _, last = send(http.MethodPut, loc.String(), http.Header{"Content-Type": {"application/octet-stream"}}, b, http.StatusCreated); last == nil {
				return dgst, nil
			}
			retried.Add(1)
		}
		return "", last
	}
	const repo = "cluster/failover"
	var wg sync.WaitGroup
	start := make(chan struct{})
	for n := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range perClient {
				layer := bytes.Repeat([]byte(fmt.Sprintf("layer of client %d image %d\n", n, i)), 20000)
				config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"comment":"%d-%d"}`, n, i))
				ld, err := pushBlob(repo, layer)
				if err == nil {
					var cd string
					cd, err = pushBlob(repo, config)
					if err == nil {
						manifest, _ := json.Marshal(map[string]any{
							"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
							"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
							"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}},
						})
						tag := fmt.Sprintf("c%d-%d", n, i)
						_, err = send(http.MethodPut, "/v2/"+repo+"/manifests/"+tag, http.Header{"Content-Type": {"application/vnd.oci.image.manifest.v1+json"}}, manifest, http.StatusCreated)
						if err == nil {
							mu.Lock()
							acked[tag] = manifest
							blobs[ld], blobs[cd] = layer, config
							mu.Unlock()
						}
					}
				}
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
	if err := syscall.Kill(victim.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the replica: %v", err)
	}
	killed := time.Now()
	wg.Wait()
	t.Logf("pushes went on %s after a replica was killed; %d requests retried", time.Since(killed).Round(time.Millisecond), retried.Load())
	for _, err := range failures {
		t.Error(err)
	}
	if len(acked) != clients*perClient {
		t.Errorf("%d pushes acknowledged, want %d", len(acked), clients*perClient)
	}
	accept := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	for tag, manifest := range acked {
		resp := reg.do(http.MethodGet, "/v2/"+repo+"/manifests/"+tag, accept, nil, http.StatusOK)
		if got := resp.Header.Get("Docker-Content-Digest"); got != fmt.Sprintf("sha256:%x", sha256.Sum256(manifest)) {
			t.Errorf("%s after the kill: digest %s", tag, got)
		}
	}
	for dgst := range blobs {
		got := reg.get("/v2/" + repo + "/blobs/" + dgst)
		if fmt.Sprintf("sha256:%x", sha256.Sum256(got)) != dgst {
			t.Errorf("blob %s after the kill: %d bytes that do not match", dgst, len(got))
		}
	}
}

// get GETs target with the token and returns the body of a 200.
func (r *registry) get(target string) []byte {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.base+target, nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("GET %s: %s", target, resp.Status)
	}
	return b
}
