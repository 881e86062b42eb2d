package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// indexPage is how many manifests IndexesOf reads from the listing at a
// time.
const indexPage = 500

// IndexesOf lists the live, listable, readable image indexes of repo that
// list the manifest dgst, in digest order. A node pulling one platform's
// manifest by its digest asks it to find the index whose streaming
// artifacts cover that platform: an index's streaming artifacts have the
// index as subject, and are the only ones made.
//
// It reads the repository's listing and the payloads of its indexes (the
// manifest payloads are cached by digest): the cost grows with the number
// of manifests in the repository, not with the answer.
func (r *Registry) IndexesOf(ctx context.Context, repo string, dgst digest.Digest) ([]digest.Digest, error) {
	out := []digest.Digest{}
	for last := ""; ; {
		page, more, err := r.meta.Manifests(ctx, repo, "", last, indexPage)
		if errors.Is(err, metadata.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		if err != nil {
			return nil, err
		}
		for _, m := range page {
			if !oci.IsIndexMediaType(m.MediaType) || !m.Attributes.ReadEnabled {
				continue
			}
			lists, err := r.indexLists(ctx, repo, m.Digest, dgst)
			if err != nil {
				return nil, err
			}
			if lists {
				out = append(out, digest.Digest(m.Digest))
			}
		}
		if !more || len(page) == 0 {
			return out, nil
		}
		last = page[len(page)-1].Digest
	}
}

// indexLists reports whether the index index of repo lists the manifest
// child. An index deleted since the listing lists nothing.
func (r *Registry) indexLists(ctx context.Context, repo, index string, child digest.Digest) (bool, error) {
	rec, err := r.meta.GetManifest(ctx, repo, "", index, true)
	if errors.Is(err, metadata.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var idx struct {
		Manifests []struct {
			Digest digest.Digest `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(rec.Payload, &idx); err != nil {
		return false, fmt.Errorf("stored index %s in %s: %w", index, repo, err)
	}
	for _, m := range idx.Manifests {
		if m.Digest == child {
			return true, nil
		}
	}
	return false, nil
}
