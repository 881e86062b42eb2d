package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// client talks to the registry through HAProxy with a bearer token for
// the registry API (so that no request pays for a password check) and
// basic authentication for the management API.
type client struct {
	base     string
	password string
	http     *http.Client
	token    string
}

func newClient(base, password string) *client {
	tr := &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, DisableCompression: true}
	return &client{base: base, password: password, http: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// login gets a token for repos as registry clients do: the challenge of
// /v2/, then the token endpoint it names, with the admin's password.
// Tokens last 5 minutes; each phase logs in again.
func (c *client) login(repos ...string) error {
	resp, err := c.http.Get(c.base + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	challenge, ok := strings.CutPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ")
	if resp.StatusCode != http.StatusUnauthorized || !ok {
		return fmt.Errorf("GET /v2/: %s, WWW-Authenticate %q; want a bearer challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	params := map[string]string{}
	for _, kv := range regexp.MustCompile(`(\w+)="([^"]*)"`).FindAllStringSubmatch(challenge, -1) {
		params[kv[1]] = kv[2]
	}
	q := url.Values{"service": {params["service"]}}
	for _, r := range repos {
		q.Add("scope", "repository:"+r+":push,pull")
	}
	req, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	req.SetBasicAuth("admin", c.password)
	resp, err = c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		return fmt.Errorf("token from %s: %s (%v)", params["realm"], resp.Status, err)
	}
	c.token = tok.Token
	return nil
}

// do sends a request and returns the response with its body read, or an
// error if the status is not want.
func (c *client) do(ctx context.Context, method, path string, body []byte, header map[string]string, want int) (*http.Response, []byte, error) {
	var r io.Reader = http.NoBody
	if body != nil {
		r = bytes.NewReader(body)
	}
	u := path
	if strings.HasPrefix(path, "/") {
		u = c.base + path
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if strings.Contains(u, "/acr/v1/") {
		req.SetBasicAuth("admin", c.password)
	} else {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp, nil, err
	}
	if resp.StatusCode != want {
		return resp, b, fmt.Errorf("%s %s: %s, want %d: %.200s", method, req.URL.Path, resp.Status, want, b)
	}
	return resp, b, nil
}

// pushBlob uploads b as POST then PUT with the content.
func (c *client) pushBlob(ctx context.Context, repo string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	resp, _, err := c.do(ctx, "POST", "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	loc := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	_, _, err = c.do(ctx, "PUT", loc+sep+"digest="+d.String(), b, map[string]string{"Content-Type": "application/octet-stream"}, http.StatusCreated)
	return d, err
}

const (
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	configType   = "application/vnd.oci.image.config.v1+json"
	layerType    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// pushImage uploads config and layers and tags a manifest of them.
func (c *client) pushImage(ctx context.Context, repo, tag string, config []byte, layers [][]byte) error {
	cd, err := c.pushBlob(ctx, repo, config)
	if err != nil {
		return err
	}
	m := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{2, manifestType, descriptor{configType, cd, int64(len(config))}, nil}
	for _, l := range layers {
		d, err := c.pushBlob(ctx, repo, l)
		if err != nil {
			return err
		}
		m.Layers = append(m.Layers, descriptor{layerType, d, int64(len(l))})
	}
	body, _ := json.Marshal(m)
	_, _, err = c.do(ctx, "PUT", "/v2/"+repo+"/manifests/"+tag, body, map[string]string{"Content-Type": manifestType}, http.StatusCreated)
	return err
}

// result is one load run: requests per second, MB/s of bodies, latency
// percentiles.
type result struct {
	rps, mbps float64
	p50, p99  time.Duration
}

// load GETs a path that pick chooses from `clients` concurrent clients for
// d; any error ends the run.
func (c *client) load(clients int, d time.Duration, pick func(*rand.Rand) string, accept string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu    sync.Mutex
		all   []time.Duration
		bytes int64
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var lat []time.Duration
			var n int64
			var err error
			for ctx.Err() == nil {
				t0 := time.Now()
				var got int64
				got, err = c.get(ctx, pick(rng), accept)
				if err != nil {
					if ctx.Err() != nil {
						err = nil
					}
					break
				}
				lat = append(lat, time.Since(t0))
				n += got
			}
			mu.Lock()
			all = append(all, lat...)
			bytes += n
			if first == nil {
				first = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if first != nil {
		return result{}, first
	}
	if len(all) == 0 {
		return result{}, fmt.Errorf("no request completed in %s", d)
	}
	secs := time.Since(start).Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return result{
		rps:  float64(len(all)) / secs,
		mbps: float64(bytes) / 1e6 / secs,
		p50:  all[len(all)/2],
		p99:  all[len(all)*99/100],
	}, nil
}

// get GETs path with the token and discards the body, returning its
// length.
func (c *client) get(ctx context.Context, path, accept string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return n, err
}
