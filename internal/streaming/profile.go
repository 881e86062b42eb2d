package streaming

import (
	"encoding/json"
	"errors"
)

// Startup profiles (docs: the README's "Running a node") list the ranges of
// a streamed layer that containers read first. The registry refuses a
// profile beyond these limits and nodes cut their recordings to fit them:
// what a container reads to start is a small part of a layer, and a
// profile listing more would make every node fetch it at mount for little
// gain.
const MaxProfileRanges = 65536

// MaxProfileCap is the most bytes any profile may cover.
const MaxProfileCap = 512 << 20

// MinProfileCap is what a profile may cover whatever its layer's size: the
// converter's default chunk for small files. A layer of a few small files
// (a Dockerfile's COPY of an app) is one such chunk, which half the layer
// would leave without a profile, and its start without a prefetch.
const MinProfileCap = 256 << 10

// MaxProfileBytes is how many bytes a profile of a layer of layerSize bytes
// may cover: half the layer, at least MinProfileCap and at most
// MaxProfileCap.
func MaxProfileBytes(layerSize int64) int64 {
	return min(max(layerSize/2, MinProfileCap), MaxProfileCap)
}

// Inside reports whether the range is at least a byte long and lies inside
// a blob of size bytes.
func (r Range) Inside(size int64) bool {
	return r.Offset >= 0 && r.Length > 0 && r.Offset <= size-r.Length
}

// FitProfile returns, in order, the ranges that lie inside a layer of
// layerSize bytes, up to the first that would pass a profile's limits
// (MaxProfileRanges, MaxProfileBytes). A node cuts its recording, and a
// registry's profile before fetching anything of it, with it.
func FitProfile(ranges []Range, layerSize int64) []Range {
	out := make([]Range, 0, min(len(ranges), MaxProfileRanges))
	limit := MaxProfileBytes(layerSize)
	var total int64
	for _, r := range ranges {
		if len(out) == MaxProfileRanges || total+r.Length > limit {
			break
		}
		if !r.Inside(layerSize) {
			continue
		}
		out = append(out, r)
		total += r.Length
	}
	return out
}

// MarshalJSON writes a range as [offset, length], its form in a startup
// profile.
func (r Range) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]int64{r.Offset, r.Length})
}

// UnmarshalJSON reads a range written as [offset, length].
func (r *Range) UnmarshalJSON(b []byte) error {
	var v []int64
	if err := json.Unmarshal(b, &v); err != nil || len(v) != 2 {
		return errors.New("a range is [offset, length]")
	}
	r.Offset, r.Length = v[0], v[1]
	return nil
}
