package streaming

import "testing"

// TestChunkTransitions: every transition of a chunk's life that the table
// allows is made, every other one is refused, and every flight ends in
// verified, released or failed.
func TestChunkTransitions(t *testing.T) {
	allowed := map[[2]chunkState]bool{
		{chunkIdle, chunkClaimed}:      true,
		{chunkIdle, chunkFetching}:     true,
		{chunkClaimed, chunkVerified}:  true,
		{chunkClaimed, chunkReleased}:  true,
		{chunkFetching, chunkVerified}: true,
		{chunkFetching, chunkFailed}:   true,
	}
	states := []chunkState{chunkIdle, chunkClaimed, chunkFetching, chunkVerified, chunkReleased, chunkFailed, chunkFailed + 1}
	for _, from := range states {
		for _, to := range states {
			f := &flight{state: from}
			refused := func() (refused bool) {
				defer func() { refused = recover() != nil }()
				f.move(7, to)
				return false
			}()
			switch want := allowed[[2]chunkState{from, to}]; {
			case refused == want:
				t.Errorf("%s → %s: refused %v, want %v", from, to, refused, !want)
			case !refused && f.state != to:
				t.Errorf("%s → %s made, but the flight is %s", from, to, f.state)
			case refused && f.state != from:
				t.Errorf("%s → %s refused, but the flight is %s", from, to, f.state)
			}
		}
	}
	for _, s := range states[:len(states)-1] {
		ends := s == chunkVerified || s == chunkReleased || s == chunkFailed
		if final := len(chunkTransitions[s]) == 0; final != ends {
			t.Errorf("%s: final %v, want %v", s, final, ends)
		}
	}
}
