package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// maxAPIAnswer bounds the JSON answers API reads.
const maxAPIAnswer = 32 << 20

// API calls a JSON endpoint of the registry (Sluice's /acr/v1/ management
// API, /mount/v1/): it sends body as JSON when not nil and returns the
// answer's bytes and headers. When the client has username/password
// credentials for the host they go out as Basic authentication on the
// first request (Sluice accepts Basic on every route, which saves a token
// round trip per call); otherwise the token protocol runs as for any
// request. A status of 300 or more is returned as an *Error carrying the
// registry's error code.
func (c *Client) API(ctx context.Context, method, path string, query url.Values, body any) ([]byte, http.Header, error) {
	var rd io.Reader
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(payload)
	}
	u := c.URL(path)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if cred := c.credential(ctx); cred.Username != "" && cred.Password != "" {
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, resp.Header, ErrorFrom(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIAnswer))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return b, resp.Header, nil
}

// credential asks the client's credential function for the host's
// credentials, empty when there are none.
func (c *Client) credential(ctx context.Context) auth.Credential {
	if c.auth.Credential == nil {
		return auth.EmptyCredential
	}
	cred, err := c.auth.Credential(ctx, c.Host)
	if err != nil {
		return auth.EmptyCredential
	}
	return cred
}

// NextLink returns the path and query of a Link header's rel="next"
// target, or "" when there is none.
func NextLink(h http.Header) string {
	for _, l := range h.Values("Link") {
		target, params, ok := strings.Cut(l, ";")
		if !ok || !strings.Contains(params, `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		if u, err := url.Parse(target); err == nil {
			return u.RequestURI()
		}
	}
	return ""
}

// Resolve returns the descriptor (media type, digest, size) of the
// manifest a tag or digest names, from a HEAD request.
func (c *Client) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	req, err := http.NewRequest("HEAD", c.URL("/v2/"+repo+"/manifests/"+ref), nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(ctx, req, "repository:"+repo+":pull")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := ErrorFrom(resp)
		if ee, ok := e.(*Error); ok && ee.Status == http.StatusNotFound {
			ee.Code, ee.Message = "MANIFEST_UNKNOWN", fmt.Sprintf("manifest %s:%s not found", repo, ref)
		}
		return ocispec.Descriptor{}, fmt.Errorf("manifest %s:%s: %w", repo, ref, e)
	}
	d := ocispec.Descriptor{MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}
	if d.Digest, err = digest.Parse(resp.Header.Get("Docker-Content-Digest")); err != nil {
		// A registry that does not say the digest: read the manifest.
		b, mt, err := c.GetManifest(ctx, repo, ref)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}, nil
	}
	return d, nil
}
