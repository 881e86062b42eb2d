package streaming

import (
	"context"
	"fmt"
	"slices"
)

// The life of a chunk in a Reader, in one place. A chunk nobody is
// fetching is idle: its bytes are in the cache or not (the cache keeps,
// writes and evicts them on its own terms; a read that finds them there
// starts nothing). A chunk missing from the cache is fetched once for
// every read that wants it, in a flight:
//
//	idle ─Claim─────────▶ claimed ─Supply: frame verified, cached──▶ verified
//	  │                       └─────Release; Supply: frame bad──────▶ released
//	  └─a read misses──▶ fetching ─fetched, verified, cached────────▶ verified
//	                          └─────fetch or verification failed────▶ failed
//
// A prefetch claims chunks (Claim) and supplies the frames it fetched
// (Supply) or gives them up (Release); a read fetches the chunks it
// misses that nobody claimed. Reads that want a chunk in flight wait for
// its end: verified gives them its bytes; released sends them to fetch it
// themselves; failed gives them the fetch's error. A flight leaves
// r.inflight as it ends, so the chunk is idle again at once.

// chunkState is where a chunk's flight is in its life.
type chunkState uint8

const (
	chunkIdle     chunkState = iota // no flight: in the cache, or to be fetched
	chunkClaimed                    // a prefetch will Supply or Release it
	chunkFetching                   // a read is fetching it for every read
	chunkVerified                   // its bytes matched the TOC and are cached
	chunkReleased                   // its claimer gave it up: waiters fetch it
	chunkFailed                     // its fetch failed: waiters get the error
)

// chunkTransitions lists the states each state may go to; a flight ends in
// a state with none.
var chunkTransitions = [...][]chunkState{
	chunkIdle:     {chunkClaimed, chunkFetching}, // Claim; a read that misses
	chunkClaimed:  {chunkVerified, chunkReleased},
	chunkFetching: {chunkVerified, chunkFailed},
	chunkVerified: nil,
	chunkReleased: nil,
	chunkFailed:   nil,
}

var chunkStateNames = [...]string{
	chunkIdle: "idle", chunkClaimed: "claimed", chunkFetching: "fetching",
	chunkVerified: "verified", chunkReleased: "released", chunkFailed: "failed",
}

func (s chunkState) String() string {
	if int(s) < len(chunkStateNames) {
		return chunkStateNames[s]
	}
	return fmt.Sprintf("chunkState(%d)", s)
}

// flight is a chunk from the moment it is claimed or a read starts
// fetching it until it is verified, released or failed. Reads that want it
// meanwhile wait for done, then read state, and data or err.
type flight struct {
	state chunkState
	done  chan struct{}
	data  []byte // verified: the chunk's bytes
	err   error  // failed: why
}

// move takes chunk i's flight to state to. A transition the table does not
// allow is a bug in this package, not a condition to handle: it panics.
// r.mu is held.
func (f *flight) move(i int, to chunkState) {
	if int(f.state) >= len(chunkTransitions) || !slices.Contains(chunkTransitions[f.state], to) {
		panic(fmt.Sprintf("streaming: chunk %d cannot go from %s to %s", i, f.state, to))
	}
	f.state = to
}

// begin starts a flight in state to (claimed or fetching) for each chunk
// of missing that has none, and returns those chunks; the flights of the
// others, which the caller waits for, are in waits.
func (r *Reader) begin(missing []int, to chunkState) (mine []int, waits map[int]*flight) {
	r.mu.Lock()
	defer r.mu.Unlock()
	waits = map[int]*flight{}
	for _, i := range missing {
		if f, ok := r.inflight[i]; ok {
			waits[i] = f
			continue
		}
		f := &flight{done: make(chan struct{})}
		f.move(i, to)
		r.inflight[i] = f
		mine = append(mine, i)
	}
	return mine, waits
}

// endLocked ends chunk i's flight in state to (verified, with data;
// released; failed, with err), takes it out of r.inflight and wakes the
// reads waiting for it. r.mu is held.
func (r *Reader) endLocked(i int, f *flight, to chunkState, data []byte, err error) {
	f.move(i, to)
	f.data, f.err = data, err
	delete(r.inflight, i)
	close(f.done)
}

// endFetches ends the flights of the chunks a read fetched: verified with
// the bytes in got, or failed with err.
func (r *Reader) endFetches(mine []int, got map[int][]byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, i := range mine {
		f := r.inflight[i]
		switch data := got[i]; {
		case err != nil:
			r.endLocked(i, f, chunkFailed, nil, err)
		case data == nil:
			r.endLocked(i, f, chunkFailed, nil, fmt.Errorf("internal error: chunk %d not fetched", i))
		default:
			r.endLocked(i, f, chunkVerified, data, nil)
		}
	}
}

// endClaimLocked ends chunk i's flight in state to if it is claimed: a
// claim ended already, or a chunk a read fetches since, is left alone.
// r.mu is held.
func (r *Reader) endClaimLocked(i int, to chunkState, data []byte) {
	if f := r.inflight[i]; f != nil && f.state == chunkClaimed {
		r.endLocked(i, f, to, data, nil)
	}
}

// await waits for the flights of other goroutines to end and adds the
// verified chunks to got. It returns the released chunks, sorted, for the
// caller to fetch itself, or the first failure.
func (r *Reader) await(ctx context.Context, waits map[int]*flight, got map[int][]byte) ([]int, error) {
	var retry []int
	for i, f := range waits {
		if r.waiting != nil {
			r.waiting(i)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch f.state {
		case chunkVerified:
			got[i] = f.data
		case chunkReleased:
			retry = append(retry, i)
		default:
			return nil, f.err
		}
	}
	slices.Sort(retry)
	return retry, nil
}

// Claim marks those of the chunks idx that are neither cached nor being
// fetched as being fetched by the caller, and returns them: a read that
// needs one then waits for the caller's Supply instead of fetching it
// too. The caller must Supply or Release every chunk it claims.
func (r *Reader) Claim(idx []int) []int {
	var want []int
	for _, i := range idx {
		if i >= 0 && i < len(r.toc.Chunks) && !r.Cached(i) {
			want = append(want, i)
		}
	}
	mine, _ := r.begin(uniqueSorted(want), chunkClaimed)
	return mine
}

// Release gives up claims on chunks not supplied: reads waiting for them
// fetch them themselves.
func (r *Reader) Release(idx []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, i := range idx {
		r.endClaimLocked(i, chunkReleased, nil)
	}
}

// Supply verifies the compressed frame of chunk i, fetched by the caller,
// and caches its bytes, as a fetch by the reader would. It ends the
// caller's claim on the chunk, if it has one: on a verification failure,
// the reads waiting for the chunk fetch it themselves.
func (r *Reader) Supply(i int, frame []byte) error {
	if i < 0 || i >= len(r.toc.Chunks) {
		return fmt.Errorf("supply: no chunk %d in a layer of %d", i, len(r.toc.Chunks))
	}
	c := &r.toc.Chunks[i]
	var data []byte
	var err error
	if int64(len(frame)) != c.Size {
		err = fmt.Errorf("%w: chunk %d is %d bytes, %d supplied", ErrChunkVerification, i, c.Size, len(frame))
	} else {
		data, err = r.decodeChunk(i, frame)
	}
	to := chunkReleased
	if err == nil {
		r.cfg.cache.Put(c.Digest, data)
		to = chunkVerified
	}
	r.mu.Lock()
	r.endClaimLocked(i, to, data)
	r.mu.Unlock()
	return err
}
