package streaming

import (
	"fmt"
	"sort"

	"github.com/opencontainers/go-digest"
)

// ChunksOf lists the chunks (indices into TOC().Chunks, ascending) that a
// read of n bytes at offset off of file e needs. A caller that records
// what is read uses it; reading does not.
func (r *Reader) ChunksOf(e *Entry, off int64, n int) []int {
	d := r.DataEntry(e)
	if d.Type != TypeReg || off < 0 || off >= d.Size || n <= 0 {
		return nil
	}
	n = int(min(int64(n), d.Size-off))
	if d.Sparse == nil {
		return r.chunkRange(d.Offset+off, int64(n))
	}
	var idx []int
	for _, s := range dataSegments(d, make([]byte, n), off) {
		if !s.hole {
			idx = append(idx, r.chunkRange(s.uoff, int64(len(s.dst)))...)
		}
	}
	return uniqueSorted(idx)
}

// ChunkAt returns the index of the chunk stored at offset off of the blob
// with size bytes, or false when no chunk is exactly there.
func (r *Reader) ChunkAt(off, size int64) (int, bool) {
	cs := r.toc.Chunks
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Offset >= off })
	if i == len(cs) || cs[i].Offset != off || cs[i].Size != size {
		return 0, false
	}
	return i, true
}

// Cached reports whether the reader's cache holds chunk i, without reading
// it, when the cache can tell (one with a Has method); false otherwise.
func (r *Reader) Cached(i int) bool {
	h, ok := r.cfg.cache.(interface{ Has(digest.Digest) bool })
	return ok && h.Has(r.toc.Chunks[i].Digest)
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
	mine, _ := r.claim(uniqueSorted(want), true)
	return mine
}

// Release gives up claims on chunks not supplied: reads waiting for them
// fetch them themselves.
func (r *Reader) Release(idx []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, i := range idx {
		if f, ok := r.inflight[i]; ok && f.claimed {
			delete(r.inflight, i)
			f.err = errReleased
			close(f.done)
		}
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
	if err != nil {
		r.Release([]int{i})
		return err
	}
	r.cfg.cache.Put(c.Digest, data)
	r.mu.Lock()
	if f, ok := r.inflight[i]; ok && f.claimed {
		delete(r.inflight, i)
		f.data = data
		close(f.done)
	}
	r.mu.Unlock()
	return nil
}
