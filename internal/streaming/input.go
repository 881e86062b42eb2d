package streaming

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the compression of a source layer, detected by magic bytes.
type Compression string

// Source compressions the converter reads.
const (
	CompressionNone Compression = "none"
	CompressionGzip Compression = "gzip"
	CompressionZstd Compression = "zstd"
)

// DetectCompression names the compression of a layer from its first bytes.
// Anything that is not gzip, zstd, bzip2 or xz is taken to be a plain tar
// (the tar reader refuses it later if it is not).
func DetectCompression(head []byte) (Compression, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressionGzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressionZstd, nil
	case len(head) >= 4 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18 && head[0]&0xf0 == 0x50:
		return CompressionZstd, nil // starts with a skippable frame
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "", fmt.Errorf("%w: xz-compressed layer", ErrUnsupportedInput)
	case bytes.HasPrefix(head, []byte("BZh")):
		return "", fmt.Errorf("%w: bzip2-compressed layer", ErrUnsupportedInput)
	}
	return CompressionNone, nil
}

// sourceReader counts and hashes the compressed source bytes, reports
// progress and stops promptly when the context is cancelled.
type sourceReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	sum      hash.Hash
	progress func(int64)
	reported int64
}

const progressEvery = 1 << 20

func (s *sourceReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	s.sum.Write(p[:n])
	if s.progress != nil && (s.n-s.reported >= progressEvery || (err == io.EOF && s.n != s.reported)) {
		s.reported = s.n
		s.progress(s.n)
	}
	return n, err
}

// boundedReader refuses to produce more than the limits allow relative to
// the compressed bytes consumed (a decompression bomb).
type boundedReader struct {
	r   io.Reader
	src *sourceReader
	n   int64
	lim Limits
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.lim.MaxUncompressedSize {
		return n, overLimit(LimitUncompressedBytes, b.lim.MaxUncompressedSize, "decompresses to more than %d bytes", b.lim.MaxUncompressedSize)
	}
	if b.n > b.lim.RatioGrace && b.n > b.lim.MaxRatio*max(b.src.n, 1) {
		return n, overLimit(LimitExpansionRatio, b.lim.MaxRatio, "expands more than %d times (%d bytes from %d compressed): a decompression bomb?", b.lim.MaxRatio, b.n, b.src.n)
	}
	if err != nil && err != io.EOF {
		err = inputError(err)
	}
	return n, err
}

// windowLimited tells a zstd source refused for its window from a corrupt
// one.
type windowLimited struct {
	r              io.Reader
	window, budget int64
}

func (w *windowLimited) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		err = overLimit(LimitConversionMemory, w.budget, "is compressed with a zstd window of more than %d bytes, more than a conversion's memory holds with its other needs", w.window)
	}
	return n, err
}

// inputError classifies a decompression error: cancellation and limits pass
// through, anything else means the source is corrupt.
func inputError(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrLimitExceeded), errors.Is(err, ErrCorruptInput):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: truncated: %v", ErrCorruptInput, err)
	}
	return fmt.Errorf("%w: %v", ErrCorruptInput, err)
}

// openSource detects the compression of r and returns the uncompressed
// stream. The returned close function releases the decoder.
func openSource(ctx context.Context, r io.Reader, progress func(int64), lim Limits, budget int64) (*sourceReader, io.Reader, Compression, func(), error) {
	src := &sourceReader{ctx: ctx, r: r, sum: sha256.New(), progress: progress}
	br := bufio.NewReaderSize(src, 64<<10)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF {
		return nil, nil, "", nil, inputError(err)
	}
	comp, err := DetectCompression(head)
	if err != nil {
		return nil, nil, "", nil, err
	}
	var dec io.Reader = br
	closeFn := func() {}
	switch comp {
	case CompressionGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, "", nil, fmt.Errorf("%w: gzip header: %v", ErrCorruptInput, err)
		}
		dec, closeFn = zr, func() { zr.Close() }
	case CompressionZstd:
		window := planMemory(Options{MemoryBudget: budget}.withDefaults(), CompressionZstd).window
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(uint64(window)), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, "", nil, fmt.Errorf("%w: zstd: %v", ErrCorruptInput, err)
		}
		dec, closeFn = &windowLimited{zr, window, budget}, zr.Close
	}
	bounded := &boundedReader{r: dec, src: src, lim: lim}
	return src, bufio.NewReaderSize(bounded, 128<<10), comp, closeFn, nil
}
