package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// ReferrersSchema says how a registry indexes referrers.
type ReferrersSchema string

const (
	// ReferrersAPI: the registry serves GET /v2/<name>/referrers/<digest>.
	ReferrersAPI ReferrersSchema = "api"
	// ReferrersTag: the registry has no referrers API; clients keep an
	// index of the referrers under the tag sha256-<hex> of the subject.
	ReferrersTag ReferrersSchema = "tag"
)

// ReferrersSupport probes whether repo has the referrers API: a registry
// that has it answers 200 with an image index for any digest, even one
// with no referrers.
func (c *Client) ReferrersSupport(ctx context.Context, repo string, subject digest.Digest) (ReferrersSchema, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultTimeout)
	defer cancel()
	req, err := http.NewRequest("GET", c.URL("/v2/"+repo+"/referrers/"+subject.String()), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	resp, err := c.Do(ctx, req, "repository:"+repo+":pull")
	if err != nil {
		return "", fmt.Errorf("referrers of %s@%s: %w", repo, subject, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var idx ocispec.Index
		if json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&idx) == nil && idx.MediaType == ocispec.MediaTypeImageIndex {
			return ReferrersAPI, nil
		}
		return ReferrersTag, nil
	case http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed:
		return ReferrersTag, nil
	}
	return "", fmt.Errorf("referrers of %s@%s: %w", repo, subject, ErrorFrom(resp))
}

// PushBlob uploads a blob unless the repository already has it. content
// must yield exactly desc.Size bytes hashing to desc.Digest.
func (c *Client) PushBlob(ctx context.Context, repo string, desc ocispec.Descriptor, content io.Reader) error {
	r, err := c.Repository(repo)
	if err != nil {
		return err
	}
	if ok, err := r.Blobs().Exists(ctx, desc); err == nil && ok {
		return nil
	}
	if err := r.Blobs().Push(ctx, desc, content); err != nil {
		return fmt.Errorf("push blob %s to %s: %w", desc.Digest, repo, err)
	}
	return nil
}

// ForStreamingPush returns ctx asking the registry's token service, up
// front, for what pushing streaming artifacts to repo takes: pull, push
// and, at a Sluice registry, streaming_write (other token services grant
// what they know of it). A manifest upload is not replayed after a 401,
// so the token must hold it before the push.
func (c *Client) ForStreamingPush(ctx context.Context, repo string) context.Context {
	return auth.AppendScopesForHost(ctx, c.Host, "repository:"+repo+":pull,push,streaming_write")
}

// PushManifest pushes a manifest by digest. When it has a subject and
// schema is ReferrersTag, the referrers index under the subject's
// sha256-<hex> tag is updated as the OCI distribution spec asks of clients
// of registries without the referrers API; an old index it replaces is
// left in place (never deleted), so that nothing in the registry is lost.
func (c *Client) PushManifest(ctx context.Context, repo string, mediaType string, payload []byte, schema ReferrersSchema) (ocispec.Descriptor, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	r.SkipReferrersGC = true
	if schema != "" {
		// The probe already told; without it oras-go would ask again.
		_ = r.SetReferrersCapability(schema == ReferrersAPI)
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(payload), Size: int64(len(payload))}
	if err := r.Manifests().Push(ctx, desc, bytes.NewReader(payload)); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push manifest %s to %s: %w", desc.Digest, repo, err)
	}
	return desc, nil
}

// FetchBlob opens a blob of repo for reading; the caller closes it and
// verifies what it reads against desc.
func (c *Client) FetchBlob(ctx context.Context, repo string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return nil, err
	}
	rc, err := r.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s from %s: %w", desc.Digest, repo, err)
	}
	return rc, nil
}
