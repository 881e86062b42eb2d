package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/sluicehq/sluice/internal/metadata"
)

// ErrProfileUnknown means a blob has no startup profile.
var ErrProfileUnknown = errors.New("startup profile unknown to registry")

// ErrProfileInvalid means a startup profile was refused.
var ErrProfileInvalid = errors.New("startup profile invalid")

// Limits of a startup profile: what a container reads to start is a small
// part of a layer; a profile listing more would make every node fetch it
// at mount for little gain.
const (
	MaxProfileRanges = 65536
	MaxProfileBytes  = 512 << 20
)

// ProfileRange is a byte range of a blob.
type ProfileRange struct {
	Offset int64
	Length int64
}

// MarshalJSON writes a range as [offset, length].
func (r ProfileRange) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]int64{r.Offset, r.Length})
}

// UnmarshalJSON reads a range written as [offset, length].
func (r *ProfileRange) UnmarshalJSON(b []byte) error {
	var v []int64
	if err := json.Unmarshal(b, &v); err != nil || len(v) != 2 {
		return errors.New("a range is [offset, length]")
	}
	r.Offset, r.Length = v[0], v[1]
	return nil
}

// StartupProfile is what nodes learned of how containers start from a
// streamed layer: the ranges of the chunks they read first, in the order
// they first read them.
type StartupProfile struct {
	Ranges  []ProfileRange
	Updated time.Time
}

// StartupProfile returns the profile of a blob linked in repo.
func (r *Registry) StartupProfile(ctx context.Context, repo string, dgst digest.Digest) (*StartupProfile, error) {
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return nil, err
	}
	b, updated, err := r.meta.StartupProfile(ctx, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrProfileUnknown, dgst)
	}
	if err != nil {
		return nil, err
	}
	p := &StartupProfile{Updated: updated}
	if err := json.Unmarshal(b, &p.Ranges); err != nil {
		return nil, fmt.Errorf("stored startup profile of %s: %w", dgst, err)
	}
	return p, nil
}

// PutStartupProfile stores the profile of a blob linked in repo, replacing
// any. The ranges must lie inside the blob, not repeat, and cover at most
// half of it (and MaxProfileBytes).
func (r *Registry) PutStartupProfile(ctx context.Context, repo string, dgst digest.Digest, ranges []ProfileRange) error {
	size, err := r.StatBlob(ctx, repo, dgst)
	if err != nil {
		return err
	}
	if err := checkProfile(ranges, size); err != nil {
		return err
	}
	b, err := json.Marshal(ranges)
	if err != nil {
		return err
	}
	err = r.meta.PutStartupProfile(ctx, dgst.String(), b)
	switch {
	case errors.Is(err, metadata.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrBlobUnknown, dgst)
	case errors.Is(err, metadata.ErrBlobDeleting):
		return fmt.Errorf("%w: %s", ErrBusy, dgst)
	}
	return err
}

func checkProfile(ranges []ProfileRange, blobSize int64) error {
	if len(ranges) == 0 {
		return fmt.Errorf("%w: no ranges", ErrProfileInvalid)
	}
	if len(ranges) > MaxProfileRanges {
		return fmt.Errorf("%w: %d ranges, at most %d", ErrProfileInvalid, len(ranges), MaxProfileRanges)
	}
	seen := make(map[int64]bool, len(ranges))
	var total int64
	for i, rg := range ranges {
		if rg.Offset < 0 || rg.Length <= 0 || rg.Offset > blobSize-rg.Length {
			return fmt.Errorf("%w: range %d [%d, %d] is not inside the blob of %d bytes", ErrProfileInvalid, i, rg.Offset, rg.Length, blobSize)
		}
		if seen[rg.Offset] {
			return fmt.Errorf("%w: range %d repeats offset %d", ErrProfileInvalid, i, rg.Offset)
		}
		seen[rg.Offset] = true
		total += rg.Length
	}
	if limit := min(blobSize/2, MaxProfileBytes); total > limit {
		return fmt.Errorf("%w: the ranges cover %d bytes, at most %d (half the blob, and %d)", ErrProfileInvalid, total, limit, MaxProfileBytes)
	}
	return nil
}

// DeleteStartupProfile removes the profile of a blob linked in repo.
func (r *Registry) DeleteStartupProfile(ctx context.Context, repo string, dgst digest.Digest) error {
	if _, err := r.StatBlob(ctx, repo, dgst); err != nil {
		return err
	}
	err := r.meta.DeleteStartupProfile(ctx, dgst.String())
	if errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrProfileUnknown, dgst)
	}
	return err
}
