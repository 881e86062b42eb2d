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
	const size = 1000
	rg := func(off, n int64) streaming.Range { return streaming.Range{Offset: off, Length: n} }
	got := streaming.FitProfile([]streaming.Range{rg(0, 100), rg(-5, 10), rg(100, -1), rg(200, 0), rg(950, 100), rg(300, 200), rg(600, 300)}, size)
	want := []streaming.Range{rg(0, 100), rg(300, 200)}
	if !slices.Equal(got, want) {
		t.Fatalf("FitProfile = %v, want %v (inside the layer, at most half of it)", got, want)
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
