package streaming

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sort"

	"github.com/opencontainers/go-digest"
)

// segment is a piece of a read: dst is filled from the tar bytes at uoff,
// or with zeros for a hole of a sparse file.
type segment struct {
	dst  []byte
	uoff int64
	hole bool
}

// readData fills p with the content of regular file d at off (d.Size is
// already known to cover it).
func (r *Reader) readData(ctx context.Context, d *Entry, p []byte, off int64) error {
	segs := dataSegments(d, p, off)
	var want []int
	end := int64(-1) // the tar offset after the last byte read
	for _, s := range segs {
		if !s.hole {
			want = append(want, r.chunkRange(s.uoff, int64(len(s.dst)))...)
			end = s.uoff + int64(len(s.dst))
		}
	}
	if end >= 0 {
		r.readAhead(d, end)
	}
	chunks, err := r.getChunks(ctx, uniqueSorted(want))
	if err != nil {
		return fmt.Errorf("reading %q: %w", d.Name, err)
	}
	for _, s := range segs {
		if s.hole {
			clear(s.dst)
			continue
		}
		for done := 0; done < len(s.dst); {
			u := s.uoff + int64(done)
			i := r.chunkAt(u)
			c := &r.toc.Chunks[i]
			done += copy(s.dst[done:], chunks[i][u-c.UncompressedOffset:])
		}
	}
	return nil
}

// readAheadChunks is how many chunks past a read readAhead asks for.
const readAheadChunks = 2

// readAhead asks the cache to bring the next chunks of file d into memory
// when a read of it ended at tar offset end, in the second half of its
// chunk: the next reads of a file read in order then find them there
// instead of waiting for the disk and the hash. Only a cache with a Preload
// method does anything, and only for chunks it holds: nothing is fetched
// from the registry for it. Chunks past the file's end are left alone: a
// walk reading small files skips the large ones that follow. (The kernel's
// own read-ahead of a FUSE mount is 128 KiB; a larger one did not help.)
func (r *Reader) readAhead(d *Entry, end int64) {
	p, ok := r.cfg.cache.(interface{ Preload(digest.Digest) })
	if !ok {
		return
	}
	cs := r.toc.Chunks
	i := r.chunkAt(end - 1)
	if i >= len(cs) || end-cs[i].UncompressedOffset < cs[i].UncompressedSize/2 {
		return
	}
	fileEnd := d.Offset + d.Size // past the tar bytes of the file's data
	if d.Sparse != nil {
		var stored int64
		for _, f := range d.Sparse {
			stored += f.Length
		}
		fileEnd = d.Offset + stored
	}
	for k := i + 1; k < len(cs) && k <= i+readAheadChunks && cs[k].UncompressedOffset < fileEnd; k++ {
		p.Preload(cs[k].Digest)
	}
}

// dataSegments maps a read of a file's logical bytes onto tar offsets.
func dataSegments(d *Entry, p []byte, off int64) []segment {
	if d.Sparse == nil {
		return []segment{{dst: p, uoff: d.Offset + off}}
	}
	var segs []segment
	pos, end := off, off+int64(len(p))
	var phys int64 // tar offset of the current fragment, relative to d.Offset
	for _, f := range d.Sparse {
		if pos >= end {
			break
		}
		if f.Offset+f.Length <= pos {
			phys += f.Length
			continue
		}
		if pos < f.Offset { // a hole before this fragment
			n := min(f.Offset, end) - pos
			segs = append(segs, segment{dst: p[pos-off : pos-off+n], hole: true})
			pos += n
			if pos >= end {
				break
			}
		}
		n := min(f.Offset+f.Length, end) - pos
		segs = append(segs, segment{dst: p[pos-off : pos-off+n], uoff: d.Offset + phys + pos - f.Offset})
		pos += n
		phys += f.Length
	}
	if pos < end { // trailing hole
		segs = append(segs, segment{dst: p[pos-off:], hole: true})
	}
	return segs
}

// chunkAt returns the index of the chunk holding tar offset u.
func (r *Reader) chunkAt(u int64) int {
	cs := r.toc.Chunks
	return sort.Search(len(cs), func(i int) bool { return cs[i].UncompressedOffset+cs[i].UncompressedSize > u })
}

// chunkRange lists the chunks holding tar bytes [u, u+n).
func (r *Reader) chunkRange(u, n int64) []int {
	first, last := r.chunkAt(u), r.chunkAt(u+n-1)
	idx := make([]int, 0, last-first+1)
	for i := first; i <= last; i++ {
		idx = append(idx, i)
	}
	return idx
}

func uniqueSorted(idx []int) []int {
	sort.Ints(idx)
	out := idx[:0]
	for i, v := range idx {
		if i == 0 || v != idx[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// getChunks returns the verified bytes of the chunks idx (sorted, unique),
// from the cache or fetched with as few ranges as coalescing allows. A chunk
// another goroutine is already fetching is waited for, not fetched twice
// (chunkstate.go has the life of a chunk).
func (r *Reader) getChunks(ctx context.Context, idx []int) (map[int][]byte, error) {
	got := make(map[int][]byte, len(idx))
	for len(idx) > 0 {
		var missing []int
		for _, i := range idx {
			if data, ok := r.cached(i); ok {
				got[i] = data
			} else {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			break
		}
		mine, waits := r.begin(missing, chunkFetching)
		err := r.fetch(ctx, mine, got)
		r.endFetches(mine, got, err)
		if err != nil {
			return nil, err
		}
		// Chunks a claimer released are fetched on the next round (in a
		// slice of their own: the caller's idx is not ours to change).
		if idx, err = r.await(ctx, waits, got); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// fetch reads the chunks idx, verifies them, caches them and adds them to
// got.
func (r *Reader) fetch(ctx context.Context, idx []int, got map[int][]byte) error {
	if len(idx) == 0 {
		return nil
	}
	runs := r.plan(idx)
	ranges := make([]Range, len(runs))
	bufs := make([][]byte, len(runs))
	for k, run := range runs {
		first, last := &r.toc.Chunks[run[0]], &r.toc.Chunks[run[1]]
		ranges[k] = Range{Offset: first.Offset, Length: last.Offset + last.Size - first.Offset}
		bufs[k] = make([]byte, ranges[k].Length)
	}
	if err := r.readRanges(ctx, ranges, bufs); err != nil {
		return err
	}
	for k, run := range runs {
		base := r.toc.Chunks[run[0]].Offset
		for i := run[0]; i <= run[1]; i++ {
			c := &r.toc.Chunks[i]
			data, err := r.decodeChunk(i, bufs[k][c.Offset-base:c.Offset-base+c.Size])
			if err != nil {
				return err
			}
			r.cfg.cache.Put(c.Digest, data)
			got[i] = data
		}
	}
	return nil
}

func (r *Reader) cached(i int) ([]byte, bool) {
	c := &r.toc.Chunks[i]
	data, ok := r.cfg.cache.Get(c.Digest)
	if !ok || int64(len(data)) != c.UncompressedSize {
		return nil, false
	}
	if r.cfg.verifyCache && sha256.Sum256(data) != digestBytes(c) {
		return nil, false
	}
	return data, true
}

// plan groups sorted chunk indices into runs [first, last] fetched as one
// range each: adjacent chunks, up to maxRequestBytes a run.
func (r *Reader) plan(missing []int) [][2]int {
	var runs [][2]int
	for _, i := range missing {
		if k := len(runs) - 1; k >= 0 {
			last, c := &r.toc.Chunks[runs[k][1]], &r.toc.Chunks[i]
			start := r.toc.Chunks[runs[k][0]].Offset
			if c.Offset <= last.Offset+last.Size && c.Offset+c.Size-start <= r.cfg.maxRequestBytes {
				runs[k][1] = i
				continue
			}
		}
		runs = append(runs, [2]int{i, i})
	}
	return runs
}

func (r *Reader) readRanges(ctx context.Context, ranges []Range, bufs [][]byte) error {
	if m, ok := r.rr.(MultiRangeReader); ok && len(ranges) > 1 {
		if err := m.ReadRanges(ctx, ranges, bufs); err != nil {
			return fmt.Errorf("fetching %d ranges: %w", len(ranges), err)
		}
		return nil
	}
	for k, rg := range ranges {
		if err := r.rr.ReadRange(ctx, bufs[k], rg.Offset); err != nil {
			return fmt.Errorf("fetching chunks at %d (+%d): %w", rg.Offset, rg.Length, err)
		}
	}
	return nil
}

// decodeChunk decompresses chunk i and checks its size and sha256.
func (r *Reader) decodeChunk(i int, frame []byte) ([]byte, error) {
	c := &r.toc.Chunks[i]
	data, err := r.dec.DecodeAll(frame, make([]byte, 0, c.UncompressedSize))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: chunk %d at offset %d: %v", ErrChunkVerification, i, c.Offset, err)
	case int64(len(data)) != c.UncompressedSize:
		return nil, fmt.Errorf("%w: chunk %d at offset %d: %d bytes, TOC says %d", ErrChunkVerification, i, c.Offset, len(data), c.UncompressedSize)
	case sha256.Sum256(data) != digestBytes(c):
		return nil, fmt.Errorf("%w: chunk %d at offset %d does not match its sha256", ErrChunkVerification, i, c.Offset)
	}
	return data, nil
}

func digestBytes(c *Chunk) [sha256.Size]byte { return c.sum }

// What FetchAll fetches at once: compressed bytes per request, and the
// uncompressed chunks it holds for them (and puts in the cache at once).
const (
	fetchAllBatchBytes        = 8 << 20
	FetchAllBatchUncompressed = 64 << 20
)

// FetchAll fetches every chunk in order (from the cache when it has them,
// caching the rest), hands each verified chunk to visit (which may be nil),
// and finally checks that the whole layer hashes to the TOC's DiffID. A
// snapshotter runs it in the background to complete a layer.
func (r *Reader) FetchAll(ctx context.Context, visit func(c *Chunk, data []byte) error) error {
	h := sha256.New()
	for start := 0; start < len(r.toc.Chunks); {
		// A batch is bounded by its chunks' uncompressed size too: the
		// chunks of a file of zeros take a few hundred bytes each to
		// fetch and up to maxChunkBytes each in memory, and a batch of
		// 8 MiB of them once decoded 8 GiB at once.
		end, n, u := start, int64(0), int64(0)
		for end < len(r.toc.Chunks) {
			c := &r.toc.Chunks[end]
			if end > start && (n+c.Size > fetchAllBatchBytes || u+c.UncompressedSize > FetchAllBatchUncompressed) {
				break
			}
			n += c.Size
			u += c.UncompressedSize
			end++
		}
		idx := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			idx = append(idx, i)
		}
		chunks, err := r.getChunks(ctx, idx)
		if err != nil {
			return err
		}
		for _, i := range idx {
			h.Write(chunks[i])
			if visit != nil {
				if err := visit(&r.toc.Chunks[i], chunks[i]); err != nil {
					return err
				}
			}
		}
		start = end
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != r.toc.DiffID {
		return fmt.Errorf("%w: layer hashes to %s, TOC says %s", ErrDiffIDMismatch, got, r.toc.DiffID)
	}
	return nil
}

// WriteTo streams the whole uncompressed layer (the original tar) to w and
// checks its DiffID.
func (r *Reader) WriteTo(ctx context.Context, w io.Writer) error {
	return r.FetchAll(ctx, func(_ *Chunk, data []byte) error {
		_, err := w.Write(data)
		return err
	})
}
