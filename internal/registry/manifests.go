package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/oci"
)

// Manifest is a stored manifest as the API serves it.
type Manifest struct {
	Digest       digest.Digest
	MediaType    string
	ArtifactType string
	Size         int64
	Payload      []byte
	Subject      digest.Digest
	OS           string
	Architecture string
}

// PutResult says what a manifest push stored.
type PutResult struct {
	Digest digest.Digest
	// Subject is the manifest's subject digest, empty when it has none.
	Subject digest.Digest
}

// PutManifest validates and stores a manifest under ref (a tag, or the
// digest the payload must have), also pointing extraTags at it. In a
// streaming repository its conversion is enqueued in the same transaction.
func (r *Registry) PutManifest(ctx context.Context, repo string, ref oci.Reference, contentType string, payload []byte, extraTags []string) (*PutResult, error) {
	m, err := oci.ParseManifest(contentType, payload)
	if err != nil {
		return nil, err
	}
	if IsStreamingArtifact(m) && !streamingWritesAllowed(ctx) {
		return nil, fmt.Errorf("%w; the manifest pushed to %s is one (artifactType %s)", ErrStreamingWriteDenied, repo, m.ArtifactType)
	}
	dgst := digest.Canonical.FromBytes(payload)
	var tags []string
	if ref.IsDigest() {
		want := digest.Digest(ref.Digest)
		if dgst = want.Algorithm().FromBytes(payload); dgst != want {
			return nil, fmt.Errorf("%w: manifest content is %s, not %s", oci.ErrDigestInvalid, dgst, want)
		}
	} else {
		tags = append(tags, ref.Tag)
	}
	for _, t := range extraTags {
		if err := oci.ValidateTag(t); err != nil {
			return nil, err
		}
		tags = append(tags, t)
	}
	rec := &metadata.Manifest{
		Repository:   repo,
		Digest:       dgst.String(),
		MediaType:    m.MediaType,
		ArtifactType: m.ArtifactType,
		Payload:      payload,
		Annotations:  m.Annotations,
	}
	if m.Subject != nil {
		rec.Subject = m.Subject.Digest.String()
	}
	for _, b := range m.RequiredBlobs() {
		rec.Blobs = append(rec.Blobs, metadata.BlobRef{Digest: b.Digest.String(), Size: b.Size})
	}
	for _, c := range m.Manifests {
		rec.Children = append(rec.Children, c.Digest.String())
	}
	if m.Config != nil {
		rec.ConfigMediaType = m.Config.MediaType
		rec.OS, rec.Architecture = r.platformOf(ctx, repo, m.Config)
	}
	var enqueue *metadata.Operation
	if r.hooks != nil {
		enqueue = r.hooks.OperationFor(repo, dgst, m)
	}
	unlock := r.repoLocks.Lock(repo)
	err = r.meta.PutManifest(ctx, rec, tags, enqueue)
	unlock()
	switch {
	case errors.Is(err, metadata.ErrMissingBlob), errors.Is(err, metadata.ErrMissingManifest):
		return nil, fmt.Errorf("%w: %v", ErrManifestBlobUnknown, err)
	case errors.Is(err, metadata.ErrSizeMismatch):
		return nil, fmt.Errorf("%w: %v", oci.ErrManifestInvalid, err)
	case err != nil:
		return nil, mapMetadataErr(err)
	}
	if enqueue != nil {
		r.hooks.Enqueued()
	}
	res := &PutResult{Digest: dgst}
	if m.Subject != nil {
		res.Subject = m.Subject.Digest
	}
	return res, nil
}

// maxConfigSize bounds how much of an image config is read to learn the
// image's platform.
const maxConfigSize = 1 << 20

// platformOf reads the os and architecture of an image config, best effort:
// a config that is not an image config, or unreadable, has none.
func (r *Registry) platformOf(ctx context.Context, repo string, config *ocispec.Descriptor) (os, arch string) {
	if config.MediaType != oci.MediaTypeImageConfig && config.MediaType != oci.MediaTypeDockerImageConfig {
		return "", ""
	}
	if config.Size > maxConfigSize {
		return "", ""
	}
	var p ocispec.Platform
	if err := r.ReadJSONBlob(ctx, repo, config.Digest, maxConfigSize, &p); err != nil {
		return "", ""
	}
	return p.OS, p.Architecture
}

// ReadJSONBlob decodes a small JSON blob of repo into v.
func (r *Registry) ReadJSONBlob(ctx context.Context, repo string, dgst digest.Digest, limit int64, v any) error {
	c, err := r.OpenBlob(ctx, repo, dgst)
	if err != nil {
		return err
	}
	defer c.Close()
	return json.NewDecoder(io.LimitReader(c, limit)).Decode(v)
}

// GetManifest reads a manifest by tag or digest; without withPayload only
// its description (for HEAD).
func (r *Registry) GetManifest(ctx context.Context, repo string, ref oci.Reference, withPayload bool) (*Manifest, error) {
	rec, err := r.meta.GetManifest(ctx, repo, ref.Tag, ref.Digest, withPayload)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, ref, repo)
	}
	if err != nil {
		return nil, err
	}
	if !rec.Readable {
		return nil, fmt.Errorf("%w: %s in %s has readEnabled: false", ErrDenied, ref, repo)
	}
	return &Manifest{
		Digest: digest.Digest(rec.Digest), MediaType: rec.MediaType, ArtifactType: rec.ArtifactType, Size: rec.Size,
		Payload: rec.Payload, Subject: digest.Digest(rec.Subject), OS: rec.OS, Architecture: rec.Architecture,
	}, nil
}

// DeleteManifest deletes a tag, or a manifest by digest with every tag
// pointing at it and its streaming artifacts. With soft delete on, what is
// deleted stays restorable for the retention period.
func (r *Registry) DeleteManifest(ctx context.Context, repo string, ref oci.Reference) error {
	defer r.repoLocks.Lock(repo)()
	var err error
	var deleted []string
	if ref.IsDigest() {
		deleted, err = r.meta.DeleteManifest(ctx, repo, ref.Digest, r.deletion())
	} else {
		err = r.meta.DeleteTag(ctx, repo, ref.Tag, r.deletion().Soft)
	}
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, ref, repo)
	}
	if err != nil {
		return mapMetadataErr(err)
	}
	r.notifyDeleted(ctx, repo, deleted)
	return nil
}

// deletion is how the registry deletes: softly when soft delete is on, and
// an image's owned referrers with it.
func (r *Registry) deletion() metadata.Deletion {
	return metadata.Deletion{Soft: r.opts.SoftDelete > 0, OwnedReferrers: ownedReferrers}
}

func (r *Registry) notifyDeleted(ctx context.Context, repo string, digests []string) {
	if r.hooks != nil && len(digests) > 0 {
		r.hooks.Deleted(context.WithoutCancel(ctx), repo, digests)
	}
}

// DeleteArtifact deletes a manifest for good, whatever the soft delete
// setting: conversion uses it to take back what a canceled operation made.
func (r *Registry) DeleteArtifact(ctx context.Context, repo string, dgst digest.Digest) error {
	defer r.repoLocks.Lock(repo)()
	_, err := r.meta.DeleteManifest(ctx, repo, dgst.String(), metadata.Deletion{OwnedReferrers: ownedReferrers})
	if errors.Is(err, metadata.ErrNotFound) {
		return nil
	}
	return mapMetadataErr(err)
}

// Tags lists up to n tags of repo after last (n < 0: all), and whether more
// follow.
func (r *Registry) Tags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	tags, more, err := r.meta.ListTags(ctx, repo, last, n)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, false, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	return tags, more, err
}

// Repositories lists up to n repositories after last (n < 0: all), and
// whether more follow.
func (r *Registry) Repositories(ctx context.Context, last string, n int) ([]string, bool, error) {
	return r.meta.ListRepositories(ctx, last, n)
}

// Referrers lists the descriptors of the manifests in repo whose subject is
// dgst, optionally of one artifact type. The subject need not exist.
func (r *Registry) Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	recs, err := r.meta.Referrers(ctx, repo, dgst.String(), artifactType)
	if err != nil {
		return nil, err
	}
	out := make([]ocispec.Descriptor, 0, len(recs))
	for _, m := range recs {
		out = append(out, ocispec.Descriptor{
			MediaType:    m.MediaType,
			Digest:       digest.Digest(m.Digest),
			Size:         m.Size,
			ArtifactType: m.ArtifactType,
			Annotations:  m.Annotations,
		})
	}
	return out, nil
}

// ReadableRepositories lists up to n repositories after last that mayRead
// admits (n < 0: all), and whether more follow: a catalog filtered to what
// the caller may see, paged after filtering.
func (r *Registry) ReadableRepositories(ctx context.Context, last string, n int, mayRead func(string) bool) ([]string, bool, error) {
	out := []string{}
	for {
		batch, more, err := r.meta.ListRepositories(ctx, last, 500)
		if err != nil {
			return nil, false, err
		}
		for _, name := range batch {
			if !mayRead(name) {
				continue
			}
			if n >= 0 && len(out) == n {
				return out, true, nil
			}
			out = append(out, name)
		}
		if !more || len(batch) == 0 {
			return out, false, nil
		}
		last = batch[len(batch)-1]
	}
}
