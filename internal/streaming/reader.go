package streaming

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Reader gives random access to the files of a seekable-zstd layer. It
// fetches only the chunks a read needs, coalescing adjacent ones into one
// range, and verifies every chunk's sha256 before using it. It is safe for
// concurrent use.
type Reader struct {
	rr     RangeReader
	size   int64
	cfg    readerConfig
	toc    *TOC
	footer Footer
	byPath map[string]int
	dec    *zstd.Decoder

	mu       sync.Mutex
	inflight map[int]*flight // chunks being fetched: see chunkstate.go

	// waiting, in tests, is told of a chunk a read waits for another
	// goroutine to fetch.
	waiting func(chunk int)
}

type readerConfig struct {
	tocDigest       digest.Digest
	tocOffset       int64
	tocSize         int64
	diffID          digest.Digest
	cache           ChunkCache
	limits          Limits
	verifyCache     bool
	maxRequestBytes int64
}

// ReaderOption configures Open.
type ReaderOption func(*readerConfig)

// WithTOC gives the TOC's digest, offset and size from the layer
// descriptor's annotations. The TOC is then fetched directly and checked
// against that digest (the trust chain); without it, the reader trusts the
// footer's digest, which only detects corruption.
func WithTOC(dgst digest.Digest, offset, size int64) ReaderOption {
	return func(c *readerConfig) { c.tocDigest, c.tocOffset, c.tocSize = dgst, offset, size }
}

// WithDiffID makes Open refuse a TOC whose DiffID is not want (the DiffID
// from the image config). FetchAll then proves the bytes hash to it.
func WithDiffID(want digest.Digest) ReaderOption {
	return func(c *readerConfig) { c.diffID = want }
}

// WithChunkCache sets the chunk cache (default: 32 MiB in memory, private to
// this Reader).
func WithChunkCache(cache ChunkCache) ReaderOption {
	return func(c *readerConfig) { c.cache = cache }
}

// WithVerifyCache makes the reader re-check the sha256 of chunks the cache
// returns (for caches that can be corrupted, such as files on disk).
func WithVerifyCache() ReaderOption { return func(c *readerConfig) { c.verifyCache = true } }

// WithLimits sets the limits the TOC is checked against.
func WithLimits(l Limits) ReaderOption { return func(c *readerConfig) { c.limits = l } }

// Open reads, verifies and indexes the TOC of a blob of size bytes.
func Open(ctx context.Context, rr RangeReader, size int64, opts ...ReaderOption) (*Reader, error) {
	r := &Reader{rr: rr, size: size, cfg: readerConfig{maxRequestBytes: 16 << 20}, inflight: map[int]*flight{}}
	for _, o := range opts {
		o(&r.cfg)
	}
	r.cfg.limits = r.cfg.limits.withDefaults()
	if r.cfg.cache == nil {
		r.cfg.cache = NewMemoryCache(32 << 20)
	}
	frame, err := r.loadTOCFrame(ctx)
	if err != nil {
		return nil, err
	}
	if r.toc, err = decodeTOC(frame, r.footer.TOCOffset, r.cfg.limits, r.footer.TOCUncompressedSize); err != nil {
		return nil, err
	}
	if r.cfg.diffID != "" && r.cfg.diffID != r.toc.DiffID {
		return nil, fmt.Errorf("%w: TOC says %s, image config says %s", ErrDiffIDMismatch, r.toc.DiffID, r.cfg.diffID)
	}
	r.byPath = r.toc.byPath
	r.dec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(r.cfg.limits.MaxChunkSize)),
		zstd.WithDecoderMaxWindow(uint64(min(r.cfg.limits.MaxChunkSize, 1<<27))),
		// Every chunk is checked against its sha256 once decoded: the
		// frame's xxhash would check the same bytes a second time.
		zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, err
	}
	return r, nil
}

// loadTOCFrame fetches the TOC frame and the footer, checks them against
// each other and the TOC's digest, and returns the frame.
func (r *Reader) loadTOCFrame(ctx context.Context) ([]byte, error) {
	if r.size < FooterSize {
		return nil, fmt.Errorf("%w: blob of %d bytes is too small for a footer", ErrInvalidFormat, r.size)
	}
	off := r.size - FooterSize
	if r.cfg.tocDigest != "" {
		if r.cfg.tocOffset < 0 || r.cfg.tocSize <= 0 || r.cfg.tocOffset+r.cfg.tocSize != r.size-FooterSize {
			return nil, fmt.Errorf("%w: annotations place the TOC at offset %d size %d, which does not end at the footer of a %d-byte blob", ErrInvalidFormat, r.cfg.tocOffset, r.cfg.tocSize, r.size)
		}
		if r.cfg.tocSize > r.cfg.limits.MaxTOCSize {
			return nil, tocTooLarge(r.cfg.tocSize, r.cfg.limits.MaxTOCSize)
		}
		off = r.cfg.tocOffset
	}
	buf := make([]byte, r.size-off)
	if err := r.rr.ReadRange(ctx, buf, off); err != nil {
		return nil, fmt.Errorf("reading the TOC: %w", err)
	}
	footer, err := ParseFooter(buf[len(buf)-FooterSize:], r.size)
	if err != nil {
		return nil, err
	}
	r.footer = footer
	// The footer's sizes are checked before the TOC is decompressed: the
	// JSON it promises must fit the limit (decompression stops at the
	// limit whatever the footer says).
	if footer.TOCUncompressedSize > r.cfg.limits.MaxTOCUncompressedSize {
		return nil, overLimit(LimitTOCJSONBytes, r.cfg.limits.MaxTOCUncompressedSize,
			"the footer gives the TOC %d bytes of JSON, more than %d", footer.TOCUncompressedSize, r.cfg.limits.MaxTOCUncompressedSize)
	}
	if r.cfg.tocDigest == "" {
		if footer.TOCSize > r.cfg.limits.MaxTOCSize {
			return nil, tocTooLarge(footer.TOCSize, r.cfg.limits.MaxTOCSize)
		}
		frame := make([]byte, footer.TOCSize)
		if err := r.rr.ReadRange(ctx, frame, footer.TOCOffset); err != nil {
			return nil, fmt.Errorf("reading the TOC: %w", err)
		}
		if sha256.Sum256(frame) != footer.TOCDigest {
			return nil, fmt.Errorf("%w: TOC does not match the digest in the footer (corrupt blob)", ErrTOCVerification)
		}
		return frame, nil
	}
	frame := buf[:len(buf)-FooterSize]
	if got := digest.FromBytes(frame); got != r.cfg.tocDigest {
		return nil, fmt.Errorf("%w: TOC digest is %s, descriptor says %s", ErrTOCVerification, got, r.cfg.tocDigest)
	}
	if footer.TOCOffset != r.cfg.tocOffset || sha256.Sum256(frame) != footer.TOCDigest {
		return nil, fmt.Errorf("%w: footer disagrees with the descriptor's TOC annotations", ErrInvalidFormat)
	}
	return frame, nil
}

// tocTooLarge refuses a TOC frame of size bytes, before it is fetched.
func tocTooLarge(size, limit int64) error {
	return overLimit(LimitTOCBytes, limit, "the TOC is %d bytes, more than %d", size, limit)
}

// Close releases the decoder.
func (r *Reader) Close() error {
	r.dec.Close()
	return nil
}

// TOC returns the verified table of contents. Callers must not modify it.
func (r *Reader) TOC() *TOC { return r.toc }

// Entries returns every entry in tar order. Callers must not modify them.
func (r *Reader) Entries() []Entry { return r.toc.Entries }

// ImplicitDirs lists the directories the entries imply (TOC.ImplicitDirs).
func (r *Reader) ImplicitDirs() []ImplicitDir { return r.toc.implicit }

// DiffID is the DiffID the TOC records (verified by FetchAll).
func (r *Reader) DiffID() digest.Digest { return r.toc.DiffID }

// Lookup returns the entry for a path ("usr/bin/python3", "./etc/",
// "/etc/passwd" all work); the last one when the tar has several.
func (r *Reader) Lookup(name string) (*Entry, error) {
	i, ok := r.byPath[cleanPath(strings.TrimPrefix(name, "./"))]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return &r.toc.Entries[i], nil
}

// DataEntry resolves hard links: it returns the regular file whose data e
// reads (e itself unless e is a hard link).
func (r *Reader) DataEntry(e *Entry) *Entry { return &r.toc.Entries[e.target] }

// ReadAt reads len(p) bytes of a file's content at offset off, following
// hard links, fetching only the chunks it needs. Like io.ReaderAt, it returns
// io.EOF when it reads less than len(p) because the file ends.
func (r *Reader) ReadAt(ctx context.Context, e *Entry, p []byte, off int64) (int, error) {
	d := r.DataEntry(e)
	if d.Type != TypeReg {
		return 0, fmt.Errorf("reading %q: a %s has no content", e.Name, d.Type)
	}
	if off < 0 {
		return 0, fmt.Errorf("reading %q: negative offset %d", e.Name, off)
	}
	if off >= d.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), d.Size-off))
	if err := r.readData(ctx, d, p[:n], off); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
