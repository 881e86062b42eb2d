package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// Repository reads a repository with its settings, counts and size.
func (r *Registry) Repository(ctx context.Context, name string) (*metadata.Repository, error) {
	repo, err := r.meta.GetRepository(ctx, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNameUnknown, name)
	}
	return repo, err
}

// UpdateRepository changes a repository's attributes and streaming setting.
// Changing only the streaming setting may create the repository, so that a
// pipeline can set streaming up before its first push.
func (r *Registry) UpdateRepository(ctx context.Context, name string, p metadata.RepositoryPatch) (*metadata.Repository, error) {
	if err := oci.ValidateName(name); err != nil {
		return nil, err
	}
	create := p.Streaming != nil && p.Attributes == (metadata.AttributesPatch{})
	err := r.meta.UpdateRepository(ctx, name, p, create)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNameUnknown, name)
	}
	if err != nil {
		return nil, err
	}
	return r.Repository(ctx, name)
}

// DeleteRepository deletes a repository with all its manifests and tags
// (kept restorable when soft delete is on).
func (r *Registry) DeleteRepository(ctx context.Context, name string) ([]string, error) {
	defer r.repoLocks.Lock(name)()
	deleted, err := r.meta.DeleteRepository(ctx, name, r.deletion())
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNameUnknown, name)
	}
	if err != nil {
		return nil, mapMetadataErr(err)
	}
	r.notifyDeleted(ctx, name, deleted)
	return deleted, nil
}

// TagInfos lists a repository's tags for the management API, or with name
// set, that one tag.
func (r *Registry) TagInfos(ctx context.Context, repo, name, last string, n int) ([]metadata.TagInfo, bool, error) {
	tags, more, err := r.meta.Tags(ctx, repo, name, last, n)
	if errors.Is(err, metadata.ErrNotFound) {
		if name != "" {
			return nil, false, fmt.Errorf("%w: tag %s in %s", ErrManifestUnknown, name, repo)
		}
		return nil, false, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	return tags, more, err
}

// ManifestInfos lists a repository's manifests for the management API, or
// with dgst set, that one manifest.
func (r *Registry) ManifestInfos(ctx context.Context, repo, dgst, last string, n int) ([]metadata.ManifestInfo, bool, error) {
	ms, more, err := r.meta.Manifests(ctx, repo, dgst, last, n)
	if errors.Is(err, metadata.ErrNotFound) {
		if dgst != "" {
			return nil, false, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, repo)
		}
		return nil, false, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	return ms, more, err
}

// UpdateTagAttributes changes a tag's changeable attributes.
func (r *Registry) UpdateTagAttributes(ctx context.Context, repo, tag string, p metadata.AttributesPatch) error {
	err := r.meta.UpdateTagAttributes(ctx, repo, tag, p)
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: tag %s in %s", ErrManifestUnknown, tag, repo)
	}
	return err
}

// UpdateManifestAttributes changes a manifest's changeable attributes.
func (r *Registry) UpdateManifestAttributes(ctx context.Context, repo, dgst string, p metadata.AttributesPatch) error {
	err := r.meta.UpdateManifestAttributes(ctx, repo, dgst, p)
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, dgst, repo)
	}
	return err
}

// DeletedRepositories lists soft-deleted repositories.
func (r *Registry) DeletedRepositories(ctx context.Context) ([]metadata.Deleted, error) {
	return r.meta.DeletedRepositories(ctx)
}

// DeletedManifests lists a repository's soft-deleted manifests.
func (r *Registry) DeletedManifests(ctx context.Context, repo string) ([]metadata.Deleted, error) {
	return r.meta.DeletedManifests(ctx, repo)
}

// DeletedImages lists the soft-deleted manifests of every repository
// that mayRead admits, newest first, at most n; Name is the repository's.
func (r *Registry) DeletedImages(ctx context.Context, n int, mayRead func(string) bool) ([]metadata.Deleted, error) {
	all, err := r.meta.DeletedManifestsAll(ctx, -1)
	if err != nil {
		return nil, err
	}
	out := []metadata.Deleted{}
	for _, d := range all {
		if len(out) == n {
			break
		}
		if mayRead(d.Name) {
			out = append(out, d)
		}
	}
	return out, nil
}

// DeletedTags lists a repository's soft-deleted tags.
func (r *Registry) DeletedTags(ctx context.Context, repo string) ([]metadata.Deleted, error) {
	return r.meta.DeletedTags(ctx, repo)
}

// RestoreManifest restores a soft-deleted manifest, optionally tagging it;
// in a streaming repository it is converted again.
func (r *Registry) RestoreManifest(ctx context.Context, repo string, dgst digest.Digest, tag string, force bool) error {
	if tag != "" {
		if err := oci.ValidateTag(tag); err != nil {
			return err
		}
	}
	mediaType, payload, err := r.meta.ManifestPayload(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: no deleted manifest %s in %s", ErrManifestUnknown, dgst, repo)
	}
	if err != nil {
		return err
	}
	var enqueue *metadata.Operation
	if m, err := oci.ParseManifest(mediaType, payload); err == nil {
		if slices.Contains(ownedReferrers, m.ArtifactType) {
			return fmt.Errorf("%w: %s is a streaming artifact or its signature, which are not restored; restore the image and it is converted again", ErrConflict, dgst)
		}
		if r.hooks != nil {
			enqueue = r.hooks.OperationFor(repo, dgst, m)
		}
	}
	defer r.repoLocks.Lock(repo)()
	err = r.meta.RestoreManifest(ctx, repo, dgst.String(), tag, force, enqueue)
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: no deleted manifest %s in %s", ErrManifestUnknown, dgst, repo)
	}
	if err == nil && enqueue != nil {
		r.hooks.Enqueued()
	}
	return mapMetadataErr(err)
}

// TotalSize is the deduplicated size of everything stored.
func (r *Registry) TotalSize(ctx context.Context) (int64, error) { return r.meta.TotalSize(ctx) }

// SearchRepositories lists up to n repositories after last whose name
// contains contains and that mayRead admits (n < 0: all), with their
// settings, counts, size and last push, and whether more follow: the
// portal's paged, filtered catalog.
func (r *Registry) SearchRepositories(ctx context.Context, contains, last string, n int, mayRead func(string) bool) ([]metadata.Repository, bool, error) {
	var names []string
	more := false
	for {
		batch, bmore, err := r.meta.SearchRepositories(ctx, contains, last, 500)
		if err != nil {
			return nil, false, err
		}
		for _, name := range batch {
			if !mayRead(name) {
				continue
			}
			if n >= 0 && len(names) == n {
				more = true
				break
			}
			names = append(names, name)
		}
		if more || !bmore || len(batch) == 0 {
			break
		}
		last = batch[len(batch)-1]
	}
	repos, err := r.meta.RepositorySummaries(ctx, names)
	return repos, more, err
}

// LargestRepositories lists the n repositories holding the most bytes.
func (r *Registry) LargestRepositories(ctx context.Context, n int) ([]metadata.RepositorySize, error) {
	return r.meta.LargestRepositories(ctx, n)
}
