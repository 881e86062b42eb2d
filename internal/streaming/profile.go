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

// MaxProfileBytes is how many bytes a profile of a layer of layerSize bytes
// may cover: half the layer, and 512 MiB at most.
func MaxProfileBytes(layerSize int64) int64 { return min(layerSize/2, 512<<20) }

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
