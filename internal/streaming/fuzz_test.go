package streaming

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
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
