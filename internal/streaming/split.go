package streaming

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// Split rewrites the converted layer r reads so that the data of the files
// keep names (entries of r: a start's files, say) shares no chunk with the data of other
// files: a chunk that holds both is cut where the tar passes from one to
// the other, and its pieces compressed again; every other chunk's frame is
// copied as it is. A node that prefetches the kept files then fetches
// little else. The tar the layer holds, hence its DiffID and every entry,
// is unchanged; only the chunk table and the blob differ.
//
// NeedsSplit tells when Split would cut a chunk; Split of a layer that
// does not need it copies the layer. The result's SourceDigest, SourceSize
// and SourceCompression are left for the caller, which knows the layer's
// source.
func Split(ctx context.Context, r *Reader, dst io.Writer, keep []*Entry, opts Options) (*Result, error) {
	o := opts.withDefaults()
	cuts := splitCuts(r, keep)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(o.Level)),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	sink := &frameSink{out: dst, blob: sha256.New()}
	chunks := r.toc.Chunks
	var buf []byte // one batch of frames, reused
	for start := 0; start < len(chunks); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// A batch of whole frames, read in one range.
		end, n := start, int64(0)
		for end < len(chunks) && (end == start || n+chunks[end].Size <= fetchAllBatchBytes) {
			n += chunks[end].Size
			end++
		}
		if int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		batch := buf[:n]
		if err := r.rr.ReadRange(ctx, batch, chunks[start].Offset); err != nil {
			return nil, fmt.Errorf("reading chunks at %d (+%d): %w", chunks[start].Offset, n, err)
		}
		for i := start; i < end; i++ {
			c := &chunks[i]
			frame := batch[c.Offset-chunks[start].Offset:][:c.Size]
			if err := splitChunk(r, i, frame, &cuts, enc, sink); err != nil {
				return nil, err
			}
		}
		start = end
	}
	toc, err := newTOCWriter(o.Limits, o.TempDir)
	if err != nil {
		return nil, err
	}
	defer toc.close()
	for i := range r.toc.Entries {
		if err := toc.add(&r.toc.Entries[i]); err != nil {
			return nil, err
		}
	}
	res := &Result{DiffID: r.toc.DiffID, UncompressedSize: r.toc.UncompressedSize,
		Chunks: len(sink.chunks), Entries: len(r.toc.Entries)}
	if err := writeTrailer(sink, toc, res); err != nil {
		return nil, err
	}
	return res, nil
}

// NeedsSplit reports whether some chunk of r holds data of a file of keep
// and of a file not in it.
func NeedsSplit(r *Reader, keep []*Entry) bool { return len(splitCuts(r, keep)) > 0 }

// splitChunk writes chunk i of r, whose frame is given: as it is when no
// cut falls inside it, otherwise decoded, checked and cut into pieces
// compressed again. cuts, ascending, loses the cuts it used.
func splitChunk(r *Reader, i int, frame []byte, cuts *[]int64, enc *zstd.Encoder, sink *frameSink) error {
	c := &r.toc.Chunks[i]
	from, to := c.UncompressedOffset, c.UncompressedOffset+c.UncompressedSize
	var inside []int64
	for len(*cuts) > 0 && (*cuts)[0] < to {
		if (*cuts)[0] > from {
			inside = append(inside, (*cuts)[0])
		}
		*cuts = (*cuts)[1:]
	}
	if len(inside) == 0 {
		return sink.put(frame, from, c.UncompressedSize, c.sum)
	}
	data, err := r.decodeChunk(i, frame)
	if err != nil {
		return err
	}
	for _, at := range append(inside, to) {
		piece := data[:at-from]
		if err := sink.put(enc.EncodeAll(piece, nil), from, int64(len(piece)), sha256.Sum256(piece)); err != nil {
			return err
		}
		data, from = data[at-from:], at
	}
	return nil
}

// splitCuts lists, ascending, the entry boundaries in the tar where a kept
// file's data follows, in the same chunk, a file's that is not kept, or
// the reverse: the end of the earlier file's data blocks, so the headers
// between (the later file's, directories', links') go with the later file.
func splitCuts(r *Reader, keep []*Entry) []int64 {
	kept := make(map[int]bool, len(keep))
	for _, e := range keep {
		kept[r.DataEntry(e).index] = true
	}
	var cuts []int64
	last, prev := int64(-1), false // the previous data's last byte, and whether it is kept
	for i := range r.toc.Entries {
		e := &r.toc.Entries[i]
		n := e.DataSize()
		if e.Type != TypeReg || n == 0 {
			continue
		}
		if last >= 0 && kept[i] != prev && r.chunkAt(last) == r.chunkAt(e.Offset) {
			cuts = append(cuts, min(alignBlock(last+1), e.Offset)) // tar data starts on a block
		}
		last, prev = e.Offset+n-1, kept[i]
	}
	slices.Sort(cuts)
	return slices.Compact(cuts)
}
