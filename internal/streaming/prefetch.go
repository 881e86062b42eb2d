package streaming

import (
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
