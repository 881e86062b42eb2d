package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// Referrers lists the referrers of subject in repo with the given artifact
// type (all when empty), through the referrers API, falling back to the
// referrers tag schema (a tag sha256-<hex> holding an index) for registries
// without the API.
func (c *Client) Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	u := c.URL("/v2/" + repo + "/referrers/" + subject.String())
	if artifactType != "" {
		u += "?artifactType=" + url.QueryEscape(artifactType)
	}
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	resp, err := c.Do(ctx, req, "repository:"+repo+":pull")
	if err != nil {
		return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var idx ocispec.Index
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&idx); err != nil {
			return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject, err)
		}
		return filterArtifactType(idx.Manifests, artifactType), nil
	case http.StatusNotFound:
		return c.referrersByTag(ctx, repo, subject, artifactType)
	}
	return nil, fmt.Errorf("referrers of %s@%s: %w", repo, subject, ErrorFrom(resp))
}

// referrersByTag reads the referrers tag schema's index.
func (c *Client) referrersByTag(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	tag := strings.Replace(subject.String(), ":", "-", 1)
	b, _, err := c.GetManifest(ctx, repo, tag)
	if IsStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("referrers tag %s: %w", tag, err)
	}
	return filterArtifactType(idx.Manifests, artifactType), nil
}

func filterArtifactType(in []ocispec.Descriptor, artifactType string) []ocispec.Descriptor {
	if artifactType == "" {
		return in
	}
	var out []ocispec.Descriptor
	for _, d := range in {
		if d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out
}

// manifestAccept lists every manifest type, so a tag answers whatever it is.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// GetManifest fetches a manifest by tag or digest, returning its bytes and
// media type. A manifest fetched by digest is verified against it.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	req, err := http.NewRequest("GET", c.URL("/v2/"+repo+"/manifests/"+ref), nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(ctx, req, "repository:"+repo+":pull")
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("manifest %s:%s: %w", repo, ref, ErrorFrom(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20+1))
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	if d, err := digest.Parse(ref); err == nil && d.Algorithm().FromBytes(b) != d {
		return nil, "", fmt.Errorf("manifest %s@%s: content does not match its digest", repo, ref)
	}
	return b, resp.Header.Get("Content-Type"), nil
}
