package streaming

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

var fuzzLimits = Limits{MaxTOCSize: 1 << 20, MaxTOCUncompressedSize: 4 << 20, MaxEntries: 10000,
	MaxUncompressedSize: 64 << 20, MaxChunkSize: 4 << 20}

// seedLayers are small converted layers for the seed corpora.
func seedLayers(t testing.TB) [][]byte {
	var out [][]byte
	for _, es := range [][]testEntry{everyEntryType()[:12], manySmallFiles(8), nil} {
		blob, _ := convertBytes(t, buildTar(t, es), smallOpts)
		out = append(out, blob)
	}
	return out
}

func FuzzParseFooter(f *testing.F) {
	for _, b := range seedLayers(f) {
		f.Add(b[len(b)-FooterSize:], int64(len(b)))
	}
	f.Add(make([]byte, FooterSize), int64(FooterSize))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		ft, err := ParseFooter(b, size)
		if err != nil {
			return
		}
		if ft.TOCOffset < 0 || ft.TOCSize < skippableHeaderSize || ft.TOCOffset+ft.TOCSize != size-FooterSize {
			t.Fatalf("accepted an inconsistent footer %+v for size %d", ft, size)
		}
		again, _ := ft.MarshalBinary()
		if !bytes.Equal(again[:64], b[:64]) {
			t.Fatalf("footer does not round-trip")
		}
	})
}

func FuzzDecodeTOC(f *testing.F) {
	for _, b := range seedLayers(f) {
		ft, _ := ParseFooter(b[len(b)-FooterSize:], int64(len(b)))
		f.Add(b[ft.TOCOffset:ft.TOCOffset+ft.TOCSize], ft.TOCOffset)
	}
	f.Fuzz(func(t *testing.T, frame []byte, dataSize int64) {
		toc, err := DecodeTOC(frame, dataSize, fuzzLimits)
		if err != nil {
			return
		}
		if _, _, err := encodeTOC(toc); err != nil {
			t.Fatalf("accepted TOC does not encode: %v", err)
		}
	})
}

// FuzzReader builds a blob from fuzzed data frames and a fuzzed TOC JSON
// document (with a footer that matches, as a hostile converter would write)
// and reads everything through the Reader: it must return errors, never
// panic or return unverified bytes.
func FuzzReader(f *testing.F) {
	for _, b := range seedLayers(f) {
		ft, _ := ParseFooter(b[len(b)-FooterSize:], int64(len(b)))
		payload, _ := skippablePayload(skippableTOCMagic, b[ft.TOCOffset:ft.TOCOffset+ft.TOCSize])
		js, err := decompressBounded(payload, 1<<30)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:ft.TOCOffset], js)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	f.Fuzz(func(t *testing.T, data, tocJSON []byte) {
		frame := skippableFrame(skippableTOCMagic, enc.EncodeAll(tocJSON, nil))
		ft := Footer{TOCOffset: int64(len(data)), TOCSize: int64(len(frame)), TOCUncompressedSize: int64(len(tocJSON)),
			TOCDigest: sha256.Sum256(frame), Major: formatMajor}
		footer, _ := ft.MarshalBinary()
		blob := append(append(bytes.Clone(data), frame...), footer...)
		readEverything(t, blob)
	})
}

func readEverything(t *testing.T, blob []byte) {
	ctx := context.Background()
	r, err := Open(ctx, ReaderAtRanges(bytes.NewReader(blob)), int64(len(blob)), WithLimits(fuzzLimits))
	if err != nil {
		return
	}
	defer r.Close()
	verified := r.FetchAll(ctx, nil) == nil
	for i := range r.Entries() {
		e := &r.Entries()[i]
		if r.DataEntry(e).Type != TypeReg {
			continue
		}
		p := make([]byte, min(r.DataEntry(e).Size, 1<<20))
		_, err := r.ReadAt(ctx, e, p, 0)
		if verified && err != nil && err != io.EOF {
			t.Fatalf("reading %q of a layer that verified: %v", e.Name, err)
		}
		if err != nil && err != io.EOF && !errors.Is(err, ErrChunkVerification) {
			t.Fatalf("reading %q: unexpected error %v", e.Name, err)
		}
	}
}

// FuzzConvert: the converter must refuse or convert any input; what it
// converts must decompress to exactly the input and read back.
func FuzzConvert(f *testing.F) {
	f.Add(buildTar(f, everyEntryType()[:8]))
	f.Add(compress(f, CompressionGzip, buildTar(f, manySmallFiles(5))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, input []byte) {
		var out bytes.Buffer
		opts := smallOpts
		opts.Limits = fuzzLimits
		res, err := Convert(context.Background(), bytes.NewReader(input), &out, opts)
		if err != nil {
			return
		}
		r, err := Open(context.Background(), ReaderAtRanges(bytes.NewReader(out.Bytes())), res.Size,
			WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), WithDiffID(res.DiffID))
		if err != nil {
			t.Fatalf("converted layer does not open: %v", err)
		}
		defer r.Close()
		if err := r.FetchAll(context.Background(), nil); err != nil {
			t.Fatalf("converted layer does not verify: %v", err)
		}
	})
}

// chunkTableRecord is a chunk in FuzzChunkTable's input: varints (so that
// small offsets and sizes are a few bytes the fuzzer can reach), then a
// byte choosing the digest (odd: a valid sha256, even: a broken one).
func chunkTableRecord(c Chunk) []byte {
	b := binary.AppendVarint(nil, c.Offset)
	b = binary.AppendVarint(b, c.Size)
	b = binary.AppendVarint(b, c.UncompressedOffset)
	b = binary.AppendVarint(b, c.UncompressedSize)
	return append(b, 1)
}

// parseChunkTable decodes FuzzChunkTable's input into chunks.
func parseChunkTable(b []byte) []Chunk {
	var out []Chunk
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		var v [4]int64
		for i := range v {
			x, err := binary.ReadVarint(r)
			if err != nil {
				return out
			}
			v[i] = x
		}
		sel, err := r.ReadByte()
		if err != nil {
			return out
		}
		c := Chunk{Offset: v[0], Size: v[1], UncompressedOffset: v[2], UncompressedSize: v[3]}
		switch {
		case sel%2 == 1:
			c.Digest = digest.FromBytes([]byte{sel, byte(len(out))})
		case sel%4 == 0:
			c.Digest = "sha256:zz"
		default:
			c.Digest = digest.SHA512.FromBytes([]byte{sel})
		}
		out = append(out, c)
	}
	return out
}

// FuzzChunkTable: a chunk table the decoder accepts lies about nothing a
// reader relies on: chunks are contiguous, start at 0, cover exactly the
// data section and the tar, are each within the chunk size limit, and
// every tar offset and every stored frame maps back to its own chunk.
func FuzzChunkTable(f *testing.F) {
	for _, b := range seedLayers(f) {
		ft, _ := ParseFooter(b[len(b)-FooterSize:], int64(len(b)))
		toc, err := DecodeTOC(b[ft.TOCOffset:ft.TOCOffset+ft.TOCSize], ft.TOCOffset, fuzzLimits)
		if err != nil {
			f.Fatal(err)
		}
		var table []byte
		for _, c := range toc.Chunks {
			table = append(table, chunkTableRecord(c)...)
		}
		f.Add(table, ft.TOCOffset, toc.UncompressedSize)
	}
	f.Add(chunkTableRecord(Chunk{Offset: 0, Size: 10, UncompressedOffset: 0, UncompressedSize: 100}), int64(10), int64(100))
	f.Add(append(chunkTableRecord(Chunk{Size: 10, UncompressedSize: 100}), chunkTableRecord(Chunk{Offset: 5, Size: 5, UncompressedOffset: 100, UncompressedSize: 1})...), int64(15), int64(101))
	f.Fuzz(func(t *testing.T, table []byte, dataSize, uncompressed int64) {
		toc := &TOC{Version: formatMajor, DiffID: digest.FromString("layer"), UncompressedSize: uncompressed, Chunks: parseChunkTable(table)}
		if err := toc.validate(dataSize, fuzzLimits); err != nil {
			if !errors.Is(err, ErrInvalidFormat) && !errors.Is(err, ErrLimitExceeded) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		var off, uoff int64
		for i, c := range toc.Chunks {
			if c.Offset != off || c.UncompressedOffset != uoff || c.Size <= 0 || c.UncompressedSize <= 0 || c.UncompressedSize > fuzzLimits.MaxChunkSize {
				t.Fatalf("accepted chunk %d %+v after %d compressed, %d uncompressed bytes", i, c, off, uoff)
			}
			if hex.EncodeToString(c.sum[:]) != c.Digest.Encoded() {
				t.Fatalf("chunk %d: decoded sum does not match digest %s", i, c.Digest)
			}
			off += c.Size
			uoff += c.UncompressedSize
		}
		if off != dataSize || uoff != uncompressed {
			t.Fatalf("accepted chunks covering %d/%d bytes of a %d-byte data section and a %d-byte tar", off, uoff, dataSize, uncompressed)
		}
		r := &Reader{toc: toc}
		for i, c := range toc.Chunks {
			if j := r.chunkAt(c.UncompressedOffset); j != i {
				t.Fatalf("tar offset %d (start of chunk %d) maps to chunk %d", c.UncompressedOffset, i, j)
			}
			if j := r.chunkAt(c.UncompressedOffset + c.UncompressedSize - 1); j != i {
				t.Fatalf("tar offset %d (end of chunk %d) maps to chunk %d", c.UncompressedOffset+c.UncompressedSize-1, i, j)
			}
			if j, ok := r.ChunkAt(c.Offset, c.Size); !ok || j != i {
				t.Fatalf("frame at %d+%d (chunk %d) maps to chunk %d, %v", c.Offset, c.Size, i, j, ok)
			}
		}
	})
}

// FuzzScanTar: for any tar the converter accepts, the TOC it wrote lists
// exactly what archive/tar reads from the layer's bytes, in order (names,
// types, modes, owners, link targets, sizes), and each regular file reads
// back through the TOC as archive/tar reads it.
func FuzzScanTar(f *testing.F) {
	f.Add(buildTar(f, everyEntryType()))
	f.Add(buildTar(f, manySmallFiles(20)))
	f.Add(buildTar(f, nil))
	full := buildTar(f, everyEntryType()[:6])
	f.Add(full[:len(full)-1024-100])
	f.Fuzz(func(t *testing.T, input []byte) {
		var out bytes.Buffer
		opts := smallOpts
		opts.Limits = fuzzLimits
		res, err := Convert(context.Background(), bytes.NewReader(input), &out, opts)
		if err != nil {
			return
		}
		ctx := context.Background()
		r, err := Open(ctx, ReaderAtRanges(bytes.NewReader(out.Bytes())), res.Size,
			WithTOC(res.TOCDigest, res.TOCOffset, res.TOCSize), WithDiffID(res.DiffID), WithLimits(fuzzLimits))
		if err != nil {
			t.Fatalf("converted layer does not open: %v", err)
		}
		defer r.Close()
		var tarBytes bytes.Buffer
		if err := r.WriteTo(ctx, &tarBytes); err != nil {
			t.Fatalf("converted layer does not verify: %v", err)
		}
		tr := tar.NewReader(&tarBytes)
		entries := r.Entries()
		n := 0
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("archive/tar fails on a layer the converter accepted, after %d entries: %v", n, err)
			}
			if h.Typeflag == tar.TypeXGlobalHeader {
				continue
			}
			if n >= len(entries) {
				t.Fatalf("archive/tar reads entry %q past the TOC's %d entries", h.Name, len(entries))
			}
			e := &entries[n]
			n++
			if e.Name != h.Name || e.Mode != h.Mode&07777 || e.UID != h.Uid || e.GID != h.Gid {
				t.Fatalf("entry %d: TOC has %q mode %o %d:%d, tar has %q mode %o %d:%d", n-1, e.Name, e.Mode, e.UID, e.GID, h.Name, h.Mode&07777, h.Uid, h.Gid)
			}
			if (e.Type == TypeSymlink || e.Type == TypeHardlink) && e.LinkName != h.Linkname {
				t.Fatalf("entry %q: TOC links to %q, tar to %q", e.Name, e.LinkName, h.Linkname)
			}
			if e.Type != TypeReg {
				continue
			}
			want, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("archive/tar reading %q: %v", h.Name, err)
			}
			if e.Size != int64(len(want)) {
				t.Fatalf("entry %q: TOC size %d, tar has %d bytes", e.Name, e.Size, len(want))
			}
			got := make([]byte, len(want))
			if k, err := r.ReadAt(ctx, e, got, 0); (err != nil && err != io.EOF) || k != len(want) || !bytes.Equal(got, want) {
				t.Fatalf("entry %q reads %d bytes (%v), not what tar has", e.Name, k, err)
			}
		}
		if n != len(entries) {
			t.Fatalf("TOC lists %d entries, archive/tar reads %d", len(entries), n)
		}
	})
}
