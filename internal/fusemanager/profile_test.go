package fusemanager

import (
	"slices"
	"testing"

	"github.com/sluicehq/sluice/internal/streaming"
)

// TestProfileRangesWithinLimits: a registry's profile is cut to what lies
// inside the layer and to a profile's limits before anything is fetched
// (a negative length once crashed the FUSE manager).
func TestProfileRangesWithinLimits(t *testing.T) {
	const size = 10 * streaming.MinProfileCap // half of it: 5 floors
	const k = streaming.MinProfileCap
	rg := func(off, n int64) streaming.Range { return streaming.Range{Offset: off, Length: n} }
	got := streaming.FitProfile([]streaming.Range{rg(0, k), rg(-5, 10), rg(k, -1), rg(2*k, 0), rg(size-50, 100), rg(3*k, 2*k), rg(6*k, 3*k)}, size)
	want := []streaming.Range{rg(0, k), rg(3*k, 2*k)}
	if !slices.Equal(got, want) {
		t.Fatalf("FitProfile = %v, want %v (inside the layer, at most half of it)", got, want)
	}
	// A small layer's profile may cover it whole, up to the floor.
	small := []streaming.Range{rg(0, 900)}
	if got := streaming.FitProfile(small, 1000); !slices.Equal(got, small) {
		t.Fatalf("FitProfile of a 1000-byte layer = %v, want %v", got, small)
	}
}

// TestRecordingReplaces: a start's recording replaces the registry's
// profile when there is none, or when it missed more than a quarter of
// the start's bytes.
func TestRecordingReplaces(t *testing.T) {
	chunks := []streaming.Chunk{{Size: 100}, {Size: 100}, {Size: 100}, {Size: 100}}
	for _, tc := range []struct {
		name       string
		rec, known []int
		want       bool
	}{
		{"no profile", []int{0}, nil, true},
		{"all known", []int{0, 1, 2}, []int{2, 1, 0}, false},
		{"a quarter missed", []int{0, 1, 2, 3}, []int{3, 1, 2}, false},
		{"half missed", []int{0, 1, 2, 3}, []int{3, 2}, true},
		{"known read nothing of", []int{0, 1}, []int{2, 3}, true},
	} {
		if got := replaces(tc.rec, tc.known, chunks); got != tc.want {
			t.Errorf("%s: replaces = %v, want %v", tc.name, got, tc.want)
		}
	}
}
