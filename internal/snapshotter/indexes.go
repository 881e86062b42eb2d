package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/sluicehq/sluice/internal/client"
	"github.com/sluicehq/sluice/internal/streaming"
)

// An index's streaming artifacts have the index as their subject, one per
// platform: they are the only ones the registry makes. A pull by tag or by
// the index's digest names the index, and byIndex finds them through it. A
// pull by the digest of one platform's manifest names only that manifest:
// the node then asks the registry which of the repository's indexes list
// it (GET /acr/v1/{repo}/_indexes/{digest}, pull access) and looks for the
// streaming artifacts of those indexes for the manifest's platform. The
// registry's answer is only a hint: each index is fetched by digest
// (verified) and must list the manifest with a platform, and everything
// after that is checked as for a pull by tag.

// maxListingIndexes bounds how many of the indexes the registry names are
// tried.
const maxListingIndexes = 8

// viaIndex finds the streaming artifacts of manifest through an index:
// the one the pull named, else one the registry says lists the manifest.
// It returns the index's digest, the platform the index gives manifest
// and the index's referrers; or manifest, nil and no referrers when no
// index has streaming artifacts for it.
func (r *Resolver) viaIndex(ctx context.Context, c *client.Client, ref registry.Reference, manifest digest.Digest) (digest.Digest, *ocispec.Platform, []ocispec.Descriptor, error) {
	if ref.Reference != "" && ref.Reference != manifest.String() {
		subject, platform, refs, err := r.byIndex(ctx, c, ref, manifest)
		if err != nil || platform != nil {
			return subject, platform, refs, err
		}
	}
	return r.byListingIndex(ctx, c, ref.Repository, manifest)
}

// byListingIndex looks for an index of repo that lists manifest and has
// streaming artifacts for the platform it gives it.
func (r *Resolver) byListingIndex(ctx context.Context, c *client.Client, repo string, manifest digest.Digest) (digest.Digest, *ocispec.Platform, []ocispec.Descriptor, error) {
	indexes, err := indexesOf(ctx, c, repo, manifest)
	if err != nil {
		return "", nil, nil, notStreamed(registryReason(err), "asking the registry which indexes list %s: %v", manifest, err)
	}
	for _, d := range indexes[:min(len(indexes), maxListingIndexes)] {
		b, mt, err := c.GetManifest(ctx, repo, d.String())
		if err != nil {
			return "", nil, nil, notStreamed(registryReason(err), "reading the index %s: %v", d, err)
		}
		platform, err := platformIn(b, mt, manifest)
		if err != nil || platform == nil {
			continue // not an index listing the manifest: the hint was wrong
		}
		refs, err := c.Referrers(ctx, repo, d, "")
		if err != nil {
			return "", nil, nil, notStreamed(registryReason(err), "looking up streaming referrers of the index %s: %v", d, err)
		}
		for _, a := range refs {
			if a.ArtifactType == streaming.ArtifactType && samePlatform(a.Annotations, platform) {
				return d, platform, refs, nil
			}
		}
	}
	return manifest, nil, nil, nil
}

// indexesOf asks the registry which indexes of repo list manifest. A
// registry without the endpoint (not Sluice, or an older one) knows of
// none.
func indexesOf(ctx context.Context, c *client.Client, repo string, manifest digest.Digest) ([]digest.Digest, error) {
	ctx = auth.AppendScopesForHost(ctx, c.Host, auth.ScopeRepository(repo, auth.ActionPull))
	b, _, err := c.API(ctx, "GET", "/acr/v1/"+repo+"/_indexes/"+manifest.String(), nil, nil)
	if client.IsStatus(err, http.StatusNotFound) || client.IsStatus(err, http.StatusMethodNotAllowed) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var body struct {
		Indexes []digest.Digest `json:"indexes"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("indexes of %s: %w", manifest, err)
	}
	var out []digest.Digest
	for _, d := range body.Indexes {
		if d.Validate() == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// platformIn returns the platform an index (b, of media type mt) gives
// manifest; nil when b is not an index or does not list manifest with a
// platform.
func platformIn(b []byte, mt string, manifest digest.Digest) (*ocispec.Platform, error) {
	if mt != ocispec.MediaTypeImageIndex && mt != "application/vnd.docker.distribution.manifest.list.v2+json" {
		return nil, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, errors.New("not a valid index: " + err.Error())
	}
	var platform *ocispec.Platform
	for _, d := range idx.Manifests {
		if d.Digest == manifest && d.Platform != nil {
			platform = d.Platform
		}
	}
	return platform, nil
}
