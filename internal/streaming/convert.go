package streaming

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Default chunking parameters; doc.go explains how they were chosen.
const (
	DefaultChunkSize     = 256 << 10
	DefaultFileChunkSize = 1 << 20
	DefaultLevel         = 3
)

// Options tune a conversion. The zero value converts with the defaults.
type Options struct {
	// ChunkSize: a chunk ends at the first tar entry boundary once it holds
	// at least this many uncompressed bytes.
	ChunkSize int64
	// FileChunkSize: a file larger than this starts a new chunk at its data
	// and is cut every FileChunkSize bytes from its start.
	FileChunkSize int64
	// Level is the zstd level (1..22, mapped onto the encoder's speeds).
	Level int
	// Concurrency is the number of parallel compressors (default
	// GOMAXPROCS-1, at least 1: one core decompresses and parses the tar),
	// fewer if MemoryBudget cannot hold them.
	Concurrency int
	// MemoryBudget is the heap a conversion may hold (default 256 MiB).
	// What a conversion needs whatever its concurrency (the TOC being
	// written, the chunk table, a zstd source's decoder window) comes
	// first; the rest decides how many compressors run. The TOC never
	// counts against it: it is written as the tar is read, and moves to a
	// file in TempDir once it outgrows a few MiB.
	MemoryBudget int64
	// Progress, when set, is called with the number of source bytes
	// consumed so far, at most once per MiB and once at the end.
	Progress func(consumed int64)
	// Limits bound the input (decompression bombs, entry counts, names,
	// the TOC's size).
	Limits Limits
	// TempDir holds the TOC of a large layer while it is written
	// (os.TempDir when empty): up to Limits.MaxTOCSize bytes, in a file
	// removed as soon as it is created.
	TempDir string
}

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.FileChunkSize <= 0 {
		o.FileChunkSize = DefaultFileChunkSize
	}
	if o.Level <= 0 {
		o.Level = DefaultLevel
	}
	if o.Concurrency <= 0 {
		o.Concurrency = max(1, runtime.GOMAXPROCS(0)-1)
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = DefaultMemoryBudget
	}
	o.Limits = o.Limits.withDefaults()
	return o
}

// Result describes a converted layer.
type Result struct {
	// Digest and Size of the converted blob.
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// DiffID and size of the uncompressed tar (the same as the source's).
	DiffID           digest.Digest `json:"diffID"`
	UncompressedSize int64         `json:"uncompressedSize"`
	// SourceDigest, SourceSize and SourceCompression describe the input.
	SourceDigest      digest.Digest `json:"sourceDigest"`
	SourceSize        int64         `json:"sourceSize"`
	SourceCompression Compression   `json:"sourceCompression"`
	// TOCDigest, TOCOffset and TOCSize locate the TOC frame in the blob.
	TOCDigest digest.Digest `json:"tocDigest"`
	TOCOffset int64         `json:"tocOffset"`
	TOCSize   int64         `json:"tocSize"`
	// Chunks and Entries count the data frames and the TOC entries.
	Chunks  int `json:"chunks"`
	Entries int `json:"entries"`
	// UnsafeNames lists (up to 100) entry names that are absolute or
	// contain "..": kept in the layer, flagged in the TOC.
	UnsafeNames []string `json:"unsafeNames,omitempty"`
}

// Annotations returns the annotations of the converted layer's descriptor.
func (r *Result) Annotations() map[string]string {
	return map[string]string{
		AnnotationTOCDigest:    r.TOCDigest.String(),
		AnnotationTOCOffset:    strconv.FormatInt(r.TOCOffset, 10),
		AnnotationTOCSize:      strconv.FormatInt(r.TOCSize, 10),
		AnnotationSourceDigest: r.SourceDigest.String(),
	}
}

// Descriptor returns the OCI descriptor of the converted layer.
func (r *Result) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: MediaTypeLayer, Digest: r.Digest, Size: r.Size, Annotations: r.Annotations()}
}

// Convert reads a layer (tar, tar+gzip or tar+zstd, detected by magic
// bytes) from src and writes its seekable-zstd form to dst, in one pass with
// bounded memory. It stops promptly when ctx is cancelled; dst then holds a
// partial blob the caller must discard.
func Convert(ctx context.Context, src io.Reader, dst io.Writer, opts Options) (*Result, error) {
	o := opts.withDefaults()
	source, tarStream, comp, closeSource, err := openSource(ctx, src, o.Progress, o.Limits, o.MemoryBudget)
	if err != nil {
		return nil, err
	}
	defer closeSource()
	plan := planMemory(o, comp)
	cw, err := newChunkWriter(ctx, dst, plan.compressors, zstd.EncoderLevelFromZstd(o.Level), int(o.hardMax()))
	if err != nil {
		return nil, err
	}
	toc, err := newTOCWriter(o.Limits, o.TempDir)
	if err != nil {
		cw.close()
		return nil, err
	}
	defer toc.close()
	sc := &scanner{opts: o, cw: cw, tee: &teeReader{r: tarStream, cw: cw}, toc: toc}
	sc.tree = newUnpackCheck(linkBytes(o.MemoryBudget))
	scanErr := sc.run()
	if closeErr := cw.close(); scanErr == nil {
		scanErr = closeErr
	}
	if scanErr != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("conversion cancelled: %w", ctx.Err())
		}
		return nil, scanErr
	}
	res := &Result{
		DiffID:            digest.NewDigestFromBytes(digest.SHA256, cw.diff.Sum(nil)),
		UncompressedSize:  cw.pos(),
		SourceDigest:      digest.NewDigestFromBytes(digest.SHA256, source.sum.Sum(nil)),
		SourceSize:        source.n,
		SourceCompression: comp,
		Chunks:            len(cw.sink.chunks),
		Entries:           sc.entries,
		UnsafeNames:       sc.unsafeNames,
	}
	if err := writeTrailer(&cw.sink, toc, res); err != nil {
		return nil, err
	}
	return res, nil
}

// writeTrailer finishes the TOC and writes its frame and the footer after
// the data frames.
func writeTrailer(s *frameSink, toc *tocWriter, res *Result) error {
	frame, err := toc.finish(s.chunks, res.DiffID, res.UncompressedSize)
	if err != nil {
		return err
	}
	sum, err := frame.writeTo(io.MultiWriter(s.out, s.blob))
	if err != nil {
		return fmt.Errorf("writing converted layer: %w", err)
	}
	f := Footer{TOCOffset: s.outN, TOCSize: frame.size, TOCUncompressedSize: frame.jsonSize,
		TOCDigest: sum, Major: formatMajor, Minor: formatMinor}
	footer, _ := f.MarshalBinary()
	if _, err := s.out.Write(footer); err != nil {
		return fmt.Errorf("writing converted layer: %w", err)
	}
	s.blob.Write(footer)
	res.TOCDigest = digest.NewDigestFromBytes(digest.SHA256, f.TOCDigest[:])
	res.TOCOffset, res.TOCSize = f.TOCOffset, f.TOCSize
	res.Size = s.outN + frame.size + FooterSize
	res.Digest = digest.NewDigestFromBytes(digest.SHA256, s.blob.Sum(nil))
	return nil
}
