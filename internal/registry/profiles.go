package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
	"github.com/sluicehq/sluice/internal/streaming"
)

// ErrProfileUnknown means a blob has no startup profile.
var ErrProfileUnknown = errors.New("startup profile unknown to registry")

// ErrProfileInvalid means a startup profile was refused.
var ErrProfileInvalid = errors.New("startup profile invalid")

// StartupProfile is what nodes learned of how containers start from a
// streamed layer: the ranges of the chunks they read first, in the order
// they first read them. Before any node has started the layer, it may be
// what the converter inferred from the image config (Inferred): the files
// its entrypoint loads. A node's recording always replaces an inferred
// profile.
type StartupProfile struct {
	Ranges   []streaming.Range
	Updated  time.Time
	Inferred bool
}

// inferredProfile is how an inferred profile is stored; a recorded one is
// stored as its bare array of ranges.
type inferredProfile struct {
	Source string            `json:"source"`
	Ranges []streaming.Range `json:"ranges"`
}

const sourceInferred = "inferred"

// StartupProfile returns the profile of a blob linked in repo. Profiles are
// kept per repository: another repository holding the same blob has its
// own.
func (r *Registry) StartupProfile(ctx context.Context, repo string, dgst digest.Digest) (*StartupProfile, error) {
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return nil, err
	}
	b, updated, err := r.meta.StartupProfile(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrProfileUnknown, dgst)
	}
	if err != nil {
		return nil, err
	}
	p := &StartupProfile{Updated: updated}
	if len(b) > 0 && b[0] == '{' {
		var inf inferredProfile
		if err := json.Unmarshal(b, &inf); err != nil {
			return nil, fmt.Errorf("stored startup profile of %s: %w", dgst, err)
		}
		p.Ranges, p.Inferred = inf.Ranges, inf.Source == sourceInferred
		return p, nil
	}
	if err := json.Unmarshal(b, &p.Ranges); err != nil {
		return nil, fmt.Errorf("stored startup profile of %s: %w", dgst, err)
	}
	return p, nil
}

// PutInferredStartupProfile stores the profile the converter inferred for
// a blob linked in repo, unless the blob has a profile already (recorded by
// a node, or inferred before).
func (r *Registry) PutInferredStartupProfile(ctx context.Context, repo string, dgst digest.Digest, ranges []streaming.Range) error {
	if _, _, err := r.meta.StartupProfile(ctx, repo, dgst.String()); err == nil {
		return nil
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return err
	}
	return r.putProfile(ctx, repo, dgst, ranges, func(rs []streaming.Range) ([]byte, error) {
		return json.Marshal(inferredProfile{Source: sourceInferred, Ranges: rs})
	})
}

// PutStartupProfile stores the profile of a blob linked in repo, replacing
// any. The ranges must lie inside the blob, not overlap, and be within the
// limits of streaming.MaxProfileRanges and MaxProfileBytes.
func (r *Registry) PutStartupProfile(ctx context.Context, repo string, dgst digest.Digest, ranges []streaming.Range) error {
	return r.putProfile(ctx, repo, dgst, ranges, func(rs []streaming.Range) ([]byte, error) { return json.Marshal(rs) })
}

func (r *Registry) putProfile(ctx context.Context, repo string, dgst digest.Digest, ranges []streaming.Range, encode func([]streaming.Range) ([]byte, error)) error {
	size, err := r.StatBlob(ctx, repo, dgst)
	if err != nil {
		return err
	}
	if err := checkProfile(ranges, size); err != nil {
		return err
	}
	b, err := encode(ranges)
	if err != nil {
		return err
	}
	err = r.meta.PutStartupProfile(ctx, repo, dgst.String(), b)
	switch {
	case errors.Is(err, metadata.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	case errors.Is(err, metadata.ErrBlobDeleting):
		return fmt.Errorf("%w: %s", ErrBusy, dgst)
	}
	return err
}

func checkProfile(ranges []streaming.Range, blobSize int64) error {
	if len(ranges) == 0 {
		return fmt.Errorf("%w: no ranges", ErrProfileInvalid)
	}
	if len(ranges) > streaming.MaxProfileRanges {
		return fmt.Errorf("%w: %d ranges, at most %d", ErrProfileInvalid, len(ranges), streaming.MaxProfileRanges)
	}
	var total int64
	for i, rg := range ranges {
		if !rg.Inside(blobSize) {
			return fmt.Errorf("%w: range %d [%d, %d] is not inside the blob of %d bytes", ErrProfileInvalid, i, rg.Offset, rg.Length, blobSize)
		}
		total += rg.Length
	}
	// In the order of the blob, each range ends before the next begins.
	byOffset := slices.SortedFunc(slices.Values(ranges), func(a, b streaming.Range) int { return cmp.Compare(a.Offset, b.Offset) })
	for i := 1; i < len(byOffset); i++ {
		if prev := byOffset[i-1]; byOffset[i].Offset < prev.Offset+prev.Length {
			return fmt.Errorf("%w: ranges [%d, %d] and [%d, %d] overlap", ErrProfileInvalid, prev.Offset, prev.Length, byOffset[i].Offset, byOffset[i].Length)
		}
	}
	if limit := streaming.MaxProfileBytes(blobSize); total > limit {
		return fmt.Errorf("%w: the ranges cover %d bytes, at most %d (half the blob, and %d)", ErrProfileInvalid, total, limit, streaming.MaxProfileCap)
	}
	return nil
}

// DeleteStartupProfile removes the profile of a blob linked in repo.
func (r *Registry) DeleteStartupProfile(ctx context.Context, repo string, dgst digest.Digest) error {
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return err
	}
	err := r.meta.DeleteStartupProfile(ctx, repo, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrProfileUnknown, dgst)
	}
	return err
}
